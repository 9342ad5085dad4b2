"""The public names of the design contract resolve to the API objects, whatever was imported before."""

import inspect

import sfc_plugin
import sfc_plugin.discovery  # noqa: F401  (submodules imported first must not shadow the functions)
import sfc_plugin.evaluation  # noqa: F401
import sfc_plugin.shift_pipeline  # noqa: F401
import sfc_plugin.splicing  # noqa: F401


def test_public_api_names():
    for name in ("discover", "evaluate", "shift", "splice", "load_dataset"):
        assert inspect.isfunction(getattr(sfc_plugin, name)), name
    assert inspect.isclass(sfc_plugin.Circuit) and inspect.isclass(sfc_plugin.FeatureEdit)
    assert list(inspect.signature(sfc_plugin.discover).parameters)[:3] == ["model", "saes", "data"]
    for kw in ("metric", "method", "steps", "node_threshold", "edge_threshold", "aggregation", "edges", "batch_size",
               "device", "pm"):
        assert kw in inspect.signature(sfc_plugin.discover).parameters, kw
    for kw in ("ablation", "thresholds", "start_layer", "include_errors"):
        assert kw in inspect.signature(sfc_plugin.evaluate).parameters, kw
    assert sfc_plugin.hookimpl.project_name == "sfc_plugin" and sfc_plugin.get_plugin_manager().project_name == "sfc_plugin"
