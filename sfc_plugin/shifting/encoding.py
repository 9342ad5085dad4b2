"""A few SAE features without the rest: what SHIFT's edits and judges read at real widths.

Ablating 40 features of a 32,768-wide SAE does not need the other 32,728: for SAEs whose features are each
a function of their own pre-activation (SAELens ``standard`` and ``jumprelu``), :func:`encode_some` computes
the chosen columns of the encoder only — on a CPU, 16.8 M multiply-adds per token and hook become a few
thousand. Other kinds (TopK, whose features compete; gated; inputs SAELens layer-normalises) go through
the SAE's full ``encode``.
"""

from __future__ import annotations

import torch

SEPARABLE = ("standard", "jumprelu")


def architecture(sae) -> str:
    cfg = sae.cfg
    return cfg.architecture() if callable(getattr(cfg, "architecture", None)) else str(getattr(cfg, "architecture", ""))


@torch.no_grad()
def encode_some(sub, x: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """``sub.encode(x)[..., feats]`` for a flat activation ``x`` ``[..., d_in]`` and feature indices ``feats``."""
    sae = sub.sae
    arch = architecture(sae)
    if sub.ln_in or arch not in SEPARABLE or feats.numel() * 4 > sub.d_sae:
        return sub.encode(x)[..., feats]
    x_in = x.to(sae.W_enc.dtype)
    if getattr(sae, "hook_z_reshaping_mode", False):
        x_in = sub.unflat(x_in)
    sae_in = sae.process_sae_in(x_in)  # SAELens's own input processing (dtype, b_dec, scaling)
    idx = feats.to(sae.W_enc.device)
    pre = sae_in @ sae.W_enc[:, idx] + sae.b_enc[idx]
    f = sae.activation_fn(pre)
    if arch == "jumprelu":
        f = f * (pre > sae.threshold[idx]).to(f.dtype)
    return f.to(x.dtype)
