"""The toy world: a tiny word-level language model and SAELens-trained SAEs shipped in the package.

Everything runs offline::

    from sfc_plugin import toy
    model, saes = toy.load()            # HookedTransformer (tokenizer set), {hook_name: SAE}
    toy.report()["accuracy"]            # agreement accuracy per condition (test split)
    toy.build("/tmp/toy", seed=1)       # regenerate everything from a seed (a few minutes on CPU)
    toy.load(path="/tmp/toy")           # ... and use it

The language (:mod:`sfc_plugin.toy.language`) has subject–verb agreement sentences in four
conditions (``simple``, ``nounpp``, ``rc``, ``within_rc``), filler text and biographies with a
profession and a gender. The datasets ``toy/sva-<condition>`` (splits ``train``/``test``) and
``toy/bios`` are registered by the built-in plugin :mod:`sfc_plugin.toy.plugin`.

Artifacts (``ARTIFACTS``)::

    model/                      config.json, model.safetensors, tokenizer/ (see sfc_plugin.models)
    saes/<hook_name>/           SAELens layout: cfg.json, sae_weights.safetensors
    data/sva-<cond>.<split>.jsonl, data/bios.<split>.jsonl
    report.json                 quality report written by the build

This module imports nothing heavy; torch, TransformerLens and SAELens load on first use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import SFCError
from ..hook_points import standard_hooks

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CONDITIONS = ("simple", "nounpp", "rc", "within_rc")

__all__ = ["ARTIFACTS", "CONDITIONS", "load", "load_model", "load_saes", "build", "report", "hook_names"]


def hook_names(n_layers: int = 3) -> list[str]:
    """The toy SAEs' hooks in circuit order: ``blocks.0.hook_resid_pre`` (the embedding), then per
    layer ``hook_attn_out``, ``hook_mlp_out``, ``hook_resid_post``."""
    return standard_hooks(n_layers)


def _root(path: str | Path | None) -> Path:
    root = Path(path) if path is not None else ARTIFACTS
    if not (root / "model" / "config.json").is_file():
        raise SFCError(f"no toy artifacts in {str(root)!r}; run 'sfc toy build' to create them")
    return root


def load_model(device: str | None = None, path: str | Path | None = None):
    """The shipped toy HookedTransformer (eval mode, tokenizer set)."""
    from ..models import load_model as _load_model

    return _load_model(_root(path) / "model", device=device)


def load_saes(device: str | None = None, path: str | Path | None = None) -> dict[str, Any]:
    """``{hook_name: SAE}`` for every shipped SAE, in circuit order."""
    from ..models import load_sae_dir

    root = _root(path)
    cfg = json.loads((root / "model" / "config.json").read_text())
    saes = {}
    for hook in hook_names(int(cfg["n_layers"])):
        d = root / "saes" / hook
        if not (d / "cfg.json").is_file():
            raise SFCError(f"toy SAE for hook {hook!r} missing in {str(root / 'saes')!r}; run 'sfc toy build'")
        sae = load_sae_dir(d, device)
        sae.eval()
        saes[hook] = sae
    return saes


def load(device: str | None = None, path: str | Path | None = None):
    """``(model, saes)``: the toy model and ``{hook_name: SAE}`` (from ``path``, default the shipped artifacts)."""
    return load_model(device, path), load_saes(device, path)


DEFAULT_BUILD_DIR = "sfc-toy"


def build(
    out_dir: str | Path | None = None,
    seed: int = 0,
    reduced: bool = False,
    verbose: bool = True,
    config=None,
    overwrite: bool = False,
) -> dict:
    """Regenerate datasets, tokenizer, model, SAEs and report in ``out_dir`` (default ``./sfc-toy``).

    Deterministic in ``seed`` on a given machine. The full build takes a few minutes on two CPU
    cores; ``reduced=True`` builds a one-layer miniature in seconds (for tests). ``config`` (a
    :class:`sfc_plugin.toy.builder.BuildConfig`) overrides sizes and hyper-parameters. Returns the report.

    The build happens in a temporary directory next to ``out_dir`` and lands as one set (``data/``,
    ``model/``, ``saes/``, ``report.json``): an interrupted build leaves the previous one. It never writes
    inside the installed package, never removes what sfc did not write, and refuses a non-empty directory
    sfc did not write unless ``overwrite``.
    """
    from ..files import check_output_dir, install_tree, staging_dir

    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SFCError(f"seed must be a non-negative integer, got {seed!r}")
    out = Path(DEFAULT_BUILD_DIR if out_dir is None else out_dir)
    package = Path(__file__).resolve().parent.parent
    if out.resolve() == package or package in out.resolve().parents:
        raise SFCError(
            f"refusing to build into {str(out)!r}, inside the installed package {str(package)!r}; "
            f"build elsewhere (default ./{DEFAULT_BUILD_DIR}) and load it with toy.load(path=...)"
        )
    check_output_dir(out, ["data", "model", "saes", "report.json"], overwrite)  # before minutes of work
    from .builder import build as _build

    stage = staging_dir(out)
    try:
        report = _build(stage, seed=seed, reduced=reduced, verbose=verbose, config=config)
        install_tree(stage, out, overwrite)
    finally:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
    return report


def report(path: str | Path | None = None) -> dict:
    """The quality report written by the build (``report.json``)."""
    root = Path(path) if path is not None else ARTIFACTS
    f = root / "report.json"
    if not f.is_file():
        raise SFCError(f"no toy report {str(f)!r}; run 'sfc toy build'")
    return json.loads(f.read_text())
