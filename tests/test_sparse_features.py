"""The ragged sparse feature layout: every operation against its dense equivalent, on tokens whose active
counts are very uneven (including tokens with none, and a tensor with none at all), and storage that grows
with the active entries, not with the busiest token."""

from __future__ import annotations

import pytest
import torch

from sfc_plugin.attribution import sparse
from sfc_plugin.attribution.sparse import SparseFeatures, node_entries, node_matrix

B, T, NF, D = 3, 7, 50, 6


def uneven(seed: int = 0, busy: int = 45) -> torch.Tensor:
    """``[B, T, NF]`` float64 features: one token with ``busy`` active, a few with 0, the rest with 1–4."""
    g = torch.Generator().manual_seed(seed)
    f = torch.zeros(B, T, NF, dtype=torch.float64)
    counts = torch.randint(1, 5, (B * T,), generator=g)
    counts[[0, 5, 6, 13]] = 0
    counts[9] = busy
    flat = f.view(B * T, NF)
    for n, k in enumerate(counts.tolist()):
        feats = torch.randperm(NF, generator=g)[:k]
        flat[n, feats] = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    return f


def cases():
    a, b = uneven(0), uneven(1, busy=3)
    b[1, 2] = a[1, 2]  # equal tokens: the difference must cancel exactly
    b[2, 0, :10] = a[2, 0, :10]
    return [
        ("uneven", a, b),
        ("empty", torch.zeros(B, T, NF, dtype=torch.float64), b),
        ("both empty", torch.zeros(B, T, NF, dtype=torch.float64), torch.zeros(B, T, NF, dtype=torch.float64)),
    ]


@pytest.fixture(params=cases(), ids=lambda c: c[0])
def pair(request):
    return request.param[1], request.param[2]


def test_layout_is_ragged_and_roundtrips(pair):
    a, _ = pair
    fa = SparseFeatures.from_dense(a)
    flat = a.view(-1, NF)
    assert torch.equal(fa.counts(), flat.ne(0).sum(-1))
    assert fa.idx.shape == fa.val.shape == (int(flat.ne(0).sum()),)
    assert torch.equal(fa.dense(), a)
    assert torch.equal(fa.token_index(), flat.nonzero()[:, 0])
    assert torch.equal(flat[fa.token_index(), fa.idx], fa.val)


def test_nbytes_grows_with_active_entries_not_the_busiest_token():
    a = uneven(0, busy=45)
    fa = SparseFeatures.from_dense(a)
    nnz, n = int(a.ne(0).sum()), B * T
    ragged = nnz * (8 + 8) + (n + 1) * 8  # idx (long) + val (float64) per entry, offsets per token
    padded = n * int(a.view(n, NF).ne(0).sum(-1).max()) * (8 + 8)
    assert fa.nbytes() <= ragged < padded / 2


def test_empty_and_cat_tokens(pair):
    a, _ = pair
    e = SparseFeatures.empty((B, T, NF), torch.float64, "cpu")
    assert e.nbytes() == (B * T + 1) * 8 and torch.equal(e.dense(), torch.zeros(B, T, NF, dtype=torch.float64))
    flat = a.reshape(1, B * T, NF)
    parts = [SparseFeatures.from_dense(flat[:, lo:hi]) for lo, hi in [(0, 5), (5, 6), (6, 14), (14, B * T)]]
    cat = SparseFeatures.cat_tokens(parts, (B, T, NF))
    whole = SparseFeatures.from_dense(a)
    for name in ("idx", "val", "ptr"):
        assert torch.equal(getattr(cat, name), getattr(whole, name))
    assert torch.equal(cat.dense(), a)


def test_minus_is_exact(pair):
    a, b = pair
    fa, fb = SparseFeatures.from_dense(a), SparseFeatures.from_dense(b)
    d = fb.minus(fa)
    assert torch.equal(d.dense(), b - a)
    assert torch.equal(d.counts(), (b - a).view(-1, NF).ne(0).sum(-1))  # cancelled entries are not kept
    assert not d.val.eq(0).any()
    tok = d.token_index()
    assert torch.equal(tok, tok.sort().values)  # still grouped by token
    assert torch.equal(fa.minus(fa).dense(), torch.zeros_like(a)) and fa.minus(fa).nnz == 0


