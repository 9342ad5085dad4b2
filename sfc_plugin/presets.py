"""Presets: a model and its SAEs (with the submodule each one becomes), under one name.

``--preset NAME`` (or ``preset = "NAME"`` in TOML) stands for ``--model`` and every ``--sae`` of the
preset. Each SAE spec is ``release:sae_id`` of SAELens's ``pretrained_saes.yaml``; the hook is written
down here so ``sfc presets`` lists the submodule map without loading anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SFCError
from .hook_points import submodule_name


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    saes: tuple[tuple[str, str], ...]  # (SAE spec, hook)
    description: str
    processing: dict | None = None  # TransformerLens processing when the SAEs' own kwargs disagree (see the preset)
    shift_layer: int | None = None  # SHIFT's default probe layer for this model (the authors' Bias in Bios runs)

    @property
    def sae_specs(self) -> list[str]:
        return [spec for spec, _ in self.saes]

    def submodules(self) -> dict[str, str]:
        """``{submodule: hook}`` in circuit order."""
        return {submodule_name(hook)[0]: hook for _, hook in self.saes}


def _pythia() -> Preset:
    res, att, mlp = ("pythia-70m-deduped-res-sm", "pythia-70m-deduped-att-sm", "pythia-70m-deduped-mlp-sm")
    saes = [(f"{res}:blocks.0.hook_resid_pre", "blocks.0.hook_resid_pre")]
    for layer in range(6):
        for release, hook in (
            (att, f"blocks.{layer}.hook_attn_out"),
            (mlp, f"blocks.{layer}.hook_mlp_out"),
            (res, f"blocks.{layer}.hook_resid_post"),
        ):
            saes.append((f"{release}:{hook}", hook))
    return Preset(
        "pythia-70m-sfc",
        "pythia-70m-deduped",
        tuple(saes),
        "the paper's Pythia-70M setup: 19 SAEs (embedding, and attn/mlp/resid at each of 6 layers), 32k features",
        shift_layer=4,
    )


def _gemma() -> Preset:
    saes = []
    for layer in range(26):
        sae_id = f"layer_{layer}/width_16k/canonical"
        saes += [
            (f"gemma-scope-2b-pt-att-canonical:{sae_id}", f"blocks.{layer}.attn.hook_z"),
            (f"gemma-scope-2b-pt-mlp-canonical:{sae_id}", f"blocks.{layer}.hook_mlp_out"),
            (f"gemma-scope-2b-pt-res-canonical:{sae_id}", f"blocks.{layer}.hook_resid_post"),
        ]
    return Preset(
        "gemma-2-2b-sfc",
        "gemma-2-2b",
        tuple(saes),
        "Gemma-2-2B with Gemma Scope 16k canonical SAEs: attention (hook_z), MLP output and residual at 26 layers",
        shift_layer=22,
    )


def _gpt2() -> Preset:
    saes = [("gpt2-small-res-jb:blocks.0.hook_resid_pre", "blocks.0.hook_resid_pre")]
    for layer in range(12):
        saes += [
            (f"gpt2-small-attn-out-v5-32k:blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_attn_out"),
            (f"gpt2-small-mlp-out-v5-32k:blocks.{layer}.hook_mlp_out", f"blocks.{layer}.hook_mlp_out"),
            (f"gpt2-small-resid-post-v5-32k:blocks.{layer}.hook_resid_post", f"blocks.{layer}.hook_resid_post"),
        ]
    # res-jb's SAEs were trained on GPT-2 with centred writing weights (the yaml's model_from_pretrained_kwargs);
    # OpenAI's v5 SAEs give none, but they layer-normalise their input (normalize_activations="layer_norm"),
    # which removes the per-token mean that centring changes: they encode the same features either way.
    return Preset(
        "gpt2-small-sfc",
        "gpt2",
        tuple(saes),
        "GPT-2 small with OpenAI's v5 32k attn-out/mlp-out/resid-post SAEs and the res-jb embedding SAE",
        processing={"center_writing_weights": True},
    )


PRESETS: dict[str, Preset] = {p.name: p for p in (_pythia(), _gemma(), _gpt2())}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise SFCError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]
