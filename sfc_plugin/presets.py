"""Presets: a model and its dictionaries (with the submodule each one becomes), under one name.

``--preset NAME`` (or ``preset = "NAME"`` in TOML) stands for ``--model`` and every ``--sae`` of the
preset. Each SAE spec is ``release:sae_id`` of SAELens's ``pretrained_saes.yaml``; the hook is written
down here so ``sfc presets`` lists the submodule map without loading anything.

The Gemma Scope 2 presets take a variant, ``NAME:width_W_l0_X`` (``W`` 16k or 262k, ``X`` small or big, and for
transcoders an ``_affine`` suffix: skip transcoders), the tail every ``-all`` release's ids share; the default is
the one named in the preset's description. A variant is checked against the releases (this module imports
nothing heavy until then: ``--help`` reads the preset names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SFCError
from .hook_points import submodule_name, transcoder_name


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    saes: tuple[tuple[str, str], ...]  # (SAE spec, hook: SAELens's hook_name)
    description: str
    processing: dict | None = None  # TransformerLens processing when the SAEs' own kwargs disagree (see the preset)
    shapes: tuple[tuple[int, int, int, bool], ...] = ()  # per SAE (d_in, d_sae, d_out, skip): the weights' size
    model_params: str = ""  # the model's parameter count, as its card states it
    variant: str | None = None  # the id tail chosen (Gemma Scope 2 presets)
    variants: str | None = None  # how to pick another
    shift_layer: int | None = None  # SHIFT's default probe layer for this model (the authors' Bias in Bios runs)

    @property
    def sae_specs(self) -> list[str]:
        return [spec for spec, _ in self.saes]

    def submodules(self) -> dict[str, str]:
        """``{submodule: hook}`` in circuit order (a transcoder's submodule ``tc_<l>`` is keyed by its input hook)."""
        out = {}
        for _, hook in self.saes:
            if hook.endswith(".hook_mlp_in") or hook.endswith(".ln2.hook_normalized") or hook.endswith(".mlp.hook_in"):
                layer = hook.split(".")[1]
                out[transcoder_name(hook, f"blocks.{layer}.hook_mlp_out")[0]] = hook
            else:
                out[submodule_name(hook)[0]] = hook
        return out

    @property
    def releases(self) -> list[str]:
        return list(dict.fromkeys(spec.split(":", 1)[0] for spec in self.sae_specs))

    def weight_bytes(self, itemsize: int = 4) -> int:
        """The dictionaries' weights (encoder, decoder, biases, thresholds, skip) at ``itemsize`` bytes a number."""
        return sum(itemsize * (i * f + f * o + 2 * f + o + (i * o if skip else 0)) for i, f, o, skip in self.shapes)

    def summary(self) -> list[str]:
        """What ``sfc presets`` prints above the submodule table: model, releases, dictionaries, weights, variants."""
        widths: dict[int, int] = {}
        for _, f, _, _ in self.shapes:
            widths[f] = widths.get(f, 0) + 1
        dicts = ", ".join(f"{n} × {_width(f)}" for f, n in widths.items())
        gb = self.weight_bytes() / 1e9
        size = (
            f"({dicts} features); weights {gb:.1f} GB in float32, {gb / 2:.1f} GB in bfloat16"
            if self.shapes
            else "(width and size: the release's files say, as they load)"
        )
        lines = [
            f"model: {self.model}" + (f" ({self.model_params} parameters)" if self.model_params else ""),
            f"releases: {', '.join(self.releases)}",
            f"dictionaries: {len(self.saes)} {size}",
        ]
        if self.variants:
            lines.append(f"variant: {self.variant} (default); {self.variants}")
        return lines


def _width(f: int) -> str:
    return f"{f // 1024}k" if f % 1024 == 0 else f"{f:,}"


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
        shapes=((512, 32768, 512, False),) * 19,
        model_params="70M",
        shift_layer=4,
    )


