"""A few dictionary features without the rest: what SHIFT's edits and judges read at real widths.

Ablating 40 features of a 32,768-wide SAE does not need the other 32,728: for dictionaries whose features are
each a function of their own pre-activation (SAELens ``standard`` and ``jumprelu`` SAEs, and the four
transcoder kinds), :func:`encode_some` computes the chosen columns of the encoder only — on a CPU, 16.8 M
multiply-adds per token and hook become a few thousand. Other kinds (TopK, whose features compete; gated;
matching pursuit; temporal; inputs SAELens normalises per token) go through the node set's full ``encode``.
"""

from __future__ import annotations

import torch

from ..dictionaries import TOKEN_SCALED_NORMS, architecture

SEPARABLE = (
    "standard",
    "jumprelu",
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
    "jumprelu_skip_transcoder",
)


def separable(sub) -> bool:
    """``sub``'s features can be encoded one column at a time (see the module docstring)."""
    return architecture(sub.sae) in SEPARABLE and sub.normalization not in TOKEN_SCALED_NORMS


@torch.no_grad()
def encode_some(sub, read: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """``sub.encode(read)[..., feats]`` for the node set's flat read activation ``read`` ``[..., d_in]`` (an
    SAE's own hook, a transcoder's input hook: :meth:`~sfc_plugin.splicing.Submodule.read`) and feature
    indices ``feats``."""
    sae = sub.sae
    if not separable(sub) or feats.numel() * 4 > sub.d_sae:
        return sub.encode(read)[..., feats]
    x_in = read.to(sae.W_enc.dtype)
    if getattr(sae, "hook_z_reshaping_mode", False):
        x_in = sub.unflat(x_in)
    sae_in = sae.process_sae_in(x_in)  # SAELens's own input processing (dtype, b_dec, scaling)
    idx = feats.to(sae.W_enc.device)
    pre = sae_in @ sae.W_enc[:, idx] + sae.b_enc[idx]
    f = sae.activation_fn(pre)
    if "jumprelu" in architecture(sae):
        f = f * (pre > sae.threshold[idx]).to(f.dtype)
    return f.to(read.dtype)
