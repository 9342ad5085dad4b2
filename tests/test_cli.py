"""`sfc discover` end to end on a saved tiny model, config files, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
from conftest import make_model, make_records, make_sae

import sfc_plugin
from sfc_plugin.cli import main
from sfc_plugin.models import save_model


@pytest.fixture
def files(tmp_path, tokenizer):
    save_model(make_model(tokenizer), tmp_path / "model")
    for hook in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.1.hook_attn_out"):
        make_sae(hook).save_model(tmp_path / "saes" / hook)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_records(6)))
    return tmp_path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def base(files, data=None, saes=None):
    return [
        "discover",
        "--model",
        files / "model",
        "--sae",
        saes or files / "saes",
        "--data",
        data or files / "pairs.jsonl",
        "-o",
        files / "out",
        "-q",
    ]


def test_discover_writes_circuit_and_summary(files, capsys):
    code, out, err = run(capsys, *base(files), "--method", "atp", "--node-threshold", "0.02")
    assert code == 0, err
    circuit = sfc_plugin.Circuit.from_json(files / "out" / "circuit.json")
    assert circuit.method == "atp" and circuit.node_threshold == 0.02 and circuit.provenance["n_examples"] == 6
    assert {n.submodule for n in circuit.nodes if n.kind != "metric"} <= {"resid_0", "attn_1", "resid_1"}
    assert "nodes:" in out and "edges:" in out and "total effect" in out and "time:" in out
    assert (files / "out" / "circuit.dot").read_text().startswith("digraph")


def test_config_file_and_command_line_override(files, capsys):
    cfg = files / "run.toml"
    cfg.write_text("method = 'atp'\nnode-threshold = 0.5\nedge_threshold = 0.2\nn_examples = 4\n")
    code, _, err = run(capsys, *base(files), "--config", cfg, "--node-threshold", "0.03")
    assert code == 0, err
    circuit = sfc_plugin.Circuit.from_json(files / "out" / "circuit.json")
    assert (circuit.method, circuit.node_threshold, circuit.edge_threshold) == ("atp", 0.03, 0.2)
    assert circuit.provenance["n_examples"] == 4


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize(
    "case, needle",
    [
        ("unknown_hook", "blocks.0.hook_bogus"),
        ("width", "d_in=8"),
        ("lengths", "the big cats cats near the dog"),
        ("multitoken", "' is are'"),
        ("empty", "no examples"),
        ("method", "'bogus'"),
        ("config_key", "'nodes'"),
        ("corrupt_data", "not JSON"),
    ],
)
def test_bad_input_exits_2_with_one_line(files, capsys, case, needle):
    argv = base(files)
    rec = make_records(2)
    if case == "unknown_hook":
        make_sae("blocks.0.hook_bogus").save_model(files / "bad_sae")
        argv = base(files, saes=files / "bad_sae")
    elif case == "width":
        make_sae("blocks.0.hook_mlp_out", d_in=8).save_model(files / "bad_sae")
        argv = base(files, saes=files / "bad_sae")
    elif case == "lengths":
        rec[1]["patch_prefix"] = "the big cats cats near the dog"
        argv = base(files, data=write(files / "bad.jsonl", rec))
    elif case == "multitoken":
        rec[1]["clean_answer"] = " is are"
        argv = base(files, data=write(files / "bad.jsonl", rec))
    elif case == "empty":
        argv = base(files, data=write(files / "bad.jsonl", []))
    elif case == "method":
        argv += ["--method", "bogus"]
    elif case == "config_key":
        (files / "bad.toml").write_text("nodes = 3\n")
        argv += ["--config", files / "bad.toml"]
    elif case == "corrupt_data":
        (files / "bad.jsonl").write_text('{"clean_prefix": "the cat"\n')
        argv = base(files, data=files / "bad.jsonl")
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sfc: error:") and needle in lines[0], err
    assert not (files / "out" / "circuit.json").exists()


def test_corrupt_circuit_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"schema": "sfc-circuit/1", "nodes": [{"id": 1}]')
    with pytest.raises(sfc_plugin.SFCError, match="not valid JSON"):
        sfc_plugin.Circuit.from_json(bad)
    bad.write_text('{"schema": "sfc-circuit/1", "nodes": [{"id": "a"}], "edges": []}')
    with pytest.raises(sfc_plugin.SFCError, match="corrupt circuit"):
        sfc_plugin.Circuit.from_json(bad)


def test_evaluate_command_writes_report(files, capsys):
    code, _, err = run(capsys, *base(files), "--method", "atp", "--node-threshold", "0.01")
    assert code == 0, err
    circuit = files / "out" / "circuit.json"
    held_out = write(files / "held_out.jsonl", make_records(12)[6:])
    # model and SAEs from the circuit's provenance; the config file's [evaluate] table; held-out pairs
    (files / "eval.toml").write_text("[evaluate]\nablation = 'zero'\nn-thresholds = 4\n")
    code, out, err = run(
        capsys, "evaluate", circuit, "--data", held_out, "--config", files / "eval.toml", "-o", files / "eval", "-q"
    )
    assert code == 0, err
    report = json.loads((files / "eval" / "faithfulness.json").read_text())
    assert report["ablation"] == "zero" and len(report["points"]) >= 4 and report["dataset"] == str(held_out)
    assert report["n_examples"] == 6
    assert "faithfulness" in out and (files / "eval" / "faithfulness.png").exists()
    code, _, err = run(capsys, "evaluate", circuit, "--data", held_out, "--ablation", "nope")
    assert code == 2 and "'nope'" in err


def test_evaluate_refuses_the_discovery_pairs(files, capsys):
    code, _, err = run(capsys, *base(files), "--method", "atp", "--node-threshold", "0.01", "--n-examples", "4")
    assert code == 0, err
    circuit = files / "out" / "circuit.json"
    code, _, err = run(capsys, "evaluate", circuit, "-o", files / "eval", "-q")  # the circuit's own JSON-lines file
    assert code == 2 and "4 of the 6 evaluation pairs" in err and "--allow-overlap" in err and err.count("\n") == 1
    code, _, err = run(
        capsys, "evaluate", circuit, "--allow-overlap", "--n-thresholds", "2", "-o", files / "eval", "-q"
    )
    assert code == 0, err
    mixed = write(files / "mixed.jsonl", make_records(6)[4:] + make_records(12)[6:])  # held out only
    code, _, err = run(capsys, "evaluate", circuit, "--data", mixed, "--n-thresholds", "2", "-o", files / "eval", "-q")
    assert code == 0, err


def test_evaluate_needs_a_recorded_world(files, capsys):
    c = sfc_plugin.Circuit(
        [sfc_plugin.circuit.Node("y", None, None, None, "metric", None, None, 1.0)],
        [],
        1.0,
        "logit_diff",
        "atp",
        None,
        "sum",
        0.1,
        0.01,
        {"model": "somewhere", "dataset": "toy/sva-rc"},
    )
    c.to_json(files / "c.json")
    code, _, err = run(capsys, "evaluate", files / "c.json")
    assert code == 2 and "give --model and --sae" in err


def toy_circuit(path, **prov):
    """A small hand-written circuit on the shipped toy world, with the provenance `sfc discover` records."""
    from sfc_plugin.circuit import Edge, Node

    nodes = [
        Node("y", None, None, None, "metric", None, None, 17.0),
        Node("resid_2/173", "resid_2", "blocks.2.hook_resid_post", 2, "feature", 173, None, 4.9),
        Node("resid_2/err", "resid_2", "blocks.2.hook_resid_post", 2, "error", None, None, 2.0),
    ]
    edges = [Edge("resid_2/173", "y", 4.9), Edge("resid_2/err", "y", 2.0)]
    provenance = {
        "model": "sfc-toy",
        "model_source": "toy",
        "sae_sources": "toy",
        "dataset": "toy/sva-rc",
        "split": "train",
        **prov,
    }
    sfc_plugin.Circuit(nodes, edges, 17.0, "logit_diff", "ig", 10, "sum", 0.5, 0.01, provenance).to_json(path)
    return path


def test_evaluate_defaults_match_discover(tmp_path, capsys):
    """Toy circuit, no options: the toy world, the held-out test split, 40 examples (discover's default)."""
    circuit = toy_circuit(tmp_path / "c.json")
    code, _, err = run(capsys, "evaluate", circuit, "--n-thresholds", "2", "-o", tmp_path / "eval", "-q")
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "faithfulness.json").read_text())
    assert report["n_examples"] == 40 and report["dataset"] == "toy/sva-rc" and report["split"] == "test"
    code, _, err = run(capsys, "evaluate", circuit, "--split", "train", "-o", tmp_path / "eval", "-q")
    assert code == 2 and "discovered on" in err  # older circuits: the same dataset and split


