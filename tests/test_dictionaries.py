"""Every SAELens dictionary as a node set, checked against SAELens's own modules.

The independent recomputations here never touch the engine: they splice each dictionary with its own SAELens
``encode``/``decode`` on TransformerLens hooks (a transcoder: ``encode`` of its input hook, ``decode`` at its
output hook) and take gradients with autograd. A two-layer model has five SAE places besides its MLPs, which
hold JumpReLU skip transcoders; the seven SAE kinds take turns in them (``conftest.LAYOUTS``).
"""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import (
    LAYOUTS,
    SAE_KINDS,
    TRANSCODER_KINDS,
    TRANSCODER_READS,
    make_dictionary,
    make_model,
    make_records,
    mixed_dictionaries,
)

import sfc_plugin
from sfc_plugin.data import tokenize
from sfc_plugin.dictionaries import KINDS
from sfc_plugin.errors import SFCError
from sfc_plugin.metrics import logit_diff
from sfc_plugin.splicing import activations, build_submodules

logging.getLogger("sae_lens").setLevel(logging.ERROR)  # TemporalSAE.decode logs a note on every call


def out_hook(key, sae):
    return getattr(sae.cfg.metadata, "hook_name_out", None) or key


def own_run(model, tokens, key, sae, fn):
    """Logits with ``sae`` spliced by SAELens's own modules, its ``(f, ε)`` replaced by ``fn(f, ε)``."""
    out, read = out_hook(key, sae), {}

    def write(act, hook):
        r = read.pop("x") if out != key else act
        f = sae.encode(r)
        f2, e2 = fn(f, act - sae.decode(f))
        return sae.decode(f2) + e2

    hooks = [(out, write)] + ([(key, lambda act, hook: read.__setitem__("x", act))] if out != key else [])
    before = model.cfg.use_hook_mlp_in
    model.cfg.use_hook_mlp_in = True
    try:
        return model.run_with_hooks(tokens, fwd_hooks=hooks)
    finally:
        model.cfg.use_hook_mlp_in = before


def own_nodes(model, tokens, key, sae):
    """``(f, ε)`` of one dictionary on ``tokens``, by SAELens's own modules."""
    got = {}

    def keep(f, e):
        got["f"], got["e"] = f, e
        return f, e

    with torch.no_grad():
        own_run(model, tokens, key, sae, keep)
    return got["f"], got["e"]


def reference_effects(model, saes, records, method, steps=10):
    """``{node id: mean effect}`` by interventions (``exact``) or autograd (``atp``, ``ig``) on SAELens's modules."""
    batch = tokenize(model, records)
    names = {s.read_hook: s.name for s in build_submodules(model, saes)}
    B = len(batch)
    with torch.no_grad():
        m_clean = logit_diff(model(batch.clean), batch)
    out = {}
    for key, sae in saes.items():
        fc, ec = own_nodes(model, batch.clean, key, sae)
        fp, ep = own_nodes(model, batch.patch, key, sae)
        name = names[key]
        if method == "exact":
            with torch.no_grad():
                for j in (fp != fc).any(0).any(0).nonzero().flatten().tolist():

                    def one(f, e, j=j):
                        f = f.clone()
                        f[..., j] = fp[..., j]
                        return f, e

                    m = logit_diff(own_run(model, batch.clean, key, sae, one), batch)
                    out[f"{name}/{j}"] = float((m - m_clean).mean())
                m = logit_diff(own_run(model, batch.clean, key, sae, lambda f, e: (f, ep)), batch)
                out[f"{name}/err"] = float((m - m_clean).mean())
            continue
        alphas = [0.0] if method == "atp" else [k / steps for k in range(steps)]
        gf, ge = torch.zeros_like(fc), torch.zeros_like(ec)
        for a in alphas:
            leaves = {}

            def at(f, e, a=a):
                leaves["f"] = (fc + a * (fp - fc)).requires_grad_(True)
                leaves["e"] = (ec + a * (ep - ec)).requires_grad_(True)
                return leaves["f"], leaves["e"]

            m = logit_diff(own_run(model, batch.clean, key, sae, at), batch).sum()
            g1, g2 = torch.autograd.grad(m, [leaves["f"], leaves["e"]])
            gf, ge = gf + g1 / len(alphas), ge + g2 / len(alphas)
        feat = (gf * (fp - fc)).sum((0, 1)) / B
        for j in feat.nonzero().flatten().tolist():
            out[f"{name}/{j}"] = float(feat[j])
        out[f"{name}/err"] = float((ge * (ep - ec)).sum() / B)
    return out


def effects(circuit):
    return {n.id: n.effect for n in circuit.nodes if n.kind != "metric"}