def test_decode(pair):
    a, _ = pair
    g = torch.Generator().manual_seed(2)
    W, c = torch.randn(NF, D, generator=g, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64)
    assert torch.allclose(SparseFeatures.from_dense(a).decode(W, c), a @ W + c, atol=1e-12)


@pytest.mark.parametrize("gather", [sparse.GATHER_FLOATS, 1, 60, 400])
def test_project_and_weighted_rows(pair, gather, monkeypatch):
    """Chunked by token ranges (tiny ``GATHER_FLOATS``: many chunks, some empty, one token over the bound)."""
    monkeypatch.setattr(sparse, "GATHER_FLOATS", gather)
    a, b = pair
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(B, T, D, generator=gen, dtype=torch.float64)
    W = torch.randn(NF, D, generator=gen, dtype=torch.float64)
    for f in (SparseFeatures.from_dense(a), SparseFeatures.from_dense(b).minus(SparseFeatures.from_dense(a))):
        dense_mask = f.dense().ne(0).view(-1, NF)
        proj = f.project(g, W)
        assert proj.shape == (f.nnz,)
        want = (g.view(-1, D) @ W.T)[dense_mask]  # row-major order = the layout's order
        assert torch.allclose(proj, want, atol=1e-12)
        coeff = torch.randn(f.nnz, generator=gen, dtype=torch.float64)
        cd = torch.zeros(B * T, NF, dtype=torch.float64)
        cd[dense_mask] = coeff
        assert torch.allclose(f.weighted_rows(coeff, W), cd @ W, atol=1e-12)
        Wt = W.T.contiguous().T  # a transposed view (as ``W_enc.T``): its rows gathered as columns underneath
        assert Wt.stride(0) == 1 and torch.allclose(f.weighted_rows(coeff, Wt), cd @ W, atol=1e-12)


@pytest.mark.parametrize("gather", [1, 60, 400, 5000])
def testtoken_chunks_bound_scratch(gather, monkeypatch):
    monkeypatch.setattr(sparse, "GATHER_FLOATS", gather)
    f = SparseFeatures.from_dense(uneven(0))
    ptr = f.ptr.tolist()
    chunks = list(f.token_chunks(D))
    assert [lo for lo, _ in chunks] == [0] + [hi for _, hi in chunks[:-1]] and chunks[-1][1] == B * T
    for lo, hi in chunks:
        e = ptr[hi] - ptr[lo]
        if hi - lo > 1:  # a single token is never split
            assert e * D <= gather and (hi - lo) * min(e, NF) <= gather


@pytest.mark.parametrize("per_pos", [False, True])
def test_node_matrix(pair, per_pos):
    a, b = pair
    d = SparseFeatures.from_dense(b).minus(SparseFeatures.from_dense(a))
    node_feat = torch.tensor([3, 7, 11, 20, 49])
    node_pos = torch.tensor([0, 2, 6, 3, 1]) if per_pos else None
    dense = d.dense().view(B * T, NF)
    want = dense[:, node_feat].T.clone()  # [k, N]
    if per_pos:
        want *= torch.arange(B * T)[None] % T == node_pos[:, None]
    assert torch.equal(node_matrix(d.val, d, node_feat, node_pos, T), want)
    row, tok, val = node_entries(d.val, d, node_feat, node_pos, T)
    assert torch.equal(want[row, tok], val) and not val.eq(0).any()
    assert int(want.ne(0).sum()) == val.numel()


def test_to_keeps_layout():
    f = SparseFeatures.from_dense(uneven(0))
    g = f.to("cpu")
    assert all(torch.equal(getattr(f, n), getattr(g, n)) for n in ("idx", "val", "ptr")) and g.shape == f.shape
