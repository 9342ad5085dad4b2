"""Attention SAEs at ``blocks.<l>.attn.hook_z`` (before ``W_O``, as Gemma Scope's): splice, node effects,
edges through ``W_O``, evaluation and edits, checked against direct interventions.

The model has ``n_heads * d_head = 24 != d_model = 16``, so a confusion of the two shapes cannot pass.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_records, make_sae, make_saes, z_hooks
from test_attribution import SEQUENTIAL_PAIRS, caches, direct_edge, grad_at, parse

import sfc_plugin
from sfc_plugin.data import tokenize
from sfc_plugin.errors import SFCError
from sfc_plugin.metrics import logit_diff
from sfc_plugin.shifting.edit import FeatureEdit
from sfc_plugin.splicing import build_submodules

D_HEAD, D_Z = 6, 24  # 4 heads of 6


def z_world(tokenizer, parallel=False):
    model = make_model(tokenizer, parallel=parallel, d_head=D_HEAD)
    return model, make_saes(z_hooks(2), d_z=D_Z)


def test_hook_z_submodules_keep_the_contract_names(tokenizer):
    model, saes = z_world(tokenizer)
    subs = build_submodules(model, saes)
    assert [s.name for s in subs] == ["embed", "attn_0", "mlp_0", "resid_0", "attn_1", "mlp_1", "resid_1"]
    attn = subs[1]
    assert attn.hook == "blocks.0.attn.hook_z" and attn.hook_shape == (4, D_HEAD) and attn.W_dec.shape == (32, D_Z)
    z = torch.randn(2, 3, 4, D_HEAD, dtype=torch.float64)
    assert attn.flat(z).shape == (2, 3, D_Z) and torch.equal(attn.unflat(attn.flat(z)), z)
    # the flat encoding is SAELens's own encoding of the hook-shaped activation
    assert torch.allclose(attn.encode(attn.flat(z)), saes["blocks.0.attn.hook_z"].encode(z))


def test_splice_with_hook_z_is_exact_and_feature_gradients_follow_the_algebra(tokenizer):
    model, saes = z_world(tokenizer)
    batch = tokenize(model, make_records(4))
    plain = model(batch.clean)
    with sfc_plugin.splice(model, saes) as state:
        spliced = model(batch.clean)
        m = logit_diff(spliced, batch).sum()
        feat_grads = torch.autograd.grad(m, [state.features[h] for h in saes])
    assert torch.allclose(spliced, plain, atol=1e-10)
    subs = {s.hook: s for s in build_submodules(model, saes)}
    for h, fg in zip(saes, feat_grads):
        s = subs[h]
        assert torch.allclose(fg, s.flat(grad_at(model, batch, h)) @ s.W_dec.T, atol=1e-9), h


@pytest.mark.parametrize("parallel", [False, True])
def test_every_edge_type_with_hook_z_attention_matches_a_direct_intervention(tokenizer, parallel):
    """Edges out of ``attn_l`` run through ``W_O`` (into mlp_l and resid_l); edges into it through the attention."""
    model, saes = z_world(tokenizer, parallel)
    records = make_records(6)
    circuit = sfc_plugin.discover(
        model, saes, records, method="atp", node_threshold=0.0, edge_threshold=0.0, progress=False
    )
    batch = tokenize(model, records)
    c, p = caches(model, batch, list(saes))
    subs = {s.name: s for s in build_submodules(model, saes)}
    pairs = {(e.source.split("/")[0], e.target.split("/")[0]) for e in circuit.edges}
    expected = SEQUENTIAL_PAIRS - ({("attn_0", "mlp_0"), ("attn_1", "mlp_1")} if parallel else set())
    assert pairs == expected
    checked = 0
    for pair in sorted(expected):
        group = [e for e in circuit.edges if (e.source.split("/")[0], e.target.split("/")[0]) == pair]
        feature_edges = [e for e in group if not e.source.endswith("/err") and not e.target.endswith("/err")]
        picks = [max(feature_edges or group, key=lambda e: abs(e.weight))]
        picks += [e for e in group if e.source.endswith("/err") and e.target.endswith("/err")][:1]
        for e in picks:
            (up, un), (down, dn) = parse(e.source), (parse(e.target) if e.target != "y" else ("y", None))
            want = direct_edge(model, subs, batch, c, p, up, down, un, dn)
            assert e.weight == pytest.approx(want, rel=1e-4, abs=1e-7), (e.source, e.target)
            checked += abs(want) > 1e-6
    assert checked >= len(expected)


def test_ig_with_hook_z_sums_to_patching_the_whole_submodule(tokenizer):
    model, saes = z_world(tokenizer)
    records = make_records(6)
    circuit = sfc_plugin.discover(
        model, saes, records, method="ig", steps=200, node_threshold=0.0, edges=False, progress=False
    )
    batch = tokenize(model, records)
    clean_m = logit_diff(model(batch.clean), batch)
    _, p = caches(model, batch, list(saes))
    for layer in (0, 1):
        hook = f"blocks.{layer}.attn.hook_z"
        total = sum(n.effect for n in circuit.nodes if n.submodule == f"attn_{layer}")
        logits = model.run_with_hooks(batch.clean, fwd_hooks=[(hook, lambda act, hook: p[hook.name])])
        patched = (logit_diff(logits, batch) - clean_m).mean().item()
        assert abs(patched) > 1e-3
        assert total == pytest.approx(patched, abs=2e-3 + 0.01 * abs(patched)), hook


def test_exact_patching_of_a_hook_z_feature(tokenizer):
    model, saes = z_world(tokenizer)
    records = make_records(6)
    hook = "blocks.1.attn.hook_z"
    circuit = sfc_plugin.discover(
        model, {hook: saes[hook]}, records, method="exact", node_threshold=0.0, edges=False, progress=False
    )
    sub = build_submodules(model, {hook: saes[hook]})[0]
    batch = tokenize(model, records)
    c, p = caches(model, batch, [hook])
    node = max((n for n in circuit.nodes if n.kind == "feature"), key=lambda n: abs(n.effect))
    df = sub.encode(sub.flat(p[hook])) - sub.encode(sub.flat(c[hook]))
    shift = sub.unflat(df[..., node.feature, None] * sub.W_dec[node.feature])
    logits = model.run_with_hooks(batch.clean, fwd_hooks=[(hook, lambda act, hook: act + shift)])
    want = (logit_diff(logits, batch) - logit_diff(model(batch.clean), batch)).mean().item()
    assert abs(want) > 1e-4 and node.effect == pytest.approx(want, abs=1e-9)


def test_evaluate_and_edit_through_hook_z(tokenizer):
    model, saes = z_world(tokenizer)
    saes = {h: sae for h, sae in saes.items() if h.endswith("hook_z")}
    records = make_records(6)
    circuit = sfc_plugin.discover(model, saes, records, method="atp", node_threshold=0.0, edges=False, progress=False)
    result = sfc_plugin.evaluate(model, saes, circuit, records, ablation="mean", thresholds=[0.0], progress=False)
    batch = tokenize(model, records)
    # empty circuit under mean ablation: each z replaced by its mean over the patch inputs' real positions
    _, p = caches(model, batch, list(saes))
    valid = batch.valid[..., None, None].to(torch.float64)
    means = {h: (p[h] * valid).sum((0, 1)) / valid.sum() for h in saes}
    empty = model.run_with_hooks(
        batch.clean, fwd_hooks=[(h, lambda act, hook: means[hook.name].expand_as(act)) for h in saes]
    )
    assert result["m_empty"] == pytest.approx(logit_diff(empty, batch).mean().item(), abs=1e-9)
    assert result["m_full"] == pytest.approx(logit_diff(model(batch.clean), batch).mean().item(), abs=1e-9)
    assert abs(result["m_full"] - result["m_empty"]) > 1e-3
    subs = {s.name: s for s in build_submodules(model, saes)}
    sub = subs["attn_0"]
    c, _ = caches(model, batch, [sub.hook])
    f = sub.encode(sub.flat(c[sub.hook]))
    feats = f.abs().sum((0, 1)).topk(2).indices.tolist()
    edit = FeatureEdit(subs, ablate={"attn_0": feats})
    with edit.applied(model):
        edited = model(batch.clean)
    want = model.run_with_hooks(
        batch.clean, fwd_hooks=[(sub.hook, lambda act, hook: act - sub.unflat(f[..., feats] @ sub.W_dec[feats]))]
    )
    assert torch.allclose(edited, want, atol=1e-10) and not torch.allclose(edited, model(batch.clean), atol=1e-4)


def test_hook_z_mismatches_name_the_sae(tokenizer):
    model = make_model(tokenizer, d_head=D_HEAD)
    hook = "blocks.0.attn.hook_z"
    with pytest.raises(SFCError, match=r"d_in=16 but the model's n_heads \* d_head is 24"):
        build_submodules(model, {hook: make_sae(hook, d_in=16)})
    flat_sae = make_sae("blocks.0.hook_attn_out", d_in=D_Z)
    flat_sae.cfg.metadata.hook_name = hook
    with pytest.raises(SFCError, match="reshape_activations='none'; an SAE at this hook needs 'hook_z'"):
        build_submodules(model, {hook: flat_sae})
