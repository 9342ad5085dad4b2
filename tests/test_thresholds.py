"""The documented boundary ``|effect| > threshold``: a node exactly on a threshold is left out everywhere
(discover's selection, ``Circuit.prune``, evaluate), and at threshold 0 only nodes with a non-zero effect stay.

The values here (0.25, 0.5, ...) are exact in binary floating point, so "on the threshold" means equal."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import all_hooks, make_model, make_records, make_saes

import sfc_plugin
from sfc_plugin.attribution.engine import select_nodes
from sfc_plugin.circuit import Circuit, Edge, Node
from sfc_plugin.evaluation import evaluate
from sfc_plugin.splicing import build_submodules


@pytest.fixture(scope="module")
def sub(tokenizer):
    return build_submodules(make_model(tokenizer), make_saes(["blocks.1.hook_resid_post"]))


def test_select_nodes_leaves_out_effects_on_the_threshold(sub):
    feats = {"resid_1": torch.tensor([0.25, -0.25, 0.5, 0.0, 0.25000001, -0.2], dtype=torch.float64)}
    on = select_nodes(sub, feats, {"resid_1": torch.tensor(-0.25, dtype=torch.float64)}, 0.25)["resid_1"]
    assert on.entries() == [(2, None), (4, None)]
    above = select_nodes(sub, feats, {"resid_1": torch.tensor(0.5, dtype=torch.float64)}, 0.25)["resid_1"]
    assert above.entries() == [(2, None), (4, None), (None, None)]
    per_pos = select_nodes(
        sub,
        {"resid_1": torch.tensor([[0.25, 0.5], [-0.25, -0.75]], dtype=torch.float64)},
        {"resid_1": torch.tensor([-0.25, 0.3], dtype=torch.float64)},
        0.25,
        "none",
    )["resid_1"]
    assert per_pos.entries() == [(1, 0), (1, 1), (None, 1)]


def test_select_nodes_at_threshold_zero_keeps_only_non_zero_effects(sub):
    feats = {"resid_1": torch.tensor([0.0, -0.0, 1e-300, -5e-324, 0.0], dtype=torch.float64)}
    picked = select_nodes(sub, feats, {"resid_1": torch.tensor(0.0, dtype=torch.float64)}, 0.0)["resid_1"]
    assert picked.entries() == [(2, None), (3, None)]
    per_pos = select_nodes(
        sub,
        {"resid_1": torch.tensor([[0.0, 1e-300], [-0.0, 0.0]], dtype=torch.float64)},
        {"resid_1": torch.tensor([0.0, -1e-300], dtype=torch.float64)},
        0.0,
        "none",
    )["resid_1"]
    assert per_pos.entries() == [(1, 0), (None, 1)]


@pytest.fixture(scope="module")
def found(tokenizer):
    model, saes, records = make_model(tokenizer), make_saes(all_hooks(2)), make_records(6)
    kw = dict(method="atp", edges=False, progress=False)
    return model, saes, records, kw, sfc_plugin.discover(model, saes, records, node_threshold=0.0, **kw)


def test_discover_at_threshold_zero_keeps_exactly_the_non_zero_effects(found):
    model, saes, _, _, circuit = found
    body = [n for n in circuit.nodes if n.kind != "metric"]
    assert body and all(n.effect != 0 for n in body)
    n_all = sum(s.d_sae + 1 for s in build_submodules(model, saes))
    assert len(body) < n_all  # some features never fire on these prompts: effect exactly 0, left out


@pytest.mark.parametrize("kind", ["feature", "error"])
def test_discover_leaves_out_a_node_on_the_threshold(found, kind):
    model, saes, records, kw, circuit = found
    body = sorted((n for n in circuit.nodes if n.kind != "metric"), key=lambda n: abs(n.effect))
    on = [n for n in body if n.kind == kind][len([n for n in body if n.kind == kind]) // 2]
    t = abs(on.effect)
    again = sfc_plugin.discover(model, saes, records, node_threshold=t, **kw)
    kept = {n.id for n in again.nodes if n.kind != "metric"}
    assert on.id not in kept
    assert kept == {n.id for n in body if abs(n.effect) > t} and kept


def prune_fixture() -> Circuit:
    def node(i, effect, kind="feature"):
        return Node(
            f"resid_0/{'err' if kind == 'error' else i}",
            "resid_0",
            "blocks.0.hook_resid_post",
            0,
            kind,
            None if kind == "error" else i,
            None,
            effect,
        )

    nodes = [
        Node("y", None, None, None, "metric", None, None, 1.0),
        node(0, 0.5),
        node(1, -0.25),
        node(2, 0.25),
        node(3, 0.0),
        node(4, 1.0),
        node(None, -0.25, "error"),
    ]
    edges = [
        Edge("resid_0/0", "y", 0.125),
        Edge("resid_0/4", "y", -0.125),
        Edge("resid_0/1", "y", 0.5),
        Edge("resid_0/3", "y", 0.5),
        Edge("resid_0/err", "y", 0.5),
        Edge("resid_0/4", "resid_0/0", 0.0),
        Edge("resid_0/0", "resid_0/4", 0.25),
    ]
    return Circuit(nodes, edges, 1.0, "logit_diff", "atp", None, "sum", 0.0, 0.0, {})


def test_prune_leaves_out_nodes_and_edges_on_the_thresholds():
    pruned = prune_fixture().prune(0.25, 0.125)
    assert [n.id for n in pruned.nodes] == ["y", "resid_0/0", "resid_0/4"]
    assert [(e.source, e.target) for e in pruned.edges] == [("resid_0/0", "resid_0/4")]


def test_prune_at_zero_keeps_only_non_zero_effects_and_weights():
    pruned = prune_fixture().prune(0.0, 0.0)
    assert "resid_0/3" not in {n.id for n in pruned.nodes} and len(pruned.nodes) == 6
    assert ("resid_0/4", "resid_0/0") not in {(e.source, e.target) for e in pruned.edges} and len(pruned.edges) == 5


def test_evaluate_leaves_out_nodes_on_the_threshold(found):
    model, saes, records, _, circuit = found
    feats = sorted(
        (n for n in circuit.nodes if n.submodule == "resid_1" and n.kind == "feature"), key=lambda n: -abs(n.effect)
    )
    err = next(n for n in circuit.nodes if n.id == "resid_1/err")
    a, b = dataclasses.replace(feats[0], effect=0.5), dataclasses.replace(feats[1], effect=-0.25)
    e, zero = dataclasses.replace(err, effect=0.25), dataclasses.replace(feats[2], effect=0.0)

    def run(nodes, t):
        c = dataclasses.replace(circuit, nodes=[circuit.nodes[0], *nodes], node_threshold=0.0)
        # layer 0 left alone (start_layer=1), so what reaches resid_1 differs between prompts
        return evaluate(model, saes, c, records, thresholds=[t], start_layer=1, progress=False)["points"][0]

    only_a, boundary = run([a], 0.25), run([a, b, e], 0.25)
    assert boundary["n_nodes"] == 1 and boundary["faithfulness"] == pytest.approx(only_a["faithfulness"], abs=1e-12)
    assert boundary["completeness"] == pytest.approx(only_a["completeness"], abs=1e-12)
    below = run([a, b, e], 0.125)  # the two nodes matter once they are inside
    assert below["n_nodes"] == 3 and abs(below["faithfulness"] - only_a["faithfulness"]) > 1e-3
    assert abs(run([a, b], 0.125)["faithfulness"] - below["faithfulness"]) > 1e-3  # the error node alone matters
    at_zero = run([a, zero], 0.0)
    assert at_zero["n_nodes"] == 1 and at_zero["faithfulness"] == pytest.approx(run([a], 0.0)["faithfulness"])
    assert abs(run([a, dataclasses.replace(zero, effect=0.5)], 0.0)["faithfulness"] - at_zero["faithfulness"]) > 1e-3
