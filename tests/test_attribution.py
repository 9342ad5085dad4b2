"""Numerical checks of the splice, node effects and edge effects against direct interventions."""

from __future__ import annotations

import pytest
import torch

import sfc_plugin
from sfc_plugin.data import tokenize
from sfc_plugin.metrics import logit_diff
from sfc_plugin.splicing import build_submodules

splice = sfc_plugin.splice  # the public name

from conftest import all_hooks, make_model, make_records, make_saes


def grad_at(model, batch, hook):
    """∇ of the summed metric w.r.t. the activation at ``hook`` (plain model, clean input)."""
    leaf = {}

    def add(act, hook):
        leaf["x"] = torch.zeros_like(act, requires_grad=True)
        return act + leaf["x"]

    logits = model.run_with_hooks(batch.clean, fwd_hooks=[(hook, add)])
    return torch.autograd.grad(logit_diff(logits, batch).sum(), leaf["x"])[0]


def caches(model, batch, hooks):
    _, c = model.run_with_cache(batch.clean, names_filter=lambda n: n in hooks)
    _, p = model.run_with_cache(batch.patch, names_filter=lambda n: n in hooks)
    return c, p


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_splice_is_exact_in_value_and_upstream_gradient(tokenizer, arch):
    model = make_model(tokenizer)
    saes = make_saes(all_hooks(2), arch=arch)
    batch = tokenize(model, make_records(4))
    plain = model(batch.clean)
    plain_grad = torch.autograd.grad(logit_diff(plain, batch).sum(), model.W_E)[0]
    with splice(model, saes) as state:
        spliced = model(batch.clean)
        m = logit_diff(spliced, batch).sum()
        (spliced_grad,) = torch.autograd.grad(m, model.W_E, retain_graph=True)
        feats = [state.features[h] for h in saes]
        feat_grads = torch.autograd.grad(m, feats)
    assert torch.allclose(spliced, plain, atol=1e-10)
    assert torch.allclose(spliced_grad, plain_grad, atol=1e-10)
    assert plain_grad.abs().max() > 1e-3
    # the fast path's algebra: ∇_f m = W_dec ∇_x m with no SAE in the graph
    subs = {s.hook: s for s in build_submodules(model, saes)}
    for h, fg in zip(saes, feat_grads):
        assert torch.allclose(fg, grad_at(model, batch, h) @ subs[h].W_dec.T, atol=1e-9), h


def effects(circuit):
    return {n.id: n.effect for n in circuit.nodes if n.kind != "metric"}


def test_atp_equals_exact_where_metric_is_linear_in_the_node(tokenizer):
    model = make_model(tokenizer, normalization=None)
    saes = make_saes(["blocks.1.hook_resid_post"])
    records = make_records(6)
    kw = dict(node_threshold=0.0, edges=False, progress=False)
    atp = effects(sfc_plugin.discover(model, saes, records, method="atp", **kw))
    exact = effects(sfc_plugin.discover(model, saes, records, method="exact", **kw))
    assert len(atp) > 5 and atp.keys() == exact.keys()
    for k in atp:
        assert atp[k] == pytest.approx(exact[k], abs=1e-9), k


def test_atp_differs_from_exact_upstream_of_nonlinearities(tokenizer):
    """Sanity: the comparison above is not trivially true everywhere."""
    model = make_model(tokenizer)
    saes = make_saes(["blocks.0.hook_resid_post"])
    kw = dict(node_threshold=0.0, edges=False, progress=False)
    atp = effects(sfc_plugin.discover(model, saes, make_records(6), method="atp", **kw))
    exact = effects(sfc_plugin.discover(model, saes, make_records(6), method="exact", **kw))
    assert max(abs(atp[k] - exact.get(k, 0.0)) for k in atp) > 1e-4


def test_ig_completeness_matches_patching_whole_submodule(tokenizer):
    model = make_model(tokenizer)
    hooks = all_hooks(2)
    saes = make_saes(hooks)
    records = make_records(6)
    circuit = sfc_plugin.discover(
        model, saes, records, method="ig", steps=200, node_threshold=0.0, edges=False, progress=False
    )
    batch = tokenize(model, records)
    clean_m = logit_diff(model(batch.clean), batch)
    c, p = caches(model, batch, hooks)
    checked = 0
    for sub in build_submodules(model, saes):
        total = sum(n.effect for n in circuit.nodes if n.submodule == sub.name)
        logits = model.run_with_hooks(batch.clean, fwd_hooks=[(sub.hook, lambda act, hook: p[hook.name])])
        patched = (logit_diff(logits, batch) - clean_m).mean().item()
        assert total == pytest.approx(patched, abs=2e-3 + 0.01 * abs(patched)), sub.name
        checked += abs(patched) > 1e-3
    assert checked >= 4


