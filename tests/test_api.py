"""The public names of the design contract resolve to the API objects, whatever was imported before."""

import inspect

import sfc_plugin
import sfc_plugin.discovery  # noqa: F401  (submodules imported first must not shadow the functions)
import sfc_plugin.evaluation  # noqa: F401
import sfc_plugin.shifting  # noqa: F401
import sfc_plugin.shifting.edit  # noqa: F401
import sfc_plugin.shifting.pipeline  # noqa: F401
import sfc_plugin.splicing  # noqa: F401


def test_public_api_names():
    for name in ("discover", "evaluate", "shift", "splice", "load_dataset"):
        assert inspect.isfunction(getattr(sfc_plugin, name)), name
    assert inspect.isclass(sfc_plugin.Circuit) and inspect.isclass(sfc_plugin.FeatureEdit)
    assert list(inspect.signature(sfc_plugin.discover).parameters)[:3] == ["model", "saes", "data"]
    for kw in (
        "metric",
        "method",
        "steps",
        "node_threshold",
        "edge_threshold",
        "aggregation",
        "edges",
        "batch_size",
        "device",
        "pm",
    ):
        assert kw in inspect.signature(sfc_plugin.discover).parameters, kw
    for kw in ("ablation", "thresholds", "start_layer", "include_errors"):
        assert kw in inspect.signature(sfc_plugin.evaluate).parameters, kw
    assert (
        sfc_plugin.hookimpl.project_name == "sfc_plugin"
        and sfc_plugin.get_plugin_manager().project_name == "sfc_plugin"
    )


def test_shift_package_keeps_the_function_and_registers_judges_through_the_hook():
    import sfc_plugin.shifting.judges  # noqa: F401
    import sfc_plugin.shifting.records  # noqa: F401
    from sfc_plugin.plugins import registry

    assert inspect.isfunction(sfc_plugin.shift) and sfc_plugin.shift.__module__ == "sfc_plugin.shifting.pipeline"
    judges = registry("judge")
    assert {"file", "interactive"} <= set(judges)
    assert all(judges[name].plugin == "sfc_plugin.shifting.judges" for name in ("file", "interactive"))
