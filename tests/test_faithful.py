"""Faithful by default (issue 23): discover evaluates what it writes, --target-faithfulness, the curve (one point
per node set, standard errors), circuits that do not reach the metric are flagged."""

from __future__ import annotations

import csv
import json
import math

import pytest

from sfc_plugin.circuit import Circuit, Edge, Node
from sfc_plugin.cli import main
from sfc_plugin.clusters.page import render_index
from sfc_plugin.curve import at_threshold, dedupe, describe, smallest_reaching
from sfc_plugin.errors import SFCError
from sfc_plugin.paths import health_warnings, path_to_metric, widest_paths


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- the curve, read back ----------------------------------------------------------------------------------

CURVE = [
    {"node_threshold": 0.1, "n_nodes": 10, "faithfulness": 0.95, "completeness": 0.0},
    {"node_threshold": 0.2, "n_nodes": 7, "faithfulness": 0.85, "completeness": 0.1},
    {"node_threshold": 0.3, "n_nodes": 5, "faithfulness": -0.1, "completeness": 0.2},  # a dip
    {"node_threshold": 0.4, "n_nodes": 3, "faithfulness": 0.82, "completeness": 0.5},
    {"node_threshold": 0.9, "n_nodes": 0, "faithfulness": 0.0, "completeness": 1.0},
]


def test_smallest_reaching_picks_the_fewest_nodes_and_names_the_best_when_none_reach():
    ev = {"curve": CURVE}
    assert smallest_reaching(ev, 0.8)["n_nodes"] == 3  # past the dip
    assert smallest_reaching(ev, 0.9)["n_nodes"] == 10
    with pytest.raises(SFCError, match=r"--target-faithfulness 0.99: .*best is faithfulness 0.950 with 10 nodes"):
        smallest_reaching(ev, 0.99)
    with pytest.raises(SFCError, match="no held-out faithfulness curve"):
        smallest_reaching(None, 0.5)


def test_dedupe_keeps_one_point_per_node_set_the_lowest_threshold():
    points = [{"node_threshold": t, "n_nodes": n} for t, n in [(0.1016, 172), (0.1, 172), (0.13, 153), (0.2, 153)]]
    assert [(p["node_threshold"], p["n_nodes"]) for p in dedupe(points)] == [(0.1, 172), (0.13, 153)]


def test_at_threshold_knows_only_the_node_sets_on_the_curve():
    ev = {"faithfulness": 0.95, "curve": CURVE, "known": True, "data": "d", "split": "test", "n_pairs": 4}
    known = at_threshold(ev, 7, 0.25)
    assert known["known"] and known["faithfulness"] == 0.85 and [p["n_nodes"] for p in known["curve"]] == [7, 5, 3, 0]
    unknown = at_threshold(ev, 6, 0.22)
    assert not unknown["known"] and unknown["faithfulness"] is None
    assert "not on the recorded curve" in describe(unknown) and "nearest: -0.100 with 5 nodes" in describe(unknown)
    assert describe(None).startswith("faithfulness not evaluated")
    assert describe(known).startswith("held-out faithfulness 0.850") and "4 pairs of d, split test" in describe(known)


# ---- paths to the metric and warnings -------------------------------------------------------------------------


def _feat(sub, f, effect, pos=None):
    layer = -1 if sub == "embed" else int(sub.split("_")[1])
    nid = f"{sub}/{f}" + (f"@{pos}" if pos is not None else "")
    return Node(nid, sub, "h", layer, "feature", f, pos, effect)


def _circuit(edges, nodes, **prov):
    y = Node("y", None, None, None, "metric", None, None, 1.0)
    return Circuit([y, *nodes], edges, 1.0, "logit_diff", "ig", 10, "sum", 0.1, 0.01, dict(prov))


