"""Behaviours no test pinned until a mutant changed them and the suite stayed green (docs/testing.md lists the
mutation run). Each test names the contract it holds; none reads the code it checks."""

from __future__ import annotations

import pytest
import torch
from conftest import all_hooks, make_model, make_records, make_saes

from sfc_plugin.attribution.context import AttributionContext, NodeEffects, prepare
from sfc_plugin.attribution.engine import zero_ablation
from sfc_plugin.data import tokenize
from sfc_plugin.metrics import logit_diff, logprob
from sfc_plugin.splicing import activations, build_submodules


@pytest.fixture(scope="module")
def tiny(tokenizer):
    model = make_model(tokenizer)
    subs = build_submodules(model, make_saes(all_hooks(2)))
    return model, subs


def clean_only(n):
    return [{"clean_prefix": r["clean_prefix"], "clean_answer": r["clean_answer"]} for r in make_records(n)]


def test_zero_ablation_sums_a_plugin_methods_per_position_effects_over_positions(tiny):
    model, subs = tiny
    batch = tokenize(model, clean_only(3))
    B, T = batch.clean.shape

    def per_position(ctx):  # effect = position index + 1, per example, position and feature
        pos = torch.arange(1, T + 1, dtype=torch.float64)
        feats = {s.name: pos[None, :, None].expand(B, T, s.d_sae).clone() for s in ctx.submodules}
        return NodeEffects(feats, {s.name: pos[None, :].expand(B, T).clone() for s in ctx.submodules})

    def summed(ctx):  # already summed over positions: left as it is
        return NodeEffects(
            {s.name: torch.full((B, s.d_sae), 2.0, dtype=torch.float64) for s in ctx.submodules},
            {s.name: torch.full((B,), 3.0, dtype=torch.float64) for s in ctx.submodules},
        )

    eff = zero_ablation(model, subs, batch, logprob, per_position)
    want = T * (T + 1) / 2
    for s in subs:
        assert eff.features[s.name].shape == (B, s.d_sae) and eff.errors[s.name].shape == (B,)
        assert torch.all(eff.features[s.name] == want) and torch.all(eff.errors[s.name] == want)
    total = zero_ablation(model, subs, batch, logprob, summed, sum_examples=True)
    for s in subs:
        assert torch.all(total.features[s.name] == 2.0 * B) and float(total.errors[s.name]) == 3.0 * B


def test_zero_ablation_ig_defaults_to_ten_steps(tiny):
    model, subs = tiny
    batch = tokenize(model, clean_only(2))
    default = zero_ablation(model, subs, batch, logprob, "ig")
    ten = zero_ablation(model, subs, batch, logprob, "ig", steps=10)
    nine = zero_ablation(model, subs, batch, logprob, "ig", steps=9)
    for s in subs:
        assert torch.equal(default.features[s.name], ten.features[s.name])
    assert not torch.allclose(default.features["resid_1"], nine.features["resid_1"])


def test_submodules_past_what_a_custom_forward_reads_have_zero_effect(tiny):
    """A forward that stops at block 0 (as SHIFT's probe does) never reaches later submodules: their effects are 0,
    and the gradient pass does not fail on them."""
    model, subs = tiny
    batch = tokenize(model, clean_only(3))

    def forward(tokens, fwd_hooks, b):
        seen = {}
        hooks = fwd_hooks + [("blocks.0.hook_resid_post", lambda act, hook: seen.setdefault("x", act))]
        model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=1)
        return seen["x"][torch.arange(len(tokens)), b.last].sum(-1)

    for method in ("atp", "ig"):
        eff = zero_ablation(model, subs, batch, lambda out, b: out, method, steps=2, forward=forward)
        for s in subs:
            late = s.layer >= 1
            assert bool(eff.features[s.name].abs().max() == 0) == late, (method, s.name)
            assert bool(eff.errors[s.name].abs().max() == 0) == late, (method, s.name)


@pytest.mark.parametrize("aggregation", ["sum", "none"])
def test_sparse_per_example_effects_equal_the_dense_computation(tiny, aggregation):
    """A method's per-example effects from a prepared (sparse) context are those of dense activations: what a plugin
    method that reads effects per example relies on, though the engine only ever sums them."""
    model, subs = tiny
    records = [r for r in make_records(8) if len(r["clean_prefix"].split()) == 6][:3]
    batch = tokenize(model, records)
    ctx = prepare(model, subs, batch, logit_diff, aggregation=aggregation)
    g = ctx.gradients([0.0])
    dense = AttributionContext(
        model, subs, batch, logit_diff, activations(model, subs, batch.clean), activations(model, subs, batch.patch)
    )
    dense.aggregation = aggregation
    sparse_eff, dense_eff = ctx.effects_from_grads(g), dense.effects_from_grads(g)
    for s in subs:
        got = sparse_eff.features[s.name].to_dense()
        want = dense_eff.features[s.name]
        want = want.sum(1) if aggregation == "sum" else want
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-10), s.name
        assert torch.allclose(sparse_eff.errors[s.name], dense_eff.errors[s.name], atol=1e-10)
    assert float(want.abs().max()) > 1e-3


def test_prepare_defaults_to_ten_ig_steps(tiny):
    model, subs = tiny
    batch = tokenize(model, make_records(2))
    assert prepare(model, subs, batch, logit_diff).steps == 10


@pytest.mark.parametrize("aggregation", ["sum", "none"])
def test_exact_patches_a_feature_at_every_position_or_at_one(tokenizer, aggregation):
    """``exact`` upstream of nonlinearities: with ``sum`` a feature is patched at all positions at once, with
    ``none`` at one position; both against a hand-written hook."""
    import sfc_plugin

    model = make_model(tokenizer)
    hook = "blocks.0.hook_resid_post"
    saes = make_saes([hook])
    records = [r for r in make_records(8) if len(r["clean_prefix"].split()) == 6][:3]
    circuit = sfc_plugin.discover(
        model, saes, records, method="exact", aggregation=aggregation, node_threshold=0.0, edges=False, progress=False
    )
    batch = tokenize(model, records)
    _, c = model.run_with_cache(batch.clean)
    _, p = model.run_with_cache(batch.patch)
    sae = saes[hook]
    m0 = logit_diff(model(batch.clean), batch)
    nodes = sorted((n for n in circuit.nodes if n.kind == "feature"), key=lambda n: -abs(n.effect))[:3]
    assert nodes
    for n in nodes:
        shift = (sae.encode(p[hook]) - sae.encode(c[hook]))[..., n.feature, None] * sae.W_dec[n.feature]
        if n.position is not None:
            keep = torch.zeros(shift.shape[1], dtype=torch.bool)
            keep[n.position] = True
            shift = shift * keep[None, :, None]
        m = logit_diff(model.run_with_hooks(batch.clean, fwd_hooks=[(hook, lambda act, hook: act + shift)]), batch)
        assert n.effect == pytest.approx((m - m0).mean().item(), abs=1e-9), n.id
    err = next(n for n in circuit.nodes if n.kind == "error")
    assert (err.position is not None) == (aggregation == "none")
    # every feature that changes somewhere is a candidate (per position with ``none``): all of them are there
    changed = (sae.encode(p[hook]) != sae.encode(c[hook])).any(0)  # [pos, F]
    want = (
        {f"resid_0/{j}@{t}" for t, j in changed.nonzero().tolist()}
        if aggregation == "none"
        else {f"resid_0/{j}" for j in changed.any(0).nonzero().flatten().tolist()}
    )
    assert {n.id for n in circuit.nodes if n.kind == "feature"} == want


