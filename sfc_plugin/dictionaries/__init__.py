"""Dictionary kinds: every SAELens architecture as a node set (one module per family, this registry).

``KINDS`` maps SAELens's architecture names (``sae.cfg.architecture()``) to :class:`~.base.Kind` objects:
``standard``, ``gated``, ``topk``, ``abstopk``, ``jumprelu`` (:mod:`.sae`), ``matching_pursuit``
(:mod:`.matching_pursuit`), ``temporal`` (:mod:`.temporal`) and the four transcoders (:mod:`.transcoder`).
:func:`kind_of` is how the rest of the package finds an SAE's kind.
"""

from __future__ import annotations

from ..errors import SFCError
from ..hook_points import hook_width, read_hook, sae_hook_out
from .base import IDENTITY_NORMS, TOKEN_SCALED_NORMS, Kind, Maps
from .matching_pursuit import MATCHING_PURSUIT
from .sae import ABSTOPK, GATED, JUMPRELU, STANDARD, TOPK
from .temporal import TEMPORAL
from .transcoder import JUMPRELU_SKIP_TRANSCODER, JUMPRELU_TRANSCODER, SKIP_TRANSCODER, TRANSCODER

KINDS: dict[str, Kind] = {
    k.architecture: k
    for k in (
        STANDARD,
        GATED,
        TOPK,
        ABSTOPK,
        JUMPRELU,
        MATCHING_PURSUIT,
        TEMPORAL,
        TRANSCODER,
        SKIP_TRANSCODER,
        JUMPRELU_TRANSCODER,
        JUMPRELU_SKIP_TRANSCODER,
    )
}

__all__ = [
    "IDENTITY_NORMS",
    "KINDS",
    "TOKEN_SCALED_NORMS",
    "Kind",
    "Maps",
    "architecture",
    "check_hooks",
    "kind_of",
    "read_hook_of",
]


def architecture(sae) -> str:
    """SAELens's architecture name of ``sae`` (``"?"`` when it has none)."""
    cfg = getattr(sae, "cfg", None)
    arch = getattr(cfg, "architecture", None)
    return str(arch() if callable(arch) else arch or "?")


def kind_of(sae, where: str) -> Kind:
    """The kind of ``sae``; a one-line SFCError for an architecture SAELens does not register or we do not know."""
    arch = architecture(sae)
    if arch in KINDS:
        return KINDS[arch]
    try:
        from sae_lens.registry import SAE_CLASS_REGISTRY

        registered = arch in SAE_CLASS_REGISTRY
    except ImportError:  # pragma: no cover - sae_lens is a dependency
        registered = False
    what = "has no node-set kind here" if registered else "is not an architecture SAELens registers"
    raise SFCError(f"{where} has architecture {arch!r}, which {what} (known: {', '.join(sorted(KINDS))})")


def read_hook_of(sae, hook: str) -> str:
    """The hook ``sae`` (keyed by ``hook``, its SAELens ``hook_name``) is read at: ``hook``, or for a transcoder
    whose ``hf_hook_name`` is the MLP's input while ``hook`` is ``hook_mlp_in``, ``mlp.hook_in``
    (:func:`sfc_plugin.hook_points.read_hook`)."""
    if not kind_of(sae, f"SAE at {hook!r}").transcoder:
        return hook
    return read_hook(hook, getattr(getattr(sae.cfg, "metadata", None), "hf_hook_name", None))


def check_hooks(model, hook: str, sae, label: str) -> None:
    """A dictionary fits the model: its read (and, for a transcoder, write) hook exists and has its width."""
    cfg = model.cfg
    out = sae_hook_out(sae) if kind_of(sae, label).transcoder else None
    hook = read_hook_of(sae, hook)
    if hook not in model.hook_dict:
        raise SFCError(f"{label}: hook {hook!r} is not in the model ({cfg.n_layers} layers)")
    if out is not None and out not in model.hook_dict:
        raise SFCError(f"{label}: output hook {out!r} is not in the model ({cfg.n_layers} layers)")
    width, what = hook_width(cfg, hook)
    if sae.cfg.d_in != width:
        at = "" if repr(hook) in label else f" at {hook!r}"  # the label may name the hook already
        raise SFCError(f"{label}: d_in={sae.cfg.d_in} but the model's {what}{at} is {width}")
    if out is not None:
        d_out, what = hook_width(cfg, out)
        if getattr(sae.cfg, "d_out", None) != d_out:
            raise SFCError(
                f"{label}: d_out={getattr(sae.cfg, 'd_out', None)} but the model's {what} at {out!r} is {d_out}"
            )
