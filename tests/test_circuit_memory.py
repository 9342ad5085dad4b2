"""What discovery holds for a circuit: pairs of submodules without a direct path are not stored (absent
means zero for every consumer), and a circuit whose edge weights do not fit the budget is refused."""

from __future__ import annotations

import json

import pytest
from conftest import all_hooks, make_model, make_records, make_saes, z_hooks

import sfc_plugin
from sfc_plugin.attribution.engine import attribute
from sfc_plugin.attribution.methods import ig
from sfc_plugin.attribution.paper_baseline import baseline_discover
from sfc_plugin.budget import MemoryBudget
from sfc_plugin.circuit import Circuit
from sfc_plugin.data import tokenize
from sfc_plugin.errors import SFCError
from sfc_plugin.metrics import logit_diff
from sfc_plugin.splicing import build_submodules

# direct paths in a 2-layer model with SAEs at embed and attn/mlp/resid of each layer (the residual SAE of
# layer 0 cuts every path from below it into layer 1); parallel blocks have no attn -> mlp path
SEQUENTIAL = {
    ("embed", "attn_0"),
    ("embed", "mlp_0"),
    ("embed", "resid_0"),
    ("attn_0", "mlp_0"),
    ("attn_0", "resid_0"),
    ("mlp_0", "resid_0"),
    ("resid_0", "attn_1"),
    ("resid_0", "mlp_1"),
    ("resid_0", "resid_1"),
    ("attn_1", "mlp_1"),
    ("attn_1", "resid_1"),
    ("mlp_1", "resid_1"),
}


def _world(tokenizer, parallel=False, hooks=all_hooks):
    model = make_model(tokenizer, parallel=parallel)
    subs = build_submodules(model, make_saes(hooks(2)))
    return model, subs, tokenize(model, make_records(6))


@pytest.mark.parametrize("parallel, hooks", [(False, all_hooks), (True, all_hooks), (False, z_hooks)])
def test_pairs_without_a_direct_path_are_absent_and_zero(tokenizer, parallel, hooks):
    model, subs, batch = _world(tokenizer, parallel, hooks)
    res = attribute(model, subs, batch, logit_diff, ig, steps=2, node_threshold=0.0, batch_size=4, budget=None)
    assert all(len(ns) for ns in res.nodes.values())  # every submodule has nodes: every pair could be stored
    expected = SEQUENTIAL - ({("attn_0", "mlp_0"), ("attn_1", "mlp_1")} if parallel else set())
    stored = {k for k in res.edges if k[1] != "y"}
    assert stored == expected  # 12 (10) of the 21 ordered pairs, not all of them
    assert not [k for k in res.edges if k[1] == "y"]  # only resid_1 reaches y directly: discover adds its effects
    base = baseline_discover(model, subs, batch, logit_diff, steps=2, batch_size=4, nodes=res.nodes)
    assert len(base["edges"]) > len(res.edges)  # the paper's algorithm stores every pair
    for key, w in base["edges"].items():
        got = res.edges.get(key)
        if got is None:
            assert not bool(w.any()), key  # absent pairs are exactly zero there
        else:
            assert float((got - w).abs().max()) <= 1e-9 * max(float(w.abs().max()), 1e-12), key


def test_direct_paths_cover_what_autograd_gives(tokenizer, monkeypatch):
    """The graph walk the budget counts from finds exactly the pairs stored (and the metric's inputs)."""
    from sfc_plugin.attribution import edges as E

    model, subs, batch = _world(tokenizer)
    seen = []
    real = E.direct_paths
    monkeypatch.setattr(E, "direct_paths", lambda outs, leaves: seen.append(real(outs, leaves)) or seen[-1])
    res = attribute(
        model,
        subs,
        batch,
        logit_diff,
        ig,
        steps=2,
        node_threshold=0.0,
        batch_size=16,
        budget=MemoryBudget.resolve("1GB", model),
    )
    assert len(seen) == 1
    assert {(u, d) for d, ups in seen[0].items() if d != "y" for u in ups} == {k for k in res.edges if k[1] != "y"}
    assert seen[0]["y"] == {"resid_1"}


