"""A local Hugging Face model directory → ``HookedTransformer``, without a hub.

TransformerLens converts configs and weights for the architectures it knows, but picks some of them
(Llama, Gemma) from the *name* of the model and has Gemma-2 only as hard-coded official sizes. Here
the architecture comes from the directory's ``config.json``: TransformerLens's own converter reads a
copy of that file alone (so the directory's name cannot steer it; Qwen3 goes this way), and Gemma-2 and
Gemma 3 configs (which TransformerLens has only as hard-coded official sizes) are converted field by field. Weights go through TransformerLens's weight converters. By default no processing
(no LayerNorm folding, no centring): every hook carries the Hugging Face model's activations.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from .errors import SFCError

# keyword arguments of HookedTransformer.load_and_process_state_dict (SAELens model_from_pretrained_kwargs)
PROCESSING_KEYS = (
    "fold_ln",
    "center_writing_weights",
    "center_unembed",
    "fold_value_biases",
    "refactor_factored_attn_matrices",
)
NO_PROCESSING = {k: False for k in PROCESSING_KEYS}
TESTED_ARCHITECTURES = (
    "GPTNeoXForCausalLM",
    "GPT2LMHeadModel",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "LlamaForCausalLM",
    "Qwen3ForCausalLM",
)


def is_hf_model_dir(path: Path) -> bool:
    """A directory with a Hugging Face ``config.json`` (it names a ``model_type``)."""
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return "model_type" in json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False


def _gemma2_cfg(c) -> dict[str, Any]:
    """TransformerLens config fields of a Gemma-2 Hugging Face config (any size)."""
    from transformer_lens.loading_from_pretrained import _get_rope_theta

    layer_types = getattr(c, "layer_types", None) or [
        "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(c.num_hidden_layers)
    ]
    return {
        "d_model": c.hidden_size,
        "d_head": c.head_dim,
        "n_heads": c.num_attention_heads,
        "d_mlp": c.intermediate_size,
        "n_layers": c.num_hidden_layers,
        "n_ctx": c.max_position_embeddings,
        "eps": c.rms_norm_eps,
        "d_vocab": c.vocab_size,
        "act_fn": c.hidden_activation,
        "initializer_range": c.initializer_range,
        "normalization_type": "RMS",
        "rotary_base": _get_rope_theta(c),
        "rotary_dim": c.head_dim,
        "positional_embedding_type": "rotary",
        "use_attn_scale": True,
        "attn_scale": float(c.query_pre_attn_scalar) ** 0.5,
        "n_key_value_heads": c.num_key_value_heads,
        "window_size": c.sliding_window,
        "use_local_attn": True,
        "attn_types": ["local" if t == "sliding_attention" else "global" for t in layer_types],
        "attn_scores_soft_cap": c.attn_logit_softcapping or -1.0,
        "output_logits_soft_cap": c.final_logit_softcapping or -1.0,
        "gated_mlp": True,
        "final_rms": True,
        "use_normalization_before_and_after": True,
        "original_architecture": "Gemma2ForCausalLM",
    }


def _rope_thetas(c) -> tuple[float, float]:
    """Gemma 3's (global, local) rotary bases: ``rope_theta`` and ``rope_local_base_freq`` (transformers 4), or
    ``rope_parameters`` per layer type (transformers 5)."""
    params = getattr(c, "rope_parameters", None) or {}
    full, sliding = params.get("full_attention", {}), params.get("sliding_attention", {})
    return (
        getattr(c, "rope_theta", None) or full.get("rope_theta") or params.get("rope_theta") or 1_000_000.0,
        getattr(c, "rope_local_base_freq", None) or sliding.get("rope_theta") or 10_000.0,
    )


def _gemma3_cfg(c) -> dict[str, Any]:
    """TransformerLens config fields of a Gemma 3 text model's Hugging Face config (any size; TransformerLens's
    own table for the official sizes has the same fields): qk-norm, local/global attention with their own
    rotary bases, norms before and after each sublayer, tied embeddings."""
    glob, local = _rope_thetas(c)
    layer_types = getattr(c, "layer_types", None) or [
        "full_attention" if (i + 1) % getattr(c, "sliding_window_pattern", 6) == 0 else "sliding_attention"
        for i in range(c.num_hidden_layers)
    ]
    return {
        **_gemma2_cfg(c),
        "n_ctx": min(c.max_position_embeddings, 8192),  # TransformerLens's default for Gemma 3 (its mask is n_ctx²)
        "rotary_base": glob,
        "rotary_base_local": local,
        "use_qk_norm": True,
        "attn_types": ["local" if t == "sliding_attention" else "global" for t in layer_types],
        "attn_scores_soft_cap": getattr(c, "attn_logit_softcapping", None) or -1.0,
        "output_logits_soft_cap": getattr(c, "final_logit_softcapping", None) or -1.0,
        "original_architecture": "Gemma3ForCausalLM",
    }


def _tl_cfg_dict(path: Path, hf_config) -> dict[str, Any]:
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    arch = (getattr(hf_config, "architectures", None) or ["?"])[0]
    if arch == "Gemma2ForCausalLM":
        return _gemma2_cfg(hf_config)
    if arch == "Gemma3ForCausalLM":
        return _gemma3_cfg(hf_config)
    with tempfile.TemporaryDirectory(prefix="sfc-hfcfg-") as tmp:  # the config alone, under a neutral name
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if raw.get("model_type") == "gpt2":  # TransformerLens reads n_ctx, which newer GPT-2 configs leave out
            raw.setdefault("n_ctx", raw.get("n_positions", 1024))
        (Path(tmp) / "config.json").write_text(json.dumps(raw), encoding="utf-8")
        try:
            return convert_hf_model_config(tmp)
        except NotImplementedError:
            raise SFCError(
                f"model directory {str(path)!r}: architecture {arch!r} is not supported by TransformerLens"
            ) from None


def load_hf_model_dir(path: str | Path, device: str | None = None, dtype=None, processing: dict | None = None):
    """A ``HookedTransformer`` with the weights of the Hugging Face model saved in ``path``.

    ``processing``: keyword arguments of ``load_and_process_state_dict`` (default: none of them, so
    every hook carries the Hugging Face model's activations).
    """
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import get_pretrained_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    dtype = dtype or torch.float32
    hf_config = AutoConfig.from_pretrained(str(path))
    cfg_dict = _tl_cfg_dict(path, hf_config)
    has_tokenizer = any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json"))
    cfg_dict.update(
        model_name=path.absolute().name,
        init_weights=False,
        dtype=dtype,
        device=device,
        tokenizer_name=str(path) if has_tokenizer else None,
        d_vocab=hf_config.vocab_size,
    )
    cfg_dict.setdefault("default_prepend_bos", True)
    fields = HookedTransformerConfig.__dataclass_fields__
    cfg = HookedTransformerConfig.from_dict({k: v for k, v in cfg_dict.items() if k in fields})
    hf_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="eager")
    state_dict = get_pretrained_state_dict(str(path), cfg, hf_model, dtype=dtype)
    del hf_model
    tokenizer = AutoTokenizer.from_pretrained(str(path)) if has_tokenizer else None
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **{**NO_PROCESSING, **(processing or {})})
    model.move_model_modules_to_device()
    return model.eval()
