"""Entry-point plugins: a real distribution (dist-info on sys.path) adds a method used end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_model, make_records, make_saes

import sfc_plugin
from sfc_plugin.plugins import new_plugin_manager, registry

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def install_dist(site: Path, name: str, entry_points: dict[str, str]) -> None:
    """A minimal installed distribution: ``<name>-0.1.dist-info`` with METADATA and entry_points.txt."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sfc_plugin]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sfc_midpoint.py").write_text((EXAMPLES / "custom_method_plugin" / "sfc_midpoint.py").read_text())
    (site / "sfc_broken.py").write_text("raise ImportError('this plugin is broken on purpose')\n")
    install_dist(site, "sfc_midpoint", {"midpoint": "sfc_midpoint"})
    install_dist(site, "sfc_broken", {"broken": "sfc_broken"})
    monkeypatch.syspath_prepend(str(site))
    return site


def test_entry_point_method_is_used_by_name_and_broken_plugin_warns(plugin_site, tokenizer):
    with pytest.warns(UserWarning, match="'sfc_broken:broken' skipped: failed to load"):
        pm = new_plugin_manager()
    methods = registry("method", pm)
    assert methods["midpoint"].plugin == "sfc_midpoint:midpoint"
    assert methods["ig"].plugin == "sfc_plugin.attribution.builtin"
    model, saes, records = (
        make_model(tokenizer),
        make_saes(["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"]),
        make_records(4),
    )
    kw = dict(node_threshold=0.0, edges=False, progress=False, pm=pm)
    mid = sfc_plugin.discover(model, saes, records, method="midpoint", **kw)
    ig1 = sfc_plugin.discover(model, saes, records, method="ig", steps=2, **kw)  # α ∈ {0, 0.5}
    atp = sfc_plugin.discover(model, saes, records, method="atp", **kw)
    assert mid.method == "midpoint" and len(mid.nodes) > 5
    for n in mid.nodes[1:]:
        # IG with two steps is the mean of the α=0 (atp) and α=0.5 (midpoint) estimates
        a = next((x.effect for x in atp.nodes if x.id == n.id), 0.0)
        b = next((x.effect for x in ig1.nodes if x.id == n.id), 0.0)
        assert b == pytest.approx((a + n.effect) / 2, abs=1e-9)


def test_cli_uses_entry_point_method_and_lists_plugins(plugin_site, tmp_path, tokenizer):
    from sfc_plugin.models import save_model

    model = make_model(tokenizer)
    save_model(model, tmp_path / "model")
    for hook, sae in make_saes(["blocks.1.hook_resid_post"]).items():
        sae.save_model(tmp_path / "saes" / hook)
    env_path = f"{plugin_site}"
    data = tmp_path / "pairs.jsonl"
    import json

    data.write_text("".join(json.dumps(r) + "\n" for r in make_records(4)))
    env = {"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "sfc_plugin.cli", *a],
        capture_output=True,
        text=True,  # noqa: E731
        env=env,
    )
    listed = run("plugins")
    assert listed.returncode == 0, listed.stderr
    assert "midpoint" in listed.stdout and "sfc_midpoint:midpoint" in listed.stdout
    assert "sfc_broken:broken" in listed.stdout and "failed to load" in listed.stdout  # listed with the reason
    out = tmp_path / "out"
    res = run(
        "discover",
        "--model",
        str(tmp_path / "model"),
        "--sae",
        str(tmp_path / "saes"),
        "--data",
        str(data),
        "--method",
        "midpoint",
        "--node-threshold",
        "0.01",
        "-o",
        str(out),
        "-q",
    )
    assert res.returncode == 0, res.stderr
    circuit = sfc_plugin.Circuit.from_json(out / "circuit.json")
    assert circuit.method == "midpoint" and len(circuit.nodes) > 1