def assert_close(ours: dict, want: dict, rel: float = 1e-3) -> None:
    for k in sorted(set(ours) | set(want)):
        a, b = ours.get(k, 0.0), want.get(k, 0.0)
        assert abs(a - b) <= rel * abs(b) + 1e-9, (k, a, b)


def test_every_registered_architecture_is_a_node_set_kind():
    from sae_lens.registry import SAE_CLASS_REGISTRY

    assert set(KINDS) == set(SAE_CLASS_REGISTRY)
    assert {k for k, v in KINDS.items() if v.transcoder} == set(TRANSCODER_KINDS)
    assert set(KINDS) == set(SAE_KINDS) | set(TRANSCODER_KINDS)


@pytest.mark.parametrize("kind", SAE_KINDS + TRANSCODER_KINDS)
def test_node_set_maps_are_saelens_own(tokenizer, kind):
    """``decode(encode(x))`` is SAELens's reconstruction; the error node carries what it leaves (and the skip)."""
    model = make_model(tokenizer)
    if kind in TRANSCODER_KINDS:
        key, sae = "blocks.0.ln2.hook_normalized", None
        sae = make_dictionary(kind, key, hook_out="blocks.0.hook_mlp_out")
    else:
        key, sae = "blocks.0.hook_resid_post", make_dictionary(kind, "blocks.0.hook_resid_post")
    (sub,) = build_submodules(model, {key: sae})
    x = torch.randn(3, 5, 16, dtype=torch.float64) * 2
    f = sub.encode(x)
    assert torch.equal(f, sae.encode(x)) and (f != 0).any()
    assert torch.allclose(sub.decode(f), sae.decode(f), atol=1e-12)
    if kind in TRANSCODER_KINDS:
        assert sub.name == "tc_0" and sub.hook == "blocks.0.hook_mlp_out" and sub.read_hook == key
        skip = sub.skip(x)
        assert (skip is not None) == ("skip" in kind)
        if skip is not None:  # SAELens's transcoder output = decode(f) + skip: the skip is part of our error
            assert torch.allclose(sae(x), sub.decode(f) + skip, atol=1e-12) and skip.abs().max() > 0.1
    if kind == "abstopk":
        assert (f < 0).any() and ((f != 0).sum(-1) == 6).all()


def test_rescaled_topk_decodes_with_the_norms_divided_out(tokenizer):
    """``rescale_acts_by_decoder_norm``: SAELens multiplies pre-activations by the decoder norms and divides the
    features by them before decoding (non-unit decoder rows)."""
    model = make_model(tokenizer)
    for kind in ("topk", "abstopk"):
        sae = make_dictionary(kind, "blocks.0.hook_resid_post")
        sae.cfg.rescale_acts_by_decoder_norm = True
        with torch.no_grad():
            sae.W_dec.mul_(torch.linspace(0.5, 3.0, 32, dtype=torch.float64)[:, None])
        (sub,) = build_submodules(model, {"blocks.0.hook_resid_post": sae})
        x = torch.randn(4, 3, 16, dtype=torch.float64, requires_grad=True)
        f = sub.encode(x)
        assert torch.allclose(sub.decode(f), sae.decode(sae.encode(x)), atol=1e-12)
        j = int((f[0, 0] != 0).nonzero()[0])  # the encoder Jacobian the edges use, at an active feature
        (grad,) = torch.autograd.grad(sae.encode(x)[0, 0, j], x)
        assert torch.allclose(grad[0, 0], sub.W_enc[:, j], atol=1e-12)


@pytest.mark.parametrize("kind", ["standard", "gated", "topk", "abstopk", "jumprelu", "transcoder"])
def test_masked_linear_encoders_have_the_jacobian_the_edges_use(tokenizer, kind):
    model = make_model(tokenizer)
    key = "blocks.0.hook_mlp_in" if kind == "transcoder" else "blocks.0.hook_resid_post"
    sae = make_dictionary(kind, key, hook_out="blocks.0.hook_mlp_out" if kind == "transcoder" else None)
    (sub,) = build_submodules(model, {key: sae})
    x = torch.randn(5, 16, dtype=torch.float64) * 2
    jac = torch.autograd.functional.jacobian(lambda v: sae.encode(v[None])[0], x[0])  # [F, d]
    active = sae.encode(x[:1])[0] != 0
    assert active.any()
    assert torch.allclose(jac[active], sub.W_enc.T[active], atol=1e-10)
    assert torch.equal(jac[~active], torch.zeros_like(jac[~active]))


