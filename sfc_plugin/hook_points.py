"""Hook-name grammar: where dictionaries sit, the submodule (node set) each becomes, and the circuit's order.

Submodules are ``embed`` (``hook_embed`` or ``blocks.0.hook_resid_pre``, layer -1) and ``attn_<l>``
(``blocks.<l>.hook_attn_out`` or ``blocks.<l>.attn.hook_z``), ``mlp_<l>`` (``hook_mlp_out``) and
``resid_<l>`` (``hook_resid_post``); within a layer they come in the order attn, mlp, resid. A transcoder that
replaces MLP ``l`` (reads ``blocks.<l>.hook_mlp_in``, ``ln2.hook_normalized``, ``hook_resid_mid``,
``hook_resid_pre`` or ``mlp.hook_in``; writes ``blocks.<l>.hook_mlp_out``) is the submodule ``tc_<l>``, in the
MLP's place. ``mlp.hook_in`` is the MLP's own input (after the pre-MLP norm, weight included): circuit-tracer's
name, which SAELens's ``HookedSAETransformer`` adds to every MLP and :func:`read_hook` resolves to.

A leaf module: it imports nothing from the package but :mod:`sfc_plugin.errors`, and works on names and
duck-typed configs only, so any module may use it.
"""

from __future__ import annotations

import re

from .errors import SFCError

EMBED_HOOKS = ("hook_embed", "blocks.0.hook_resid_pre")
KIND_ORDER = {"embed": 0, "attn": 1, "mlp": 2, "tc": 2, "resid": 3}  # circuit order within a layer
_LAYER_HOOK = re.compile(r"^blocks\.(\d+)\.(hook_attn_out|hook_mlp_out|hook_resid_post|attn\.hook_z)$")
_KIND = {"hook_attn_out": "attn", "hook_mlp_out": "mlp", "hook_resid_post": "resid", "attn.hook_z": "attn"}
_SUBMODULE = re.compile(r"^(embed|attn|mlp|tc|resid)(?:_(-?\d+))?$")
_READ_HOOK = re.compile(
    r"^blocks\.(\d+)\.(hook_mlp_in|ln2\.hook_normalized|hook_resid_mid|hook_resid_pre|mlp\.hook_in)$"
)
READ_HOOKS = ("hook_mlp_in", "ln2.hook_normalized", "hook_resid_mid", "hook_resid_pre", "mlp.hook_in")  # its input
# Hugging Face modules whose output is an MLP's input (the pre-MLP norm's output): Gemma 2/3, Llama/Qwen
_HF_MLP_INPUT = re.compile(r"^model\.layers\.(\d+)\.(pre_feedforward_layernorm|post_attention_layernorm)\.output$")


def is_hook_z(hook: str) -> bool:
    """Attention SAEs at ``blocks.<l>.attn.hook_z`` read the heads' outputs before ``W_O`` (``[.., n_heads, d_head]``)."""
    return hook.endswith(".attn.hook_z")


def submodule_name(hook: str) -> tuple[str, int]:
    """``(name, layer)`` for a supported hook: ``embed`` (layer -1), ``attn_<l>`` (``hook_attn_out`` or
    ``attn.hook_z``), ``mlp_<l>``, ``resid_<l>``."""
    if hook in EMBED_HOOKS:
        return "embed", -1
    match = _LAYER_HOOK.match(hook)
    if not match:
        raise SFCError(
            f"unsupported hook {hook!r}: SAEs must sit at hook_embed, blocks.0.hook_resid_pre or "
            "blocks.<l>.hook_attn_out / hook_mlp_out / hook_resid_post / attn.hook_z"
        )
    layer = int(match.group(1))
    return f"{_KIND[match.group(2)]}_{layer}", layer


def transcoder_name(read_hook: str, write_hook: str) -> tuple[str, int]:
    """``("tc_<l>", l)`` for a transcoder that replaces MLP ``l``: it writes ``blocks.<l>.hook_mlp_out`` and reads
    one of :data:`READ_HOOKS` of the same block."""
    out = re.match(r"^blocks\.(\d+)\.hook_mlp_out$", write_hook or "")
    if not out:
        raise SFCError(
            f"unsupported transcoder output hook {write_hook!r}: a transcoder must write blocks.<l>.hook_mlp_out"
        )
    layer = int(out.group(1))
    inp = _READ_HOOK.match(read_hook or "")
    if not inp or int(inp.group(1)) != layer:
        raise SFCError(
            f"unsupported transcoder input hook {read_hook!r} for {write_hook!r}: it must read blocks.{layer}."
            f"{{{', '.join(READ_HOOKS)}}}"
        )
    return f"tc_{layer}", layer


