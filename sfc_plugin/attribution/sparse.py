"""SAE features kept sparse: per token only its active entries, stored ragged (CSR-like).

At real widths feature vectors are >99% zeros, so activations, decodes and node/edge effects only touch
active features: decode is an ``embedding_bag`` over active rows of ``W_dec``, and ``∇_f m`` is needed
only at active entries (a feature inactive in both the clean and the patch run has zero effect).

Layout: ``idx``/``val`` hold the ``nnz`` active entries of all ``N = b·pos`` tokens, token by token;
token ``n`` owns entries ``ptr[n]:ptr[n + 1]``. Storage is ``nnz·(8 + b) + 8·(N + 1)`` bytes, whatever the
spread of active counts between tokens (a padded ``[N, K]`` layout pays for the busiest token at every one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

GATHER_FLOATS = 2**24  # scratch for gathered weight rows per chunk (64 MB in float32)
# Active entries per chunk of tokens in project / weighted_rows. A chunk's dense product is ``tokens × distinct
# features × d``: small chunks waste less on pairs that are not entries, but gather more rows in all. Measured
# (CPU, d 512, L0 50-80, d_sae 4,096-32,768): project is fastest near 1,024 entries (3-7x faster than one chunk
# of every token); gathering the columns of a transposed matrix (W_enc.T) favours denser chunks: 4,096. No cap
# where it is over half of d_sae (the toy world's 256 features: chunks would touch every feature anyway).
CHUNK_ENTRIES = 1024
CHUNK_ENTRIES_STRIDED = 4096


def _offsets(tok: torch.Tensor, n: int) -> torch.Tensor:
    """``[n + 1]`` offsets of entries whose (sorted) token is ``tok``."""
    ptr = torch.zeros(n + 1, dtype=torch.long, device=tok.device)
    if tok.numel():
        torch.cumsum(torch.bincount(tok, minlength=n), 0, out=ptr[1:])
    return ptr


@dataclass
class SparseFeatures:
    """Features ``[b, pos, F]`` as ragged ``idx``/``val`` ``[nnz]`` grouped by flat token (``b·pos + t``);
    ``ptr`` ``[N + 1]``: token ``n``'s entries are ``ptr[n]:ptr[n + 1]``. A feature appears at most once per token."""

    idx: torch.Tensor
    val: torch.Tensor
    ptr: torch.Tensor
    shape: tuple[int, int, int]

    @classmethod
    def from_dense(cls, f: torch.Tensor) -> SparseFeatures:
        flat = f.reshape(-1, f.shape[-1])
        tok, idx = flat.nonzero(as_tuple=True)  # row-major: by token, then feature
        return cls(idx, flat[tok, idx], _offsets(tok, flat.shape[0]), tuple(f.shape))

    @classmethod
    def empty(cls, shape, dtype, device) -> SparseFeatures:
        n = shape[0] * shape[1]
        return cls(
            torch.zeros(0, dtype=torch.long, device=device),
            torch.zeros(0, dtype=dtype, device=device),
            torch.zeros(n + 1, dtype=torch.long, device=device),
            tuple(shape),
        )

    @classmethod
    def cat_tokens(cls, parts: list[SparseFeatures], shape) -> SparseFeatures:
        """Concatenate token chunks (``parts`` in token order)."""
        ptrs, base = [parts[0].ptr[:1]], 0
        for p in parts:
            ptrs.append(p.ptr[1:] + base)
            base += p.nnz
        return cls(torch.cat([p.idx for p in parts]), torch.cat([p.val for p in parts]), torch.cat(ptrs), tuple(shape))

    @property
    def d_sae(self) -> int:
        return self.shape[-1]

    @property
    def n_tokens(self) -> int:
        return self.ptr.numel() - 1

    @property
    def nnz(self) -> int:
        return self.idx.numel()

    def counts(self) -> torch.Tensor:
        """``[N]``: active entries per token."""
        return self.ptr.diff()

    def dense(self) -> torch.Tensor:
        out = self.val.new_zeros((self.n_tokens, self.d_sae))
        return out.index_put_((self.token_index(), self.idx), self.val, accumulate=True).view(self.shape)

    def token_index(self) -> torch.Tensor:
        """``[nnz]``: the flat token (``b·pos + t``) of every entry."""
        return torch.repeat_interleave(
            torch.arange(self.n_tokens, device=self.idx.device), self.counts(), output_size=self.nnz
        )

    def minus(self, other: SparseFeatures) -> SparseFeatures:
        """``self − other`` on the union of their entries (each feature once per token, so equal values cancel
        exactly: such entries are dropped)."""
        F_ = self.d_sae
        keys = torch.cat([self.token_index() * F_ + self.idx, other.token_index() * F_ + other.idx])
        keys, inv = keys.unique(sorted=True, return_inverse=True)
        # at most two addends per key, added to 0: a, −b or a + (−b), each exactly what ``a − b`` rounds to
        val = self.val.new_zeros(keys.numel()).index_add_(0, inv, torch.cat([self.val, -other.val]))
        keep = val != 0
        keys, val = keys[keep], val[keep]
        tok = keys // F_
        return SparseFeatures(keys - tok * F_, val, _offsets(tok, self.n_tokens), self.shape)

    def decode(self, W_dec: torch.Tensor, b_dec: torch.Tensor) -> torch.Tensor:
        """``f @ W_dec + b_dec`` from the active rows only: ``[b, pos, d]``."""
        b, t, _ = self.shape
        if self.nnz == 0:
            return b_dec.expand(b, t, -1).clone()
        out = F.embedding_bag(self.idx, W_dec, self.ptr[:-1], mode="sum", per_sample_weights=self.val)
        return (out + b_dec).view(b, t, -1)

    def token_chunks(self, d: int, cap: int | None = None):
        """Token ranges ``(lo, hi)`` for :meth:`project` / :meth:`weighted_rows`: the chunk's distinct feature
        rows (``≤`` its entries, ``d`` floats each) and its ``[tokens, distinct features]`` products stay within
        ``GATHER_FLOATS`` floats each (a single token may exceed them)."""
        ptr, n = self.ptr.tolist(), self.n_tokens
        if cap is not None and 2 * cap > self.d_sae:  # e entries touch ~F(1 - exp(-e/F)) distinct features:
            cap = None  # cutting chunks saves products only while e is well below d_sae (else just more passes)
        max_entries = max(1, min(GATHER_FLOATS // max(1, d), cap or GATHER_FLOATS))
        by_width = GATHER_FLOATS // max(1, self.d_sae)  # tokens × d_sae products always fit
        lo = 0
        while lo < n:
            a, b = lo + 1, n  # largest hi with ptr[hi] − ptr[lo] ≤ max_entries and products within bounds
            while a < b:
                mid = (a + b + 1) // 2
                e = ptr[mid] - ptr[lo]
                if e <= max_entries and ((mid - lo) <= by_width or (mid - lo) * e <= GATHER_FLOATS):
                    a = mid
                else:
                    b = mid - 1
            yield lo, a
            lo = a

    def project(self, g: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``[nnz]``: ``g[token] · W[idx]`` for every entry (``W`` rows indexed by feature), in chunks of tokens."""
        g = g.reshape(-1, g.shape[-1])
        out = g.new_zeros(self.nnz)
        if self.nnz == 0:
            return out
        ptr = self.ptr.tolist()
        tok = self.token_index()
        for lo, hi in self.token_chunks(g.shape[-1], CHUNK_ENTRIES):
            s, e = ptr[lo], ptr[hi]
            if s == e:
                continue
            feats, inv = self.idx[s:e].unique(return_inverse=True)
            out[s:e] = (g[lo:hi] @ _gather_rows(W, feats).T)[tok[s:e] - lo, inv]
        return out

    def weighted_rows(self, coeff: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``[N, d]``: ``Σ_entries of n coeff[entry] W[idx[entry]]`` (``W`` rows indexed by feature), in chunks of tokens."""
        d = W.shape[-1]
        out = coeff.new_zeros((self.n_tokens, d))
        if self.nnz == 0:
            return out
        ptr = self.ptr.tolist()
        tok = self.token_index()
        for lo, hi in self.token_chunks(d, CHUNK_ENTRIES_STRIDED if _strided_rows(W) else CHUNK_ENTRIES):
            s, e = ptr[lo], ptr[hi]
            if s == e:
                continue
            # each feature's row once (a column of W_enc when W is its transpose: gathering it per entry
            # reads strided memory), then one dense product
            feats, inv = self.idx[s:e].unique(return_inverse=True)
            c = coeff.new_zeros((hi - lo, feats.numel())).index_put_((tok[s:e] - lo, inv), coeff[s:e], accumulate=True)
            out[lo:hi] = c @ _gather_rows(W, feats)
        return out

    def to(self, device) -> SparseFeatures:
        return SparseFeatures(self.idx.to(device), self.val.to(device), self.ptr.to(device), self.shape)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.idx, self.val, self.ptr))


def _strided_rows(W: torch.Tensor) -> bool:
    return W.dim() == 2 and W.stride(0) == 1 and W.stride(1) != 1


def _gather_rows(W: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``W[rows]``; when ``W`` is a transposed view (``W_enc.T``), gathered as columns of the contiguous matrix
    beneath it (its rows are strided: gathering them reads one float per cache line)."""
    if _strided_rows(W):
        return W.T.index_select(1, rows).T
    return W.index_select(0, rows)


def lookup(entry_keys: torch.Tensor, node_keys: torch.Tensor) -> torch.Tensor:
    """For each entry key, the index of the equal node key, or ``-1`` (node keys need not be sorted)."""
    if node_keys.numel() == 0:
        return torch.full_like(entry_keys, -1)
    order = node_keys.argsort()
    sorted_keys = node_keys[order]
    pos = torch.searchsorted(sorted_keys, entry_keys).clamp(max=sorted_keys.numel() - 1)
    hit = sorted_keys[pos] == entry_keys
    return torch.where(hit, order[pos], torch.full_like(pos, -1))


def node_entries(
    values: torch.Tensor, feats: SparseFeatures, node_feat: torch.Tensor, node_pos: torch.Tensor | None, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(node row, flat token, value)`` of the entries of ``feats`` that belong to a node (see :func:`node_matrix`)."""
    empty = (torch.zeros(0, dtype=torch.long, device=values.device),) * 2 + (values.new_zeros(0),)
    if node_feat.numel() == 0 or feats.nnz == 0:
        return empty
    tok = feats.token_index()
    if node_pos is None:
        entry, keys = feats.idx, node_feat
    else:
        entry, keys = (tok % width) * feats.d_sae + feats.idx, node_pos * feats.d_sae + node_feat
    row = lookup(entry, keys)
    hit = (row >= 0) & (values != 0)
    return row[hit], tok[hit], values[hit]


def node_matrix(
    values: torch.Tensor, feats: SparseFeatures, node_feat: torch.Tensor, node_pos: torch.Tensor | None, width: int
) -> torch.Tensor:
    """``[k, N]``: ``values`` (``[nnz]``, one per entry of ``feats``) summed into rows of nodes.

    Node ``i`` is feature ``node_feat[i]`` at every position (``node_pos`` None) or at ``node_pos[i]``;
    ``width`` is the number of positions per example (flat token ``n`` has position ``n % width``).
    """
    out = values.new_zeros((node_feat.numel(), feats.n_tokens))
    row, tok, val = node_entries(values, feats, node_feat, node_pos, width)
    return out.index_put_((row, tok), val, accumulate=True)