def test_matching_pursuit_and_temporal_encoders_are_not_masked_linear_maps(tokenizer):
    """Why their edges differentiate SAELens's encoder: a masked W_decᵀ (their tied encoder) is not the Jacobian."""
    model = make_model(tokenizer)
    for kind in ("matching_pursuit", "temporal"):
        sae = make_dictionary(kind, "blocks.0.hook_resid_post")
        (sub,) = build_submodules(model, {"blocks.0.hook_resid_post": sae})
        assert sub.W_enc is None
        x = torch.randn(1, 4, 16, dtype=torch.float64) * 2
        jac = torch.autograd.functional.jacobian(lambda v: sae.encode(v)[0, -1], x)[:, 0, -1]  # [F, d] at the end
        active = sae.encode(x)[0, -1] != 0
        tied = sae.W_dec / (4 * sae.cfg.d_in) if kind == "temporal" else sae.W_dec  # lam = 1 / (4 d_in)
        assert not torch.allclose(jac[active], tied[active], atol=1e-3)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_splicing_every_kind_leaves_the_model_unchanged(tokenizer, layout, parallel):
    model = make_model(tokenizer, parallel=parallel)
    saes = mixed_dictionaries(layout)
    batch = tokenize(model, make_records(4))
    plain = model(batch.clean)
    plain_grad = torch.autograd.grad(logit_diff(plain, batch).sum(), model.W_E)[0]
    with sfc_plugin.splice(model, saes) as state:
        spliced = model(batch.clean)
        (grad,) = torch.autograd.grad(logit_diff(spliced, batch).sum(), model.W_E)
    assert torch.allclose(spliced, plain, atol=1e-10) and torch.allclose(grad, plain_grad, atol=1e-10)
    assert set(state.features) == set(saes) and model.cfg.use_hook_mlp_in is False
    acts = activations(model, build_submodules(model, saes), batch.clean)
    for s in build_submodules(model, saes):
        a = acts[s.name]
        assert torch.allclose(s.decode(a.f) + a.err, a.x, atol=1e-12)
        assert torch.allclose(a.f, state.features[s.read_hook].detach(), atol=1e-12), s.name
    assert model.cfg.use_hook_mlp_in is False  # switched on for the passes that read hook_mlp_in, then restored


def test_skip_term_is_folded_into_the_error_node(tokenizer):
    model = make_model(tokenizer)
    saes = mixed_dictionaries("a")
    subs = {s.name: s for s in build_submodules(model, saes)}
    tokens = tokenize(model, make_records(4)).clean
    hooks = ("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out")
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in hooks)
    tc = subs["tc_1"]
    read, write = (cache[h] for h in hooks)
    err = activations(model, list(subs.values()), tokens)["tc_1"].err
    own_error = write - tc.sae(read)  # actual MLP output − transcoder output (skip included)
    assert torch.allclose(err, own_error + read @ tc.sae.W_skip.T, atol=1e-12)
    assert torch.allclose(err - tc.skip(read), own_error, atol=1e-12)


