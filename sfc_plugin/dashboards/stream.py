"""The streaming pass: per submodule, running statistics of the requested features over corpus batches.

Everything here is independent of how the corpus is cut into batches and of where a run was
interrupted: top contexts are the ``k`` best by (context max desc, context index asc), the random
samples are the contexts with the smallest hash keys among those where the feature fires, counts
are integers and the float64 sums are added batch by batch in corpus order (a resumed run replays
the same additions from the saved state).
"""

from __future__ import annotations

import torch

# log-spaced histogram bins: 10 per decade from 1e-5 to 1e5 (values outside go to the end bins)
HIST_LO, HIST_PER_DECADE, HIST_DECADES = -5, 10, 10
N_BINS = HIST_PER_DECADE * HIST_DECADES
_P = 2147483647  # 2^31 - 1
EMPTY_KEY = _P  # larger than every hash key


def hist_edges() -> list[float]:
    return [10.0 ** (HIST_LO + i / HIST_PER_DECADE) for i in range(N_BINS + 1)]


def hash_keys(contexts: torch.Tensor, features: torch.Tensor, salt: int) -> torch.Tensor:
    """Deterministic pseudo-random keys in ``[0, 2^31 - 1)`` for (context, feature) pairs: ``[B, F]``.

    Integer arithmetic only (Park–Miller steps with xor-shifts), so every platform gives the same keys."""
    x = (contexts[:, None] * 1_000_003 + features[None, :] * 7_919 + salt * 104_729 + 12_345) % _P
    for _ in range(3):
        x = (x * 48_271) % _P
        x = x ^ (x >> 13)
        x = x % _P
    return x


class FeatureStream:
    """Running statistics of features ``idx`` of one submodule (``k`` top contexts, ``r`` samples)."""

    FIELDS = ("fire", "total", "hist", "top_val", "top_ctx", "top_acts", "res_key", "res_val", "res_ctx", "res_acts")

    def __init__(self, idx: torch.Tensor, salt: int, k: int, r: int, length: int):
        self.idx, self.salt, self.k, self.r = idx.long(), int(salt), int(k), int(r)
        f = len(idx)
        self.fire = torch.zeros(f, dtype=torch.long)
        self.total = torch.zeros(f, dtype=torch.float64)
        self.hist = torch.zeros(f, N_BINS, dtype=torch.long)
        self.top_val = torch.full((self.k, f), -float("inf"))
        self.top_ctx = torch.full((self.k, f), -1, dtype=torch.long)
        self.top_acts = torch.zeros(self.k, f, length)
        self.res_key = torch.full((self.r, f), EMPTY_KEY, dtype=torch.long)
        self.res_val = torch.zeros(self.r, f)
        self.res_ctx = torch.full((self.r, f), -1, dtype=torch.long)
        self.res_acts = torch.zeros(self.r, f, length)

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{name}": getattr(self, name).contiguous() for name in self.FIELDS}

    def load(self, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        for name in self.FIELDS:
            t = tensors[f"{prefix}.{name}"]
            if t.shape != getattr(self, name).shape:
                raise ValueError(f"saved state {prefix}.{name} has shape {tuple(t.shape)}")
            setattr(self, name, t.clone())

    @torch.no_grad()
    def update(self, acts: torch.Tensor, first_context: int) -> None:
        """``acts`` ``[B, L, F]`` (float32, zero where the mask is off) of contexts ``first_context ...``."""
        b = acts.shape[0]
        on = acts != 0  # a feature fires where it is non-zero (AbsTopK features may be negative)
        self.fire += on.sum((0, 1))
        self.total += acts.sum((0, 1), dtype=torch.float64)
        bi, _, fi = on.nonzero(as_tuple=True)
        if len(fi):
            vals = acts[on].double().abs()  # same (b, l, f) order as nonzero; the histogram is of magnitudes
            bins = ((vals.log10() - HIST_LO) * HIST_PER_DECADE).floor().clamp(0, N_BINS - 1).long()
            self.hist.index_put_((fi, bins), torch.ones_like(bins), accumulate=True)
        ctx_max = acts.abs().amax(1)  # [B, F]: contexts rank by the largest magnitude (the activation itself, ≥ 0)
        per_ctx = acts.permute(0, 2, 1)  # [B, F, L]
        contexts = torch.arange(first_context, first_context + b)
        val = torch.where(ctx_max > 0, ctx_max, torch.full_like(ctx_max, -float("inf")))
        cand_val = torch.cat([self.top_val, val])
        order = torch.sort(cand_val, dim=0, descending=True, stable=True).indices[: self.k]
        self.top_val = cand_val.gather(0, order)
        self.top_ctx = torch.cat([self.top_ctx, contexts[:, None].expand(b, len(self.idx))]).gather(0, order)
        self.top_acts = torch.cat([self.top_acts, per_ctx]).gather(0, order[..., None].expand(-1, -1, acts.shape[1]))
        keys = hash_keys(contexts, self.idx, self.salt)
        keys = torch.where(ctx_max > 0, keys, torch.full_like(keys, EMPTY_KEY))
        cand_key = torch.cat([self.res_key, keys])
        order = torch.sort(cand_key, dim=0, stable=True).indices[: self.r]
        self.res_key = cand_key.gather(0, order)
        self.res_val = torch.cat([self.res_val, ctx_max]).gather(0, order)
        self.res_ctx = torch.cat([self.res_ctx, contexts[:, None].expand(b, len(self.idx))]).gather(0, order)
        self.res_acts = torch.cat([self.res_acts, per_ctx]).gather(0, order[..., None].expand(-1, -1, acts.shape[1]))
