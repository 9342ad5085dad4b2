"""Fingerprints of the SAEs and model a circuit was found with, and the check that later uses match them.

- SAE: ``{"shape": [d_in, d_sae], "dtype", "sha256"}``, the hash over every parameter's bytes (sorted by name).
- model: ``{"name", "n_params", "dtype", "sample_sha256"}``, the hash over the configuration's sizes and an
  evenly strided sample of at most 65,536 elements of every parameter (hashing all of a multi-billion
  parameter model would take longer than many runs; two different checkpoints differ nearly everywhere).

A circuit stores them in ``provenance["saes"][i]["fingerprint"]`` and ``provenance["model_fingerprint"]``;
:func:`check` compares them with the model and SAEs given to ``evaluate`` (or any later use).
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
    return {"shape": [int(cfg.d_in), int(cfg.d_sae)], "dtype": str(getattr(cfg, "dtype", "")).removeprefix("torch."),
            "sha256": digest.hexdigest()}


def model_fingerprint(model) -> dict[str, Any]:
    cfg = model.cfg
    digest = hashlib.sha256()
    sizes = {k: getattr(cfg, k, None) for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx")}
    digest.update(repr(sorted(sizes.items())).encode())
    n_params = 0
    for name, p in sorted(model.state_dict().items()):
        n_params += p.numel()
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // SAMPLE)
        digest.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
        digest.update(_bytes(flat[::step][:SAMPLE]))
    return {"name": getattr(cfg, "model_name", None), "n_params": int(n_params),
            "dtype": str(getattr(cfg, "dtype", "")).removeprefix("torch."), "sample_sha256": digest.hexdigest()}


def mismatches(provenance: dict, model, saes_by_hook: dict[str, Any]) -> list[str] | None:
    """What differs between the circuit's recorded model/SAEs and the given ones (None: nothing recorded)."""
    recorded = [s for s in provenance.get("saes") or [] if isinstance(s, dict) and isinstance(s.get("fingerprint"), dict)]
    model_fp = provenance.get("model_fingerprint")
    if not recorded and not isinstance(model_fp, dict):
        return None
    out = []
    if isinstance(model_fp, dict):
        now = model_fingerprint(model)
        if now.get("sample_sha256") != model_fp.get("sample_sha256"):
            out.append(f"model {now.get('name')!r} differs from the model the circuit was found with "
                       f"({model_fp.get('name')!r}, {model_fp.get('n_params')} parameters; fingerprint "
                       f"{str(model_fp.get('sample_sha256'))[:12]} vs {str(now.get('sample_sha256'))[:12]})")
    by_hook = {s.get("hook"): s for s in recorded}
    for hook, info in by_hook.items():
        if hook not in saes_by_hook:
            out.append(f"no SAE given for hook {hook!r}, where the circuit was found with one")
            continue
        now = sae_fingerprint(saes_by_hook[hook])
        fp = info["fingerprint"]
        if now["shape"] != fp.get("shape"):
            out.append(f"SAE at hook {hook!r} has shape {now['shape']}, the circuit's had {fp.get('shape')}")
        elif now["sha256"] != fp.get("sha256"):
            out.append(f"SAE at hook {hook!r} has other weights than the circuit's (sha256 {now['sha256'][:12]} vs "
                       f"{str(fp.get('sha256'))[:12]})")
    if recorded:
        for hook in sorted(set(saes_by_hook) - set(by_hook)):
            out.append(f"SAE at hook {hook!r} was not used to find the circuit")
    return out


def check(provenance: dict, model, saes_by_hook: dict[str, Any], force: bool = False, option: str = "force=True") -> dict:
    """Refuse SAEs or a model other than the circuit's (unless ``force``); returns the record for the output."""
    found = mismatches(provenance, model, saes_by_hook)
    if found is None:
        return {"status": "unchecked (the circuit records no fingerprints)"}
    if not found:
        return {"status": "match"}
    if not force:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise SFCError(f"{found[0]}{more}; pass {option} to use them anyway")
    return {"status": "forced", "mismatches": found}
