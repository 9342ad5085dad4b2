"""Plugin isolation with real entry-point distributions: a broken plugin is one warning, never a crash."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
from test_plugins import install_dist

from sfc_plugin.errors import SFCError
from sfc_plugin.plugins import broken_plugins, lookup, new_plugin_manager, registry

PLUGINS = {
    # name: (module source, reason the plugin is skipped, or None when it works)
    "sfc_good": (
        """
        from sfc_plugin import hookimpl
        @hookimpl
        def sfc_metrics():
            return {"twice": lambda logits, batch: 2}
        @hookimpl
        def sfc_attribution_methods():
            def explodes(ctx):
                raise ZeroDivisionError("plugin bug")
            def quits(ctx):
                raise SystemExit(3)
            def wrong(ctx):
                return 42
            return {"explodes": explodes, "quits": quits, "wrong": wrong}
        """,
        None,
    ),
    "sfc_exits": ("import sys\nsys.exit('no thanks')\n", "failed to load sfc_exits (called sys.exit('no thanks'))"),
    "sfc_raises": (
        """
        from sfc_plugin import hookimpl
        @hookimpl
        def sfc_metrics():
            raise RuntimeError("metrics unavailable")
        """,
        "hook sfc_metrics raised RuntimeError: metrics unavailable",
    ),
    "sfc_hook_exits": (
        """
        from sfc_plugin import hookimpl
        @hookimpl
        def sfc_exporters():
            raise SystemExit(1)
        """,
        "hook sfc_exporters raised called sys.exit(1)",
    ),
    "sfc_wrong_type": (
        """
        from sfc_plugin import hookimpl
        @hookimpl
        def sfc_metrics():
            return ["logit_diff"]
        """,
        "hook sfc_metrics returned list, expected a dict of {name: callable}",
    ),
    "sfc_not_callable": (
        """
        from sfc_plugin import hookimpl
        @hookimpl
        def sfc_ablations():
            return {"half": 0.5}
        """,
        "hook sfc_ablations returned float for ablation 'half', expected a callable",
    ),
    "sfc_bad_signature": (
        """
        from sfc_plugin import hookimpl
        @hookimpl
        def sfc_metrics(model):
            return {}
        """,
        "failed to register (PluginValidationError:",
    ),
    "sfc_unknown_hook": (
        """
        from sfc_plugin import hookimpl
        @hookimpl
        def sfc_not_a_hook():
            return {}
        """,
        "failed to register (PluginValidationError:",
    ),
}


@pytest.fixture
def hostile_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    for name, (source, _) in PLUGINS.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
        install_dist(site, name, {name.removeprefix("sfc_"): name})
    monkeypatch.syspath_prepend(str(site))
    return site


def test_each_broken_plugin_is_one_warning_and_the_rest_works(hostile_site):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = new_plugin_manager()
        regs = {kind: registry(kind, pm) for kind in ("method", "metric", "exporter", "ablation", "dataset")}
        regs = {kind: registry(kind, pm) for kind in regs}  # asking again does not warn again
    broken = broken_plugins(pm)
    for name, (_, why) in PLUGINS.items():
        key = f"{name}:{name.removeprefix('sfc_')}"
        if why is None:
            assert key not in broken
        else:
            assert why in broken[key], (key, broken.get(key))
    messages = [str(w.message) for w in caught]
    assert len(messages) == len(broken) == sum(why is not None for _, why in PLUGINS.values())
    assert all(m.startswith("sfc_plugin: plugin '") and "skipped" in m for m in messages)
    assert regs["metric"]["twice"].plugin == "sfc_good:good" and "logit_diff" in regs["metric"]
    assert {"json", "dot"} <= set(regs["exporter"]) and {"mean", "zero"} <= set(regs["ablation"])
    assert "half" not in regs["ablation"]


@pytest.mark.parametrize(
    "name,message",
    [
        ("explodes", "method 'explodes' of plugin 'sfc_good:good' failed: ZeroDivisionError: plugin bug"),
        ("quits", "method 'quits' of plugin 'sfc_good:good' failed: called sys.exit(3)"),
    ],
)
def test_a_failing_plugin_object_is_a_one_line_error_naming_the_plugin(hostile_site, name, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = new_plugin_manager()
    with pytest.raises(SFCError) as err:
        lookup("method", name, pm)(None)
    assert str(err.value) == message


def test_sfc_plugins_lists_broken_plugins_and_survives_a_closed_pipe(hostile_site):
    env = {"PYTHONPATH": str(hostile_site), "PATH": "/usr/bin:/bin"}
    listed = subprocess.run(
        [sys.executable, "-m", "sfc_plugin.cli", "plugins"], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    tail = listed.stdout.split("broken plugins (skipped):\n", 1)[1]
    for name, (_, why) in PLUGINS.items():
        if why is not None:
            assert f"{name}:{name.removeprefix('sfc_')}" in tail and why in tail
    assert "twice" in listed.stdout and "sfc_good:good" in listed.stdout
    # no torch for listing names; a reader that stops early is no error
    code = (
        "import sys\nfrom sfc_plugin.cli import main\nrc = main(['plugins'])\n"
        "sys.stderr.write(repr(sorted(m for m in ('torch', 'sae_lens', 'transformer_lens') if m in sys.modules)))\n"
    )
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0 and quiet.stderr.endswith("[]"), quiet.stderr
    piped = subprocess.run(
        f"{sys.executable} -m sfc_plugin.cli plugins | head -1", shell=True, capture_output=True, text=True, env=env
    )
    assert piped.stdout == "methods:\n" and piped.stderr == "", piped.stderr


def test_a_method_returning_the_wrong_type_is_a_one_line_error(hostile_site, tokenizer):
    from conftest import make_model, make_records, make_saes

    import sfc_plugin

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = new_plugin_manager()
    model, saes = make_model(tokenizer), make_saes(["blocks.1.hook_resid_post"])
    with pytest.raises(SFCError) as err:
        sfc_plugin.discover(model, saes, make_records(2), method="wrong", edges=False, progress=False, pm=pm)
    assert str(err.value) == "method 'wrong' returned int, expected NodeEffects"
