"""Forward passes that read only what the metric needs.

- The unembedding is applied only at the positions a metric reads: a metric with ``positions = "last"``
  (the built-ins) gets logits ``[rows, 1, vocab]`` at each prompt's last token (its batch's ``last`` is 0);
  any other metric gets the full ``[rows, pos, vocab]``.
- A pass may start at a block (TransformerLens ``start_at_layer``) from a cached residual stream, so
  IG rows that interpolate a layer-``l`` submodule skip blocks ``0..l-1``.
- :func:`collect` runs a batch once, caching the hooked activations and the residual stream entering
  each block, and returns the metric as well (used by nodes, edges and the total effect).
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch

_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def metric_positions(metric) -> str:
    """``"last"`` when the metric reads only each prompt's last token, else ``"all"``."""
    return getattr(metric, "positions", "all")


def start_of(hook: str, cfg=None) -> tuple[int | None, bool]:
    """``(block to start at, input_mode)`` for IG rows interpolating ``hook``.

    ``blocks.l.hook_resid_pre`` and ``blocks.l-1.hook_resid_post`` are the input of block ``l``
    (``input_mode``: the interpolated activation *is* the residual fed to the pass). So, in effect, are
    ``blocks.l.hook_mlp_out`` and (parallel attention/MLP or attention-only blocks, given the model's ``cfg``)
    ``blocks.l.hook_attn_out``: TransformerLens adds them to ``hook_resid_post`` unchanged, so moving one
    moves the input of block ``l+1`` by the same amount and block ``l`` need not run. Any other hook inside
    block ``l`` starts at ``l`` from the cached clean residual. Other hooks (``hook_embed``) start at the tokens.
    """
    m = _BLOCK_HOOK.match(hook)
    if not m:
        return None, False
    layer, rest = int(m.group(1)), m.group(2)
    if rest == "hook_resid_pre":
        return layer, True
    if rest in ("hook_resid_post", "hook_mlp_out"):
        return layer + 1, True
    if (
        rest == "hook_attn_out"
        and cfg is not None
        and (getattr(cfg, "parallel_attn_mlp", False) or getattr(cfg, "attn_only", False))
    ):
        return layer + 1, True
    return layer, False


def _attention_mask(model, tokens):
    tok = getattr(model, "tokenizer", None)
    if tok is not None and getattr(tok, "padding_side", "right") == "left":
        from transformer_lens import utils

        return utils.get_attention_mask(tok, tokens, model.cfg.default_prepend_bos)
    return None


def head(model, resid: torch.Tensor) -> torch.Tensor:
    """Final norm, unembedding and logit soft-cap of residuals ``[..., d_model]``.

    The unembedding is ``resid @ W_U + b_U`` through the unembed's hook points: TransformerLens's own
    forward copies ``W_U.T`` (``d_model × vocab``, 2.4 GB for Gemma-2's 256k vocabulary) on every call.
    """
    if model.cfg.normalization_type is not None:
        resid = model.ln_final(resid)
    unembed = model.unembed
    logits = unembed.hook_out(unembed.hook_in(resid) @ unembed.W_U + unembed.b_U)
    cap = getattr(model.cfg, "output_logits_soft_cap", 0.0) or 0.0
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


def run_metric(model, metric, batch, fwd_hooks=(), start: int | None = None, resid: torch.Tensor | None = None):
    """The metric per row of ``batch`` with ``fwd_hooks``; from block ``start`` with ``resid`` when given."""
    kwargs = {}
    if start is not None:
        kwargs["start_at_layer"] = start
        mask = _attention_mask(model, batch.clean)
        if mask is not None:
            kwargs["attention_mask"] = mask
        inp = resid
    else:
        inp = batch.clean
    hooks = list(fwd_hooks)
    if metric_positions(metric) == "last":
        res = model.run_with_hooks(inp, fwd_hooks=hooks, stop_at_layer=model.cfg.n_layers, **kwargs)
        logits = head(model, res[batch.rows, batch.last][:, None])
        return metric(logits, replace(batch, last=torch.zeros_like(batch.last)))
    return metric(model.run_with_hooks(inp, fwd_hooks=hooks, **kwargs), batch)


def collect(model, hooks: list[str], layers: list[int], batch, tokens, metric=None):
    """One pass over ``tokens``: ``({hook: act}, {layer: resid entering block}, metric or None)``."""
    acts, resid = {}, {}
    fwd = [(h, lambda act, hook: acts.__setitem__(hook.name, act.detach())) for h in hooks]
    fwd += [
        (f"blocks.{l}.hook_resid_pre", lambda act, hook, l=l: resid.__setitem__(l, act.detach()))
        for l in layers
        if l < model.cfg.n_layers
    ]
    b = replace(batch, clean=tokens)
    n = model.cfg.n_layers
    out = model.run_with_hooks(tokens, fwd_hooks=fwd, stop_at_layer=n)
    if n in layers:
        resid[n] = out.detach()
    value = None
    if metric is not None:
        if metric_positions(metric) == "last":
            value = metric(head(model, out[b.rows, b.last][:, None]), replace(b, last=torch.zeros_like(b.last)))
        else:
            value = metric(head(model, out), b)
    return acts, resid, value