def _gemma() -> Preset:
    saes, shapes = [], []
    for layer in range(26):
        sae_id = f"layer_{layer}/width_16k/canonical"
        saes += [
            (f"gemma-scope-2b-pt-att-canonical:{sae_id}", f"blocks.{layer}.attn.hook_z"),
            (f"gemma-scope-2b-pt-mlp-canonical:{sae_id}", f"blocks.{layer}.hook_mlp_out"),
            (f"gemma-scope-2b-pt-res-canonical:{sae_id}", f"blocks.{layer}.hook_resid_post"),
        ]
        shapes += [(2048, 16384, 2048, False), (2304, 16384, 2304, False), (2304, 16384, 2304, False)]
    return Preset(
        "gemma-2-2b-sfc",
        "gemma-2-2b",
        tuple(saes),
        "Gemma-2-2B with Gemma Scope 16k canonical SAEs: attention (hook_z), MLP output and residual at 26 layers",
        shapes=tuple(shapes),
        model_params="2.6B",
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
        shapes=((768, 24576, 768, False),) + ((768, 32768, 768, False),) * 36,
        model_params="124M",
    )


# ---- Gemma 3 with Gemma Scope 2 (the -all releases: every layer, widths 16k and 262k, L0 small and big) ----
_GEMMA3 = {  # size → (TransformerLens / SAELens model name, layers, d_model, n_heads × d_head, parameters)
    "270m": ("google/gemma-3-270m", 18, 640, 1024, "268M"),
    "1b": ("google/gemma-3-1b-pt", 26, 1152, 1024, "1.0B"),
}
_VARIANT = re.compile(r"^width_(16k|262k)_l0_(small|big)(_affine)?$")
GEMMA3_DEFAULT_VARIANT = "width_16k_l0_big"


def _gemma3(size: str, transcoders: bool, variant: str | None) -> Preset:
    model, n_layers, d, d_z, params = _GEMMA3[size]
    variant = variant or GEMMA3_DEFAULT_VARIANT
    m = _VARIANT.match(variant)
    kind = "transcoders" if transcoders else "sfc"
    if not m:
        raise SFCError(
            f"preset variant {variant!r} of gemma-3-{size}-{kind} is not width_W_l0_X (W: 16k or 262k; X: small or "
            f"big{'; _affine for skip transcoders' if transcoders else ''}), e.g. width_16k_l0_small"
        )
    if m.group(3) and not transcoders:
        raise SFCError(f"preset variant {variant!r}: _affine (skip transcoders) is for the transcoder presets")
    f = {"16k": 16384, "262k": 262144}[m.group(1)]
    plain = variant.removesuffix("_affine")
    pt = f"gemma-scope-2-{size}-pt"
    saes, shapes = [], []
    for layer in range(n_layers):
        saes.append((f"{pt}-att-all:layer_{layer}_{plain}", f"blocks.{layer}.attn.hook_z"))
        shapes.append((d_z, f, d_z, False))
        if transcoders:
            saes.append((f"{pt}-transcoders-all:layer_{layer}_{variant}", f"blocks.{layer}.hook_mlp_in"))
            shapes.append((d, f, d, bool(m.group(3))))
        else:
            saes.append((f"{pt}-mlp-all:layer_{layer}_{plain}", f"blocks.{layer}.hook_mlp_out"))
            shapes.append((d, f, d, False))
        saes.append((f"{pt}-res-all:layer_{layer}_{plain}", f"blocks.{layer}.hook_resid_post"))
        shapes.append((d, f, d, False))
    what = (
        "attention (hook_z) and residual SAEs with transcoders replacing every MLP (read at the MLP's input)"
        if transcoders
        else "attention (hook_z), MLP-output and residual SAEs"
    )
    l0 = "L0 big (60-120 by layer)" if m.group(2) == "big" else "L0 small (10-20 by layer)"
    why = (
        "the default: nearer Gemma Scope's canonical L0 of about 100"
        if variant == GEMMA3_DEFAULT_VARIANT
        else "a variant"
    )
    return Preset(
        f"gemma-3-{size}-{kind}",
        model,
        tuple(saes),
        f"Gemma 3 {size} with Gemma Scope 2: {what} at all {n_layers} layers, {m.group(1)} wide, {l0} ({why})",
        shapes=tuple(shapes),
        model_params=params,
        variant=variant,
        variants=(
            f"another: --preset gemma-3-{size}-{kind}:width_W_l0_X with W 16k or 262k and X small or big"
            + (" (add _affine for skip transcoders)" if transcoders else "")
        ),
    )


