"""The context an attribution method receives, and what it returns.

A method is ``fn(ctx: AttributionContext) -> NodeEffects``. Effects are per example; the feature
tensor is ``[b, pos, F]`` (per position) or ``[b, F]`` (already summed over positions); errors
``[b, pos]`` or ``[b]``. ``grads`` (``∇_x m`` per submodule, ``[b, pos, d]``) feed edge attribution;
a method that leaves it ``None`` gets the clean-input gradients there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..data import Batch
from ..splicing import Acts, Submodule

DEFAULT_MAX_ROWS = 2048


@dataclass
class NodeEffects:
    features: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor] | None = None


def _chunks(seq: list, size: int):
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


@dataclass
class AttributionContext:
    """One batch of examples with clean and patch (or zero-ablation) activations at every submodule."""

    model: object
    submodules: list[Submodule]
    batch: Batch
    metric: Callable
    clean: dict[str, Acts]
    patch: dict[str, Acts]
    steps: int = 10
    aggregation: str = "sum"
    max_rows: int = DEFAULT_MAX_ROWS
    forward: Callable | None = None  # (tokens, fwd_hooks, batch) -> what the metric reads; default: logits

    def delta(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Δf, Δε, Δx)`` of a submodule, patch minus clean."""
        c, p = self.clean[name], self.patch[name]
        return p.f - c.f, p.err - c.err, p.x - c.x

    def metric_with(self, fwd_hooks, repeat: int = 1) -> torch.Tensor:
        """Metric per row of the clean batch stacked ``repeat`` times, run with ``fwd_hooks``."""
        tokens = self.batch.clean.repeat(repeat, 1)
        batch = self.batch.repeat(repeat) if repeat > 1 else self.batch
        out = self.forward(tokens, fwd_hooks, batch) if self.forward else self.model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)
        return self.metric(out, batch)

    def gradients(self, alphas: list[float]) -> dict[str, torch.Tensor]:
        """Mean over ``alphas`` of ``∇_x m`` at ``x = x_clean + α Δx``, per submodule ``[b, pos, d]``.

        Each submodule is interpolated on its own while everything downstream is recomputed;
        (submodule, α) pairs are stacked along the batch dimension (at most ``max_rows`` rows per pass).
        ``alphas == [0]`` is one clean pass that yields every submodule's gradient at once.
        """
        B = len(self.batch)
        if all(a == 0 for a in alphas):
            return self._stacked_gradients([(s, 0.0) for s in self.submodules], shared_rows=True)
        pairs = [(s, float(a)) for s in self.submodules for a in alphas]
        total = {s.name: torch.zeros_like(self.clean[s.name].x) for s in self.submodules}
        for chunk in _chunks(pairs, max(1, self.max_rows // B)):
            for name, g in self._stacked_gradients(chunk).items():
                total[name] += g
        return {k: v / len(alphas) for k, v in total.items()}

    def _stacked_gradients(self, pairs, shared_rows: bool = False) -> dict[str, torch.Tensor]:
        """Sum over ``pairs`` of gradients; with ``shared_rows`` all pairs share one clean pass."""
        B = len(self.batch)
        n_blocks = 1 if shared_rows else len(pairs)
        leaves: dict[str, torch.Tensor] = {}
        hooks = []
        for name in dict.fromkeys(s.name for s, _ in pairs):
            idx = [0] if shared_rows else [i for i, (s, _) in enumerate(pairs) if s.name == name]
            lo, hi = idx[0] * B, (idx[-1] + 1) * B
            coef = torch.tensor([a for s, a in pairs if s.name == name], dtype=self.clean[name].x.dtype,
                                device=self.clean[name].x.device).repeat_interleave(B)[:, None, None]
            sub = next(s for s, _ in pairs if s.name == name)
            dx = self.delta(name)[2].repeat(hi // B - lo // B, 1, 1)
            leaf = torch.zeros_like(dx, requires_grad=True)
            leaves[name] = leaf

            def fn(act, hook, lo=lo, hi=hi, coef=coef, dx=dx, leaf=leaf, sub=sub):
                mid = act[lo:hi] + sub.unflat(coef * dx + leaf)
                return torch.cat([act[:lo], mid, act[hi:]])

            hooks.append((sub.hook, fn))
        with torch.enable_grad():
            m = self.metric_with(hooks, repeat=n_blocks).sum()
            grads = torch.autograd.grad(m, list(leaves.values()), allow_unused=True)
        out = {}
        for name, g in zip(leaves, grads):
            g = torch.zeros_like(leaves[name]) if g is None else g
            out[name] = g.view(-1, B, *g.shape[1:]).sum(0)
        return out

    def effects_from_grads(self, grads: dict[str, torch.Tensor]) -> NodeEffects:
        """Per-position effects ``(∇_x m W_decᵀ) ⊙ Δf`` and ``∇_x m · Δε`` from activation gradients."""
        feats, errs = {}, {}
        for s in self.submodules:
            df, derr, _ = self.delta(s.name)
            g = grads[s.name]
            feats[s.name] = (g @ s.W_dec.T) * df
            errs[s.name] = (g * derr).sum(-1)
        return NodeEffects(feats, errs, grads)
