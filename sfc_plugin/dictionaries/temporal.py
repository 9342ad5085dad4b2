"""``temporal``: an SAE that predicts each position's code from earlier positions and encodes the rest.

SAELens's ``encode`` returns the *novel* codes only (``z_novel``, sparse ReLU/TopK codes of the residual left after
the attention layers' prediction ``z_pred`` is removed) and its ``decode`` decodes them alone. So the node set's
features are the novel codes, ``decode(f) = f W_dec + b_dec`` (``b_dec`` when the SAE is untied or applies it to
its input), and the error node ``x − decode(f)`` holds the predicted part ``z_pred W_dec`` as well as what the SAE
does not reconstruct. The encoder reads earlier positions (``tokenwise`` is False): features are encoded one whole
sequence at a time, and edges into them differentiate SAELens's encoder with autograd, through the prediction,
at the clean input (``W_enc`` is None). ``constant_scalar_rescale`` (the released SAEs' scaling factor ``a``) is
folded into the decoder: ``W_dec / a``, ``b_dec / a``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import IDENTITY_NORMS, Kind, Maps


@dataclass(frozen=True)
class Temporal(Kind):
    def maps(self, sae) -> Maps:
        cfg = sae.cfg
        W_dec, b_dec = sae.W_dec.detach(), sae.b_dec.detach()
        if cfg.tied_weights and not cfg.apply_b_dec_to_input:
            b_dec = b_dec * 0
        if cfg.normalize_activations == "constant_scalar_rescale":
            a = float(cfg.activation_normalization_factor)
            W_dec, b_dec = W_dec / a, b_dec / a
        return Maps(None, W_dec, b_dec)


TEMPORAL = Temporal(
    "temporal",
    "the novel codes (what the earlier positions do not predict), ReLU or TopK",
    "x − decode(novel codes): the predicted part z_pred W_dec plus what is not reconstructed",
    tokenwise=False,
    normalizations=IDENTITY_NORMS + ("constant_scalar_rescale",),
)