def test_exact_runs_a_feature_whose_change_is_exactly_one(tokenizer):
    """A feature whose activation changes by exactly 1.0 at one position in every example is a candidate like any
    other changed feature (not mistaken for an unchanged one): its effect equals a hand-written hook adding 1.0 times
    its decoder row there; every other node is unchanged and has effect exactly 0."""
    from dataclasses import replace

    from sfc_plugin.attribution.methods import exact

    model = make_model(tokenizer)
    hook = "blocks.0.hook_resid_post"
    sae = make_saes([hook])[hook]
    subs = build_submodules(model, {hook: sae})
    s = subs[0]
    records = [r for r in make_records(8) if len(r["clean_prefix"].split()) == 6][:3]
    batch = tokenize(model, records)
    clean = activations(model, subs, batch.clean)[s.name]
    t = batch.clean.shape[1] - 1
    j = int(next(k for k in range(clean.f.shape[-1]) if bool((clean.f[:, t, k] == 0).all())))
    f = clean.f.clone()
    f[:, t, j] = 1.0  # patch - clean is exactly 1.0 at (t, j) in every example, 0 everywhere else
    ctx = AttributionContext(model, subs, batch, logit_diff, {s.name: clean}, {s.name: replace(clean, f=f)})
    ctx.aggregation = "none"
    eff = exact(ctx)
    shift = torch.zeros(batch.clean.shape[1], sae.W_dec.shape[1])
    shift[t] = sae.W_dec[j]
    with torch.no_grad():
        m0 = logit_diff(model(batch.clean), batch)
        m = logit_diff(model.run_with_hooks(batch.clean, fwd_hooks=[(hook, lambda act, hook: act + shift)]), batch)
    got = eff.features[s.name]
    assert float((m - m0).abs().min()) > 1e-4
    assert torch.allclose(got[:, t, j], m - m0, atol=1e-6)
    got[:, t, j] = 0
    assert bool((got == 0).all()) and bool((eff.errors[s.name] == 0).all())


def test_resid_edges_without_an_attention_sae_take_the_path_through_attention(tokenizer):
    """SAEs at resid_0, mlp_1 and resid_1 but none on attention: resid_0 → resid_1 also runs through attention
    (no submodule there), so it is not the closed-form sum; it must still match a direct intervention."""
    from test_attribution import atp_world, direct_edge, parse

    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]
    model, circuit, batch, c, p, subs = atp_world(tokenizer, hooks)
    group = [e for e in circuit.edges if e.source.startswith("resid_0/") and e.target.startswith("resid_1/")]
    picks = sorted(group, key=lambda e: -abs(e.weight))[:2] + [e for e in group if e.source == "resid_0/err"][:1]
    for e in picks:
        (up, un), (down, dn) = parse(e.source), parse(e.target)
        want = direct_edge(model, subs, batch, c, p, up, down, un, dn)
        assert e.weight == pytest.approx(want, rel=1e-4, abs=1e-7), (e.source, e.target)
    assert max(abs(e.weight) for e in picks) > 1e-3


def test_edge_effects_without_a_budget_equal_those_with_one(tiny):
    from sfc_plugin.attribution.edges import edge_effects
    from sfc_plugin.attribution.engine import select_nodes
    from sfc_plugin.budget import MemoryBudget

    model, subs = tiny
    batch = tokenize(model, make_records(4))
    clean, patch = activations(model, subs, batch.clean), activations(model, subs, batch.patch)
    ctx = AttributionContext(model, subs, batch, logit_diff, clean, patch)
    grads = ctx.gradients([0.0])
    eff = ctx.effects_from_grads(grads)
    nodes = select_nodes(
        subs,
        {k: v.sum((0, 1)) for k, v in eff.features.items()},
        {k: v.sum((0, 1)) for k, v in eff.errors.items()},
        0.05,
    )
    plain = edge_effects(model, subs, batch, logit_diff, clean, patch, grads, nodes)
    budgeted = edge_effects(
        model, subs, batch, logit_diff, clean, patch, grads, nodes, budget=MemoryBudget.resolve("1GB", model)
    )
    assert plain.keys() == budgeted.keys() and len(plain) > 5
    for k in plain:
        assert torch.allclose(plain[k], budgeted[k], atol=1e-10), k


def test_a_submodule_made_without_ln_in_does_not_scale_features(tokenizer):
    """``Submodule``'s documented default: ``ln_in=False``, features are the SAE's own."""
    from sfc_plugin.splicing import Submodule

    sae = make_saes(["blocks.0.hook_resid_post"])["blocks.0.hook_resid_post"]
    sub = Submodule("resid_0", "blocks.0.hook_resid_post", 0, sae, sae.W_enc, sae.W_dec, sae.b_dec)
    x = torch.randn(2, 3, 16, dtype=torch.float64) * 3
    assert not sub.ln_in and torch.equal(sub.encode(x), sae.encode(x))


def test_splice_on_a_frozen_model_gives_error_terms_their_gradients(tokenizer):
    """With every parameter frozen nothing upstream requires grad: the splice makes ``f`` and ``ε`` leaves, and
    their gradients are ``W_dec ∇_x m`` and ``∇_x m``."""
    from sfc_plugin import splice

    model = make_model(tokenizer)
    saes = make_saes(["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"])
    batch = tokenize(model, make_records(4))
    want = {}
    for hook in saes:
        leaf = {}

        def add(act, hook):
            leaf["x"] = torch.zeros_like(act, requires_grad=True)
            return act + leaf["x"]

        logits = model.run_with_hooks(batch.clean, fwd_hooks=[(hook, add)])
        want[hook] = torch.autograd.grad(logit_diff(logits, batch).sum(), leaf["x"])[0]
    for p in model.parameters():
        p.requires_grad_(False)
    with splice(model, saes) as state:
        logit_diff(model(batch.clean), batch).sum().backward()
    for hook, sae in saes.items():
        err, f = state.errors[hook], state.features[hook]
        assert err.grad is not None and torch.allclose(err.grad, want[hook], atol=1e-10), hook
        assert torch.allclose(f.grad, want[hook] @ sae.W_dec.T, atol=1e-10), hook


