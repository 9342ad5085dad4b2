"""Edge attribution ``IE(u→d) = ∇_d m · ∂d/∂u · Δu`` between circuit nodes.

``∂d/∂u`` is the direct-path Jacobian at the clean input: one forward pass turns every submodule's
activation into a fresh leaf, so the value computed at a downstream hook depends on upstream
submodules only along paths that avoid every other submodule (exactly "the others held fixed").
Into a resid submodule that path is the identity, so its backward pass is a sum; into attn/mlp it
is one batched vector–Jacobian product (``is_grads_batched``) for all downstream nodes together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..splicing import Acts, Submodule
from .context import _chunks


@dataclass
class NodeSet:
    """The circuit nodes of one submodule: features (``feat``; with ``feat_pos`` per position) then errors."""

    feat: torch.Tensor  # [k] feature indices
    feat_pos: torch.Tensor | None  # [k] positions, or None when summed over positions
    err_pos: list  # [] (no error node), [None] (summed over positions) or positions

    def __len__(self) -> int:
        return self.feat.numel() + len(self.err_pos)

    def entries(self) -> list[tuple[int | None, int | None]]:
        """``(feature or None for the error, position or None)`` for every node, in order."""
        pos = [None] * self.feat.numel() if self.feat_pos is None else self.feat_pos.tolist()
        return list(zip(self.feat.tolist(), pos)) + [(None, t) for t in self.err_pos]


def _cotangents(sub: Submodule, grad: torch.Tensor, f: torch.Tensor, nodes: NodeSet) -> torch.Tensor:
    """``∇_node m · ∂node/∂x`` for every node of ``sub``: ``[n_nodes, b, pos, d]``."""
    gf = (grad @ sub.W_dec.T) * f.ne(0)  # ∇_f m restricted to active features (the encoder's mask)
    B, T, D = grad.shape
    k = nodes.feat.numel()
    out = grad.new_zeros((len(nodes), B, T, D))
    if k:
        W = sub.W_enc[:, nodes.feat].T  # [k, d]
        if nodes.feat_pos is None:
            out[:k] = gf[..., nodes.feat].permute(2, 0, 1)[..., None] * W[:, None, None, :]
        else:
            coeff = gf[:, nodes.feat_pos, nodes.feat].T  # [k, b]
            out[torch.arange(k), :, nodes.feat_pos] = coeff[..., None] * W[:, None, :]
    if nodes.err_pos:
        err = grad - gf @ sub.W_enc.T  # ∇_ε m · (I − ∂decode(f)/∂x)
        for i, t in enumerate(nodes.err_pos, start=k):
            if t is None:
                out[i] = err
            else:
                out[i, :, t] = err[:, t]
    return out


def _contract(v: torch.Tensor, sub: Submodule, df: torch.Tensor, derr: torch.Tensor, nodes: NodeSet) -> torch.Tensor:
    """``Σ_{b,pos} v · Δ(node)`` for every node of the upstream ``sub``: ``[n_down, n_up]``."""
    parts = []
    if nodes.feat.numel():
        W = sub.W_dec[nodes.feat]  # [k, d]
        if nodes.feat_pos is None:
            parts.append(((v @ W.T) * df[..., nodes.feat]).sum((1, 2)))
        else:
            vs = v[:, :, nodes.feat_pos]  # [n, b, k, d]
            parts.append(((vs * W).sum(-1) * df[:, nodes.feat_pos, nodes.feat]).sum(1))
    for t in nodes.err_pos:
        parts.append(((v * derr).sum((1, 2, 3)) if t is None else (v[:, :, t] * derr[:, t]).sum((1, 2)))[:, None])
    return torch.cat(parts, 1)


def edge_effects(model, subs: list[Submodule], batch, metric, clean: dict[str, Acts], patch: dict[str, Acts],
                 grads: dict[str, torch.Tensor], nodes: dict[str, NodeSet], chunk: int = 64) -> dict[tuple[str, str], torch.Tensor]:
    """Edge weights summed over the batch: ``{(up, down): [n_down, n_up]}``; ``down`` may be ``"y"``.

    Edges into ``y`` come from every submodule but the last (whose edges into ``y`` are its node
    effects, added by the caller) through the direct path to the metric.
    """
    leaves, outs = {}, {}

    def cut(act, hook, sub):
        outs[sub.name] = sub.flat(act)
        leaves[sub.name] = outs[sub.name].detach().requires_grad_(True)
        return sub.unflat(leaves[sub.name])

    hooks = [(s.hook, lambda act, hook, sub=s: cut(act, hook, sub)) for s in subs]
    delta = {s.name: (patch[s.name].f - clean[s.name].f, patch[s.name].err - clean[s.name].err) for s in subs}
    result: dict[tuple[str, str], torch.Tensor] = {}
    with torch.enable_grad():
        m = metric(model.run_with_hooks(batch.clean, fwd_hooks=hooks), batch).sum()
        for i, d in enumerate(subs):
            ups = [u for u in subs[:i] if len(nodes[u.name])]
            if not ups or not len(nodes[d.name]):
                continue
            cot = _cotangents(d, grads[d.name], clean[d.name].f, nodes[d.name])
            rows: dict[str, list] = {u.name: [] for u in ups}
            for c in _chunks(cot, chunk):
                vs = torch.autograd.grad(outs[d.name], [leaves[u.name] for u in ups], grad_outputs=c,
                                         is_grads_batched=True, retain_graph=True, allow_unused=True)
                for u, v in zip(ups, vs):
                    rows[u.name].append(torch.zeros(c.shape[0], len(nodes[u.name]), dtype=c.dtype, device=c.device)
                                        if v is None else _contract(v, u, *delta[u.name], nodes[u.name]))
            for u in ups:
                result[(u.name, d.name)] = torch.cat(rows[u.name])
        ups = [u for u in subs[:-1] if len(nodes[u.name])]
        if ups:
            gy = torch.autograd.grad(m, [leaves[u.name] for u in ups], allow_unused=True)
            for u, g in zip(ups, gy):
                if g is not None:
                    result[(u.name, "y")] = _contract(g[None], u, *delta[u.name], nodes[u.name])
    return result
