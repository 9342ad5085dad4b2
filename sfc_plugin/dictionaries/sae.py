"""The SAEs whose encoder is a masked linear map: ``standard``, ``gated``, ``topk``, ``abstopk``, ``jumprelu``.

For each, the active features are ``f_j = s_j · (x_in @ W_enc + b)_j`` on a support chosen piecewise-constantly
(ReLU, a JumpReLU threshold, a gate, the top k, or the top k by magnitude keeping the sign), so at the clean input
``∂f/∂x = mask ⊙ W_enc'`` with ``W_enc'`` the encoder as SAELens applies it: gated SAEs scale it by
``exp(r_mag)``; ``rescale_acts_by_decoder_norm`` (TopK, AbsTopK) multiplies pre-activations by the decoder norms
``n`` before the selection and divides the features by them before decoding, so ``W_enc' = W_enc · n`` and
``W_dec' = W_dec / n``. AbsTopK's negative features are ordinary nodes: their Jacobian is the same masked map.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Kind, Maps

_ERROR = "x − decode(f): what the SAE does not reconstruct at its hook"


@dataclass(frozen=True)
class MaskedSAE(Kind):
    """An SAE at one hook with a masked linear encoder."""

    gated: bool = False

    def maps(self, sae) -> Maps:
        W_enc, W_dec, b_dec = sae.W_enc.detach(), sae.W_dec.detach(), sae.b_dec.detach()
        if self.gated:
            W_enc = W_enc * sae.r_mag.detach().exp()[None, :]
        if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
            norms = W_dec.norm(dim=-1)
            W_enc, W_dec = W_enc * norms[None, :], W_dec / norms[:, None]
        return Maps(W_enc, W_dec, b_dec)


STANDARD = MaskedSAE("standard", "ReLU(x W_enc + b_enc): one node per feature", _ERROR)
GATED = MaskedSAE("gated", "the gated magnitude (gate > 0) · ReLU(x W_enc e^r_mag + b_mag)", _ERROR, gated=True)
TOPK = MaskedSAE("topk", "the k largest pre-activations (ReLU); the rest are zero", _ERROR)
ABSTOPK = MaskedSAE(
    "abstopk",
    "the k pre-activations largest in magnitude, sign kept: a node may be negative (its effect and edges carry "
    "the sign)",
    _ERROR,
)
JUMPRELU = MaskedSAE("jumprelu", "pre-activations above the feature's threshold", _ERROR)