def test_splice_refuses_an_sae_with_non_finite_weights(tokenizer):
    from sfc_plugin import splice
    from sfc_plugin.errors import SFCError

    model = make_model(tokenizer)
    saes = make_saes(["blocks.0.hook_resid_post"])
    with torch.no_grad():
        saes["blocks.0.hook_resid_post"].W_dec[3, 1] = float("nan")
    with pytest.raises(SFCError, match=r"blocks\.0\.hook_resid_post.*W_dec"):
        with splice(model, saes):
            pass


# --- discover's circuit record and evaluate's options ----------------------------------------------------------------


@pytest.fixture(scope="module")
def discovered(tokenizer):
    import sfc_plugin

    model, saes = make_model(tokenizer), make_saes(all_hooks(2))
    records = [r for r in make_records(12) if len(r["clean_prefix"].split()) == 6][:4]
    kw = dict(method="atp", node_threshold=0.0, edges=False, progress=False)
    return model, saes, records, sfc_plugin.discover(model, saes, records, aggregation="none", **kw), kw


def test_the_metric_node_carries_the_total_effect(discovered, tokenizer):
    import sfc_plugin

    model, saes, records, circuit, kw = discovered
    batch = tokenize(model, records)
    want = (logit_diff(model(batch.patch), batch) - logit_diff(model(batch.clean), batch)).mean().item()
    assert (
        circuit.node("y").effect == pytest.approx(want, abs=1e-10) and circuit.total_effect == circuit.node("y").effect
    )
    zero = sfc_plugin.discover(model, saes, clean_only(2), **kw)
    assert zero.node("y").effect is None and zero.total_effect is None


def test_token_labels_are_recorded_for_per_position_circuits_only(discovered):
    import sfc_plugin

    model, saes, records, circuit, kw = discovered
    ids = tokenize(model, records[:1]).clean[0].tolist()
    assert circuit.provenance["tokens"] == [model.tokenizer.decode([t]) for t in ids]
    assert "tokens" not in sfc_plugin.discover(model, saes, records, **kw).provenance


def test_evaluate_a_per_position_circuit_against_a_hand_written_hook(discovered):
    """Kept (feature, position) nodes of mlp_1 and resid_1 (layer 1 reaches the metric only at the last position);
    everything else in layer 1 mean-ablated per position, against a hook that does so by hand."""
    import dataclasses

    from sfc_plugin.evaluation import evaluate

    model, saes, records, circuit, _ = discovered
    keep = []
    for sub in ("mlp_1", "resid_1"):
        body = [n for n in circuit.nodes if n.submodule == sub and n.kind == "feature"]
        keep += sorted(body, key=lambda n: -abs(n.effect))[:3]
    small = dataclasses.replace(circuit, nodes=[circuit.nodes[0], *keep])
    res = evaluate(model, saes, small, records, thresholds=[0.0], start_layer=1, progress=False)
    batch = tokenize(model, records)
    _, cache = model.run_with_cache(batch.patch)
    layer1 = {
        "blocks.1.hook_attn_out": "attn_1",
        "blocks.1.hook_mlp_out": "mlp_1",
        "blocks.1.hook_resid_post": "resid_1",
    }
    means, kept = {}, {}
    for h in layer1:
        f = saes[h].encode(cache[h])
        means[h] = (f.mean(0), (cache[h] - saes[h].decode(f)).mean(0))  # per position: the prompts have one length
        kept[h] = torch.zeros_like(means[h][0], dtype=torch.bool)  # [pos, F]
        for n in keep:
            if n.submodule == layer1[h]:
                kept[h][n.position, n.feature] = True

    def hook(act, hook):
        sae, (mf, me) = saes[hook.name], means[hook.name]
        return sae.decode(torch.where(kept[hook.name], sae.encode(act), mf)) + me

    m_c = logit_diff(model.run_with_hooks(batch.clean, fwd_hooks=[(h, hook) for h in layer1]), batch).mean().item()
    m_full = logit_diff(model(batch.clean), batch).mean().item()
    want = (m_c - res["m_empty"]) / (m_full - res["m_empty"])
    assert res["points"][0]["n_nodes"] == len(keep) == 6
    assert res["points"][0]["faithfulness"] == pytest.approx(want, abs=1e-9) and abs(want) > 1e-3


def test_default_thresholds_are_log_spaced_over_the_circuits_effects(discovered):
    import math

    from sfc_plugin.evaluation import evaluate

    model, saes, records, circuit, _ = discovered
    small = circuit.prune(0.01)
    res = evaluate(model, saes, small, records, n_thresholds=5, progress=False)
    effects = [abs(n.effect) for n in small.nodes if n.kind != "metric"]
    lo, hi = max(0.01, min(effects) * 0.999, 1e-6), max(effects)
    tried = sorted({lo * (hi / lo) ** (i / 4) for i in range(5)} | {0.01})  # log-spaced, and the circuit's own
    lowest = {}  # one point per node set, at the lowest threshold giving it
    for t in tried:
        lowest.setdefault(sum(e > t for e in effects), t)
    want = sorted((t, n) for n, t in lowest.items())
    got = [(p["node_threshold"], p["n_nodes"]) for p in res["points"]]
    assert [n for _, n in got] == [n for _, n in want] and len(got) >= 4
    assert [t for t, _ in got] == pytest.approx([t for t, _ in want], rel=1e-12)
    assert math.isclose(got[-1][0], hi) and got[-1][1] == 0


def test_evaluate_refuses_other_saes_unless_forced(discovered):
    from sfc_plugin.errors import SFCError
    from sfc_plugin.evaluation import evaluate

    model, saes, records, circuit, _ = discovered
    other = {h: make_saes([h], d_in=16)[h] for h in saes}  # same shapes, other weights
    for sae in other.values():
        with torch.no_grad():
            sae.W_dec.mul_(1.5)
    with pytest.raises(SFCError, match="force"):
        evaluate(model, other, circuit, records, thresholds=[1.0], progress=False)
    forced = evaluate(model, other, circuit, records, thresholds=[1.0], force=True, progress=False)
    assert forced["provenance_check"]["status"] == "forced"


def test_evaluate_uses_the_circuits_metric_by_default(discovered):
    import dataclasses

    from sfc_plugin.evaluation import evaluate

    model, saes, records, circuit, _ = discovered
    as_logprob = dataclasses.replace(circuit, metric="logprob")
    res = evaluate(model, saes, as_logprob, records, thresholds=[1.0], progress=False)
    batch = tokenize(model, records)
    assert res["m_full"] == pytest.approx(logprob(model(batch.clean), batch).mean().item(), abs=1e-10)