def test_widest_path_maximises_the_weakest_edge():
    nodes = [_feat("embed", 0, 1.0), _feat("resid_0", 1, 1.0), _feat("resid_0", 2, 1.0), _feat("resid_1", 3, 1.0)]
    edges = [
        Edge("embed/0", "resid_0/1", 5.0),  # strong first hop, weak later: width 0.1
        Edge("resid_0/1", "y", 0.1),
        Edge("embed/0", "resid_0/2", 0.5),  # width 0.4
        Edge("resid_0/2", "resid_1/3", 0.4),
        Edge("resid_1/3", "y", 3.0),
    ]
    c = _circuit(edges, nodes)
    best = widest_paths([n.id for n in c.nodes], c.edges)
    path = path_to_metric("embed/0", best)
    assert [(e.source, e.target) for e in path] == [
        ("embed/0", "resid_0/2"),
        ("resid_0/2", "resid_1/3"),
        ("resid_1/3", "y"),
    ]
    assert best["embed/0"][0] == 0.4 and "y" in best


def test_a_circuit_that_does_not_reach_the_metric_is_flagged():
    """The constructed disconnected case: nodes linked among themselves, none to y, and the kept nodes carry
    almost none of the effect entering the metric."""
    nodes = [_feat("resid_0", 1, -1.2), _feat("resid_0", 2, -0.9), _feat("mlp_1", 3, 0.2)]
    edges = [Edge("resid_0/1", "mlp_1/3", 0.3), Edge("resid_0/2", "mlp_1/3", 0.2)]
    c = _circuit(edges, nodes, metric_inputs={"submodule": "resid_2", "effect": -4.0})
    warnings = c.warnings = health_warnings(c)
    assert len(warnings) == 2
    assert warnings[0].startswith("no path from any of the 3 nodes to the metric")
    assert "carry 0.0% of the effect reaching the metric (through resid_2)" in warnings[1]
    connected = _circuit(edges + [Edge("mlp_1/3", "y", 0.2)], nodes)
    assert health_warnings(connected) == []
    # the clusters page marks it, escaped
    summary = {
        "config": {
            "corpus": "toy",
            "max_loss": 0.5,
            "algorithm": "kmeans",
            "vectors": "effects",
            "top_k": 8,
            "method": "ig",
            "node_threshold": 0.1,
        },
        "n_contexts": 3,
        "n_clusters": 1,
        "clusters": [
            {
                "id": 0,
                "size": 3,
                "answers": {" the": 3},
                "contexts": [],
                "top_features": [],
                "n_nodes": 3,
                "n_edges": 2,
                "warnings": warnings + ["<b>x</b>"],
            }
        ],
    }
    page = render_index(summary, set())
    assert 'class="warn"' in page and "&#9888; no path from any of the 3 nodes" in page and "(+2 more)" in page
    assert "<b>x</b>" not in page
    # and the figure's title says so
    assert "⚠ no path from any of the 3 nodes" in c.to_dot()


def test_circuit_json_carries_evaluation_and_warnings_and_older_files_load(tmp_path):
    nodes = [_feat("resid_0", 1, 1.0), _feat("resid_0", 2, 0.3), _feat("resid_0", 3, 0.2)]
    c = _circuit([Edge("resid_0/1", "y", 1.0)], nodes)
    old = c.to_dict()
    assert "evaluation" not in old and "warnings" not in old  # optional: absent when there is none
    assert Circuit.from_dict(old).evaluation is None
    c.evaluation = {
        "faithfulness": 0.9,
        "completeness": 0.0,
        "n_nodes": 3,
        "node_threshold": 0.1,
        "known": True,
        "n_pairs": 4,
        "data": "d",
        "split": "test",
        "ablation": "mean",
        "curve": [
            {"node_threshold": 0.1, "n_nodes": 3, "faithfulness": 0.9, "completeness": 0.0},
            {"node_threshold": 0.5, "n_nodes": 1, "faithfulness": 0.7, "completeness": 0.2},
        ],
    }
    c.warnings = ["something"]
    c.to_json(tmp_path / "c.json")
    back = Circuit.from_json(tmp_path / "c.json")
    assert back.evaluation == c.evaluation and back.warnings == ["something"]
    pruned = back.prune(0.5)
    assert pruned.evaluation["faithfulness"] == 0.7 and pruned.evaluation["known"]
    assert "held-out faithfulness 0.700" in pruned.to_dot()
    assert back.prune(0.4).evaluation["faithfulness"] == 0.7  # 1 node, as at 0.5: on the curve
    unknown = back.prune(0.25)  # 2 nodes: not on the curve
    assert not unknown.evaluation["known"] and unknown.evaluation["faithfulness"] is None
    assert "faithfulness at |effect| > 0.25 not on the recorded curve (nearest: 0.700 with 1 node)" in unknown.to_dot()
    for bad, needle in [
        ({"faithfulness": "high"}, "'faithfulness' must be a finite number"),
        ({"curve": [{"node_threshold": 0.1}]}, "'n_nodes' must be an integer"),
        ([], "must be an object"),
    ]:
        with pytest.raises(SFCError, match=needle):
            Circuit.from_dict({**old, "evaluation": bad})
    with pytest.raises(SFCError, match="'warnings' must be a list of strings"):
        Circuit.from_dict({**old, "warnings": [1]})