@pytest.mark.parametrize("method", ["exact", "atp", "ig"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_node_effects_equal_saelens_own_recomputation(tokenizer, layout, method):
    model = make_model(tokenizer)
    saes = mixed_dictionaries(layout)
    records = make_records(6)
    circuit = sfc_plugin.discover(
        model, saes, records, method=method, steps=10, node_threshold=0.0, edges=False, progress=False
    )
    ours, want = effects(circuit), reference_effects(model, saes, records, method)
    assert_close(ours, want)
    names = {n.submodule for n in circuit.nodes if n.kind != "metric"}
    assert {"tc_0", "tc_1"} <= names and len(names) == 7
    assert sum(abs(v) > 1e-3 for k, v in want.items() if k.endswith("/err")) >= 5  # error nodes are tested
    assert model.cfg.use_hook_mlp_in is False


def run_direct(model, subs, batch, clean, up, direction, down):
    """``(x, read)`` of ``down`` with ``up`` moved along ``direction`` and every other submodule clamped to clean."""
    seen = {}
    hooks = []
    for s in subs.values():
        if s.name == up.name:
            hooks.append((s.hook, lambda act, hook, s=s: s.unflat(clean[s.hook] + direction)))
        elif down is not None and s.name == down.name:
            hooks.append((s.hook, lambda act, hook, s=s: seen.setdefault("x", act)))
        else:
            hooks.append((s.hook, lambda act, hook: clean[hook.name]))
    if down is not None and down.transcoder:
        hooks.append((down.read_hook, lambda act, hook: seen.setdefault("read", act)))
    model.cfg.use_hook_mlp_in = True
    try:
        logits = model.run_with_hooks(batch.clean, fwd_hooks=hooks)
    finally:
        model.cfg.use_hook_mlp_in = False
    return logits, seen


def direct_edge(model, saes, subs, batch, up_name, un, down_name, dn, h=1e-5):
    """Central difference of ``down``'s node along ``up``'s node's patch − clean change, other nodes held fixed,
    times the node's gradient; SAELens's own modules throughout. Mean over examples."""
    u = subs[up_name]
    d = subs.get(down_name)
    with torch.no_grad():
        _, clean = model.run_with_cache(batch.clean, names_filter=lambda n: n in {s.hook for s in subs.values()})
    fc, ec = own_nodes(model, batch.clean, u.read_hook, u.sae)
    fp, ep = own_nodes(model, batch.patch, u.read_hook, u.sae)
    if un == "err":
        direction = ep - ec
    else:
        one = torch.zeros_like(fc)
        one[..., un] = fp[..., un] - fc[..., un]
        direction = u.sae.decode(one) - u.sae.decode(torch.zeros_like(fc))
    direction = u.flat(direction) if u.hook_shape is not None and direction.dim() > 3 else direction
    with torch.no_grad():
        plus = run_direct(model, subs, batch, clean, u, h * direction, d)
        minus = run_direct(model, subs, batch, clean, u, -h * direction, d)
    if d is None:
        return float(((logit_diff(plus[0], batch) - logit_diff(minus[0], batch)) / (2 * h)).mean())

    def node(seen):
        read = seen["read"] if d.transcoder else seen["x"]
        f = d.sae.encode(read)
        return f[..., dn] if dn != "err" else seen["x"] - d.sae.decode(f)

    fd, ed = own_nodes(model, batch.clean, d.read_hook, d.sae)
    leaves = {}

    def at(f, e):
        leaves["f"], leaves["e"] = f.detach().requires_grad_(True), e.detach().requires_grad_(True)
        return leaves["f"], leaves["e"]

    m = logit_diff(own_run(model, batch.clean, d.read_hook, d.sae, at), batch).sum()
    gf, ge = torch.autograd.grad(m, [leaves["f"], leaves["e"]])
    with torch.no_grad():
        change = (node(plus[1]) - node(minus[1])) / (2 * h)
    if dn == "err":
        return float((change * ge).sum((1, 2)).mean())
    return float((change * gf[..., dn]).sum(1).mean())


def gemma_like(tokenizer, seed=0):
    """A sequential block as Gemma-2's: RMSNorm before and after attention and MLP, a gated MLP, grouped-query
    rotary attention, soft-capped scores and logits."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=16,
        n_ctx=16,
        d_head=4,
        n_heads=4,
        n_key_value_heads=2,
        d_mlp=64,
        d_vocab=len(tokenizer),
        act_fn="gelu_pytorch_tanh",
        gated_mlp=True,
        normalization_type="RMS",
        use_normalization_before_and_after=True,
        positional_embedding_type="rotary",
        rotary_dim=4,
        attn_scores_soft_cap=50.0,
        output_logits_soft_cap=30.0,
        dtype=torch.float64,
        seed=seed,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 1 / 16**0.5)
    return model.eval()


@pytest.mark.parametrize("block", ["sequential", "parallel", "gemma"])
@pytest.mark.parametrize("layout", ["a", "b", "c"])
def test_mixed_circuit_edges_match_interventions_holding_the_rest_fixed(tokenizer, layout, block):
    check_mixed_edges(tokenizer, layout, block)


@pytest.mark.parametrize("block", ["sequential", "gemma"])
def test_transcoders_reading_the_mlps_own_input_have_exact_edges(tokenizer, block):
    """``mlp.hook_in`` (circuit-tracer's read hook; Gemma Scope 2's transcoders are read there): the pre-MLP norm's
    output, weight included; the World adds the hook to every MLP."""
    check_mixed_edges(tokenizer, "a", block, reads=("blocks.0.mlp.hook_in", "blocks.1.mlp.hook_in"))


def check_mixed_edges(tokenizer, layout, block, reads=TRANSCODER_READS):
    model = gemma_like(tokenizer) if block == "gemma" else make_model(tokenizer, parallel=block == "parallel")
    with torch.no_grad():  # norms with weights of their own: a transcoder reads ln2.hook_normalized before them
        for name, p in model.named_parameters():
            if ".ln" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype) * 0.3)
    parallel = block == "parallel"
    saes = mixed_dictionaries(layout, reads=reads)
    records = make_records(6)
    circuit = sfc_plugin.discover(
        model, saes, records, method="atp", node_threshold=0.0, edge_threshold=0.0, progress=False
    )
    subs = {s.name: s for s in build_submodules(model, saes)}
    batch = tokenize(model, records)
    pairs = {(e.source.split("/")[0], e.target.split("/")[0]) for e in circuit.edges}
    expected = {("embed", "attn_0"), ("embed", "tc_0"), ("embed", "resid_0"), ("attn_0", "tc_0")}
    expected |= {("attn_0", "resid_0"), ("tc_0", "resid_0"), ("resid_0", "attn_1"), ("resid_0", "tc_1")}
    expected |= {("resid_0", "resid_1"), ("attn_1", "tc_1"), ("attn_1", "resid_1"), ("tc_1", "resid_1")}
    expected |= {("resid_1", "y")}
    if parallel:  # the MLP reads the block's input, not the attention's output
        expected -= {("attn_0", "tc_0"), ("attn_1", "tc_1")}
    assert pairs == expected
    checked = from_err = into_err = 0
    for pair in sorted(expected):
        group = [e for e in circuit.edges if (e.source.split("/")[0], e.target.split("/")[0]) == pair]
        feats = [e for e in group if not e.source.endswith("/err") and not e.target.endswith("/err")]
        picks = [max(feats or group, key=lambda e: abs(e.weight))]
        picks += [max((e for e in group if e.source.endswith("/err")), key=lambda e: abs(e.weight), default=None)]
        picks += [e for e in group if e.target.endswith("/err")][:1]
        for e in filter(None, picks):
            (up, un), (down, dn) = parse(e.source), parse(e.target)
            want = direct_edge(model, saes, subs, batch, up, un, down, dn)
            assert e.weight == pytest.approx(want, rel=1e-3, abs=1e-7), (e.source, e.target)
            checked += 1
            from_err += un == "err"
            into_err += dn == "err"
    assert checked >= 2 * len(expected) and from_err >= len(expected) and into_err >= 5
    assert model.cfg.use_hook_mlp_in is False


def parse(node_id):
    if node_id == "y":
        return "y", None
    sub, _, rest = node_id.partition("/")
    return sub, (rest if rest == "err" else int(rest))


def test_ig_node_effects_of_a_transcoder_sum_to_patching_its_mlp(tokenizer):
    """Completeness through the transcoder: patching the MLP's output from the patch run is its total effect."""
    model = make_model(tokenizer)
    saes = mixed_dictionaries("b")
    records = make_records(6)
    circuit = sfc_plugin.discover(
        model, saes, records, method="ig", steps=100, node_threshold=0.0, edges=False, progress=False
    )
    batch = tokenize(model, records)
    with torch.no_grad():
        _, p = model.run_with_cache(batch.patch, names_filter="blocks.0.hook_mlp_out")
        m0 = logit_diff(model(batch.clean), batch)
        patched = model.run_with_hooks(batch.clean, fwd_hooks=[("blocks.0.hook_mlp_out", lambda a, hook: p[hook.name])])
        want = float((logit_diff(patched, batch) - m0).mean())
    total = sum(n.effect for n in circuit.nodes if n.submodule == "tc_0")
    assert abs(want) > 1e-2 and total == pytest.approx(want, rel=0.02)


def test_temporal_features_are_encoded_one_sequence_at_a_time(tokenizer):
    """The engine's chunked encoder gives the features SAELens computes on whole sequences."""
    from sfc_plugin.attribution.context import encode

    model = make_model(tokenizer)
    sae = make_dictionary("temporal", "blocks.0.hook_resid_post")
    (sub,) = build_submodules(model, {"blocks.0.hook_resid_post": sae})
    x = torch.randn(5, 7, 16, dtype=torch.float64)
    got = encode(sub, x, tokens_per_chunk=14)  # two sequences per chunk
    assert torch.equal(got.f.dense(), sae.encode(x)) and not sub.tokenwise


# ---- refusals: one line each ------------------------------------------------------------------------------------
def _world_error(model, saes) -> str:
    with pytest.raises(SFCError) as info:
        sfc_plugin.World.load(model, saes)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_refusals_are_one_line(tokenizer):
    model = make_model(tokenizer)
    tc = lambda read, out, **kw: make_dictionary("transcoder", read, hook_out=out, **kw)  # noqa: E731
    assert "hook 'blocks.5.hook_mlp_in' is not in the model" in _world_error(
        model, {"blocks.5.hook_mlp_in": tc("blocks.5.hook_mlp_in", "blocks.5.hook_mlp_out")}
    )
    assert "output hook 'blocks.4.hook_mlp_out' is not in the model" in _world_error(
        model, {"blocks.0.hook_mlp_in": tc("blocks.0.hook_mlp_in", "blocks.4.hook_mlp_out")}
    )
    assert "d_out=12 but the model's d_model at 'blocks.0.hook_mlp_out' is 16" in _world_error(
        model, {"blocks.0.hook_mlp_in": tc("blocks.0.hook_mlp_in", "blocks.0.hook_mlp_out", d_out=12)}
    )
    assert "must write blocks.<l>.hook_mlp_out" in _world_error(
        model, {"blocks.0.hook_mlp_in": tc("blocks.0.hook_mlp_in", "blocks.0.hook_resid_post")}
    )
    assert "it must read blocks.1." in _world_error(
        model, {"blocks.0.hook_mlp_in": tc("blocks.0.hook_mlp_in", "blocks.1.hook_mlp_out")}
    )
    assert "has no cfg.metadata.hook_name_out" in _world_error(
        model, {"blocks.0.hook_mlp_in": tc("blocks.0.hook_mlp_in", None)}
    )

    class MineConfig(type(make_dictionary("standard", "x").cfg)):
        @classmethod
        def architecture(cls):
            return "mine"

    sae = make_dictionary("standard", "blocks.0.hook_resid_post")
    sae.cfg = MineConfig(**{k: getattr(sae.cfg, k) for k in ("d_in", "d_sae", "dtype")})
    sae.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    assert "architecture 'mine', which is not an architecture SAELens registers" in _world_error(
        model, {"blocks.0.hook_resid_post": sae}
    )
    mp = make_dictionary("matching_pursuit", "blocks.0.hook_resid_post")
    mp.cfg.normalize_activations = "layer_norm"
    assert "normalize_activations='layer_norm' (supported for matching_pursuit" in _world_error(
        model, {"blocks.0.hook_resid_post": mp}
    )
    assert model.cfg.use_hook_mlp_in is False


def test_a_saved_dictionary_of_an_unregistered_architecture_is_one_line(tmp_path):
    import json

    from sfc_plugin.models import load_sae_dir

    sae = make_dictionary("standard", "blocks.0.hook_resid_post")
    sae.save_model(tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "cfg.json").read_text())
    (tmp_path / "d" / "cfg.json").write_text(json.dumps({**cfg, "architecture": "crosscoder"}))
    with pytest.raises(SFCError, match="architecture 'crosscoder', which is not an architecture SAELens registers"):
        load_sae_dir(tmp_path / "d")


def test_constant_norm_rescale_reports_features_in_the_hooks_units(tokenizer):
    """As with ``layer_norm``: SAELens scales the input by ``c = √d_in / |x|`` and divides the reconstruction by it;
    features are reported as ``f / c`` (their exact contribution), ``b_dec / c`` goes to the error node, and the
    Jacobian of ``f / c`` with ``c`` held fixed is ``mask ⊙ W_enc``."""
    model = make_model(tokenizer)
    sae = make_dictionary("standard", "blocks.0.hook_resid_post")
    sae.cfg.normalize_activations = "constant_norm_rescale"
    sae._setup_activation_normalization()
    (sub,) = build_submodules(model, {"blocks.0.hook_resid_post": sae})
    x = torch.randn(3, 4, 16, dtype=torch.float64) * 3
    c = 16**0.5 / x.norm(dim=-1, keepdim=True)
    f = sub.encode(x)
    assert torch.allclose(f, sae.encode(x) / c) and torch.equal(sub.b_dec, torch.zeros(16, dtype=torch.float64))
    assert torch.allclose(sub.decode(f) + sae.b_dec / c, sae.decode(sae.encode(x)), atol=1e-12)
    x0 = x[0, 0]
    j = int((f[0, 0] != 0).nonzero()[0])
    c0 = c[0, 0, 0]
    sae.run_time_activation_norm_fn_in = lambda v: v * c0  # SAELens's scaling with c held at x0's
    grad = torch.autograd.functional.jacobian(lambda v: sae.encode(v)[j] / c0, x0)
    sae._setup_activation_normalization()
    assert torch.allclose(grad, sub.W_enc[:, j], atol=1e-12)
    sae2 = make_dictionary("topk", "blocks.1.hook_resid_post")
    sae2.cfg.normalize_activations = "expected_average_only_in"  # the identity at inference, as SAELens runs it
    circuit = sfc_plugin.discover(
        model, {"blocks.0.hook_resid_post": sae, "blocks.1.hook_resid_post": sae2}, make_records(4), progress=False
    )
    assert {"resid_0", "resid_1"} <= {n.submodule for n in circuit.nodes if n.kind != "metric"}


@pytest.mark.parametrize("block", ["sequential", "parallel", "gemma"])
def test_tokenwise_transcoder_edges_equal_the_batched_vjp(tokenizer, block, monkeypatch):
    """Edges into a transcoder whose inputs are submodules, per active (node, token) through its read and its MLP,
    equal the batched VJP over every token; both read hooks, and a transcoder reading ``hook_resid_pre``."""
    import sfc_plugin.attribution.edges as edges
    from sfc_plugin.attribution.engine import attribute
    from sfc_plugin.attribution.methods import ig

    model = gemma_like(tokenizer) if block == "gemma" else make_model(tokenizer, parallel=block == "parallel")
    with torch.no_grad():  # norms with weights and biases of their own (ln2.hook_normalized is before them)
        for name, p in model.named_parameters():
            if ".ln" in name:
                p.add_(torch.randn_like(p) * 0.3)
    reads = ("blocks.0.hook_mlp_in", "blocks.1.hook_resid_pre" if block == "parallel" else "blocks.1.hook_resid_mid")
    saes = mixed_dictionaries("a", reads=reads)
    saes["blocks.0.hook_resid_pre"] = saes.pop("hook_embed")  # the block's input is a submodule at layer 0 too
    saes["blocks.0.hook_resid_pre"].cfg.metadata.hook_name = "blocks.0.hook_resid_pre"
    saes["blocks.0.ln2.hook_normalized"] = saes.pop("blocks.0.hook_mlp_in")
    saes["blocks.0.ln2.hook_normalized"].cfg.metadata.hook_name = "blocks.0.ln2.hook_normalized"
    subs = build_submodules(model, saes)
    batch = tokenize(model, make_records(6))
    calls = []
    real = edges.tokenwise_edges
    monkeypatch.setattr(edges, "tokenwise_edges", lambda *a, **k: calls.append(a[2].sub.name) or real(*a, **k))
    fast = attribute(model, subs, batch, logit_diff, ig, steps=2, node_threshold=0.01, batch_size=4, budget=None)
    assert {"tc_0", "tc_1"} <= set(calls)
    monkeypatch.setattr(edges, "mlp_inputs", lambda *a: None)
    slow = attribute(model, subs, batch, logit_diff, ig, steps=2, batch_size=4, budget=None, nodes=fast.nodes)
    assert fast.edges.keys() == slow.edges.keys() and ("resid_0", "tc_1") in fast.edges
    for key, w in slow.edges.items():
        assert (fast.edges[key] - w).abs().max() <= 1e-9 * (1 + w.abs().max()), key


@pytest.mark.parametrize("kind", SAE_KINDS + TRANSCODER_KINDS)
def test_a_kind_is_tokenwise_exactly_when_its_encoder_reads_one_position(kind):
    """``tokenwise`` against SAELens's own encoder: change the first position only and see whether the features at
    the later positions move."""
    sae = make_dictionary(kind, "blocks.0.hook_resid_post")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 5, 16, dtype=torch.float64, generator=g) * 2
    y = x.clone()
    y[0, 0] += torch.randn(16, dtype=torch.float64, generator=g) * 2
    with torch.no_grad():
        fx, fy = sae.encode(x)[0], sae.encode(y)[0]
    assert not torch.equal(fx[0], fy[0])  # the change reaches the position it is made at
    assert KINDS[kind].tokenwise == torch.equal(fx[1:], fy[1:])


