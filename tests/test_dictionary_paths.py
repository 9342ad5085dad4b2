"""Every command on the new node sets: the toy model with transcoders at its MLPs and AbsTopK, matching-pursuit
and temporal SAEs among its trained ones, loaded from SAELens directories as a user's would be.

discover, export (DOT/SVG/PNG, neuronpedia / circuit-tracer JSON), dashboards and ``--labels auto``, view,
evaluate (mean/zero/resample; zero ablation recomputed with SAELens's own modules), SHIFT (an edit ablating
transcoder features, checked against a hand-written hook), edit-report, clusters and the fingerprints.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_dictionary

import sfc_plugin
from sfc_plugin.cli import main
from sfc_plugin.data import tokenize
from sfc_plugin.metrics import logit_diff

logging.getLogger("sae_lens").setLevel(logging.ERROR)

PKG = Path(sfc_plugin.__file__).parent / "toy" / "artifacts"
# the MLPs get transcoders (three kinds, three read hooks); three trained SAEs give way to the other SAE kinds
TRANSCODERS = {
    0: ("jumprelu_skip_transcoder", "blocks.0.hook_mlp_in"),
    1: ("transcoder", "blocks.1.ln2.hook_normalized"),
    2: ("skip_transcoder", "blocks.2.hook_resid_mid"),
}
OTHERS = {
    "blocks.0.hook_attn_out": "abstopk",
    "blocks.0.hook_resid_post": "matching_pursuit",
    "blocks.1.hook_attn_out": "temporal",
}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-dicts")
    saes = root / "saes"
    for d in (PKG / "saes").iterdir():
        if "mlp_out" not in d.name and d.name not in OTHERS:
            shutil.copytree(d, saes / d.name)
    for i, (hook, kind) in enumerate(OTHERS.items()):
        sae = make_dictionary(kind, hook, d_in=64, d_sae=128, seed=20 + i).to(torch.float32)
        sae.save_model(saes / hook)
    for layer, (kind, read) in TRANSCODERS.items():
        out = f"blocks.{layer}.hook_mlp_out"
        tc = make_dictionary(kind, read, d_in=64, d_sae=128, seed=layer, hook_out=out).to(torch.float32)
        with torch.no_grad():  # toy activations are O(1) per dimension: a sparser code
            tc.b_enc.fill_(-1.0)
        tc.save_model(saes / f"tc{layer}")
    (root / "decisions.json").write_text(
        json.dumps([{"id": f"tc_{layer}/{j}", "decision": "ablate"} for layer in range(3) for j in range(128)])
    )
    return root


@pytest.fixture(scope="module")
def circuit_dir(files):
    out = files / "circuit"
    code = main(
        ["discover", "--model", str(PKG / "model"), "--sae", str(files / "saes"), "--data", "toy/sva-rc"]
        + ["--n-examples", "12", "--node-threshold", "0.02", "--edge-threshold", "0.002", "-q", "-o", str(out)]
    )
    assert code == 0
    return out


def test_discover_records_every_kind_and_the_transcoders_hooks(circuit_dir):
    circuit = sfc_plugin.Circuit.from_json(circuit_dir / "circuit.json")
    subs = {n.submodule for n in circuit.nodes if n.kind != "metric"}
    assert {"tc_0", "tc_1", "tc_2"} <= subs and {"attn_0", "resid_0", "attn_1"} <= subs
    assert any(n.id.startswith("tc_") and n.kind == "feature" for n in circuit.nodes)
    assert any(e.source.startswith("tc_") for e in circuit.edges) and any(
        e.target.startswith("tc_") for e in circuit.edges
    )
    saes = {s["submodule"]: s for s in circuit.provenance["saes"]}
    assert saes["tc_0"]["hook"] == "blocks.0.hook_mlp_in" and saes["tc_0"]["hook_out"] == "blocks.0.hook_mlp_out"
    assert saes["tc_2"]["architecture"] == "skip_transcoder" and saes["attn_1"]["architecture"] == "temporal"
    assert "hook_out" not in saes["resid_2"] and len(saes["tc_1"]["fingerprint"]["sha256"]) == 64
    node = next(n for n in circuit.nodes if n.submodule == "tc_1")
    assert node.hook == "blocks.1.hook_mlp_out" and node.layer == 1


def test_exports_draw_and_map_transcoder_nodes(circuit_dir, capsys):
    c = circuit_dir / "circuit.json"
    for fmt, name in (("dot", "c.dot"), ("svg", "c.svg"), ("png", "c.png"), ("json", "c.json")):
        code, _, err = run(capsys, "export", c, "--format", fmt, "-o", circuit_dir / name)
        assert code == 0, err
    assert "tc_1/" in (circuit_dir / "c.dot").read_text()
    assert (circuit_dir / "c.png").read_bytes()[:4] == b"\x89PNG"
    for fmt in ("neuronpedia", "circuit-tracer"):
        code, _, err = run(capsys, "export", c, "--format", fmt, "-o", circuit_dir / f"{fmt}.json")
        assert code == 0, err
    graph = json.loads((circuit_dir / "circuit-tracer.json").read_text())
    errors = {n["clerp"].split()[1]: n for n in graph["nodes"] if n["feature_type"].endswith("reconstruction error")}
    assert errors["tc_1"]["feature_type"] == "mlp reconstruction error" and errors["tc_1"]["feature"] == -1
    assert errors["tc_1"]["node_id"] == f"0_1_{errors['tc_1']['ctx_idx']}"  # circuit-tracer's MLP error node id


def test_dashboards_labels_and_view_on_transcoder_features(files, circuit_dir, capsys):
    c = circuit_dir / "circuit.json"
    world = ["--model", PKG / "model", "--sae", files / "saes", "--corpus", "toy"]
    code, _, err = run(capsys, "dashboards", c, *world, "--n-contexts", "64", "-q", "-o", circuit_dir / "dashboards")
    assert code == 0, err
    data = json.loads(next((circuit_dir / "dashboards").glob("*.json")).read_text())
    tc_feats = [k for k in data["features"] if k.startswith("tc_")]
    assert tc_feats and all(data["features"][k]["density"] > 0 for k in tc_feats)
    signed = [k for k in data["features"] if k.startswith("attn_0/")]  # AbsTopK: contexts by magnitude
    assert signed
    code, _, err = run(capsys, "export", c, "--format", "dot", "--labels", "auto", "-o", circuit_dir / "auto.dot")
    assert code == 0, err
    code, _, err = run(capsys, "view", c, "-o", circuit_dir / "site")
    assert code == 0, err
    assert "tc_0" in "".join(p.read_text(errors="ignore") for p in (circuit_dir / "site").rglob("*.js*"))


def test_evaluate_ablates_transcoder_features_and_errors(files, circuit_dir, capsys):
    c = circuit_dir / "circuit.json"
    for ablation in ("mean", "zero", "resample"):
        out = circuit_dir / f"eval-{ablation}"
        code, _, err = run(capsys, "evaluate", c, "--data", "toy/sva-rc", "--ablation", ablation, "-q", "-o", out)
        assert code == 0, err
        result = json.loads((out / "faithfulness.json").read_text())
        assert result["provenance_check"] == {"status": "match"} and result["circuit"]["faithfulness"] is not None


def test_zero_ablation_faithfulness_equals_saelens_own_splice(files, circuit_dir):
    """m(C) for the circuit without its attention nodes (everything else outside it zero-ablated), recomputed with
    SAELens's modules."""
    world = sfc_plugin.World.load(str(PKG / "model"), str(files / "saes"))
    full = sfc_plugin.Circuit.from_json(circuit_dir / "circuit.json")
    keep = [n for n in full.nodes if n.kind == "metric" or not n.submodule.startswith("attn_")]
    circuit = sfc_plugin.Circuit(
        keep, [], full.total_effect, full.metric, full.method, full.steps, "sum", full.node_threshold, 0.0, {}
    )
    records = sfc_plugin.load_dataset("toy/sva-rc", "test")[:8]
    result = sfc_plugin.evaluate(world, circuit, records, ablation="zero", thresholds=[], progress=False)
    model = world.model
    batch = tokenize(model, records)
    kept = {s.name: {n.feature for n in keep if n.submodule == s.name} for s in world.submodules}
    hooks, reads = [], {}
    for s in world.submodules:
        sae = s.sae
        if s.layer < 0:  # start_layer 0: the embedding is never ablated
            continue

        def write(act, hook, s=s, sae=sae):
            r = reads.pop(s.name) if s.transcoder else act
            f = sae.encode(r)
            mask = torch.zeros(f.shape[-1], dtype=torch.bool)
            mask[[j for j in kept[s.name] if j is not None]] = True
            err = act - sae.decode(f) if None in kept[s.name] else 0.0
            return sae.decode(f * mask) + err

        hooks.append((s.hook, write))
        if s.transcoder:
            hooks.append((s.read_hook, lambda act, hook, s=s: reads.__setitem__(s.name, act)))
    model.cfg.use_hook_mlp_in = True
    with torch.no_grad():
        m_c = float(logit_diff(model.run_with_hooks(batch.clean, fwd_hooks=hooks), batch).mean())
    model.cfg.use_hook_mlp_in = False
    want = (m_c - result["m_empty"]) / (result["m_full"] - result["m_empty"])
    assert result["circuit"]["faithfulness"] == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert any(None in v for k, v in kept.items() if k.startswith("tc_")) and 0.01 < abs(want) < 50


