"""Faithfulness/completeness computed through the ablation path, checked against hand-written hooks."""

from __future__ import annotations

import pytest
import torch
from conftest import all_hooks, make_model, make_records, make_saes

import sfc_plugin
from sfc_plugin.circuit import Circuit, Node
from sfc_plugin.data import tokenize
from sfc_plugin.evaluation import evaluate, write_report
from sfc_plugin.metrics import logit_diff
from sfc_plugin.splicing import build_submodules


@pytest.fixture
def setup(tokenizer):
    model = make_model(tokenizer)
    saes = make_saes(all_hooks(2))
    records = make_records(6)
    circuit = sfc_plugin.discover(model, saes, records, method="atp", node_threshold=0.0, edges=False, progress=False)
    return model, saes, records, circuit


def with_nodes(circuit, nodes):
    return Circuit(
        [circuit.nodes[0], *nodes],
        [],
        circuit.total_effect,
        circuit.metric,
        circuit.method,
        circuit.steps,
        circuit.aggregation,
        circuit.node_threshold,
        circuit.edge_threshold,
        {},
    )


def test_full_circuit_is_faithful_and_empty_is_not(setup):
    model, saes, records, circuit = setup
    every = [
        Node(f"{s.name}/{j}", s.name, s.hook, s.layer, "feature", j, None, 1.0)
        for s in build_submodules(model, saes)
        for j in range(s.d_sae)
    ]
    every += [
        Node(f"{s.name}/err", s.name, s.hook, s.layer, "error", None, None, 1.0) for s in build_submodules(model, saes)
    ]
    for ablation in ("mean", "zero", "resample"):
        res = evaluate(
            model, saes, with_nodes(circuit, every), records, ablation=ablation, thresholds=[0.0, 2.0], progress=False
        )
        full, empty = res["points"]
        assert full["faithfulness"] == pytest.approx(1.0, abs=1e-9) and full["completeness"] == pytest.approx(
            0.0, abs=1e-9
        )
        assert empty["n_nodes"] == 0 and empty["faithfulness"] == pytest.approx(0.0, abs=1e-9)
        assert empty["completeness"] == pytest.approx(1.0, abs=1e-9)
        assert abs(res["m_full"] - res["m_empty"]) > 1e-3


def test_mean_ablation_matches_a_hand_written_hook(setup):
    model, saes, records, circuit = setup
    subs = build_submodules(model, saes)
    batch = tokenize(model, records)
    # the circuit: the three strongest resid_1 features; everything else mean-ablated (per position)
    keep = sorted(
        (n for n in circuit.nodes if n.submodule == "resid_1" and n.kind == "feature"), key=lambda n: -abs(n.effect)
    )[:3]
    res = evaluate(model, saes, with_nodes(circuit, keep), records, ablation="mean", thresholds=[0.0], progress=False)
    means = {}
    _, cache = model.run_with_cache(batch.patch)
    for s in subs:
        x = cache[s.hook]
        f = s.encode(x)
        means[s.hook] = (f.mean(0), (x - s.decode(f)).mean(0))
    kept = torch.zeros(subs[-1].d_sae, dtype=torch.bool)
    kept[[n.feature for n in keep]] = True
    by_hook = {s.hook: s for s in subs}

    def hook(act, hook):
        s = by_hook[hook.name]
        f = s.encode(act)
        mf, me = means[hook.name]
        f = torch.where(kept, f, mf) if s.name == "resid_1" else mf.expand_as(f)
        return s.decode(f) + me.expand_as(act)

    m_c = logit_diff(model.run_with_hooks(batch.clean, fwd_hooks=[(h, hook) for h in by_hook]), batch).mean().item()
    m_empty = (
        logit_diff(
            model.run_with_hooks(
                batch.clean,
                fwd_hooks=[
                    (
                        h,
                        lambda a, hook: (
                            by_hook[hook.name].decode(means[hook.name][0]) + means[hook.name][1]
                        ).expand_as(a),
                    )
                    for h in by_hook
                ],
            ),
            batch,
        )
        .mean()
        .item()
    )
    m_full = logit_diff(model(batch.clean), batch).mean().item()
    assert res["m_empty"] == pytest.approx(m_empty, abs=1e-9)
    assert res["points"][0]["faithfulness"] == pytest.approx((m_c - m_empty) / (m_full - m_empty), abs=1e-9)


def test_curve_reuses_circuit_effects_without_attribution(setup, monkeypatch, tmp_path):
    model, saes, records, circuit = setup
    import sfc_plugin.attribution.methods as methods

    for name in ("atp", "ig", "exact"):
        monkeypatch.setattr(methods, name, lambda *a, **k: pytest.fail("attribution was recomputed"))
    res = evaluate(model, saes, circuit.prune(0.01), records, n_thresholds=6, progress=False)
    ns = [p["n_nodes"] for p in res["points"]]
    assert len(ns) >= 6 and ns == sorted(ns, reverse=True) and ns[0] == res["circuit"]["n_nodes"]
    assert res["points"][0]["faithfulness"] != res["points"][-1]["faithfulness"]
    paths = write_report(res, tmp_path)
    assert [p.name for p in paths] == ["faithfulness.json", "faithfulness.csv", "faithfulness.png"]
    assert (tmp_path / "faithfulness.png").stat().st_size > 1000


def test_features_only_and_start_layer(setup):
    model, saes, records, circuit = setup
    base = evaluate(model, saes, circuit, records, thresholds=[0.0], progress=False)["points"][0]
    no_err = evaluate(model, saes, circuit, records, thresholds=[0.0], include_errors=False, progress=False)["points"][
        0
    ]
    assert abs(no_err["faithfulness"] - base["faithfulness"]) > 1e-3  # errors ablated even inside C
    # below start_layer nothing is ablated: with start_layer past the last layer, ∅ is the full model
    late = evaluate(model, saes, circuit, records, thresholds=[1e9], start_layer=2, progress=False)
    assert late["m_empty"] == pytest.approx(late["m_full"], abs=1e-12)
    mid = evaluate(model, saes, circuit, records, thresholds=[0.05], start_layer=1, progress=False)["points"][0]
    low = evaluate(model, saes, circuit, records, thresholds=[0.05], progress=False)["points"][0]
    assert mid["completeness"] != pytest.approx(low["completeness"])


def test_thread_policy_is_rechecked_before_each_batch(setup, monkeypatch):
    from sfc_plugin import threads

    model, saes, records, circuit = setup
    calls = []
    monkeypatch.setattr(threads, "recheck", lambda: calls.append(1))
    evaluate(model, saes, circuit, records, thresholds=[0.0], batch_size=2, progress=False)
    n_batches = -(-len(tokenize(model, records)) // 2)
    assert n_batches >= 2 and len(calls) >= 3 * n_batches and len(calls) % n_batches == 0