def test_kinds_and_their_maps_are_read_only_and_only_skip_transcoders_have_a_skip_term():
    """A kind is one shared object per architecture and its maps are shared by every node set built from it: neither
    can be changed in place. The error node's description mentions the skip term exactly for the skip kinds."""
    import dataclasses

    from sfc_plugin.dictionaries import Maps

    maps = Maps(torch.zeros(2, 3), torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        maps.W_dec = torch.ones(3, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        KINDS["standard"].tokenwise = False
    for name, kind in KINDS.items():
        assert ("skip term" in kind.error) == ("skip" in name), name
        assert kind.transcoder == (name in TRANSCODER_KINDS), name


@pytest.mark.parametrize("norm", ["none", "constant_scalar_rescale"])
@pytest.mark.parametrize("b_dec_in", [True, False])
def test_temporal_maps_are_saelens_own_decode_with_and_without_its_bias(tokenizer, norm, b_dec_in):
    """A tied temporal SAE that does not subtract ``b_dec`` from its input adds none on decoding either; a
    constant-scalar rescale divides the decoding by its factor. The maps against SAELens's ``decode``."""
    import sae_lens as sl

    cfg = sl.TemporalSAEConfig(
        d_in=16, d_sae=32, n_heads=2, bottleneck_factor=8, kval_topk=6, dtype="float64",
        apply_b_dec_to_input=b_dec_in, normalize_activations=norm,
    )  # fmt: skip
    if norm == "constant_scalar_rescale":
        cfg.activation_normalization_factor = 2.5
    sae = sl.TemporalSAE(cfg)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, dtype=p.dtype, generator=g) * 0.5)
    hook = "blocks.0.hook_resid_post"
    (sub,) = build_submodules(make_model(tokenizer), {hook: sae})
    f = torch.relu(torch.randn(2, 4, 32, dtype=torch.float64, generator=g))
    with torch.no_grad():
        want = sae.decode(f)
    assert torch.allclose(sub.decode(f), want, atol=1e-12)
    assert float(sae.b_dec.detach().abs().max()) > 0.1 and float(want.abs().max()) > 0.1