def test_evaluate_refuses_a_metric_that_is_not_finite_under_ablation(discovered):
    from sfc_plugin.errors import SFCError
    from sfc_plugin.evaluation import evaluate
    from sfc_plugin.plugins import lookup

    model, saes, records, circuit, _ = discovered

    def poisoned(model, subs, batch):  # mean ablation with one SAE's mean error made infinite
        out = lookup("ablation", "mean")(model, subs, batch)
        out["resid_1"].err = torch.full_like(out["resid_1"].err, float("inf"))
        return out

    with pytest.raises(SFCError, match="not finite"):
        evaluate(model, saes, circuit, records, ablation=poisoned, thresholds=[1.0], progress=False)


def test_the_text_table_ends_with_the_circuits_own_point(discovered):
    from sfc_plugin.evaluation import evaluate, format_table

    model, saes, records, circuit, _ = discovered
    res = evaluate(model, saes, circuit.prune(0.05), records, thresholds=[0.05, 0.2], progress=False)
    last = format_table(res).splitlines()[-1]
    c = res["circuit"]
    assert last.startswith(f"circuit: {c['n_nodes']} nodes, faithfulness {c['faithfulness']:.3f}")
    assert f"completeness {c['completeness']:.3f}" in last and f"{len(records)} examples" in last


def test_the_faithfulness_figure_draws_both_curves(discovered, tmp_path):
    """Both curves are drawn: the figure holds pixels of matplotlib's first two line colours (C0 and C1)."""
    import matplotlib.image

    from sfc_plugin.evaluation import evaluate, write_report

    model, saes, records, circuit, _ = discovered
    res = evaluate(model, saes, circuit.prune(0.01), records, n_thresholds=5, progress=False)
    write_report(res, tmp_path)
    img = torch.tensor(matplotlib.image.imread(tmp_path / "faithfulness.png"))[..., :3]
    for rgb in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
        near = ((img - torch.tensor(rgb) / 255).abs().max(-1).values < 0.02).sum()
        assert int(near) > 200, rgb


def test_mean_ablation_over_more_examples_than_one_chunk(tiny):
    """72 examples (the means accumulate over chunks of 64): the same means as the 12 distinct examples alone."""
    from sfc_plugin.plugins import lookup

    model, subs = tiny
    distinct = [r for r in make_records(24) if r["clean_answer"] == " is"]
    mean = lookup("ablation", "mean")
    many = mean(model, subs, tokenize(model, distinct * 6))
    few = mean(model, subs, tokenize(model, distinct))
    for s in subs:
        assert torch.allclose(many[s.name].f, few[s.name].f, atol=1e-10), s.name
        assert torch.allclose(many[s.name].err, few[s.name].err, atol=1e-10), s.name


# --- circuit files, the SHIFT table, edits ---------------------------------------------------------------------------


def test_circuit_from_dict_refuses_bad_tops_naming_them():
    from sfc_plugin.circuit import Circuit
    from sfc_plugin.errors import SFCError

    with pytest.raises(SFCError, match=r"not an sfc-circuit/1 circuit \(schema 'list'\)"):
        Circuit.from_dict([])
    with pytest.raises(SFCError, match=r"\(schema 'sfc-circuit/9'\)"):
        Circuit.from_dict({"schema": "sfc-circuit/9"})
    good = {
        "schema": "sfc-circuit/1",
        "nodes": [],
        "edges": [],
        "metric": "m",
        "method": "atp",
        "aggregation": "sum",
        "node_threshold": 0.1,
        "edge_threshold": 0.01,
    }
    assert Circuit.from_dict(good).steps is None and Circuit.from_dict({**good, "steps": 1}).steps == 1
    with pytest.raises(SFCError, match="'steps' must be a positive integer"):
        Circuit.from_dict({**good, "steps": 0})
    with pytest.raises(SFCError, match="negative threshold -0.1"):
        Circuit.from_dict({**good, "node_threshold": -0.1})
    with pytest.raises(SFCError, match="negative threshold -0.5"):
        Circuit.from_dict({**good, "edge_threshold": -0.5})


def test_accuracy_rows_from_hand_counted_predictions():
    """Eight examples in four (intended, spurious) groups; the probe's logit is given per example."""
    from sfc_plugin.shifting.probe import accuracy_row
    from sfc_plugin.shifting.records import Labelled

    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1], dtype=torch.float32)
    z = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1], dtype=torch.float32)
    logit = torch.tensor([-1.0, -2.0, 3.0, -1.0, 2.0, -1.0, 1.0, 1.0])
    # predictions 0,0,1,0 | 1,0,1,1: groups (0,0) 2/2, (0,1) 1/2, (1,0) 1/2, (1,1) 2/2
    probe = torch.nn.Linear(1, 1)
    with torch.no_grad():
        probe.weight.fill_(1.0)
        probe.bias.zero_()
    row = accuracy_row("x", probe, logit[:, None], Labelled(None, y, z))
    assert row == {"name": "x", "profession_acc": 6 / 8, "gender_acc": 6 / 8, "worst_group_acc": 0.5}
    only_two = accuracy_row("x", probe, logit[:4, None], Labelled(None, y[:4], z[:4]))
    assert only_two["worst_group_acc"] == 0.5 and only_two["profession_acc"] == 3 / 4


def test_worst_group_accuracy_is_the_worst_over_every_non_empty_group():
    """The worst group is one with intended label 1 and spurious label 0, so it is found only by going over both
    labels of both attributes; without the (1, 1) group it is still found, and the empty group is not counted."""
    from sfc_plugin.shifting.probe import accuracy_row
    from sfc_plugin.shifting.records import Labelled

    probe = torch.nn.Linear(1, 1)
    with torch.no_grad():
        probe.weight.fill_(1.0)
        probe.bias.zero_()
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], dtype=torch.float32)
    z = torch.tensor([0, 0, 1, 1, 0, 0, 0, 0, 1, 1], dtype=torch.float32)
    logit = torch.tensor([-1.0, -1.0, -1.0, -1.0, 1.0, -1.0, -1.0, -1.0, 1.0, -1.0])
    # groups (0,0) 2/2, (0,1) 2/2, (1,0) 1/4, (1,1) 1/2
    assert accuracy_row("x", probe, logit[:, None], Labelled(None, y, z))["worst_group_acc"] == 0.25
    # without the (1,1) group: (0,0) 2/2, (0,1) 2/2, (1,0) 1/4
    assert accuracy_row("x", probe, logit[:8, None], Labelled(None, y[:8], z[:8]))["worst_group_acc"] == 0.25


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pydot")
def test_edges_are_drawn_in_the_documented_colours():
    """docs/viewers.md: Okabe–Ito blue (#0072B2) for positive weights, vermillion (#D55E00) for negative, dashed;
    the strongest edges opaque."""
    import pydot

    from sfc_plugin.circuit import Circuit, Edge, Node

    nodes = [
        Node("y", None, None, None, "metric", None, None, 1.0),
        Node("resid_0/3", "resid_0", "blocks.0.hook_resid_post", 0, "feature", 3, None, 0.5),
        Node("resid_0/4", "resid_0", "blocks.0.hook_resid_post", 0, "feature", 4, None, -0.5),
    ]
    edges = [Edge("resid_0/3", "y", 0.8), Edge("resid_0/4", "y", -0.8)]
    dot = Circuit(nodes, edges, 1.0, "logit_diff", "atp", 10, "sum", 0.1, 0.01, {}).to_dot()
    graph = pydot.graph_from_dot_data(dot)[0]
    drawn = {
        (e.get_source().strip('"'), e.get_attributes().get("style")): e.get("color").strip('"').lower()
        for g in [graph, *graph.get_subgraphs()]
        for e in g.get_edges()
        if e.get("style") != "invis"  # the layout's row edges
    }
    assert drawn == {("resid_0/3", None): "#0072b2ff", ("resid_0/4", "dashed"): "#d55e00ff"}