def test_every_consumer_reads_absent_pairs_as_zero(tokenizer, tmp_path):
    """discover -> circuit.json -> load, prune, DOT, viewer, evaluation: no edge between cut pairs anywhere."""
    from sfc_plugin.evaluation import evaluate
    from sfc_plugin.viewer import build_site

    model, saes, records = make_model(tokenizer), make_saes(all_hooks(2)), make_records(4)
    circuit = sfc_plugin.discover(
        model,
        saes,
        records,
        method="ig",
        steps=2,
        node_threshold=0.0,
        edge_threshold=0.0,
        progress=False,
        max_memory="1GB",
    )
    pairs = {(e.source.split("/")[0], e.target.split("/")[0]) for e in circuit.edges}
    assert pairs == SEQUENTIAL | {("resid_1", "y")}
    path = tmp_path / "circuit.json"
    circuit.to_json(path)
    loaded = Circuit.from_json(path)
    assert json.loads(path.read_text())["edges"] == [vars(e) for e in circuit.edges]
    assert len(loaded.edges) == len(circuit.edges)
    assert loaded.prune(0.0, 0.01).edges and "->" in loaded.to_dot()
    build_site(loaded, tmp_path / "view")
    assert (tmp_path / "view" / "index.html").exists()
    held_out = make_records(6)[len(records) :]
    out = evaluate(model, saes, loaded, held_out, thresholds=[0.0], progress=False)
    assert out["points"] if "points" in out else out


def test_a_circuit_too_big_for_the_budget_says_what_would_fit(tokenizer):
    from sfc_plugin.attribution import edges as E

    model, subs, batch = _world(tokenizer)
    kept = attribute(
        model, subs, batch, logit_diff, ig, steps=2, node_threshold=0.0, edges=False, batch_size=16, budget=None
    ).nodes
    n = sum(len(ns) for ns in kept.values())
    # what this circuit holds, from the stored pairs (a lower bound of the estimate: it adds node deltas)
    weights = sum(len(kept[d]) * len(kept[u]) for u, d in SEQUENTIAL) * 8 * 2
    tight = MemoryBudget.resolve(int(weights * 4 * 0.9), model)  # the circuit may take a quarter of the budget
    with pytest.raises(
        SFCError,
        match=rf"too small for a circuit of {n:,} nodes: its edge weights and node deltas "
        r"need about .*; give at least --max-memory [0-9.]+GB or raise --node-threshold "
        r"\(about [0-9,]+ nodes would fit\)$",
    ):
        attribute(model, subs, batch, logit_diff, ig, steps=2, batch_size=16, budget=tight, nodes=kept)
    paths = {"y": {"resid_1"}, **{d: {u for u, dd in SEQUENTIAL if dd == d} for _, d in SEQUENTIAL}}
    need = E.circuit_bytes(subs, kept, paths, batch.clean.numel(), 8)
    assert need >= weights
    ok = MemoryBudget.resolve(int(need * 4 / 0.6), model)  # room for the circuit and for the cotangent chunks
    res = attribute(model, subs, batch, logit_diff, ig, steps=2, batch_size=16, budget=ok, nodes=kept)
    assert {k for k in res.edges if k[1] != "y"} == SEQUENTIAL


def test_cli_exits_2_with_one_line_for_a_circuit_too_big(capsys, monkeypatch, tmp_path):
    from sfc_plugin.cli import main

    real = MemoryBudget.circuit  # as if every circuit held a million times what it does
    monkeypatch.setattr(MemoryBudget, "circuit", lambda self, held, n, share: real(self, held * 1e6, n, share))
    assert main(["discover", "-q", "--n-examples", "4", "--method", "atp", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too small for a circuit of" in err[0]
