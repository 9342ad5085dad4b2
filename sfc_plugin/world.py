"""The World: a model, its SAEs by hook and their submodules, loaded and checked once.

``World.load`` is the one loader behind every pipeline and command: it resolves specs (or wraps objects),
checks every SAE once (finite weights, its hook and width in the model, one model for all) and builds the
submodules in circuit order. Pipelines (``discover``, ``evaluate``, ``shift``, ``find_clusters``,
``compute_dashboards``, the ``summary`` label provider) take a World in place of ``model, saes`` and use it
as it is, never resolving or checking it again::

    world = World.load(preset="pythia-70m-sfc", device="cuda")
    circuit = discover(world, "toy/sva-rc")

The old form ``discover(model, saes, data)`` builds one through :meth:`World.load` on each call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SFCError


@dataclass
class World:
    """A TransformerLens model with its dictionaries.

    ``saes``: ``{hook: SAE}``; ``submodules``: a :class:`~sfc_plugin.splicing.Submodule` per SAE, in circuit
    order; ``model_spec``: the model name or directory it was loaded from (None for an object); ``toy``: the
    shipped toy world; ``preset``: the preset it came from.
    """

    model: Any
    saes: dict[str, Any]
    submodules: list
    model_spec: str | None = None
    toy: bool = False
    preset: str | None = None

    @classmethod
    def load(
        cls,
        model=None,
        sae=None,
        *,
        preset: str | None = None,
        device: str | None = None,
        dtype=None,
        processing: dict | None = None,
    ) -> World:
        """Load (or wrap) and check a model and its SAEs.

        ``model``: a HookedTransformer, a TransformerLens name or a model directory. ``sae``: ``{hook: SAE}``,
        or a sequence (or one) of SAE objects and specs (an SAELens directory, a directory of them,
        ``release:sae_id``, ``release:*``). ``preset``: a name from :mod:`sfc_plugin.presets`; ``model`` and
        ``sae`` given with it replace the preset's. Nothing at all: the shipped toy world. ``dtype``:
        ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype; ``processing``: TransformerLens
        processing options (default: the SAEs' ``model_from_pretrained_kwargs``, or the preset's).
        """
        from .models import resolve_world
        from .splicing import build_submodules

        if isinstance(model, World):
            raise SFCError("World.load got a World: use it as it is")
        if preset:
            from .presets import get_preset

            p = get_preset(preset)
            if processing is None and not sae:
                processing = p.processing
            model, sae = model or p.model, sae or p.sae_specs
        toy = model is None and not sae
        if toy:
            from . import toy as toy_world

            model, sae = toy_world.load(device=device)  # its SAE directories are checked as they load
        elif model is None or sae is None:
            raise SFCError("give both --model and --sae, or --preset (or none of them, for the toy world)")
        spec = str(model) if isinstance(model, (str, Path)) else None
        if isinstance(sae, (str, Path)):
            sae = [sae]
        model, by_hook = resolve_world(
            model, sae, device=None if toy else device, dtype=dtype, processing=processing, checked=toy
        )
        subs = build_submodules(model, by_hook, check_shapes=False)  # resolve_world checked hooks and widths
        return cls(model, by_hook, subs, spec, toy, preset)

    @property
    def source(self) -> str | None:
        """Where the model came from, as commands record it: ``"toy"``, the model spec, or None (an object)."""
        return "toy" if self.toy else self.model_spec

    @property
    def by_name(self) -> dict[str, Any]:
        """``{submodule name: Submodule}`` in circuit order."""
        return {s.name: s for s in self.submodules}

    @property
    def device(self):
        return next(self.model.parameters()).device

    def provenance(self) -> dict[str, Any]:
        """The model and SAEs as results record them: ``model``, ``model_spec``, ``dtype``, ``saes`` (spec and
        fingerprint each), ``sae_sources`` when loaded from specs, ``model_fingerprint``."""
        from .fingerprints import world_provenance

        return world_provenance(self.model, self.submodules, self.model_spec)


def world_args(model, saes, *rest, device: str | None = None, dtype=None) -> tuple:
    """``(world, *rest)`` for a pipeline called ``f(world, *rest)`` or ``f(model, saes, *rest)``.

    A World comes first in place of ``model, saes``, so the arguments given after it positionally move up one
    place (``discover(world, data)``, ``evaluate(world, circuit, data=records)``); it is used as it is.
    Otherwise :meth:`World.load` builds one from ``model`` and ``saes`` (specs or objects), ``device`` and ``dtype``.
    """
    if isinstance(model, World):
        if device is not None or dtype is not None:
            raise SFCError("a World is used as it is: give device and dtype to World.load")
        args = [saes, *rest]  # positional arguments fill the first slots; the first empty slot is the one to drop
        if None not in args:
            raise SFCError("too many positional arguments after the World (it stands for model and saes)")
        del args[args.index(None)]
        return (model, *args)
    if model is None or saes is None:
        raise SFCError("give a World, or a model and its SAEs")
    return (World.load(model, saes, device=device, dtype=dtype), *rest)


def recorded_specs(provenance: dict, what: str = "circuit") -> dict:
    """``{"model", "sae"}`` specs recorded in a circuit's (or an edit's) provenance; ``{}`` for the toy world."""
    model = provenance.get("model_source") or provenance.get("model_spec")
    saes = provenance.get("sae_sources")
    if not saes:
        saes = [str(i["spec"]) for i in provenance.get("saes") or [] if isinstance(i, dict) and i.get("spec")] or None
    if model == "toy" or saes == "toy" or (model is None and saes is None and provenance.get("model") == "sfc-toy"):
        return {}
    if model is None or not saes:
        raise SFCError(
            f"the {what} does not record where its model and SAEs came from "
            f"(model {provenance.get('model')!r}): give --model and --sae"
        )
    return {"model": str(model), "sae": [saes] if isinstance(saes, str) else [str(x) for x in saes]}
