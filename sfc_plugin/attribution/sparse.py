"""SAE features kept sparse: per token the ``K`` largest-magnitude entries (``K``: most active of any token).

At real widths feature vectors are >99% zeros, so activations, decodes and node/edge effects only touch
active features: decode is an ``embedding_bag`` over active rows of ``W_dec``, and ``∇_f m`` is needed
only at active entries (a feature inactive in both the clean and the patch run has zero effect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GATHER_FLOATS = 2**24  # scratch for gathered weight rows per chunk (64 MB in float32)


@dataclass
class SparseFeatures:
    """Features ``[b, pos, F]`` as ``idx``/``val`` ``[N, K]`` with ``N = b·pos`` (padding entries have ``val = 0``)."""

    idx: torch.Tensor
    val: torch.Tensor
    shape: tuple[int, int, int]

    @classmethod
    def from_dense(cls, f: torch.Tensor) -> "SparseFeatures":
        flat = f.reshape(-1, f.shape[-1])
        k = int(flat.ne(0).sum(-1).max()) if flat.numel() else 0
        if k == 0:
            return cls.empty(tuple(f.shape), f.dtype, f.device)
        idx = flat.abs().topk(k, -1, sorted=False).indices
        return cls(idx, flat.gather(-1, idx), tuple(f.shape))

    @classmethod
    def empty(cls, shape, dtype, device) -> "SparseFeatures":
        n = shape[0] * shape[1]
        return cls(torch.zeros((n, 0), dtype=torch.long, device=device), torch.zeros((n, 0), dtype=dtype, device=device),
                   tuple(shape))

    @classmethod
    def cat_tokens(cls, parts: list["SparseFeatures"], shape) -> "SparseFeatures":
        """Concatenate token chunks (padding each to the widest ``K``)."""
        k = max(p.idx.shape[1] for p in parts)
        pad = lambda t: F.pad(t, (0, k - t.shape[1]))  # noqa: E731
        return cls(torch.cat([pad(p.idx) for p in parts]), torch.cat([pad(p.val) for p in parts]), tuple(shape))

    @property
    def d_sae(self) -> int:
        return self.shape[-1]

    def dense(self) -> torch.Tensor:
        out = self.val.new_zeros((self.idx.shape[0], self.d_sae))
        return out.scatter_add_(-1, self.idx, self.val).view(self.shape)

    def token_index(self) -> torch.Tensor:
        """``[N, K]``: the flat token (``b·pos + t``) of every entry."""
        n, k = self.idx.shape
        return torch.arange(n, device=self.idx.device)[:, None].expand(n, k)

    def minus(self, other: "SparseFeatures") -> "SparseFeatures":
        """``self − other`` on the union of their entries (each feature once per token, so equal values cancel exactly)."""
        idx, order = torch.cat([self.idx, other.idx], 1).sort(1)
        val = torch.cat([self.val, -other.val], 1).gather(1, order)
        if idx.shape[1] > 1:  # each side lists a feature at most once per token: merge the pairs
            dup = idx[:, 1:] == idx[:, :-1]
            no = torch.zeros_like(dup[:, :1])
            nxt = torch.cat([val[:, 1:], torch.zeros_like(val[:, :1])], 1)
            val = torch.where(torch.cat([dup, no], 1), val + nxt, val)
            val = torch.where(torch.cat([no, dup], 1), torch.zeros_like(val), val)
        return SparseFeatures(idx, val, self.shape)

    def decode(self, W_dec: torch.Tensor, b_dec: torch.Tensor) -> torch.Tensor:
        """``f @ W_dec + b_dec`` from the active rows only: ``[b, pos, d]``."""
        b, t, _ = self.shape
        if self.idx.shape[1] == 0:
            return b_dec.expand(b, t, -1).clone()
        out = F.embedding_bag(self.idx, W_dec, per_sample_weights=self.val, mode="sum")
        return (out + b_dec).view(b, t, -1)

    def _token_step(self, d: int) -> int:
        """Tokens per chunk of :meth:`project` / :meth:`weighted_rows`: the chunk's distinct feature rows
        (``≤ tokens·K``, ``d`` floats each) and its ``[tokens, distinct features]`` products stay within
        ``GATHER_FLOATS`` floats each."""
        k = max(1, self.idx.shape[1])
        by_rows = GATHER_FLOATS // (k * d)
        by_products = max(GATHER_FLOATS // max(1, self.d_sae), math.isqrt(GATHER_FLOATS // k))
        return max(1, min(by_rows, by_products))

    def project(self, g: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``[N, K]``: ``g[n] · W[idx[n, k]]`` (``W`` rows indexed by feature), in chunks of tokens."""
        g = g.reshape(-1, g.shape[-1])
        n, k = self.idx.shape
        out = g.new_zeros((n, k))
        if k == 0:
            return out
        step = self._token_step(g.shape[-1])
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            feats, inv = self.idx[lo:hi].unique(return_inverse=True)
            out[lo:hi] = (g[lo:hi] @ W.index_select(0, feats).T).gather(1, inv)
        return out

    def weighted_rows(self, coeff: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``[N, d]``: ``Σ_k coeff[n, k] W[idx[n, k]]`` (``W`` rows indexed by feature), in chunks of tokens."""
        n, k = self.idx.shape
        d = W.shape[-1]
        out = coeff.new_zeros((n, d))
        if k == 0:
            return out
        step = self._token_step(d)
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            # each feature's row once (a column of W_enc when W is its transpose: gathering it per entry
            # reads strided memory), then one dense product
            feats, inv = self.idx[lo:hi].unique(return_inverse=True)
            c = coeff.new_zeros((hi - lo, feats.numel())).scatter_add_(1, inv, coeff[lo:hi])
            out[lo:hi] = c @ W.index_select(0, feats)
        return out

    def to(self, device) -> "SparseFeatures":
        return SparseFeatures(self.idx.to(device), self.val.to(device), self.shape)

    def nbytes(self) -> int:
        return self.idx.numel() * self.idx.element_size() + self.val.numel() * self.val.element_size()


def lookup(entry_keys: torch.Tensor, node_keys: torch.Tensor) -> torch.Tensor:
    """For each entry key, the index of the equal node key, or ``-1`` (node keys need not be sorted)."""
    if node_keys.numel() == 0:
        return torch.full_like(entry_keys, -1)
    order = node_keys.argsort()
    sorted_keys = node_keys[order]
    pos = torch.searchsorted(sorted_keys, entry_keys).clamp(max=sorted_keys.numel() - 1)
    hit = sorted_keys[pos] == entry_keys
    return torch.where(hit, order[pos], torch.full_like(pos, -1))


def node_entries(values: torch.Tensor, feats: SparseFeatures, node_feat: torch.Tensor, node_pos: torch.Tensor | None,
                 width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(node row, flat token, value)`` of the entries of ``feats`` that belong to a node (see :func:`node_matrix`)."""
    empty = (torch.zeros(0, dtype=torch.long, device=values.device),) * 2 + (values.new_zeros(0),)
    if node_feat.numel() == 0 or feats.idx.shape[1] == 0:
        return empty
    tok = feats.token_index()
    if node_pos is None:
        entry, keys = feats.idx, node_feat
    else:
        entry, keys = (tok % width) * feats.d_sae + feats.idx, node_pos * feats.d_sae + node_feat
    row = lookup(entry.flatten(), keys)
    hit = (row >= 0) & (values.flatten() != 0)
    return row[hit], tok.flatten()[hit], values.flatten()[hit]


def node_matrix(values: torch.Tensor, feats: SparseFeatures, node_feat: torch.Tensor, node_pos: torch.Tensor | None,
                width: int) -> torch.Tensor:
    """``[k, N]``: ``values`` (``[N, K]``, one per entry of ``feats``) summed into rows of nodes.

    Node ``i`` is feature ``node_feat[i]`` at every position (``node_pos`` None) or at ``node_pos[i]``;
    ``width`` is the number of positions per example (flat token ``n`` has position ``n % width``).
    """
    out = values.new_zeros((node_feat.numel(), feats.idx.shape[0]))
    row, tok, val = node_entries(values, feats, node_feat, node_pos, width)
    return out.index_put_((row, tok), val, accumulate=True)
