"""Fingerprints of the SAEs and model a circuit was found with, and the check that later uses match them.

- SAE: ``{"shape": [d_in, d_sae], "dtype", "sha256"}``, the hash over every parameter's bytes (sorted by name).
- model: ``{"name", "n_params", "dtype", "sample_sha256"}``, the hash over the configuration's sizes and an
  evenly strided sample of at most 65,536 elements of every parameter (hashing all of a multi-billion
  parameter model would take longer than many runs; two different checkpoints differ nearly everywhere).

A circuit stores them in ``provenance["saes"][i]["fingerprint"]`` and ``provenance["model_fingerprint"]``;
:func:`check` compares them with the model and SAEs given to ``evaluate`` (or any later use); ``sfc shift``
records the same in ``shift.json`` and ``edit.json``, and applying a saved edit checks them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .errors import SFCError

SAMPLE = 65_536


def _bytes(tensor):
    """A tensor's raw bytes as a NumPy array (any dtype, bfloat16 included), on the CPU."""
    import torch

    flat = tensor.detach().reshape(-1).contiguous()
    return flat.view(torch.uint8).cpu().numpy() if flat.numel() else b""


def sae_fingerprint(sae) -> dict[str, Any]:
    state = sae.state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(_bytes(t))
    cfg = sae.cfg
    return {
        "shape": [int(cfg.d_in), int(cfg.d_sae)],
        "dtype": str(getattr(cfg, "dtype", "")).removeprefix("torch."),
        "sha256": digest.hexdigest(),
    }


def model_fingerprint(model) -> dict[str, Any]:
    cfg = model.cfg
    digest = hashlib.sha256()
    sizes = {
        k: getattr(cfg, k, None) for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx")
    }
    digest.update(repr(sorted(sizes.items())).encode())
    n_params = 0
    for name, p in sorted(model.state_dict().items()):
        n_params += p.numel()
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // SAMPLE)
        digest.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
        digest.update(_bytes(flat[::step][:SAMPLE]))
    return {
        "name": getattr(cfg, "model_name", None),
        "n_params": int(n_params),
        "dtype": str(getattr(cfg, "dtype", "")).removeprefix("torch."),
        "sample_sha256": digest.hexdigest(),
    }


def sae_info(sub) -> dict[str, Any]:
    """How a result records one dictionary (a :class:`~sfc_plugin.splicing.Submodule`'s): submodule, hook (SAELens's
    ``hook_name``: a transcoder's input), ``hook_out`` for a transcoder (the hook it writes), ``read_hook`` where
    the features are read elsewhere than ``hook``, width, architecture, spec (release and id, or path) and
    fingerprint."""
    from .models import sae_label

    meta = getattr(sub.sae.cfg, "metadata", None)
    info = {
        "submodule": sub.name,
        "hook": sub.key,
        "d_sae": sub.d_sae,
        "architecture": sub.sae.cfg.architecture(),
        "spec": sae_label(sub.sae, sub.key),
        "fingerprint": sae_fingerprint(sub.sae),
    }
    if sub.transcoder:
        info["hook_out"] = sub.hook
    if sub.read_hook != sub.key:  # read elsewhere than SAELens's hook_name (see hook_points.read_hook)
        info["read_hook"] = sub.read_hook
    info.update(getattr(sub.sae, "sfc_spec", None) or {})
    for key in ("release", "sae_id", "neuronpedia_id", "model_name"):
        value = getattr(meta, key, None) if meta is not None else None
        if value is not None:
            info[key] = value
    return info


def world_provenance(model, subs, model_spec=None) -> dict[str, Any]:
    """The model and SAEs of a result, as ``discover`` records them in circuit.json (``model``, ``model_spec``,
    ``dtype``, ``saes``, ``sae_sources`` when loaded from specs, ``model_fingerprint``)."""
    from pathlib import Path

    from .models import sae_label

    out = {
        "model": getattr(model.cfg, "model_name", None),
        "model_spec": str(model_spec) if isinstance(model_spec, (str, Path)) else None,
        "dtype": str(model.cfg.dtype).removeprefix("torch."),
        "saes": [sae_info(s) for s in subs],
    }
    sources = [sae_label(s.sae) for s in subs if getattr(s.sae, "sfc_spec", None)]
    if sources:
        out["sae_sources"] = sources
    out["model_fingerprint"] = model_fingerprint(model)
    return out


def mismatches(
    provenance: dict, model, saes_by_hook: dict[str, Any], *, hooks=None, what: str = "circuit", made: str = "found"
) -> list[str] | None:
    """What differs between the recorded model/SAEs and the given ones (None: nothing recorded).

    ``model=None`` skips the model; ``hooks`` limits the SAEs compared to those hooks (an edit needs only the
    SAEs it ablates features of) and then SAEs at other hooks are not reported as unused.
    """
    recorded = [
        s for s in provenance.get("saes") or [] if isinstance(s, dict) and isinstance(s.get("fingerprint"), dict)
    ]
    model_fp = provenance.get("model_fingerprint")
    if not recorded and not isinstance(model_fp, dict):
        return None
    out = []
    if isinstance(model_fp, dict) and model is not None:
        now = model_fingerprint(model)
        if now.get("sample_sha256") != model_fp.get("sample_sha256"):
            out.append(
                f"model {now.get('name')!r} differs from the model the {what} was {made} with "
                f"({model_fp.get('name')!r}, {model_fp.get('n_params')} parameters; fingerprint "
                f"{str(model_fp.get('sample_sha256'))[:12]} vs {str(now.get('sample_sha256'))[:12]})"
            )
    by_hook = {s.get("hook"): s for s in recorded if hooks is None or s.get("hook") in hooks}
    for hook, info in by_hook.items():
        if hook not in saes_by_hook:
            out.append(f"no SAE given for hook {hook!r}, where the {what} was {made} with one")
            continue
        now = sae_fingerprint(saes_by_hook[hook])
        fp = info["fingerprint"]
        if now["shape"] != fp.get("shape"):
            out.append(f"SAE at hook {hook!r} has shape {now['shape']}, the {what}'s had {fp.get('shape')}")
        elif now["sha256"] != fp.get("sha256"):
            out.append(
                f"SAE at hook {hook!r} has other weights than the {what}'s (sha256 {now['sha256'][:12]} vs "
                f"{str(fp.get('sha256'))[:12]})"
            )
    if recorded and hooks is None:
        for hook in sorted(set(saes_by_hook) - set(by_hook)):
            out.append(f"SAE at hook {hook!r} was not used to find the {what}")
    return out


def check(
    provenance: dict, model, saes_by_hook: dict[str, Any], force: bool = False, option: str = "force=True", **where
) -> dict:
    """Refuse SAEs or a model other than the recorded ones (unless ``force``); returns the record for the output.
    ``where``: :func:`mismatches`'s ``hooks``, ``what`` and ``made``."""
    found = mismatches(provenance, model, saes_by_hook, **where)
    if found is None:
        return {"status": f"unchecked (the {where.get('what', 'circuit')} records no fingerprints)"}
    if not found:
        return {"status": "match"}
    if not force:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise SFCError(f"{found[0]}{more}; pass {option} to use them anyway")
    return {"status": "forced", "mismatches": found}