# ---- sfc discover evaluates what it writes (the toy world) ---------------------------------------------------


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("discover") / "out"
    assert main(["discover", "-q", "-o", str(out)]) == 0
    return out


def test_discover_records_held_out_faithfulness_that_sfc_evaluate_agrees_with(default_run, tmp_path, capsys):
    circuit = Circuit.from_json(default_run / "circuit.json")
    ev = circuit.evaluation
    assert (ev["data"], ev["split"], ev["n_pairs"], ev["ablation"]) == ("toy/sva-rc", "test", 40, "mean")
    assert ev["n_nodes"] == sum(n.kind != "metric" for n in circuit.nodes) == 172 and len(circuit.edges) == 1258
    assert 0.9 < ev["faithfulness"] < 1 and 0 < ev["faithfulness_se"] < 0.05
    assert [p["n_nodes"] for p in ev["curve"]] == sorted({p["n_nodes"] for p in ev["curve"]}, reverse=True)
    code, out, err = run(capsys, "evaluate", default_run / "circuit.json", "-q", "-o", tmp_path / "ev")
    assert code == 0, err
    report = json.loads((tmp_path / "ev" / "faithfulness.json").read_text())
    assert abs(report["circuit"]["faithfulness"] - ev["faithfulness"]) <= 1e-6
    assert abs(report["circuit"]["completeness"] - ev["completeness"]) <= 1e-6
    assert [(p["n_nodes"], round(p["faithfulness"], 9)) for p in report["points"]] == [
        (p["n_nodes"], round(p["faithfulness"], 9)) for p in ev["curve"]
    ]
    rows = list(csv.DictReader((tmp_path / "ev" / "faithfulness.csv").open()))
    assert set(rows[0]) >= {"faithfulness_se", "completeness_se"} and len(rows) == len(ev["curve"])
    assert "held-out faithfulness 0.94" in (default_run / "circuit.dot").read_text()


def test_target_faithfulness_writes_the_smallest_circuit_that_reaches_it(default_run, tmp_path, capsys):
    curve = Circuit.from_json(default_run / "circuit.json").evaluation["curve"]
    want = min((p for p in curve if p["faithfulness"] >= 0.8), key=lambda p: p["n_nodes"])
    code, out, err = run(capsys, "discover", "-q", "--target-faithfulness", "0.8", "-o", tmp_path / "t")
    assert code == 0, err
    circuit = Circuit.from_json(tmp_path / "t" / "circuit.json")
    n = sum(x.kind != "metric" for x in circuit.nodes)
    assert n == want["n_nodes"] < 172 and circuit.node_threshold == want["node_threshold"]
    assert f"{n} nodes, faithfulness {want['faithfulness']:.3f}" in out
    assert circuit.evaluation["target_faithfulness"] == 0.8 and circuit.evaluation["discovery_node_threshold"] == 0.1
    code, _, err = run(capsys, "evaluate", tmp_path / "t" / "circuit.json", "-q", "-o", tmp_path / "tev")
    assert code == 0, err
    got = json.loads((tmp_path / "tev" / "faithfulness.json").read_text())["circuit"]["faithfulness"]
    assert got >= 0.8 and abs(got - circuit.evaluation["faithfulness"]) <= 1e-6
    # export picks the same threshold from the recorded curve
    code, out, err = run(
        capsys, "export", default_run / "circuit.json", "--target-faithfulness", "0.8", "-o", tmp_path / "e.json"
    )
    assert code == 0, err
    assert sum(x.kind != "metric" for x in Circuit.from_json(tmp_path / "e.json").nodes) == n