def test_config_tables_per_command(files, capsys):
    from sfc_plugin.config import load_config

    cfg = files / "run.toml"
    cfg.write_text("method = 'atp'\nmodel = 'm'\nbatch-size = 4\n[evaluate]\nablation = 'zero'\n")
    assert load_config(str(cfg), "discover") == {"method": "atp", "model": "m", "batch_size": 4}
    assert load_config(str(cfg), "evaluate") == {"ablation": "zero"}
    cfg.write_text("method = 'atp'\nmodel = 'm'\nbatch-size = 4\nsplit = 'train'\n")
    assert load_config(str(cfg), "evaluate") == {"model": "m", "batch_size": 4}  # shared keys of a discover config
    cfg.write_text("[evaluate]\nmethod = 'atp'\n")
    with pytest.raises(sfc_plugin.SFCError, match="unknown key 'method' in \\[evaluate\\]"):
        load_config(str(cfg), "evaluate")
    cfg.write_text("colour = 'red'\n")
    with pytest.raises(sfc_plugin.SFCError, match="unknown key 'colour'"):
        load_config(str(cfg), "evaluate")


def test_shift_command_with_a_decisions_file_and_edit_report(tmp_path, capsys):
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("id,decision\nresid_2/179,ablate\nresid_2/162,ablate\nembed/47,keep\n")
    code, out, err = run(
        capsys,
        "shift",
        "--judge",
        "file",
        "--decisions",
        decisions,
        "--n-train",
        64,
        "--n-eval",
        64,
        "--steps",
        2,
        "--top-k",
        200,
        "--compare-judge",
        "none",
        "--no-side-effects",
        "-o",
        tmp_path / "shift",
        "-q",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "shift" / "shift.json").read_text())
    assert [r["name"] for r in report["rows"]] == [
        "original",
        "shift",
        "shift_retrain",
        "random",
        "neuron_skyline",
        "feature_skyline",
        "oracle",
    ]
    assert report["rows"][1]["uses"] == ["ambiguous_train", "human_review"] and "train + human" in out
    ablated = {f["id"] for f in report["features"] if f["decision"] == "ablate"}
    assert ablated and ablated <= {"resid_2/179", "resid_2/162"} and report["n_ablated"] == len(ablated)
    assert all(f["judge"].startswith("file:") for f in report["features"])
    edit = json.loads((tmp_path / "shift" / "edit.json").read_text())
    assert {f["id"] for f in edit["features"]} == ablated and "worst group" in out and "side_effects" not in report
    code, out, err = run(
        capsys,
        "edit-report",
        tmp_path / "shift" / "edit.json",
        "--circuit",
        "none",
        "--agreement-data",
        "toy/sva-simple",
        "-o",
        tmp_path / "report",
    )
    assert code == 0, err
    got = json.loads((tmp_path / "report" / "edit-report.json").read_text())
    assert got["edits"]["edit"]["n_features"] == len(ablated) and list(got["original"]["agreement"]) == [
        "toy/sva-simple"
    ]
    assert got["circuit"] is None and "Δloss" in out
    code, _, err = run(
        capsys, "shift", "--judge", "file", "--n-train", 8, "--n-eval", 8, "--steps", 1, "-q", "-o", tmp_path / "shift2"
    )
    assert code == 2 and "decisions file" in err
    code, _, err = run(
        capsys,
        "shift",
        "--spurious-concept",
        tmp_path / "no-such-concept.txt",
        "--n-train",
        8,
        "--n-eval",
        8,
        "--steps",
        1,
        "-q",
        "-o",
        tmp_path / "shift3",
    )
    assert code == 2 and "no-such-concept.txt" in err


def test_python_api_takes_sae_directories(files):
    from sfc_plugin.models import load_model

    model = load_model(files / "model")
    dirs = [str(files / "saes" / h) for h in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")]
    circuit = sfc_plugin.discover(
        model, dirs, str(files / "pairs.jsonl"), method="atp", node_threshold=0.01, progress=False
    )
    assert circuit.provenance["sae_sources"] == dirs
    assert {s["hook"] for s in circuit.provenance["saes"]} == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    everything = sfc_plugin.discover(
        model,
        str(files / "saes"),
        str(files / "pairs.jsonl"),
        method="atp",
        node_threshold=0.01,
        edges=False,
        progress=False,
    )
    assert len(everything.provenance["saes"]) == 3