def _gemma2_transcoders() -> Preset:
    # one 16k transcoder per layer in the release (its own average L0 in the id)
    l0 = [76, 65, 49, 54, 88, 87, 95, 70, 52, 72, 88, 5, 6, 8, 8, 8, 10, 12, 13, 12, 11, 13, 15, 25, 37, 41]
    saes, shapes = [], []
    for layer in range(26):
        canonical = f"layer_{layer}/width_16k/canonical"
        saes += [
            (f"gemma-scope-2b-pt-att-canonical:{canonical}", f"blocks.{layer}.attn.hook_z"),
            (
                f"gemma-scope-2b-pt-transcoders:layer_{layer}/width_16k/average_l0_{l0[layer]}",
                f"blocks.{layer}.ln2.hook_normalized",
            ),
            (f"gemma-scope-2b-pt-res-canonical:{canonical}", f"blocks.{layer}.hook_resid_post"),
        ]
        shapes += [(2048, 16384, 2048, False), (2304, 16384, 2304, False), (2304, 16384, 2304, False)]
    return Preset(
        "gemma-2-2b-transcoders",
        "gemma-2-2b",
        tuple(saes),
        "Gemma-2-2B with Gemma Scope 16k transcoders replacing every MLP and the canonical 16k attention (hook_z) and "
        "residual SAEs, at 26 layers",
        shapes=tuple(shapes),
        model_params="2.6B",
    )


def _qwen3_transcoders() -> Preset:
    release = "mwhanna-qwen3-0.6b-transcoders-lowl0"
    saes = tuple((f"{release}:layer_{layer}", f"blocks.{layer}.mlp.hook_in") for layer in range(28))
    return Preset(
        "qwen3-0.6b-transcoders",
        "Qwen/Qwen3-0.6B",
        saes,
        "Qwen3-0.6B with circuit-tracer's low-L0 transcoders replacing every MLP (28 layers; circuit-tracer's "
        "own setup, the residual stream without SAEs)",
        model_params="0.6B",  # shapes unknown here: the width is the repository's wandb-config.yaml d_feature
    )


BUILDERS = {
    "gemma-3-270m-sfc": lambda v: _gemma3("270m", False, v),
    "gemma-3-270m-transcoders": lambda v: _gemma3("270m", True, v),
    "gemma-3-1b-sfc": lambda v: _gemma3("1b", False, v),
}
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _pythia(),
        _gemma(),
        _gpt2(),
        *(build(None) for build in BUILDERS.values()),
        _gemma2_transcoders(),
        _qwen3_transcoders(),
    )
}
# keep the order of the listing: the paper's presets, then Gemma 3, Gemma-2 transcoders and Qwen3
PRESETS = {name: PRESETS[name] for name in PRESETS}


def _check_variant(preset: Preset) -> None:
    """Every spec of a variant names an id its release has (SFCError listing the variants it has otherwise)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    for spec in preset.sae_specs:
        release, sae_id = spec.split(":", 1)
        if sae_id not in directory[release].saes_map:
            tails = sorted({i.split("_", 2)[2] for i in directory[release].saes_map if i.startswith("layer_0_")})
            raise SFCError(
                f"preset variant {preset.variant!r}: {release} has no {sae_id} (its variants: {', '.join(tails)})"
            )


def get_preset(name: str) -> Preset:
    """A preset by name, or ``NAME:VARIANT`` for the presets that take one (checked against SAELens's yaml)."""
    base, _, variant = name.partition(":")
    if base not in PRESETS:
        raise SFCError(f"unknown preset {base!r} (known: {', '.join(PRESETS)})")
    if not variant:
        return PRESETS[base]
    if base not in BUILDERS:
        raise SFCError(f"preset {base!r} has no variants (presets with variants: {', '.join(BUILDERS)})")
    preset = BUILDERS[base](variant)
    _check_variant(preset)
    return preset
