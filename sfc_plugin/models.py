"""Loading models and SAEs from local files (and, on request, from a hub).

Model directory layout written by :func:`save_model` (used by the shipped toy world)::

    config.json          HookedTransformerConfig fields (JSON)
    model.safetensors    state dict
    tokenizer/           a Hugging Face tokenizer saved with ``save_pretrained``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import SFCError


def save_model(model, path: str | Path) -> Path:
    """Save a HookedTransformer (config, weights, tokenizer) so :func:`load_model` reopens it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = dict(model.cfg.to_dict())  # to_dict() returns the live __dict__
    cfg["dtype"] = str(cfg["dtype"]).removeprefix("torch.")
    cfg.pop("device", None)
    (path / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True, default=str))
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(path / "tokenizer"))
    return path


def load_model(path: str | Path, device: str | None = None):
    """Open a model directory written by :func:`save_model`."""
    import torch
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise SFCError(f"model directory {str(path)!r} lacks config.json or model.safetensors")
    raw = json.loads((path / "config.json").read_text())
    raw["dtype"] = getattr(torch, raw.get("dtype", "float32"))
    fields = HookedTransformerConfig.__dataclass_fields__
    cfg_kwargs = {k: v for k, v in raw.items() if k in fields and fields[k].init}
    if device is not None:
        cfg_kwargs["device"] = device
    tokenizer = None
    if (path / "tokenizer").is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    cfg = HookedTransformerConfig(**cfg_kwargs)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=True)
    model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    model.eval()
    return model


def load_model_spec(spec: str, device: str | None = None):
    """A model directory, else a TransformerLens pretrained name (needs the hub or its cache)."""
    if Path(spec).exists():
        return load_model(spec, device)
    from transformer_lens import HookedTransformer

    try:
        return HookedTransformer.from_pretrained(spec, device=device)
    except Exception as exc:  # noqa: BLE001
        raise SFCError(f"cannot load model {spec!r}: not a model directory, and the hub load failed ({type(exc).__name__})") from None


def _is_sae_dir(path: Path) -> bool:
    return (path / "cfg.json").is_file()


def load_sae_spec(spec: str, device: str | None = None) -> list:
    """SAEs from a spec: an SAELens SAE directory, a directory of them, or ``release:sae_id``."""
    from sae_lens import SAE

    path = Path(spec)
    if path.exists():
        dirs = [path] if _is_sae_dir(path) else sorted(p for p in path.iterdir() if _is_sae_dir(p))
        if not dirs:
            raise SFCError(f"no SAELens SAE (cfg.json) in {spec!r}")
        return [SAE.load_from_disk(str(d), device=device or "cpu") for d in dirs]
    if ":" not in spec:
        raise SFCError(f"SAE {spec!r} is neither a directory nor 'release:sae_id'")
    release, sae_id = spec.split(":", 1)
    try:
        return [SAE.from_pretrained(release, sae_id, device=device or "cpu")]
    except Exception as exc:  # noqa: BLE001
        raise SFCError(f"cannot load SAE {spec!r} ({type(exc).__name__}: {exc})".splitlines()[0]) from None


def saes_by_hook(saes: Mapping[str, Any] | Iterable[Any]) -> dict[str, Any]:
    """``{hook_name: SAE}`` from a mapping or a sequence of SAEs (hook from ``cfg.metadata.hook_name``).

    Sequence items may also be SAE specs for :func:`load_sae_spec` (a directory saved by SAELens, a
    directory of them, or ``release:sae_id``).
    """
    if isinstance(saes, Mapping):
        return dict(saes)
    if isinstance(saes, (str, Path)):
        saes = [saes]
    loaded = [sae for item in saes for sae in (load_sae_spec(str(item)) if isinstance(item, (str, Path)) else [item])]
    out: dict[str, Any] = {}
    for sae in loaded:
        hook = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
        if not hook:
            raise SFCError(f"SAE {type(sae).__name__} has no cfg.metadata.hook_name; pass saes as {{hook_name: sae}}")
        if hook in out:
            raise SFCError(f"two SAEs for hook {hook!r}")
        out[hook] = sae
    return out
