"""The local replacement model of circuit-tracer's linear attribution (method ``linear``).

Inside :func:`replacement` one forward pass is linear from every node's output to every node's input:

- attention patterns (every ``hook_pattern``) and normalisation scales (every ``hook_scale``: ``ln1``, ``ln2``,
  ``ln_final``, post-norms) are detached — their values on the prompt, with no gradient through them;
- each node set's write (an SAE's hook; a transcoder's ``hook_mlp_out``) is replaced by its value, detached, plus a
  zero leaf whose gradient is what reaches the write along the direct paths; a skip transcoder adds its skip
  term's gradient path ``skip(read) − skip(read).detach()``. So an MLP's own computation carries no gradient, and
  every path through a dictionary's hook runs through its nodes (features, error), never around them;
- given ``features`` (active entries per node set), those features also pass gradient on linearly,
  ``(mask ⊙ read W_enc) W_dec``: total effects in the local replacement model (each active feature a linear unit);
- the token embeddings (``hook_embed``) get a zero leaf of their own.

Values are the model's own (every replacement adds exact zeros). This is circuit-tracer 0.5.0's
``TransformerLensReplacementModel`` (``_configure_gradient_flow``, ``_configure_skip_connection``), generalised to
any node sets whose encoders are masked linear maps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace

import torch

from ..errors import SFCError
from ..splicing import Submodule, read_hooks
from .forward import head, metric_positions

TOKENS = "tokens"  # the leaf at hook_embed


def check_linear(model, subs: list[Submodule]) -> None:
    """One-line SFCError unless every MLP has a transcoder and every encoder is a masked linear map."""
    names = {s.name for s in subs}
    if not getattr(model.cfg, "attn_only", False):
        for layer in range(model.cfg.n_layers):
            if f"tc_{layer}" not in names:
                has = "an SAE at its output" if f"mlp_{layer}" in names else "none"
                raise SFCError(
                    f"method 'linear' (circuit-tracer's convention) needs a transcoder at every MLP: MLP {layer} "
                    f"has {has}"
                )
    for s in subs:
        if s.W_enc is None:
            arch = s.kind.architecture if s.kind is not None else "?"
            raise SFCError(
                f"method 'linear' needs encoders that are masked linear maps: the {arch} dictionary at "
                f"{s.read_hook!r} is not"
            )


def valid_positions(last: torch.Tensor, width: int) -> torch.Tensor:
    """Bool ``[b, width]``: positions that hold nodes — ``1..last`` (position 0, the BOS, holds none, as in
    circuit-tracer, whose features and errors there are zeroed)."""
    pos = torch.arange(width, device=last.device)[None, :]
    return (pos >= 1) & (pos <= last[:, None])


def _masked_linear(s: Submodule, read: torch.Tensor, tok: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``[N, d_out]``: ``Σ_active (read[tok] · W_enc[:, j]) W_dec[j]`` per flat token (the features as linear units)."""
    flat = read.reshape(-1, read.shape[-1])
    pre = (flat[tok] * s.W_enc.T[idx]).sum(-1)
    out = flat.new_zeros((flat.shape[0], s.W_dec.shape[-1]))
    return out.index_add(0, tok, pre[:, None] * s.W_dec[idx])


@dataclass
class Pass:
    """What one pass of the local replacement model exposes (``[R, T, ·]`` rows of tokens)."""

    model: object
    resid: torch.Tensor  # the residual after the last block, in the graph
    leaves: dict[str, torch.Tensor] = field(default_factory=dict)  # node set → zero leaf at its write; TOKENS
    reads: dict[str, torch.Tensor] = field(default_factory=dict)  # node set → read activation, in the graph
    values: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # (write, read), detached
    embed: torch.Tensor | None = None  # hook_embed's value, detached

    def final(self) -> torch.Tensor:
        """The residual after ``ln_final`` (its scale frozen): what the unembedding reads."""
        model = self.model
        return model.ln_final(self.resid) if model.cfg.normalization_type is not None else self.resid

    def metric(self, metric, batch) -> torch.Tensor:
        """The metric per row (its own nonlinearity kept; ``ln_final``'s scale frozen)."""
        if metric_positions(metric) == "last":
            logits = head(self.model, self.resid[batch.rows, batch.last][:, None])
            return metric(logits, replace(batch, last=torch.zeros_like(batch.last)))
        return metric(head(self.model, self.resid), batch)


@contextlib.contextmanager
def replacement(model, subs: list[Submodule], tokens: torch.Tensor, features: dict | None = None):
    """A forward pass of ``tokens`` ``[R, T]`` through the local replacement model (see the module docstring);
    yields a :class:`Pass`, whose tensors stay in the autograd graph while the block runs.

    ``features``: ``{node set: (flat token [nnz], feature [nnz])}`` of the active entries that pass gradient on
    linearly (None: none do — direct effects only)."""
    frozen_names = [n for n in model.hook_dict if n.endswith(("hook_pattern", "hook_scale"))]
    p = Pass(model, resid=None)
    stash: dict[str, torch.Tensor] = {}

    def detach(act, hook):
        return act.detach()

    def embed(act, hook):
        p.embed = act.detach()
        p.leaves[TOKENS] = torch.zeros_like(act, requires_grad=True)
        return act + p.leaves[TOKENS]

    def write(act, hook, s: Submodule):
        x = s.flat(act)
        read = stash.pop(s.name) if s.transcoder else x
        leaf = torch.zeros_like(x, requires_grad=True)
        out = x.detach() + leaf
        skip = s.skip(read)
        if skip is not None:
            out = out + (skip - skip.detach())
        if features is not None and s.name in features:
            lin = _masked_linear(s, read, *features[s.name]).view_as(x)
            out = out + (lin - lin.detach())
        p.leaves[s.name], p.reads[s.name], p.values[s.name] = leaf, read, (x.detach(), read.detach())
        return s.unflat(out)

    hooks = [("hook_embed", embed)] + [(n, detach) for n in frozen_names]
    hooks += [(s.hook, lambda act, hook, s=s: write(act, hook, s)) for s in subs]
    hooks += [  # after the writes: a read hook that is also a node set's hook reads its replaced value
        (s.read_hook, lambda act, hook, s=s: stash.__setitem__(s.name, s.read(act))) for s in subs if s.transcoder
    ]
    with torch.enable_grad(), read_hooks(model, subs), model.hooks(fwd_hooks=hooks):
        p.resid = model(tokens, stop_at_layer=model.cfg.n_layers)
        if TOKENS not in p.leaves:
            raise SFCError("method 'linear' needs the model's hook_embed (the token embeddings are graph nodes)")
        yield p


def error_vectors(s: Submodule, x: torch.Tensor, f, read: torch.Tensor) -> torch.Tensor:
    """circuit-tracer's error node ``x − decode(f) − skip(read)`` ``[..., d_out]`` (``f`` dense or sparse)."""
    decoded = f.decode(s.W_dec, s.b_dec) if hasattr(f, "decode") else s.decode(f)
    err = x - decoded.view_as(x)
    skip = s.skip(read)
    return err if skip is None else err - skip.view_as(err)