@pytest.fixture
def edit_world(tokenizer):
    from sfc_plugin.shifting.edit import FeatureEdit

    model = make_model(tokenizer)
    subs = {s.name: s for s in build_submodules(model, make_saes(["blocks.0.hook_resid_post"]))}
    return model, subs, FeatureEdit(subs, ablate={"resid_0": [1, 4, 9]})


def test_an_edit_attaches_and_detaches_again_and_again(edit_world, tokenizer):
    model, _, edit = edit_world
    tokens = tokenize(model, make_records(2)).clean
    plain = model(tokens)
    with edit.applied(model):
        edited = model(tokens)
    assert (edited - plain).abs().max() > 1e-6
    for _ in range(2):
        edit.attach(model)
        assert torch.allclose(model(tokens), edited, atol=1e-12)
        edit.detach(model)
        assert torch.equal(model(tokens), plain)
    edit.detach(model)  # nothing attached: nothing to remove
    assert torch.equal(model(tokens), plain)


def test_an_edit_recording_only_the_model_is_checked_on_first_use(edit_world, tmp_path):
    from sfc_plugin.fingerprints import model_fingerprint
    from sfc_plugin.shifting.edit import FeatureEdit

    model, subs, edit = edit_world
    edit.provenance = {"model_fingerprint": model_fingerprint(model)}
    edit.to_json(tmp_path / "e.json")
    loaded = FeatureEdit.from_json(tmp_path / "e.json", subs)
    assert loaded.provenance_check == {"status": "match"}
    edit.provenance = {}
    edit.to_json(tmp_path / "bare.json")
    bare = FeatureEdit.from_json(tmp_path / "bare.json", subs)
    assert bare.provenance_check["status"].startswith("unchecked")


def test_a_misconfigured_judge_fails_before_any_attribution(monkeypatch):
    import sfc_plugin
    from sfc_plugin import toy
    from sfc_plugin.errors import SFCError
    from sfc_plugin.shifting import pipeline

    model, saes = toy.load()
    bios = {s: sfc_plugin.load_dataset("toy/bios", s)[:8] for s in ("train", "val", "test")}

    def broken(features, context):
        raise SFCError("judge misconfigured")

    broken.uses = ()
    monkeypatch.setattr(pipeline, "attribute", lambda *a, **k: pytest.fail("attribution ran before the judge check"))
    with pytest.raises(SFCError, match="judge misconfigured"):
        pipeline.shift(model, saes, bios["train"], bios["test"], bios["val"], judge=broken, progress=False)


def test_provenance_lists_sae_sources_only_for_saes_loaded_from_specs(tokenizer):
    """``sae_sources`` names the specs SAEs were loaded from (release:id or path); SAEs passed as objects have none,
    and a result made only from such SAEs records no ``sae_sources`` at all."""
    from sfc_plugin.fingerprints import world_provenance

    model = make_model(tokenizer)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    saes = make_saes(hooks)
    subs = build_submodules(model, saes)
    assert "sae_sources" not in world_provenance(model, subs)
    saes[hooks[1]].sfc_spec = {"release": "some-release", "sae_id": "blocks.1"}
    assert world_provenance(model, subs)["sae_sources"] == ["some-release:blocks.1"]


def test_fingerprint_check_compares_the_model_only_when_both_sides_have_one(tokenizer):
    """A record with SAE fingerprints but no model fingerprint (an older result) checks the SAEs alone; ``model=None``
    (a use that has no model to compare) skips the model; a different model is still caught."""
    from sfc_plugin.fingerprints import check, world_provenance

    model = make_model(tokenizer)
    hooks = ["blocks.0.hook_resid_post"]
    saes = make_saes(hooks)
    prov = world_provenance(model, build_submodules(model, saes))
    sae_only = {k: v for k, v in prov.items() if k != "model_fingerprint"}
    assert check(sae_only, model, saes) == {"status": "match"}
    assert check(prov, None, saes) == {"status": "match"}
    other = make_model(tokenizer)
    with torch.no_grad():
        other.W_U.mul_(2.0)
    assert check(sae_only, other, saes) == {"status": "match"}
    assert "differs from the model" in check(prov, other, saes, force=True)["mismatches"][0]


def test_an_sae_the_result_did_not_use_is_reported_unless_hooks_limit_the_check(tokenizer):
    """Every recorded SAE compared (``hooks=None``): an extra SAE is a mismatch; ``hooks`` (an edit's ablated hooks)
    limits the check to those hooks, and SAEs elsewhere are not reported."""
    from sfc_plugin.fingerprints import mismatches, world_provenance

    model = make_model(tokenizer)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    saes = make_saes(hooks)
    prov = world_provenance(model, build_submodules(model, {hooks[0]: saes[hooks[0]]}))
    assert mismatches(prov, model, {hooks[0]: saes[hooks[0]]}) == []
    assert mismatches(prov, model, saes) == [f"SAE at hook {hooks[1]!r} was not used to find the circuit"]
    assert mismatches(prov, model, saes, hooks=[hooks[0]]) == []


def test_backbone_is_the_union_of_the_widest_paths_with_stranded_nodes_named():
    """By hand: a's widest path runs through b (width min(4, 3) = 3 beats the direct edge's 1), b's is its own edge,
    c reaches nothing. With or without the metric node among the nodes given."""
    from types import SimpleNamespace as NS

    from sfc_plugin.paths import backbone

    a, b, c = (NS(id=i, kind="feature", effect=e) for i, e in (("a", 3.0), ("b", -2.0), ("c", 1.0)))
    y = NS(id="y", kind="metric", effect=5.0)
    ab, by, ay = (
        NS(source="a", target="b", weight=4.0),
        NS(source="b", target="y", weight=-3.0),
        NS(source="a", target="y", weight=1.0),
    )
    for nodes in ([y, a, b, c], [a, b, c]):
        edges, stranded = backbone(nodes, [ay, by, ab])
        assert edges == [ab, by] and stranded == {"c"}


