"""``matching_pursuit``: a tied SAE whose encoder picks decoder rows greedily.

SAELens's encoder repeats: pick the atom ``j`` with the largest positive ``⟨r, W_dec[j]⟩`` of the residual ``r``
(starting at ``x − b_dec``), add that inner product to ``f_j`` and remove ``f_j W_dec[j]`` from ``r``, until the
support stops changing, ``|r|`` falls below ``residual_threshold`` or ``max_iterations`` steps. The selection is
piecewise constant, so ``f`` is piecewise linear in ``x`` but not a masked linear map: each coefficient reads the
residual left by the earlier picks. Node effects need no encoder Jacobian (``∇_f m = W_dec ∇_x m``, the
straight-through gradient of every kind); edges into its features differentiate SAELens's own encoder with
autograd at the clean input, selection held fixed (``W_enc`` is None). ``b_dec`` belongs to the reconstruction
only when ``apply_b_dec_to_input`` (as SAELens's ``decode`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import IDENTITY_NORMS, Kind, Maps


@dataclass(frozen=True)
class MatchingPursuit(Kind):
    def maps(self, sae) -> Maps:
        W_dec, b_dec = sae.W_dec.detach(), sae.b_dec.detach()
        return Maps(None, W_dec, b_dec if sae.cfg.apply_b_dec_to_input else b_dec * 0)


MATCHING_PURSUIT = MatchingPursuit(
    "matching_pursuit",
    "the coefficient matching pursuit gives the atom (≥ 0, summed over repeated picks)",
    "x − decode(f): the residual pursuit leaves",
    normalizations=IDENTITY_NORMS,
)