def test_an_edit_of_transcoder_features_equals_a_hand_written_hook(files):
    from sfc_plugin.shifting.edit import FeatureEdit

    world = sfc_plugin.World.load(str(PKG / "model"), str(files / "saes"))
    model, subs = world.model, world.by_name
    edit = FeatureEdit(subs, ablate={"tc_0": [1, 5, 9], "tc_2": [3]})
    tokens = model.to_tokens(["the doctor that the guards like is"])
    reads = {}

    def by_hand(act, hook):
        name = {"blocks.0.hook_mlp_out": "tc_0", "blocks.2.hook_mlp_out": "tc_2"}[hook.name]
        f = subs[name].sae.encode(reads[name])
        ablated = torch.zeros_like(f)
        ablated[..., [1, 5, 9] if name == "tc_0" else [3]] = f[..., [1, 5, 9] if name == "tc_0" else [3]]
        return act - subs[name].sae.decode(ablated) + subs[name].sae.decode(torch.zeros_like(f))

    hooks = [(subs[n].read_hook, lambda a, hook, n=n: reads.__setitem__(n, a)) for n in ("tc_0", "tc_2")]
    hooks += [(subs[n].hook, by_hand) for n in ("tc_0", "tc_2")]
    model.cfg.use_hook_mlp_in = True
    want = model.run_with_hooks(tokens, fwd_hooks=hooks)
    model.cfg.use_hook_mlp_in = False
    plain = model(tokens)
    with edit.applied(model):
        got = model(tokens)
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, plain, atol=1e-3)
    assert model.cfg.use_hook_mlp_in is False
    edit.attach(model)
    assert model.cfg.use_hook_mlp_in is True and torch.allclose(model(tokens), want, atol=1e-5)
    edit.detach(model)
    assert model.cfg.use_hook_mlp_in is False and torch.allclose(model(tokens), plain)