def test_widest_paths_do_not_depend_on_the_order_nodes_are_listed_in():
    """A chain s → p → q → y listed from the metric backwards: every node still reaches y, with the width of its
    weakest edge on the way (by hand: 0.5 for s, 2 for p, 3 for q)."""
    from types import SimpleNamespace as NS

    from sfc_plugin.paths import widest_paths

    sp, pq, qy = (NS(source=s, target=t, weight=w) for s, t, w in (("s", "p", 0.5), ("p", "q", 2.0), ("q", "y", -3.0)))
    for ids in (["y", "q", "p", "s"], ["s", "p", "q", "y"], ["p", "y", "s", "q"]):
        best = widest_paths(ids, [qy, sp, pq])
        assert {k: v[0] for k, v in best.items() if k != "y"} == {"s": 0.5, "p": 2.0, "q": 3.0}, ids
        assert [best[k][1] for k in ("s", "p", "q")] == [sp, pq, qy]


def test_widest_paths_use_only_edges_between_the_nodes_given():
    """A wider route through a node not among those given, and a self-loop, are not paths: s reaches y through p
    only (width min(1, 2) = 1)."""
    from types import SimpleNamespace as NS

    from sfc_plugin.paths import widest_paths

    e = {
        (s, t): NS(source=s, target=t, weight=w)
        for s, t, w in (("s", "x", 9.0), ("x", "y", 9.0), ("s", "p", 1.0), ("p", "y", 2.0), ("p", "p", 5.0))
    }
    best = widest_paths(["s", "p", "y"], list(e.values()))
    assert set(best) == {"s", "p", "y"}
    assert best["s"] == (1.0, e["s", "p"]) and best["p"] == (2.0, e["p", "y"])


def test_the_engines_default_node_threshold_keeps_effects_above_a_tenth(tiny):
    """``attribute`` (the engine's public entry point) selects by discover's documented default, ``|effect| > 0.1``,
    when no threshold is given (the metric scaled so that effects straddle 0.1 and 0.2)."""
    from sfc_plugin.attribution.engine import attribute
    from sfc_plugin.plugins import lookup

    model, subs = tiny
    batch = tokenize(model, clean_only(3))

    def metric(logits, b):
        return 40 * logprob(logits, b)

    res = attribute(model, subs, batch, metric, lookup("method", "atp"), edges=False)
    everything = attribute(model, subs, batch, metric, lookup("method", "atp"), node_threshold=0.0, edges=False)
    straddle = 0
    for s in subs:
        f = everything.features[s.name]
        f = (f.to_dense() if f.is_sparse else f).abs()
        want = set((f > 0.1).nonzero().flatten().tolist())
        assert set(res.nodes[s.name].feat.tolist()) == want, s.name
        straddle += int(((f > 0.1) & (f <= 0.2)).sum())
    assert straddle > 0


def test_gradients_are_the_mean_over_the_alphas_given_with_repeats(tiny):
    """``gradients(alphas)`` is the mean over ``alphas`` of the gradient at each: a repeated α = 0 counts as often as
    it is given."""
    model, subs = tiny
    batch = tokenize(model, make_records(2))
    ctx = prepare(model, subs, batch, logit_diff)
    g0, g_half = ctx.gradients([0.0]), ctx.gradients([0.5])
    got = ctx.gradients([0.0, 0.0, 0.5])
    for s in subs:
        torch.testing.assert_close(got[s.name], (2 * g0[s.name] + g_half[s.name]) / 3, rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(g0[s.name], g_half[s.name]) for s in subs)


def test_encoding_in_chunks_of_tokens_covers_every_token(tiny):
    """``encode`` with fewer tokens per chunk than the batch holds (a tight memory budget) gives the SAE's own
    encoding of every token, for batches with more tokens than the SAE has input dimensions and fewer."""
    from sfc_plugin.attribution.context import encode

    _, subs = tiny
    s = subs[0]
    gen = torch.Generator().manual_seed(0)
    for n_seq in (1, 3 * s.W_enc.shape[0]):
        x = torch.randn((n_seq, 5, s.W_enc.shape[0]), generator=gen, dtype=s.W_enc.dtype)
        want = s.encode(x)
        assert bool(want.ne(0).any())
        for per_chunk in (2, 7, 4096):
            got = encode(s, x, per_chunk).f
            torch.testing.assert_close(got.dense(), want)


@pytest.fixture(scope="module")
def per_position_circuit(tokenizer):
    import sfc_plugin

    model, saes, records = make_model(tokenizer), make_saes(all_hooks(2)), make_records(4)
    kw = dict(method="atp", node_threshold=0.0, edges=False, progress=False)  # zero ablation: position 0 too
    return model, saes, records, sfc_plugin.discover(model, saes, clean_only(4), aggregation="none", **kw)


def test_discover_records_the_last_submodules_total_effect_as_the_metrics_input(per_position_circuit):
    """``provenance["metric_inputs"]`` (docs/formats.md): the submodule that feeds ``y`` (the last one) and the sum
    of the effects of all its nodes — at threshold 0 every node with an effect is kept, so the kept ones sum to it."""
    *_, c = per_position_circuit
    last = [n.submodule for n in c.nodes if n.kind != "metric"][-1]
    assert last == "resid_1"
    rec = c.provenance["metric_inputs"]
    assert rec["submodule"] == last
    want = sum(n.effect for n in c.nodes if n.submodule == last)
    assert rec["effect"] == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_evaluate_accepts_nodes_at_position_zero(per_position_circuit):
    """Positions run from 0 (the first token): a per-position circuit with nodes there evaluates."""
    from sfc_plugin.evaluation import evaluate

    model, saes, records, c = per_position_circuit
    assert any(n.position == 0 for n in c.nodes)
    res = evaluate(model, saes, c, records, thresholds=[0.0], progress=False)
    assert res["points"][0]["faithfulness"] == pytest.approx(1.0, abs=1e-6)


def test_evaluate_shows_its_thresholds_progress_unless_told_not_to(per_position_circuit, capfd):
    """``evaluate``'s ``progress`` defaults to on (a ``thresholds`` bar on stderr); ``progress=False`` is silent."""
    from sfc_plugin.evaluation import evaluate

    model, saes, records, c = per_position_circuit
    evaluate(model, saes, c, records, thresholds=[0.0, 0.5])
    assert "thresholds" in capfd.readouterr().err
    evaluate(model, saes, c, records, thresholds=[0.0, 0.5], progress=False)
    assert "thresholds" not in capfd.readouterr().err