def read_hook(hook: str, hf_hook_name: str | None) -> str:
    """Where a dictionary's features are read: its SAELens ``hook_name``, except where SAELens's own record of the
    Hugging Face activation it was trained on (``hf_hook_name``, Gemma Scope 2's ``hf_hook_point_in``) names the
    MLP's input, the pre-MLP norm's output, while ``hook_name`` is TransformerLens's ``blocks.<l>.hook_mlp_in`` —
    the residual stream *before* that norm. Such a transcoder is read at ``blocks.<l>.mlp.hook_in``, the MLP's
    input (SAELens 6.54 names ``hook_mlp_in`` for every Gemma Scope 2 transcoder, with ``hf_hook_name``
    ``model.layers.<l>.pre_feedforward_layernorm.output``)."""
    m = re.match(r"^blocks\.(\d+)\.hook_mlp_in$", hook)
    hf = _HF_MLP_INPUT.match(hf_hook_name or "")
    if m and hf and hf.group(1) == m.group(1):
        return f"blocks.{m.group(1)}.mlp.hook_in"
    return hook


def hook_flags(hook: str) -> dict[str, bool]:
    """TransformerLens config flags that must be on for ``hook`` to fire (``hook_mlp_in``: ``use_hook_mlp_in``)."""
    return {"use_hook_mlp_in": True} if hook.endswith(".hook_mlp_in") else {}


def sae_hook_out(sae) -> str | None:
    """The hook a transcoder writes (``cfg.metadata.hook_name_out``), None for an SAE."""
    return getattr(getattr(getattr(sae, "cfg", None), "metadata", None), "hook_name_out", None) or None


def parse_submodule(name: str) -> tuple[str, int] | None:
    """``(kind, layer)`` of a submodule name (``"attn_3"`` → ``("attn", 3)``, ``"tc_1"`` → ``("tc", 1)``,
    ``"embed"`` → ``("embed", -1)``); None for names outside the grammar (a plugin's)."""
    m = _SUBMODULE.match(name or "")
    if not m:
        return None
    return m.group(1), -1 if m.group(1) == "embed" else int(m.group(2) or 0)


def submodule_key(name: str) -> tuple[int, int]:
    """Sort key of a submodule name in circuit order: the embedding, then attn, mlp, resid per layer."""
    parsed = parse_submodule(name)
    if parsed is None:
        raise SFCError(f"unknown submodule name {name!r}")
    kind, layer = parsed
    return layer, KIND_ORDER[kind]


def hook_shape(cfg, hook: str) -> tuple[int, ...] | None:
    """The trailing shape of the activation at ``hook`` when it is not ``(d_in,)``: ``(n_heads, d_head)`` at
    ``attn.hook_z``; None elsewhere. ``cfg``: a TransformerLens config."""
    return (cfg.n_heads, cfg.d_head) if is_hook_z(hook) else None


def hook_width(cfg, hook: str) -> tuple[int, str]:
    """``(width, what)``: the ``d_in`` an SAE at ``hook`` must have, and how messages name it."""
    return (cfg.n_heads * cfg.d_head, "n_heads * d_head") if is_hook_z(hook) else (cfg.d_model, "d_model")


def sae_hook(sae) -> str | None:
    """The hook an SAELens SAE was trained at (``cfg.metadata.hook_name``), None when it records none."""
    return getattr(getattr(getattr(sae, "cfg", None), "metadata", None), "hook_name", None) or None


def standard_hooks(n_layers: int, embed: str = "blocks.0.hook_resid_pre") -> list[str]:
    """The paper's SAE placement in circuit order: the embedding, then per layer ``hook_attn_out``,
    ``hook_mlp_out`` and ``hook_resid_post``."""
    hooks = [embed]
    for layer in range(n_layers):
        hooks += [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out", f"blocks.{layer}.hook_resid_post"]
    return hooks