def test_shift_ablates_transcoder_features_and_edit_report_reuses_the_world(files, capsys):
    out = files / "shift"
    code, _, err = run(
        capsys,
        "shift",
        "--model",
        PKG / "model",
        "--sae",
        files / "saes",
        "--judge",
        "file",
        "--decisions",
        files / "decisions.json",
        "--compare-judge",
        "none",
        "--top-k",
        "40",
        "--n-train",
        "48",
        "--n-eval",
        "24",
        "--steps",
        "1",
        "--no-side-effects",
        "--no-bos",
        "-q",
        "-o",
        out,
    )
    assert code == 0, err
    assert json.loads((out / "shift.json").read_text())["recipe"]["bos"] is False
    edit = json.loads((out / "edit.json").read_text())
    assert any(f["submodule"].startswith("tc_") for f in edit["features"])
    assert all(f["hook"].endswith("hook_mlp_out") for f in edit["features"] if f["submodule"].startswith("tc_"))
    report = ["edit-report", out / "edit.json", "--circuit", "none", "--agreement-data", "toy/sva-simple"]
    code, stdout, err = run(capsys, *report, "-o", files / "report")
    assert code == 0, err
    assert "model and SAEs: match" in stdout


def test_clusters_find_circuits_over_transcoders(files, capsys):
    out = files / "clusters"
    code, _, err = run(
        capsys,
        "clusters",
        "--model",
        PKG / "model",
        "--sae",
        files / "saes",
        "--n-contexts",
        "60",
        "--k",
        "2",
        "--circuit-examples",
        "4",
        "-q",
        "-o",
        out,
    )
    assert code == 0, err
    circuits = list(out.glob("clusters/*/circuit.json"))
    assert circuits and any(
        n.submodule.startswith("tc_") for c in circuits for n in sfc_plugin.Circuit.from_json(c).nodes if n.submodule
    )
