"""``frozen`` stores the block weights TransformerLens copies on every call (gated MLP ``W.T.contiguous()``,
attention's rearranged ``W_Q``/``W_O``) so that the copy is a view: a pass with autograd keeps no weight copy
(issue 9: ~0.31 GB per Gemma-2-2B block). Values, outputs and gradients are unchanged; layouts are restored."""

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sfc_plugin.splicing import frozen


def _model(gated: bool) -> HookedTransformer:
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        d_vocab=50,
        n_ctx=16,
        act_fn="gelu",
        gated_mlp=gated,
        normalization_type="RMS",
    )
    return HookedTransformer(cfg)


def _saved_copies(model, tokens):
    """Bytes of saved tensors that are neither a parameter's storage nor smaller than the smallest weight matrix;
    the output and the gradient of the residual entering block 0."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    small = min(p.numel() for n, p in model.named_parameters() if n.endswith(("W_Q", "W_O", "W_in"))) * 4
    copies = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if (
            ptr not in params
            and t.dim() >= 2
            and t.untyped_storage().nbytes() >= small
            and t.shape[0] != tokens.shape[0]
        ):
            copies[ptr] = t.untyped_storage().nbytes()
        return t

    leaf = {}

    def cut(act, hook):
        leaf["x"] = act.detach().requires_grad_(True)
        return leaf["x"]

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.0.hook_resid_pre", cut)], stop_at_layer=model.cfg.n_layers
        )
    (g,) = torch.autograd.grad(out.sum(), [leaf["x"]])
    return sum(copies.values()), out.detach(), g


def test_frozen_keeps_no_weight_copies_and_changes_nothing():
    for gated in (True, False):
        model = _model(gated)
        tokens = torch.randint(0, 50, (3, 7))
        before = {n: (p.detach().clone(), p.stride()) for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        copied, out, g = _saved_copies(model, tokens)
        for p in model.parameters():
            p.requires_grad_(True)
        assert copied > 0  # TransformerLens copies W_Q/W_O (and gated W_in, W_gate, W_out) on every call
        with frozen(model):
            copied_frozen, out_frozen, g_frozen = _saved_copies(model, tokens)
            assert all(not p.requires_grad for p in model.parameters())
        assert copied_frozen == 0
        assert torch.equal(out, out_frozen) and torch.equal(g, g_frozen)
        for n, p in model.named_parameters():  # restored: values, strides, requires_grad
            assert torch.equal(p.detach(), before[n][0]) and p.stride() == before[n][1] and p.requires_grad