@pytest.mark.parametrize("b_dec_in", [True, False])
def test_matching_pursuit_maps_are_saelens_own_decode_with_and_without_its_bias(tokenizer, b_dec_in):
    """Matching pursuit is tied: it adds ``b_dec`` on decoding only when it subtracts it from its input."""
    import sae_lens as sl

    cfg = sl.MatchingPursuitSAEConfig(
        d_in=16, d_sae=32, max_iterations=5, residual_threshold=0.0, dtype="float64", apply_b_dec_to_input=b_dec_in
    )
    sae = sl.MatchingPursuitSAE(cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, dtype=p.dtype, generator=g) * 0.5)
    (sub,) = build_submodules(make_model(tokenizer), {"blocks.0.hook_resid_post": sae})
    f = torch.relu(torch.randn(2, 4, 32, dtype=torch.float64, generator=g))
    with torch.no_grad():
        want = sae.decode(f)
    assert torch.allclose(sub.decode(f), want, atol=1e-12)
    assert float(sae.b_dec.detach().abs().max()) > 0.1


def test_transcoder_edges_by_the_batched_vjp_do_not_depend_on_the_rows_per_pass(tokenizer, monkeypatch):
    """Edges into transcoders through the batched VJP (no token-wise path) are the same whether each pass takes one
    cotangent row, three (passes that mix feature and error rows) or all of them."""
    import functools

    import sfc_plugin.attribution.edges as edges
    import sfc_plugin.attribution.engine as engine
    from sfc_plugin.attribution.engine import attribute
    from sfc_plugin.attribution.methods import atp

    model = make_model(tokenizer)
    subs = build_submodules(model, mixed_dictionaries("a"))
    batch = tokenize(model, make_records(4))
    monkeypatch.setattr(edges, "mlp_inputs", lambda *a: None)  # the batched VJP for every transcoder
    whole = attribute(model, subs, batch, logit_diff, atp, node_threshold=0.01, budget=None)
    assert any(d.startswith("tc_") for _, d in whole.edges)
    for rows in (1, 3):
        monkeypatch.setattr(engine, "edge_effects", functools.partial(edges.edge_effects, chunk=rows))
        got = attribute(model, subs, batch, logit_diff, atp, budget=None, nodes=whole.nodes)
        assert got.edges.keys() == whole.edges.keys()
        for key, w in whole.edges.items():
            assert (got.edges[key] - w).abs().max() <= 1e-9 * (1 + w.abs().max()), (rows, key)