def direct_edge(model, subs, batch, c, p, up, down, up_node, down_node, h=1e-4):
    """Perturb ``up_node`` along the direct path (other submodules clamped to clean) and read
    the change of ``down_node`` times its gradient; mean over examples."""
    u = subs[up]
    uc, up_ = u.flat(c[u.hook]), u.flat(p[u.hook])  # flat [b, pos, d_in] (hook_z: heads concatenated)
    if up_node == "err":
        direction = (up_ - u.decode(u.encode(up_))) - (uc - u.decode(u.encode(uc)))
    else:
        direction = (u.encode(up_) - u.encode(uc))[..., up_node, None] * u.W_dec[up_node]
    d = subs.get(down)

    def run(eps):
        seen = {}
        hooks = []
        for s in subs.values():
            if s.name == up:
                hooks.append((s.hook, lambda act, hook: u.unflat(uc + eps * direction)))
            elif d is not None and s.name == down:
                hooks.append((s.hook, lambda act, hook: seen.setdefault("x", d.flat(act)).view_as(act)))
            else:
                hooks.append((s.hook, lambda act, hook: c[hook.name]))
        logits = model.run_with_hooks(batch.clean, fwd_hooks=hooks)
        return logit_diff(logits, batch) if d is None else seen["x"]

    plus, minus = run(h), run(-h)
    if d is None:
        return ((plus - minus) / (2 * h)).mean().item()
    g = d.flat(grad_at(model, batch, d.hook))
    if down_node == "err":
        err = lambda x: x - d.decode(d.encode(x))  # noqa: E731
        return (((err(plus) - err(minus)) / (2 * h)) * g).sum((1, 2)).mean().item()
    gf = (g @ d.W_dec.T)[..., down_node]
    return (((d.encode(plus) - d.encode(minus))[..., down_node] / (2 * h)) * gf).sum(1).mean().item()


def parse(node_id):
    sub, _, rest = node_id.partition("/")
    return sub, (rest if rest == "err" else int(rest))


def atp_world(tokenizer, hooks, parallel=False, **discover_kw):
    """A tiny model's atp circuit at threshold 0, with clean/patch caches and submodules by name."""
    model = make_model(tokenizer, parallel=parallel)
    saes = make_saes(hooks)
    records = discover_kw.pop("records", make_records(6))
    circuit = sfc_plugin.discover(
        model, saes, records, method="atp", node_threshold=0.0, edge_threshold=0.0, progress=False, **discover_kw
    )
    batch = tokenize(model, records)
    c, p = caches(model, batch, hooks)
    return model, circuit, batch, c, p, {s.name: s for s in build_submodules(model, saes)}


SEQUENTIAL_PAIRS = {
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
    ("resid_1", "y"),
}


@pytest.mark.parametrize("parallel", [False, True])
def test_every_edge_type_matches_a_direct_intervention(tokenizer, parallel):
    model, circuit, batch, c, p, subs = atp_world(tokenizer, all_hooks(2), parallel=parallel)
    pairs = {(e.source.split("/")[0], e.target.split("/")[0]) for e in circuit.edges}
    expected = SEQUENTIAL_PAIRS - ({("attn_0", "mlp_0"), ("attn_1", "mlp_1")} if parallel else set())
    assert pairs == expected
    assert circuit.provenance["block"] == ("parallel" if parallel else "sequential")
    checked, from_errors, into_errors = 0, 0, 0
    for pair in sorted(expected):
        group = [e for e in circuit.edges if (e.source.split("/")[0], e.target.split("/")[0]) == pair]
        picks = {max(group, key=lambda e: abs(e.weight)).source: None}
        picks.update({e.source: None for e in group if e.source.endswith("/err")})
        for e in group:
            if e.source in picks and (picks[e.source] is None or e.target.endswith("/err")):
                picks[e.source] = e
        for e in picks.values():
            (up, un), (down, dn) = parse(e.source), (parse(e.target) if e.target != "y" else ("y", None))
            want = direct_edge(model, subs, batch, c, p, up, down, un, dn)
            assert e.weight == pytest.approx(want, rel=1e-4, abs=1e-7), (e.source, e.target)
            checked += 1
            from_errors += un == "err"
            into_errors += dn == "err"
    assert checked > len(expected) and from_errors >= 5 and into_errors >= 3
    err_edges = [e for e in circuit.edges if e.source.endswith("/err") and e.target != "y"]
    assert err_edges and max(abs(e.weight) for e in err_edges) > 1e-3


