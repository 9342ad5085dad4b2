"""What a dictionary kind gives a node set: its decoder as an affine map, its encoder's Jacobian, its limits.

Every node set is written ``x = decode(f) + ε`` at the hook the dictionary writes (for an SAE the hook it reads),
with ``decode(f) = f @ W_dec + b_dec`` affine in the hook's own units and ``f = encode(read activation)``. A kind
says how SAELens's class for one architecture maps onto that:

- :meth:`Kind.maps` gives ``W_dec`` ``[d_sae, d_out]``, ``b_dec`` ``[d_out]`` (exactly what SAELens's ``decode``
  adds, in the hook's units), ``W_skip`` ``[d_out, d_in]`` for skip transcoders, and ``W_enc`` ``[d_in, d_sae]``
  when the encoder is a masked linear map at every input (``∂f/∂x = mask ⊙ W_enc``, the mask being the active
  features), else None: the engine then differentiates the kind's own ``encode`` with autograd.
- ``tokenwise``: features at a position depend on that position's activation only (False for temporal SAEs,
  whose encoder attends to earlier positions).
- ``normalizations``: the ``normalize_activations`` values whose runtime behaviour the node set reproduces.
- ``nodes`` and ``error``: what a feature node and the error node mean (the documentation's table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# SAELens runs these as the identity at inference (``expected_average_only_in`` is a training-time scale that
# ``from_pretrained`` folds into the weights when it finds it)
IDENTITY_NORMS = ("none", "expected_average_only_in")
# per-token input normalisations that SAELens undoes after decoding: features are reported in the hook's units
TOKEN_SCALED_NORMS = ("layer_norm", "constant_norm_rescale")


@dataclass(frozen=True)
class Maps:
    """A dictionary's maps in the hook's units (see the module docstring)."""

    W_enc: Any  # [d_in, d_sae] or None (autograd through the kind's encoder)
    W_dec: Any  # [d_sae, d_out]
    b_dec: Any  # [d_out]
    W_skip: Any = None  # [d_out, d_in]: a skip transcoder's linear term ``read @ W_skip.T``


@dataclass(frozen=True)
class Kind:
    """One SAELens architecture as a node set. Subclasses implement :meth:`maps`."""

    architecture: str
    nodes: str
    error: str
    transcoder: bool = False
    tokenwise: bool = True
    normalizations: tuple[str, ...] = IDENTITY_NORMS + TOKEN_SCALED_NORMS

    def maps(self, sae) -> Maps:  # pragma: no cover - every registered kind overrides it
        raise NotImplementedError

    def check(self, sae) -> str | None:
        """Why this SAE cannot be a node set (a phrase for a one-line error), or None."""
        norm = getattr(sae.cfg, "normalize_activations", "none")
        if norm not in self.normalizations:
            return (
                f"normalize_activations={norm!r} (supported for {self.architecture}: {', '.join(self.normalizations)})"
            )
        return None
