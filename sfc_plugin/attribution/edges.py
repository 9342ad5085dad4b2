"""Edge attribution ``IE(u→d) = ∇_d m · ∂d/∂u · Δu`` between circuit nodes.

``∂d/∂u`` is the direct-path Jacobian at the clean input: one forward pass turns every submodule's
activation into a fresh leaf, so the value computed at a downstream hook depends on upstream
submodules only along paths that avoid every other submodule (exactly "the others held fixed").
Into a resid submodule that path is the identity, so its backward pass is a sum; into attn/mlp it
is one batched vector–Jacobian product (``is_grads_batched``) for a chunk of downstream nodes at once,
the chunk sized from the memory budget. Only features active in the clean run (downstream) or in
either run (upstream) are touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..splicing import Acts, Submodule
from .forward import run_metric
from .sparse import SparseFeatures, node_entries, node_matrix


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


def _sparse(f) -> SparseFeatures:
    return f if isinstance(f, SparseFeatures) else SparseFeatures.from_dense(f)


class _Cotangents:
    """``∇_node m · ∂node/∂x`` for the nodes of a downstream ``sub``, built a chunk of nodes at a time."""

    def __init__(self, sub: Submodule, grad: torch.Tensor, f: SparseFeatures, nodes: NodeSet):
        B, T, D = grad.shape
        self.shape, self.nodes, self.sub = (B, T, D), nodes, sub
        # ∇_f m at the clean run's active entries (the encoder's mask): [N, K]
        gf = f.project(grad, sub.W_dec) * f.val.ne(0)
        self.coeff = node_matrix(gf, f, nodes.feat, nodes.feat_pos, T)  # [k, N]
        self.W = sub.W_enc[:, nodes.feat].T  # [k, d]
        self.err = None
        if nodes.err_pos:  # ∇_ε m · (I − ∂decode(f)/∂x) = ∇_x m − Σ_active ∇_f m W_enc[:, j]
            self.err = grad - f.weighted_rows(gf, sub.W_enc.T).view(B, T, D)

    def __len__(self) -> int:
        return len(self.nodes)

    def chunk(self, lo: int, hi: int) -> torch.Tensor:
        B, T, D = self.shape
        k = self.nodes.feat.numel()
        out = self.W.new_zeros((hi - lo, B, T, D))
        if lo < k:
            f_hi = min(hi, k)
            out[: f_hi - lo] = (self.coeff[lo:f_hi, :, None] * self.W[lo:f_hi, None, :]).view(f_hi - lo, B, T, D)
        for i in range(max(lo, k), hi):
            t = self.nodes.err_pos[i - k]
            if t is None:
                out[i - lo] = self.err
            else:
                out[i - lo, :, t] = self.err[:, t]
        return out


def _upstream(sub: Submodule, clean: Acts, patch: Acts, nodes: NodeSet):
    """``((node row, flat token, Δf) of the nodes' nonzero entries, Δε [b, pos, d])`` of an upstream submodule."""
    delta = _sparse(patch.f).minus(_sparse(clean.f))
    T = clean.x.shape[1]
    return node_entries(delta.val, delta, nodes.feat, nodes.feat_pos, T), patch.err - clean.err


CONTRACT_BYTES = 32 << 20  # bound on the [cotangents × entries × d] slices gathered at once


def _contract(v: torch.Tensor, sub: Submodule, dfn, derr: torch.Tensor, nodes: NodeSet) -> torch.Tensor:
    """``Σ_{b,pos} v · Δ(node)`` for every node of the upstream ``sub``: ``[n_down, n_up]``.

    Feature nodes touch only their nonzero ``Δf`` entries ``dfn = (node row, flat token, value)``, gathered
    :data:`CONTRACT_BYTES` at a time (all at once held ``[c, entries, d]`` twice: 2 GB and more at real widths)."""
    parts = []
    k = nodes.feat.numel()
    if k:
        row, tok, val = dfn
        vf = v.reshape(v.shape[0], -1, v.shape[-1])  # [c, N, d]
        out = v.new_zeros((v.shape[0], k))
        step = max(1, CONTRACT_BYTES // (v.shape[0] * v.shape[-1] * v.element_size()))  # entries per [c, e, d] slice
        for lo in range(0, tok.numel(), step):
            r = row[lo:lo + step]
            dots = (vf[:, tok[lo:lo + step]] * sub.W_dec[nodes.feat[r]]).sum(-1) * val[lo:lo + step]  # [c, e]
            out.index_add_(1, r, dots)
        parts.append(out)
    for t in nodes.err_pos:
        parts.append(((v * derr).sum((1, 2, 3)) if t is None else (v[:, :, t] * derr[:, t]).sum((1, 2)))[:, None])
    return torch.cat(parts, 1)


def edge_effects(model, subs: list[Submodule], batch, metric, clean: dict[str, Acts], patch: dict[str, Acts],
                 grads: dict[str, torch.Tensor], nodes: dict[str, NodeSet], chunk: int = 64,
                 budget=None) -> dict[tuple[str, str], torch.Tensor]:
    """Edge weights summed over the batch: ``{(up, down): [n_down, n_up]}``; ``down`` may be ``"y"``.

    Edges into ``y`` come from every submodule but the last (whose edges into ``y`` are its node
    effects, added by the caller) through the direct path to the metric. ``chunk``: downstream nodes
    per batched backward pass (with ``budget``, at most what fits in it).
    """
    leaves, outs = {}, {}

    def cut(act, hook, sub):
        outs[sub.name] = sub.flat(act)
        leaves[sub.name] = outs[sub.name].detach().requires_grad_(True)
        return sub.unflat(leaves[sub.name])

    hooks = [(s.hook, lambda act, hook, sub=s: cut(act, hook, sub)) for s in subs]
    active = [s for s in subs if len(nodes[s.name])]
    up_delta = {s.name: _upstream(s, clean[s.name], patch[s.name], nodes[s.name]) for s in active}
    result: dict[tuple[str, str], torch.Tensor] = {}
    B, T = batch.clean.shape
    with torch.enable_grad():
        m = run_metric(model, metric, batch, hooks).sum()
        for i, d in enumerate(subs):
            ups = [u for u in subs[:i] if len(nodes[u.name])]
            if not ups or not len(nodes[d.name]):
                continue
            size = chunk
            if budget is not None:
                size = budget.rows(B * budget.cotangent_row(T, len(ups)), "edge cotangent", share=0.5, cap=chunk)
            cot = _Cotangents(d, grads[d.name], _sparse(clean[d.name].f), nodes[d.name])
            rows: dict[str, list] = {u.name: [] for u in ups}
            for lo in range(0, len(cot), size):
                c = cot.chunk(lo, min(len(cot), lo + size))
                vs = torch.autograd.grad(outs[d.name], [leaves[u.name] for u in ups], grad_outputs=c,
                                         is_grads_batched=True, retain_graph=True, allow_unused=True)
                for u, v in zip(ups, vs):
                    rows[u.name].append(torch.zeros(c.shape[0], len(nodes[u.name]), dtype=c.dtype, device=c.device)
                                        if v is None else _contract(v, u, *up_delta[u.name], nodes[u.name]))
                del c, vs
            for u in ups:
                result[(u.name, d.name)] = torch.cat(rows[u.name])
        ups = [u for u in subs[:-1] if len(nodes[u.name])]
        if ups:
            gy = torch.autograd.grad(m, [leaves[u.name] for u in ups], allow_unused=True)
            for u, g in zip(ups, gy):
                if g is not None:
                    result[(u.name, "y")] = _contract(g[None], u, *up_delta[u.name], nodes[u.name])
    return result