def test_edges_into_resid_are_the_downstream_gradient_through_the_sum(tokenizer):
    """Summing all edges into a submodule's nodes from one upstream node recovers ∇_x m · Δu."""
    model, circuit, batch, c, p, subs = atp_world(tokenizer, all_hooks(2))
    up = subs["mlp_1"]
    err = lambda x: x - up.decode(up.encode(x))  # noqa: E731
    g = grad_at(model, batch, subs["resid_1"].hook)
    total = sum(e.weight for e in circuit.edges if e.source == "mlp_1/err" and e.target.startswith("resid_1/"))
    want = (g * (err(p[up.hook]) - err(c[up.hook]))).sum((1, 2)).mean().item()
    assert total == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_partial_sae_set_edges_follow_direct_paths(tokenizer):
    """Only resid SAEs: resid_0 → resid_1 runs through the whole block (a nonlinear path)."""
    model, circuit, batch, c, p, subs = atp_world(tokenizer, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
    e = max((e for e in circuit.edges if e.target.startswith("resid_1/")), key=lambda e: abs(e.weight))
    (up, un), (down, dn) = parse(e.source), parse(e.target)
    assert e.weight == pytest.approx(direct_edge(model, subs, batch, c, p, up, down, un, dn), rel=1e-4)


def test_aggregation_none_keeps_positions_and_sums_to_aggregated(tokenizer):
    records = [r for r in make_records(12) if "near" in r["clean_prefix"]]
    per_pos = atp_world(tokenizer, all_hooks(2), records=records, aggregation="none")[1]
    summed = atp_world(tokenizer, all_hooks(2), records=records)[1]
    assert all("@" in n.id and n.position is not None for n in per_pos.nodes if n.kind != "metric")
    strip = lambda node_id: node_id.split("@")[0]  # noqa: E731
    nodes: dict[str, float] = {}
    for n in per_pos.nodes[1:]:
        nodes[strip(n.id)] = nodes.get(strip(n.id), 0.0) + n.effect
    edges: dict[tuple[str, str], float] = {}
    for e in per_pos.edges:
        key = (strip(e.source), strip(e.target))
        edges[key] = edges.get(key, 0.0) + e.weight
    assert effects(summed).keys() == nodes.keys()
    for k, v in effects(summed).items():
        assert nodes[k] == pytest.approx(v, abs=1e-9)
    assert len(summed.edges) > 100
    for e in summed.edges:
        assert edges.get((e.source, e.target), 0.0) == pytest.approx(e.weight, abs=1e-9), (e.source, e.target)


def test_zero_ablation_without_patch_prompts(tokenizer):
    model = make_model(tokenizer)
    saes = make_saes(["blocks.1.hook_resid_post"])
    records = [{"clean_prefix": r["clean_prefix"], "clean_answer": r["clean_answer"]} for r in make_records(4)]
    circuit = sfc_plugin.discover(model, saes, records, method="exact", node_threshold=0.0, edges=False, progress=False)
    assert circuit.metric == "logprob" and circuit.total_effect is None
    batch = tokenize(model, records)
    sub = build_submodules(model, saes)[0]
    node = max((n for n in circuit.nodes if n.kind == "feature"), key=lambda n: abs(n.effect))
    _, cache = model.run_with_cache(batch.clean, names_filter=sub.hook)
    f = sub.encode(cache[sub.hook])
    from sfc_plugin.metrics import logprob

    ablated = model.run_with_hooks(
        batch.clean, fwd_hooks=[(sub.hook, lambda a, hook: a - f[..., node.feature, None] * sub.W_dec[node.feature])]
    )
    want = (logprob(ablated, batch) - logprob(model(batch.clean), batch)).mean().item()
    assert node.effect == pytest.approx(want, abs=1e-9)


def test_hooked_sae_transformer_gives_the_same_circuit(tokenizer):
    from sae_lens import HookedSAETransformer

    model = make_model(tokenizer)
    twin = HookedSAETransformer(model.cfg, tokenizer=tokenizer)
    twin.load_state_dict(model.state_dict())
    saes = make_saes(all_hooks(2))
    kw = dict(method="ig", steps=3, node_threshold=0.01, edge_threshold=0.01, progress=False)
    a = sfc_plugin.discover(model, saes, make_records(4), **kw)
    b = sfc_plugin.discover(twin.eval(), saes, make_records(4), **kw)
    assert [(n.id, round(n.effect, 9)) for n in a.nodes[1:]] == [(n.id, round(n.effect, 9)) for n in b.nodes[1:]]
    assert len(a.edges) == len(b.edges) > 0


def test_edges_do_not_change_when_the_upstream_contraction_is_chunked(tokenizer, monkeypatch):
    from sfc_plugin.attribution import edges

    model, saes, records = make_model(tokenizer), make_saes(all_hooks(2)), make_records(4)
    kw = dict(method="atp", node_threshold=0.0, edge_threshold=0.0, progress=False)
    whole = {(e.source, e.target): e.weight for e in sfc_plugin.discover(model, saes, records, **kw).edges}
    monkeypatch.setattr(edges, "GATHER_FLOATS", 1)  # one upstream node per product
    chunked = {(e.source, e.target): e.weight for e in sfc_plugin.discover(model, saes, records, **kw).edges}
    assert len(whole) > 100 and whole.keys() == chunked.keys()
    assert all(chunked[k] == pytest.approx(w, rel=1e-9, abs=1e-12) for k, w in whole.items())


@pytest.mark.parametrize("method", ["atp", "ig", "exact"])
def test_zero_ablation_entry_point_agrees_with_the_engine(tokenizer, method):
    """Per-example zero-ablation effects (dense, one batch) are the engine's node effects on pairs without
    patch prompts (sparse, batched), summed over examples."""
    from sfc_plugin.attribution.engine import attribute, zero_ablation
    from sfc_plugin.metrics import logprob
    from sfc_plugin.plugins import lookup

    model = make_model(tokenizer)
    subs = build_submodules(model, make_saes(all_hooks(2)))
    records = [{"clean_prefix": r["clean_prefix"], "clean_answer": r["clean_answer"]} for r in make_records(4)]
    batch = tokenize(model, records)
    res = attribute(model, subs, batch, logprob, lookup("method", method), steps=3, node_threshold=0.0, edges=False)
    per_example = zero_ablation(model, subs, batch, logprob, method, steps=3)
    total = zero_ablation(model, subs, batch, logprob, method, steps=3, sum_examples=True)
    for s in subs:
        assert per_example.features[s.name].shape == (len(batch), s.d_sae)
        assert per_example.errors[s.name].shape == (len(batch),)
        want = res.features[s.name].to_dense() if res.features[s.name].is_sparse else res.features[s.name]
        assert torch.allclose(per_example.features[s.name].sum(0) / len(batch), want, atol=1e-10), s.name
        assert torch.allclose(total.features[s.name] / len(batch), want, atol=1e-10), s.name
        assert float(total.errors[s.name]) / len(batch) == pytest.approx(float(res.errors[s.name]), abs=1e-10)
    assert float(res.features["resid_1"].abs().max()) > 1e-3


def test_zero_ablation_neurons_and_gradients(tokenizer):
    """``neurons``: each activation dimension zeroed, ``∇_x m · (0 − x)``; ``gradients``: only ``∇_x m``."""
    from sfc_plugin.attribution.engine import zero_ablation
    from sfc_plugin.errors import SFCError
    from sfc_plugin.metrics import logprob

    model = make_model(tokenizer)
    subs = build_submodules(model, make_saes(all_hooks(2)))
    batch = tokenize(model, make_records(4))
    hook = "blocks.1.hook_mlp_out"
    leaf = {}

    def add(act, hook):
        leaf["x"] = torch.zeros_like(act, requires_grad=True)
        return act + leaf["x"]

    x = model.run_with_cache(batch.clean, names_filter=hook)[1][hook]
    g = torch.autograd.grad(logprob(model.run_with_hooks(batch.clean, fwd_hooks=[(hook, add)]), batch).sum(), leaf["x"])
    grads = zero_ablation(model, subs, batch, logprob, "atp", units="gradients")
    assert not grads.features and torch.allclose(grads.grads["mlp_1"], g[0], atol=1e-12)
    neurons = zero_ablation(model, subs, batch, logprob, "atp", units="neurons")
    assert neurons.features["mlp_1"].shape == (len(batch), x.shape[-1]) and not neurons.errors
    assert torch.allclose(neurons.features["mlp_1"], -(g[0] * x).sum(1), atol=1e-12)
    with pytest.raises(SFCError, match="units 'neurons' need a gradient method"):
        zero_ablation(model, subs, batch, logprob, "exact", units="neurons")
    with pytest.raises(SFCError, match="unknown units 'nope'"):
        zero_ablation(model, subs, batch, logprob, units="nope")


def test_select_nodes_keeps_effects_above_the_threshold(tokenizer):
    from sfc_plugin.attribution.engine import select_nodes

    model = make_model(tokenizer)
    subs = build_submodules(model, make_saes(["blocks.1.hook_resid_post"]))
    feats = {"resid_1": torch.tensor([0.5, -0.05, -0.2, 0.0])}
    picked = select_nodes(subs, feats, {"resid_1": torch.tensor(-0.3)}, 0.1)["resid_1"]
    assert picked.entries() == [(0, None), (2, None), (None, None)]
    per_pos = select_nodes(
        subs, {"resid_1": torch.tensor([[0.0, 0.3], [0.2, 0.0]])}, {"resid_1": torch.tensor([0.0, 1.0])}, 0.1, "none"
    )
    assert per_pos["resid_1"].entries() == [(1, 0), (0, 1), (None, 1)]