def test_a_target_never_reached_exits_2_naming_the_best(default_run, tmp_path, capsys):
    code, _, err = run(
        capsys, "export", default_run / "circuit.json", "--target-faithfulness", "0.999", "-o", tmp_path / "x.dot"
    )
    assert code == 2 and "best is faithfulness 0.940 with 172 nodes" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "discover", "-q", "--no-evaluate", "--target-faithfulness", "0.5", "-o", tmp_path / "y")
    assert code == 2 and "drop --no-evaluate" in err


def test_export_title_says_whether_faithfulness_at_the_threshold_is_known(default_run, tmp_path, capsys):
    curve = Circuit.from_json(default_run / "circuit.json").evaluation["curve"]
    on_curve = curve[3]
    for t, needle in [
        (on_curve["node_threshold"], f"held-out faithfulness {on_curve['faithfulness']:.3f}"),
        (0.45, "faithfulness at |effect| > 0.45 not on the recorded curve"),
    ]:
        code, _, err = run(
            capsys, "export", default_run / "circuit.json", "--node-threshold", t, "-o", tmp_path / "f.dot"
        )
        assert code == 0, err
        assert needle in (tmp_path / "f.dot").read_text()


def test_no_evaluate_and_eval_data(default_run, tmp_path, capsys):
    code, out, err = run(capsys, "discover", "-q", "--no-evaluate", "--no-edges", "-o", tmp_path / "n")
    assert code == 0, err
    assert Circuit.from_json(tmp_path / "n" / "circuit.json").evaluation is None and "--no-evaluate" in out
    # a file of held-out pairs; discovery pairs among them are refused
    from sfc_plugin import load_dataset

    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps(r) + "\n" for r in load_dataset("toy/sva-rc", "test")[40:50]))
    code, out, err = run(capsys, "discover", "-q", "--no-edges", "--eval-data", held, "-o", tmp_path / "h")
    assert code == 0, err
    ev = Circuit.from_json(tmp_path / "h" / "circuit.json").evaluation
    assert ev["data"] == str(held) and ev["split"] is None and ev["n_pairs"] == 10
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in load_dataset("toy/sva-rc", "train")[:5]))
    code, _, err = run(capsys, "discover", "-q", "--no-edges", "--eval-data", train, "-o", tmp_path / "o")
    assert code == 2 and "5 of the 5 held-out pairs" in err
    # --data a file without --eval-data: written, not evaluated, and said so
    code, out, err = run(capsys, "discover", "-q", "--no-edges", "--data", train, "-o", tmp_path / "f")
    assert code == 0 and "give --eval-data FILE" in out
    assert Circuit.from_json(tmp_path / "f" / "circuit.json").evaluation is None


def test_standard_errors_are_the_delta_method_across_examples():
    import torch

    from sfc_plugin.evaluation import ratio_se

    torch.manual_seed(0)
    b = 2.0 + torch.rand(200, dtype=torch.float64)
    a = 0.5 * b + 0.1 * torch.randn(200, dtype=torch.float64)
    se = ratio_se(a, b)
    boot = []  # bootstrap over examples agrees
    g = torch.Generator().manual_seed(1)
    for _ in range(400):
        i = torch.randint(0, 200, (200,), generator=g)
        boot.append(float(a[i].mean() / b[i].mean()))
    assert se == pytest.approx(float(torch.tensor(boot).std()), rel=0.15)
    assert ratio_se(a[:1], b[:1]) is None and math.isfinite(se)
