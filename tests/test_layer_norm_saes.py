"""SAEs that layer-normalise their input (SAELens ``normalize_activations="layer_norm"``, as OpenAI's GPT-2
v5 SAEs): features are reported as ``σ · f`` so the SAE is affine in the activation's units; node effects
and edges out of such features are exact, edges into them hold the LayerNorm statistics fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from conftest import all_hooks, make_model, make_records, make_saes
from test_attribution import caches, direct_edge, parse

import sfc_plugin
from sfc_plugin.data import tokenize
from sfc_plugin.metrics import logit_diff
from sfc_plugin.splicing import Submodule, build_submodules


def ln_world(tokenizer):
    model = make_model(tokenizer)
    saes = make_saes(all_hooks(2), arch="topk")
    for sae in saes.values():
        sae.cfg.normalize_activations = "layer_norm"
        sae._setup_activation_normalization()
    return model, saes


def test_features_are_sigma_f_and_the_reconstruction_is_saelens_own(tokenizer):
    model, saes = ln_world(tokenizer)
    subs = build_submodules(model, saes)
    x = torch.randn(3, 5, 16, dtype=torch.float64) * 4 + 1.5
    for s in subs:
        assert s.ln_in and torch.equal(s.b_dec, torch.zeros(16, dtype=torch.float64))
        f = s.encode(x)
        mu, sd = x.mean(-1, keepdim=True), (x - x.mean(-1, keepdim=True)).std(-1, keepdim=True)
        own = s.sae.encode(x)
        assert torch.allclose(f, sd * own) and (own != 0).sum(-1).max() == 6
        recon = s.sae.decode(s.sae.encode(x))  # SAELens: (f W_dec + b_dec) σ + μ
        assert torch.allclose(s.decode(f) + sd * s.sae.b_dec + mu, recon, atol=1e-10)
        assert not hasattr(s.sae, "ln_std")  # the statistics SAELens stores for its decode are not kept


@pytest.mark.parametrize("method", ["atp", "ig"])
def test_node_effects_of_a_whole_submodule_sum_to_patching_it(tokenizer, method):
    model, saes = ln_world(tokenizer)
    records = make_records(6)
    steps = 200 if method == "ig" else 10
    circuit = sfc_plugin.discover(
        model, saes, records, method=method, steps=steps, node_threshold=0.0, edges=False, progress=False
    )
    batch = tokenize(model, records)
    clean_m = logit_diff(model(batch.clean), batch)
    _, p = caches(model, batch, list(saes))
    hook = "blocks.1.hook_mlp_out"
    total = sum(n.effect for n in circuit.nodes if n.submodule == "mlp_1")
    patched = (
        (
            logit_diff(model.run_with_hooks(batch.clean, fwd_hooks=[(hook, lambda act, hook: p[hook.name])]), batch)
            - clean_m
        )
        .mean()
        .item()
    )
    assert abs(patched) > 1e-3
    assert total == pytest.approx(patched, abs=2e-3 + 0.01 * abs(patched))


def test_exact_patching_of_a_layer_norm_feature(tokenizer):
    model, saes = ln_world(tokenizer)
    hook = "blocks.1.hook_resid_post"
    circuit = sfc_plugin.discover(
        model, {hook: saes[hook]}, make_records(6), method="exact", node_threshold=0.0, edges=False, progress=False
    )
    sub = build_submodules(model, {hook: saes[hook]})[0]
    batch = tokenize(model, make_records(6))
    c, p = caches(model, batch, [hook])
    node = max((n for n in circuit.nodes if n.kind == "feature"), key=lambda n: abs(n.effect))
    shift = (sub.encode(p[hook]) - sub.encode(c[hook]))[..., node.feature, None] * sub.W_dec[node.feature]
    logits = model.run_with_hooks(batch.clean, fwd_hooks=[(hook, lambda act, hook: act + shift)])
    want = (logit_diff(logits, batch) - logit_diff(model(batch.clean), batch)).mean().item()
    assert abs(want) > 1e-4 and node.effect == pytest.approx(want, abs=1e-9)


@dataclass
class FrozenLN(Submodule):
    """The downstream SAE with the clean input's LayerNorm statistics held fixed (what edges into it use)."""

    ref: torch.Tensor | None = None

    def encode(self, x):
        mu = self.ref.mean(-1, keepdim=True)
        sd = (self.ref - mu).std(-1, keepdim=True)
        mask = super().encode(self.ref) != 0
        pre = ((x - mu) / (sd + 1e-5) - self.sae.b_dec) @ self.sae.W_enc + self.sae.b_enc
        return sd * torch.relu(pre) * mask


def test_edges_match_interventions_with_frozen_layer_norm_statistics(tokenizer):
    model, saes = ln_world(tokenizer)
    records = make_records(6)
    circuit = sfc_plugin.discover(
        model, saes, records, method="atp", node_threshold=0.0, edge_threshold=0.0, progress=False
    )
    batch = tokenize(model, records)
    c, p = caches(model, batch, list(saes))
    plain = {s.name: s for s in build_submodules(model, saes)}
    frozen = {n: FrozenLN(**{**s.__dict__, "ref": c[s.hook]}) for n, s in plain.items()}
    checked = 0
    for pair in [
        ("embed", "attn_0"),
        ("attn_0", "mlp_0"),
        ("mlp_0", "resid_0"),
        ("resid_0", "mlp_1"),
        ("resid_1", "y"),
    ]:
        group = [e for e in circuit.edges if (e.source.split("/")[0], e.target.split("/")[0]) == pair]
        picks = [
            max(
                (e for e in group if not e.source.endswith("/err") and not e.target.endswith("/err")),
                key=lambda e: abs(e.weight),
            )
        ]
        picks += [e for e in group if e.source.endswith("/err")][:1]
        for e in picks:
            (up, un), (down, dn) = parse(e.source), (parse(e.target) if e.target != "y" else ("y", None))
            subs = {**plain, **({down: frozen[down]} if down in frozen else {})}
            want = direct_edge(model, subs, batch, c, p, up, down, un, dn)
            assert e.weight == pytest.approx(want, rel=1e-4, abs=1e-7), (e.source, e.target)
            checked += abs(want) > 1e-6
    assert checked >= 5