def test_ratio_standard_error_from_two_examples_by_hand():
    """The delta method's standard error needs two examples, not three: a = (1, 3), b = (2, 2) gives R = 1,
    a − R·b = (−1, 1), sd √2, so √2 / (√2 · 2) = 0.5; one example gives none."""
    from sfc_plugin.evaluation import ratio_se

    two = ratio_se(torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([2.0, 2.0], dtype=torch.float64))
    assert two == pytest.approx(0.5, rel=1e-12)
    assert ratio_se(torch.tensor([1.0]), torch.tensor([2.0])) is None


def test_the_recorded_node_threshold_is_the_curve_point_with_the_circuits_own_node_count():
    """``record``: ``node_threshold`` is that of the curve point whose node count is the circuit's own (points
    above and below it on the curve are other circuits)."""
    from sfc_plugin.evaluation import record

    def point(t, n):
        return {"node_threshold": t, "n_nodes": n, "faithfulness": 0.5, "completeness": 0.5}

    result = {
        "circuit": {"faithfulness": 0.9, "completeness": 0.1, "n_nodes": 5},
        "points": [point(0.01, 9), point(0.1, 5), point(0.5, 2)],
        "n_examples": 4,
        "ablation": "mean",
        "start_layer": 0,
        "include_errors": True,
        "m_full": 1.0,
        "m_empty": 0.0,
    }
    assert record(result)["node_threshold"] == 0.1
    result["circuit"]["n_nodes"] = 7  # on no point of the curve
    assert record(result)["node_threshold"] is None


@pytest.mark.parametrize("end", ["source", "target"])
def test_a_circuit_file_with_an_edge_to_or_from_an_unknown_node_is_refused(end):
    """Either end of an edge naming a node the circuit lacks makes the file corrupt (one end is enough)."""
    from sfc_plugin.circuit import Circuit, Edge, Node
    from sfc_plugin.errors import SFCError

    nodes = [
        Node("y", None, None, None, "metric", None, None, 1.0),
        Node("resid_0/3", "resid_0", "blocks.0.hook_resid_post", 0, "feature", 3, None, 0.5),
    ]
    data = Circuit(nodes, [Edge("resid_0/3", "y", 0.5)], 1.0, "logit_diff", "atp", 10, "sum", 0.1, 0.01, {}).to_dict()
    assert Circuit.from_dict(data).edges  # valid as written
    data["edges"][0][end] = "resid_0/99"
    with pytest.raises(SFCError, match="names a node not in the circuit"):
        Circuit.from_dict(data)


def test_an_sae_of_another_shape_than_recorded_is_refused():
    """Fingerprints: an SAE at a recorded hook with another shape (another width) is a mismatch, named as such."""
    from conftest import make_dictionary

    from sfc_plugin.errors import SFCError
    from sfc_plugin.fingerprints import check, sae_fingerprint

    hook = "blocks.0.hook_resid_post"
    recorded = make_dictionary("standard", hook, d_sae=32)
    prov = {"saes": [{"hook": hook, "fingerprint": sae_fingerprint(recorded)}]}
    assert check(prov, None, {hook: recorded})["status"] == "match"
    with pytest.raises(SFCError, match=r"^SAE at hook 'blocks\.0\.hook_resid_post' has shape .*, the circuit's had "):
        check(prov, None, {hook: make_dictionary("standard", hook, d_sae=48)})


def test_evaluate_refuses_prompts_of_unequal_length_for_a_per_position_circuit(per_position_circuit):
    """A per-position circuit's nodes sit at positions: evaluation prompts of different token lengths are refused."""
    from sfc_plugin.errors import SFCError
    from sfc_plugin.evaluation import evaluate

    model, saes, _, c = per_position_circuit
    records = make_records(8)
    assert len({len(r["clean_prefix"].split()) for r in records}) > 1
    with pytest.raises(SFCError, match="needs evaluation prompts of equal token length"):
        evaluate(model, saes, c, records, thresholds=[0.0], progress=False)


def test_a_circuit_file_with_a_non_numeric_edge_weight_is_refused():
    from sfc_plugin.circuit import Circuit, Edge, Node
    from sfc_plugin.errors import SFCError

    nodes = [
        Node("y", None, None, None, "metric", None, None, 1.0),
        Node("resid_0/3", "resid_0", "blocks.0.hook_resid_post", 0, "feature", 3, None, 0.5),
    ]
    data = Circuit(nodes, [Edge("resid_0/3", "y", 0.5)], 1.0, "logit_diff", "atp", 10, "sum", 0.1, 0.01, {}).to_dict()
    data["edges"][0]["weight"] = "0.5"
    with pytest.raises(SFCError, match="has weight .0.5."):
        Circuit.from_dict(data)


def test_sae_info_records_the_metadata_an_sae_carries_and_no_empty_fields(tokenizer):
    """An SAE loaded by SAELens carries its release, id, Neuronpedia id and model name in ``cfg.metadata``: the
    record keeps each one that is set and leaves out those that are not (no ``null`` fields)."""
    from sfc_plugin.fingerprints import sae_info

    model = make_model(tokenizer)
    hook = "blocks.0.hook_resid_post"
    (sub,) = build_submodules(model, make_saes([hook]))
    meta = sub.sae.cfg.metadata
    meta.release, meta.sae_id, meta.neuronpedia_id = "some-release", "blocks.0", "toy/0-res"
    assert meta.model_name is None
    info = sae_info(sub)
    assert (info["release"], info["sae_id"], info["neuronpedia_id"]) == ("some-release", "blocks.0", "toy/0-res")
    assert "model_name" not in info
    meta.model_name = "some-model"
    assert sae_info(sub)["model_name"] == "some-model"


def test_a_forced_model_mismatch_is_recorded_once_per_loaded_edit(edit_world, tokenizer, tmp_path):
    """A loaded edit checks the model on first use only: forced onto another model, the mismatch is recorded once
    in ``provenance_check``, however often the edit is applied or attached afterwards."""
    from sfc_plugin.fingerprints import model_fingerprint
    from sfc_plugin.shifting.edit import FeatureEdit

    model, subs, edit = edit_world
    other = make_model(tokenizer, seed=1)
    edit.provenance = {"model_fingerprint": model_fingerprint(model)}
    edit.to_json(tmp_path / "e.json")
    loaded = FeatureEdit.from_json(tmp_path / "e.json", subs, force=True)
    assert loaded.provenance_check == {"status": "match"}  # the SAEs are not recorded; the model is, checked on use
    tokens = tokenize(other, make_records(2)).clean
    for _ in range(2):
        with loaded.applied(other):
            other(tokens)
        loaded.attach(other)
        loaded.detach(other)
    assert loaded.provenance_check["status"] == "forced"
    (mismatch,) = loaded.provenance_check["mismatches"]
    assert "differs from the model the edit was made with" in mismatch


