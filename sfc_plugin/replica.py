"""Replicas of Hugging Face hub repositories in a local hub cache: true repo ids, file names, folder layouts and
configs, random weights. ``sfc bench``'s full-size workloads run on them, and the offline tests load every real
loading path from them (``HF_HOME`` + ``HF_HUB_OFFLINE=1``), so no code path knows it is not talking to the hub.

- :class:`HubCache` writes ``HF_HOME/hub/models--ORG--NAME/{refs/main, blobs/<sha256>, snapshots/<commit>/<path>}``,
  the layout ``huggingface_hub`` reads offline.
- :func:`hf_model_repo`: a model repository (``config.json`` as given, random ``model.safetensors`` in the repo's
  dtype, a word-level tokenizer under the hub's tokenizer file names: the real vocabularies are not reproducible).
- :func:`gemma_scope_2`: ``google/gemma-scope-2-<size>-pt`` (``resid_post_all/``, ``attn_out_all/``,
  ``mlp_out_all/``, ``transcoder_all/``; ``layer_L_width_W_l0_X[_affine]/params.safetensors``, ``config.json`` in
  some folders and not in others, as on the hub).
- :func:`mwhanna_transcoders`: ``mwhanna/qwen3-*-transcoders*`` (``layer_L.safetensors``, ``config.yaml``,
  ``wandb-config.yaml``); :func:`gemma_scope_transcoders`: ``google/gemma-scope-2b-pt-transcoders``
  (``layer_L/width_16k/average_l0_N/params.npz``).

Random dictionaries are calibrated on the replica model's own activations: each feature's pre-activation is
standardised on sample prompts and one threshold (in standard units) is chosen so that the release's expected L0
(``pretrained_saes.yaml``'s ``l0``) features fire per token on them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

# the paper's subject–verb agreement data format (JSON lines), with words of our own
NOUNS = [("author", "authors"), ("pilot", "pilots"), ("doctor", "doctors"), ("farmer", "farmers")]
OTHERS = ["guards", "senators", "teachers"]


def sva_records() -> list[dict]:
    """Within-RC style pairs: "The author that the guards" → " is" / " are"."""
    out = []
    for sg, pl in NOUNS:
        for other in OTHERS:
            for a, b, ca, pa, case in (
                (sg, pl, " is", " are", "singular_plural"),
                (pl, sg, " are", " is", "plural_plural"),
            ):
                out.append(
                    {
                        "clean_prefix": f"The {a} that the {other}",
                        "patch_prefix": f"The {b} that the {other}",
                        "clean_answer": ca,
                        "patch_answer": pa,
                        "case": case,
                    }
                )
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def word_tokenizer(out_dir: Path, bos: str, extra: Iterable[str] = ()) -> Path:
    """A word-level fast tokenizer over the data's words, saved with ``save_pretrained`` (``tokenizer.json``,
    ``tokenizer_config.json``: the file names the hub serves)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    keys = ("clean_prefix", "patch_prefix", "clean_answer", "patch_answer")
    words = sorted({w for r in sva_records() for k in keys for w in r[k].split()} | set(extra))
    vocab = {w: i for i, w in enumerate([bos, "<unk>", "<pad>"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=bos, unk_token="<unk>", pad_token="<pad>"
    )
    fast.save_pretrained(str(out_dir))
    return out_dir


class HubCache:
    """Writes files into ``HF_HOME/hub`` as ``huggingface_hub`` stores downloads."""

    def __init__(self, hf_home: Path):
        self.hf_home = Path(hf_home)
        self.hub = self.hf_home / "hub"

    def put(self, repo_id: str, filename: str, source: Path, repo_type: str = "model") -> Path:
        """Move ``source`` into the cache as ``filename`` of ``repo_id`` (a blob named by its sha256, linked)."""
        repo = self.hub / (f"{repo_type}s--" + repo_id.replace("/", "--"))
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        digest = hashlib.sha256()
        with open(source, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                digest.update(block)
        blob = repo / "blobs" / digest.hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if blob.exists():
            source.unlink()
        else:
            os.replace(source, blob)  # staging files move into the cache
        link = repo / "snapshots" / commit / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
        return link

    def put_dir(self, repo_id: str, directory: Path, prefix: str = "", repo_type: str = "model") -> None:
        for f in sorted(directory.rglob("*")):
            if f.is_file():
                self.put(repo_id, prefix + f.relative_to(directory).as_posix(), f, repo_type)

    def snapshot(self, repo_id: str) -> Path:
        """The snapshot directory of ``repo_id`` (a local copy of the repository, as the hub cache holds it)."""
        return (
            self.hub
            / ("models--" + repo_id.replace("/", "--"))
            / "snapshots"
            / hashlib.sha1(repo_id.encode()).hexdigest()
        )

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HF_HOME": str(self.hf_home),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }


# google/gemma-3-270m's config.json as the hub serves it
GEMMA3_270M_CONFIG = {
    "_sliding_window_pattern": 6,
    "architectures": ["Gemma3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "attn_logit_softcapping": None,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "final_logit_softcapping": None,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 640,
    "initializer_range": 0.02,
    "intermediate_size": 2048,
    "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)],
    "max_position_embeddings": 32768,
    "model_type": "gemma3_text",
    "num_attention_heads": 4,
    "num_hidden_layers": 18,
    "num_key_value_heads": 1,
    "pad_token_id": 0,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000.0,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": 512,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.55.0.dev0",
    "use_bidirectional_attention": False,
    "use_cache": True,
    "vocab_size": 262144,
}

# Qwen/Qwen3-0.6B's config.json as the hub serves it (tests shrink it with ``small_qwen3``)
QWEN3_0_6B_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


def small_qwen3(n_layers: int = 28, d_model: int = 64, vocab: int = 96) -> dict:
    """Qwen3-0.6B's config with small widths (its 28 layers kept: the preset has a transcoder at each)."""
    return {
        **QWEN3_0_6B_CONFIG,
        "hidden_size": d_model,
        "intermediate_size": 2 * d_model,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_hidden_layers": n_layers,
        "max_window_layers": n_layers,
        "max_position_embeddings": 256,
        "vocab_size": vocab,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }


def hf_model_dir(
    out: Path,
    config: dict,
    seed: int = 0,
    bos: str = "<|endoftext|>",
    *,
    dtype: torch.dtype = torch.float32,
    norm_noise: float = 0.0,
) -> Path:
    """A Hugging Face model directory: ``config.json`` as given, random ``model.safetensors`` saved in ``dtype``
    (the repository's own: bfloat16 for Gemma 3 and Qwen3), a tokenizer. ``norm_noise`` moves the norms' weights
    off their initial values (so a conversion that drops them shows)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(seed)
    cfg = AutoConfig.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():  # the padding row starts at zero (``padding_idx``); a trained model's is not
        emb = model.get_input_embeddings().weight
        zero = emb.abs().sum(-1) == 0
        emb[zero] = torch.randn_like(emb[zero]) * float(emb.std())
    if norm_noise:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.add_(torch.randn_like(p) * norm_noise)
    model.to(dtype)
    model.save_pretrained(str(out / "_saved"))
    for f in (out / "_saved").iterdir():
        if f.suffix == ".safetensors":
            f.rename(out / f.name)
        elif f.name == "generation_config.json":
            f.rename(out / f.name)
        else:
            f.unlink()
    (out / "_saved").rmdir()
    (out / "config.json").write_text(json.dumps(config, indent=2))  # the hub's file, not transformers' rewrite
    word_tokenizer(out, bos)
    del model
    return out


def hf_model_repo(cache: HubCache, repo_id: str, config: dict, stage: Path, **kwargs) -> Path:
    """:func:`hf_model_dir` moved into the cache as ``repo_id``; returns its snapshot directory."""
    src = hf_model_dir(stage / repo_id.replace("/", "--"), config, **kwargs)
    cache.put_dir(repo_id, src)
    return cache.snapshot(repo_id)


# ---- calibrated random dictionaries ---------------------------------------------------------------------------
@torch.no_grad()
def sample_activations(model, hooks: list[str], n_random: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """``{hook: [tokens, width]}``: activations at ``hooks`` on the SVA prompts and ``n_random`` random sequences
    of 8 tokens (flattened per position; a read hook ``mlp.hook_in`` needs the model to have it)."""
    tok = model.tokenizer
    prompts = [r[k] for r in sva_records() for k in ("clean_prefix", "patch_prefix")]
    batches = [model.to_tokens(prompts)] if tok is not None else []
    g = torch.Generator().manual_seed(seed)
    batches.append(torch.randint(0, model.cfg.d_vocab, (n_random, 8), generator=g))
    acts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    flags = {"use_hook_mlp_in": True} if any(h.endswith(".hook_mlp_in") for h in hooks) else {}
    before = {k: getattr(model.cfg, k) for k in flags}
    try:
        for k, v in flags.items():
            setattr(model.cfg, k, v)
        for tokens in batches:
            _, cache = model.run_with_cache(tokens.to(next(model.parameters()).device), names_filter=hooks)
            for h in hooks:
                acts[h].append(cache[h].flatten(2).reshape(-1, cache[h].flatten(2).shape[-1]).float().cpu())
    finally:
        for k, v in before.items():
            setattr(model.cfg, k, v)
    return {h: torch.cat(v) for h, v in acts.items()}


def jumprelu_weights(x: torch.Tensor, d_sae: int, l0: float, seed: int, d_out: int | None = None) -> dict:
    """Gemma Scope's ``params`` (``w_enc`` ``[d_in, d_sae]``, ``w_dec`` ``[d_sae, d_out]``, ``b_enc``, ``b_dec``,
    ``threshold``) of a random JumpReLU dictionary with ``l0`` features above threshold per token of ``x``.

    Encoder rows are random unit directions; ``b_enc`` centres each feature's pre-activation on ``x`` and the
    threshold is one number of its standard deviations for all features (chosen on ``x``)."""
    g = torch.Generator().manual_seed(seed)
    d_in = x.shape[-1]
    w = torch.randn(d_sae, d_in, generator=g)
    w /= w.norm(dim=-1, keepdim=True)
    pre = x @ w.T
    mean, std = pre.mean(0), pre.std(0).clamp_min(1e-6)
    z = ((pre - mean) / std).flatten()
    k = min(z.numel(), max(1, int(l0 * x.shape[0])))
    t = float(z.float().topk(k).values[-1])
    if d_out is None:
        w_dec = w.clone()
    else:
        w_dec = torch.randn(d_sae, d_out, generator=g)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
    return {
        "w_enc": w.T.contiguous(),
        "w_dec": w_dec.contiguous(),
        "b_enc": -mean,
        "b_dec": torch.zeros(w_dec.shape[-1]),
        "threshold": (t * std).clamp_min(1e-6),
    }


GEMMA_SCOPE_2_SITES = {  # folder → (hook whose activations it encodes, the HF module it names)
    "resid_post": ("blocks.{l}.hook_resid_post", "model.layers.{l}.output"),
    "attn_out": ("blocks.{l}.attn.hook_z", "model.layers.{l}.self_attn.o_proj.input"),
    "mlp_out": ("blocks.{l}.hook_mlp_out", "model.layers.{l}.post_feedforward_layernorm.output"),
    "transcoder": ("blocks.{l}.mlp.hook_in", "model.layers.{l}.pre_feedforward_layernorm.output"),
}


def gemma_scope_2(
    cache: HubCache,
    stage: Path,
    model,
    size: str = "270m",
    *,
    sites: Iterable[str] = ("resid_post", "attn_out", "mlp_out", "transcoder"),
    layers: Iterable[int] | None = None,
    ids: Iterable[str] = ("width_16k_l0_big",),
    d_sae: int | None = None,
    with_config: Callable[[str, int], bool] = lambda site, layer: layer % 2 == 0,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """``google/gemma-scope-2-<size>-pt``: for each site, layer and id (``width_W_l0_X``, ``_affine`` for
    transcoders), ``<site>_all/layer_L_<id>/params.safetensors`` (float32, as on the hub) and, where
    ``with_config(site, layer)``, the ``config.json`` SAELens reads (``hf_hook_point_in``/``_out``,
    ``architecture``, ``model_name``, ``affine_connection``, ``width``, ``l0``); elsewhere SAELens infers it
    from the folder name. ``d_sae`` overrides the width the id names (SAELens takes the width from the file);
    ``model``: the replica model (a HookedTransformer with ``mlp.hook_in``) the dictionaries are calibrated on.
    Returns the ``release:sae_id`` specs written."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    from safetensors.torch import save_file

    directory = get_pretrained_saes_directory()
    release_of = {"resid_post": "res", "attn_out": "att", "mlp_out": "mlp", "transcoder": "transcoders"}
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    sites = list(sites)
    hooks = [GEMMA_SCOPE_2_SITES[s][0].format(l=l) for s in sites for l in layers]
    acts = sample_activations(model, hooks, seed=seed)
    specs = []
    for s_i, site in enumerate(sites):
        release = f"gemma-scope-2-{size}-pt-{release_of[site]}-all"
        lookup = directory[release]
        for layer in layers:
            hook, hf_in = (v.format(l=layer) for v in GEMMA_SCOPE_2_SITES[site])
            wanted = dict.fromkeys(v if site == "transcoder" else v.removesuffix("_affine") for v in ids)
            for i, variant in enumerate(wanted):
                sae_id = f"layer_{layer}_{variant}"
                if sae_id not in lookup.saes_map:
                    raise ValueError(f"{release} has no {sae_id}")
                folder = lookup.saes_map[sae_id]
                width = d_sae or {"16k": 16384, "262k": 262144}[variant.split("_")[1]]
                x = acts[hook]
                d_out = model.cfg.d_model if site == "transcoder" else None
                params = jumprelu_weights(
                    x, width, lookup.expected_l0.get(sae_id, 50), seed + 7919 * s_i + 31 * layer + i, d_out
                )
                if sae_id.endswith("_affine"):
                    g = torch.Generator().manual_seed(seed + layer)
                    params["affine_skip_connection"] = torch.randn(x.shape[-1], d_out, generator=g) * 0.02
                tmp = stage / release / folder
                tmp.mkdir(parents=True, exist_ok=True)
                save_file({k: v.contiguous() for k, v in params.items()}, str(tmp / "params.safetensors"))
                if with_config(site, layer):
                    cfg = {
                        "architecture": "jump_relu",
                        "model_name": f"google/gemma-3-{size}-pt",
                        "hf_hook_point_in": hf_in,
                        "width": width,
                        "l0": lookup.expected_l0.get(sae_id),
                    }
                    if site == "transcoder":
                        cfg["hf_hook_point_out"] = f"model.layers.{layer}.post_feedforward_layernorm.output"
                        cfg["affine_connection"] = sae_id.endswith("_affine")
                    (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
                cache.put_dir(lookup.repo_id, tmp, prefix=f"{folder}/")
                specs.append(f"{release}:{sae_id}")
            if progress:
                progress(f"{release} layer {layer}")
    return specs


def mwhanna_transcoders(
    cache: HubCache,
    stage: Path,
    model,
    release: str = "mwhanna-qwen3-0.6b-transcoders-lowl0",
    d_sae: int = 128,
    l0: float = 12,
    seed: int = 0,
) -> list[str]:
    """A ``mwhanna/qwen3-*`` transcoder repository as circuit-tracer saves one: ``layer_L.safetensors`` (``W_enc``
    ``[d_sae, d_model]``, ``W_dec`` ``[d_sae, d_model]``, ``b_enc``, ``b_dec``), ``config.yaml`` (``model_name``,
    the hooks) and ``wandb-config.yaml`` (``d_model``, ``d_feature``, ``batch_size``, each under ``value``).
    Calibrated on the MLP inputs (``mlp.hook_in``) of ``model``. Returns the specs written."""
    import yaml
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    from safetensors.torch import save_file

    lookup = get_pretrained_saes_directory()[release]
    n = model.cfg.n_layers
    d = model.cfg.d_model
    acts = sample_activations(model, [f"blocks.{l}.mlp.hook_in" for l in range(n)], seed=seed)
    stage.mkdir(parents=True, exist_ok=True)
    config = {
        "model_name": "Qwen/Qwen3-0.6B",
        "model_kind": "transcoder_set",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "mlp.hook_out",
        "scan": lookup.repo_id,
        "transcoders": [f"hf://{lookup.repo_id}/layer_{l}.safetensors" for l in range(n)],
    }
    (stage / "config.yaml").write_text(yaml.safe_dump(config))
    wandb = {"d_model": {"desc": None, "value": d}, "d_feature": {"desc": None, "value": d_sae}}
    wandb["batch_size"] = {"desc": None, "value": 4096}
    (stage / "wandb-config.yaml").write_text(yaml.safe_dump(wandb))
    specs = []
    for l in range(n):
        p = jumprelu_weights(acts[f"blocks.{l}.mlp.hook_in"], d_sae, l0, seed + l, d_out=d)
        tensors = {"W_enc": p["w_enc"].T.contiguous(), "W_dec": p["w_dec"], "b_enc": p["b_enc"] - p["threshold"]}
        tensors["b_dec"] = torch.randn(d, generator=torch.Generator().manual_seed(l)) * 0.01
        save_file(tensors, str(stage / f"layer_{l}.safetensors"))
        specs.append(f"{release}:layer_{l}")
    cache.put_dir(lookup.repo_id, stage)
    return specs


def gemma_scope_transcoders(
    cache: HubCache, stage: Path, model, layers: Iterable[int], seed: int = 0, npz_dtype=None
) -> list[str]:
    """``google/gemma-scope-2b-pt-transcoders``: ``layer_L/width_16k/average_l0_N/params.npz`` (``W_enc``
    ``[2304, 16384]``, ``W_dec``, ``b_enc``, ``b_dec``, ``threshold``: SAELens's loader fixes these shapes from the
    repository and folder names), calibrated to ``N`` on ``model``'s ``ln2.hook_normalized`` (SAELens's read
    hook). Returns the specs written."""
    import numpy as np
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    lookup = get_pretrained_saes_directory()["gemma-scope-2b-pt-transcoders"]
    layers = list(layers)
    acts = sample_activations(model, [f"blocks.{l}.ln2.hook_normalized" for l in layers], seed=seed)
    specs = []
    for l in layers:
        (sae_id,) = [i for i in lookup.saes_map if i.startswith(f"layer_{l}/")]
        p = jumprelu_weights(acts[f"blocks.{l}.ln2.hook_normalized"], 16384, lookup.expected_l0[sae_id], seed + l, 2304)
        tmp = stage / lookup.saes_map[sae_id]
        tmp.mkdir(parents=True, exist_ok=True)
        arrays = {"W_enc": p["w_enc"], "W_dec": p["w_dec"], "b_enc": p["b_enc"], "b_dec": p["b_dec"]}
        arrays["threshold"] = p["threshold"]
        np.savez(tmp / "params.npz", **{k: v.numpy().astype(npz_dtype or np.float32) for k, v in arrays.items()})
        cache.put(lookup.repo_id, f"{lookup.saes_map[sae_id]}/params.npz", tmp / "params.npz")
        specs.append(f"gemma-scope-2b-pt-transcoders:{sae_id}")
    return specs


def with_mlp_inputs(model):
    """``model`` with ``mlp.hook_in`` on every MLP (SAELens's own :func:`add_hook_in_to_mlp`), as the World gives
    it when a transcoder reads there."""
    from sae_lens.analysis.hooked_sae_transformer import add_hook_in_to_mlp

    for block in model.blocks:
        if not hasattr(block.mlp, "hook_in"):
            add_hook_in_to_mlp(block.mlp)
    model.setup()
    return model


def gemma3_hub(
    hf_home: Path,
    size: str = "270m",
    *,
    variants: Iterable[str] = ("width_16k_l0_big",),
    sites: Iterable[str] = ("resid_post", "attn_out", "mlp_out", "transcoder"),
    d_sae: int | None = None,
    config: dict | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> HubCache:
    """A hub cache with ``google/gemma-3-<size>`` (``config``: the true config by default; bfloat16 weights, the
    hub's file names) and ``google/gemma-scope-2-<size>-pt`` for ``sites`` × every layer × ``variants``
    (``d_sae``: a width other than the ids' own, for tests), calibrated on the model as the presets load it."""
    from .hf_convert import load_hf_model_dir

    if config is None and size != "270m":
        raise ValueError(f"gemma3_hub({size!r}): give the model's config (only 270m's is stored here)")
    cache = HubCache(hf_home)
    stage = Path(hf_home) / "stage"
    repo = {"270m": "google/gemma-3-270m"}.get(size, f"google/gemma-3-{size}-pt")
    snap = hf_model_repo(
        cache, repo, config or GEMMA3_270M_CONFIG, stage, seed=seed, bos="<bos>", dtype=torch.bfloat16, norm_noise=0.1
    )
    if progress:
        progress(f"{repo}: written")
    model = with_mlp_inputs(load_hf_model_dir(snap))
    gemma_scope_2(cache, stage, model, size, sites=sites, ids=variants, d_sae=d_sae, seed=seed, progress=progress)
    del model
    import shutil

    shutil.rmtree(stage, ignore_errors=True)
    return cache