def test_per_position_transcoder_edges_by_token_equal_the_batched_vjp(tokenizer, monkeypatch):
    """With ``aggregation="none"`` (a transcoder's error node at each position), edges into transcoders computed
    per active (node, token) equal the batched VJP over every token."""
    import sfc_plugin.attribution.edges as edges
    from sfc_plugin.attribution.engine import attribute
    from sfc_plugin.attribution.methods import atp

    model = make_model(tokenizer)
    saes = mixed_dictionaries("a", reads=("blocks.0.ln2.hook_normalized", "blocks.1.hook_resid_mid"))
    saes["blocks.0.hook_resid_pre"] = saes.pop("hook_embed")  # every input of block 0's MLP is a submodule
    saes["blocks.0.hook_resid_pre"].cfg.metadata.hook_name = "blocks.0.hook_resid_pre"
    subs = build_submodules(model, saes)
    batch = tokenize(model, make_records(4))
    calls = []
    real = edges.tokenwise_edges
    monkeypatch.setattr(edges, "tokenwise_edges", lambda *a, **k: calls.append(a[2].sub.name) or real(*a, **k))
    kw = dict(aggregation="none", budget=None)
    fast = attribute(model, subs, batch, logit_diff, atp, node_threshold=1e-4, **kw)
    assert "tc_0" in calls and len(fast.nodes["tc_0"].err_pos) > 2
    monkeypatch.setattr(edges, "mlp_inputs", lambda *a: None)
    slow = attribute(model, subs, batch, logit_diff, atp, nodes=fast.nodes, **kw)
    assert fast.edges.keys() == slow.edges.keys()
    for key, w in slow.edges.items():
        assert (fast.edges[key] - w).abs().max() <= 1e-9 * (1 + w.abs().max()), key