def test_a_feature_named_by_two_judges_is_one_candidate(monkeypatch):
    """Judges may name candidates the ranking left out (``judge.candidates``): a feature named by both judges (and
    twice by one) is one candidate, decided once per judge and ablated once."""
    import sfc_plugin
    from sfc_plugin import toy
    from sfc_plugin.shifting.records import Decision

    named = "mlp_1/7"

    def judge_naming(name, ids):
        def judge(features, ctx):
            return [Decision(f.id, "ablate" if f.id == named else "keep", name) for f in features]

        judge.__name__, judge.uses, judge.candidates = name, ("human_review",), lambda ctx: list(ids)
        return judge

    model, saes = toy.load()
    bios = {s: sfc_plugin.load_dataset("toy/bios", s)[:24] for s in ("train", "val", "test")}
    kw = dict(steps=1, top_k=2, side_effects=False, progress=False, n_attribution=8)
    result = sfc_plugin.shift(
        model,
        saes,
        bios["train"],
        bios["test"],
        bios["val"],
        judge=judge_naming("first", [named, named]),
        compare_judge=judge_naming("second", [named]),
        **kw,
    )
    ids = [f["id"] for f in result["features"]]
    assert ids.count(named) == 1 and len(ids) == 3  # the two ranked features and the named one
    assert result["n_ablated"] == 1 and result["edit"].ablate == {"mlp_1": [7]}
    assert result["edits"]["shift_second"].ablate == {"mlp_1": [7]}


def test_side_effects_of_a_model_other_than_the_toy_are_measured_on_the_training_texts(monkeypatch):
    """With no text given, SHIFT's next-token loss reads the toy corpus for the toy model and the training texts
    for any other model (here the toy's weights under another name: the toy corpus is refused for it)."""
    import sfc_plugin
    from sfc_plugin import toy
    from sfc_plugin.shifting import side_effects

    seen = []
    monkeypatch.setattr(side_effects, "measure_side_effects", lambda model, edits, **kw: seen.append(kw) or {})
    bios = {s: sfc_plugin.load_dataset("toy/bios", s)[:24] for s in ("train", "val", "test")}
    kw = dict(steps=1, top_k=2, compare_judge=None, progress=False, n_attribution=8)
    for rename in (None, "not-the-toy"):
        model, saes = toy.load()
        model.cfg.model_name = rename or model.cfg.model_name
        sfc_plugin.shift(model, saes, bios["train"], bios["test"], bios["val"], **kw)
    assert seen[0].get("text") is None
    assert seen[1]["text"] == [r["text"] for r in bios["train"]]


def test_the_faithfulness_figure_names_its_axes_and_what_its_bars_are(monkeypatch):
    """What the faithfulness figure shows (docs/formats.md): both curves over every point with nodes (the empty
    circuit has no place on a log axis), reference lines at 0 (everything ablated) and 1 (the whole model), a y axis
    that names what is plotted (the fraction of the model's metric), an x axis the node count, and a caption saying
    the bars are one standard error across examples."""
    import matplotlib.figure

    from sfc_plugin.evaluation import curve_figure

    drawn, real = [], matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        drawn.append(fig)
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    points = [
        {"n_nodes": n, "faithfulness": f, "completeness": 1 - f, "faithfulness_se": 0.05, "completeness_se": 0.05}
        for n, f in ((0, 0.0), (1, 0.2), (10, 0.6), (100, 0.9))
    ]
    assert curve_figure(points, "mean ablation").startswith(b"\x89PNG")
    (fig,) = drawn
    (ax,) = fig.axes
    curves = {c.get_label(): c.lines[0] for c in ax.containers}
    assert set(curves) == {"faithfulness", "completeness"}
    for key, line in curves.items():
        assert list(line.get_xdata()) == [1, 10, 100]
        assert list(line.get_ydata()) == pytest.approx([p[key] for p in points[1:]])
    flat = {round(float(line.get_ydata()[0]), 6) for line in ax.lines if len(set(line.get_ydata())) == 1}
    assert {0.0, 1.0} <= flat
    assert "metric" in ax.get_ylabel() and "nodes" in ax.get_xlabel()
    assert any("standard error" in t.get_text() for t in fig.texts)


def test_the_engines_phase_timings_are_the_seconds_each_phase_took(tiny):
    """``Attribution.timings`` (what the benchmarks report): the seconds the nodes and the edges phase took, each
    within the wall time of the whole call."""
    import time

    from sfc_plugin.attribution.engine import attribute
    from sfc_plugin.plugins import lookup

    model, subs = tiny
    batch = tokenize(model, clean_only(2))
    t0 = time.perf_counter()
    res = attribute(model, subs, batch, logprob, lookup("method", "atp"), node_threshold=0.0)
    wall = time.perf_counter() - t0
    assert set(res.timings) == {"nodes", "edges"}
    assert all(0.0 < s <= wall for s in res.timings.values()), (res.timings, wall)
    assert sum(res.timings.values()) <= wall


def test_edges_of_a_method_that_keeps_no_gradients_use_the_clean_runs_gradient(tiny):
    """Edge weights are linearised at the clean run whatever the node method: a method that hands back no
    gradients (``NodeEffects.grads`` None) gets the same edges as ``atp``, which keeps its clean-run gradients."""
    from sfc_plugin.attribution.engine import attribute
    from sfc_plugin.plugins import lookup

    model, subs = tiny
    batch = tokenize(model, make_records(2))
    atp = lookup("method", "atp")

    def without_grads(ctx):
        eff = atp(ctx)
        return NodeEffects(eff.features, eff.errors)

    kw = dict(node_threshold=0.0)
    want = attribute(model, subs, batch, logit_diff, atp, **kw)
    got = attribute(model, subs, batch, logit_diff, without_grads, **kw)
    assert want.edges and set(got.edges) == set(want.edges)
    for key, w in want.edges.items():
        a, b = (x.to_dense() if x.is_sparse else x for x in (got.edges[key], w))
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9), key


def test_the_text_table_shows_each_value_with_its_standard_error_where_there_is_one():
    """``format_table``: a value with a standard error reads ``0.500 ±0.100``, one without (a single example) reads
    ``0.500`` alone, and a missing value ``n/a``."""
    from sfc_plugin.evaluation import format_table

    points = [
        {"node_threshold": 0.1, "n_nodes": 4, "faithfulness": 0.5, "faithfulness_se": 0.1, "completeness": None},
        {"node_threshold": 0.2, "n_nodes": 2, "faithfulness": 0.25, "faithfulness_se": None, "completeness": 0.75},
    ]
    circuit = {"n_nodes": 4, "faithfulness": 0.5, "faithfulness_se": 0.1, "completeness": None}
    table = format_table({"points": points, "circuit": circuit, "ablation": "mean", "n_examples": 3}).splitlines()
    assert table[1].split()[2:] == ["0.500", "±0.100", "n/a"]
    assert table[2].split()[2:] == ["0.250", "0.750"]
    assert "faithfulness 0.500 ±0.100, completeness n/a" in table[3]
