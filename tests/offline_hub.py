"""Replicas of Hugging Face hub repositories in a local hub cache, for offline tests of the real loading paths.

``HF_HOME/hub/models--ORG--NAME/{refs/main, blobs/<sha256>, snapshots/<commit>/<path> -> blobs}``, the
layout ``huggingface_hub`` reads with ``HF_HUB_OFFLINE=1``. Repo ids and paths come from SAELens's
``pretrained_saes.yaml``; configs carry the real models' fields; weights are random, of the true shapes
(except the Gemma-2 vocabulary, see :func:`gemma2_dir`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

# the paper's subject–verb agreement data format (JSON lines), with words of our own
NOUNS = [("author", "authors"), ("pilot", "pilots"), ("doctor", "doctors"), ("farmer", "farmers")]
OTHERS = ["guards", "senators", "teachers"]


def sva_records() -> list[dict]:
    """Within-RC style pairs: "The author that the guards" → " like" / " likes"."""
    out = []
    for sg, pl in NOUNS:
        for other in OTHERS:
            out.append(
                {
                    "clean_prefix": f"The {sg} that the {other}",
                    "patch_prefix": f"The {pl} that the {other}",
                    "clean_answer": " is",
                    "patch_answer": " are",
                    "case": "singular_plural",
                }
            )
            out.append(
                {
                    "clean_prefix": f"The {pl} that the {other}",
                    "patch_prefix": f"The {sg} that the {other}",
                    "clean_answer": " are",
                    "patch_answer": " is",
                    "case": "plural_plural",
                }
            )
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def word_tokenizer(out_dir: Path, bos: str, extra: list[str] = (), appended: list[str] = ()):
    """A word-level fast tokenizer over the data's words, saved with ``save_pretrained`` (file layout of the
    hub's ``tokenizer.json`` + ``tokenizer_config.json``; the real BPE vocabularies are not reproducible here).
    ``appended`` words come after all others, so the other words keep their ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(
        {
            w
            for r in sva_records()
            for k in ("clean_prefix", "patch_prefix", "clean_answer", "patch_answer")
            for w in r[k].split()
        }
        | set(extra)
    )
    words += [w for w in dict.fromkeys(appended) if w not in set(words)]
    vocab = {w: i for i, w in enumerate([bos, "<unk>", "<pad>"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=bos, unk_token="<unk>", pad_token="<pad>"
    )
    fast.save_pretrained(str(out_dir))
    return out_dir


from sfc_plugin.replica import HubCache  # noqa: E402  (datasets too: ``put(..., repo_type="dataset")``)

# pythia-70m-deduped's config.json as the hub serves it
PYTHIA_70M_CONFIG = {
    "architectures": ["GPTNeoXForCausalLM"],
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "gelu",
    "hidden_size": 512,
    "initializer_range": 0.02,
    "intermediate_size": 2048,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 2048,
    "model_type": "gpt_neox",
    "num_attention_heads": 8,
    "num_hidden_layers": 6,
    "rotary_emb_base": 10000,
    "rotary_pct": 0.25,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.24.0",
    "use_cache": True,
    "use_parallel_residual": True,
    "vocab_size": 50304,
}

# gemma-2-2b's config.json fields (vocabulary reduced, layers truncated by the caller)
GEMMA2_2B_CONFIG = {
    "architectures": ["Gemma2ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "final_logit_softcapping": 30.0,
    "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 2304,
    "initializer_range": 0.02,
    "intermediate_size": 9216,
    "max_position_embeddings": 8192,
    "model_type": "gemma2",
    "num_attention_heads": 8,
    "num_hidden_layers": 26,
    "num_key_value_heads": 4,
    "pad_token_id": 0,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "torch_dtype": "float32",
    "use_cache": True,
    "vocab_size": 256000,
}


# gpt2's config.json as the hub serves it
GPT2_CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}


def hf_model_dir(
    out: Path, config: dict, seed: int = 0, bos: str = "<|endoftext|>", appended_words: list[str] = ()
) -> Path:
    """A Hugging Face model directory (``config.json`` as given, random ``model.safetensors``, tokenizer;
    ``appended_words`` join the tokenizer's vocabulary after the test words)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(seed)
    cfg = AutoConfig.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
    model.save_pretrained(str(out / "_saved"))
    (out / "_saved" / "model.safetensors").rename(out / "model.safetensors")
    for f in (out / "_saved").iterdir():
        f.unlink()
    (out / "_saved").rmdir()
    word_tokenizer(out, bos, appended=appended_words)
    del model
    return out


def _sae_tensors(d_in: int, d_sae: int, gen: torch.Generator, hook_scale: float):
    """Random SAE weights: unit-norm decoder rows, encoder = decoder transposed, and a bias 2.5 standard
    deviations below zero (pre-activations are ~ N(0, |x|² / d_in)), so about 0.6% of the features fire."""
    W_dec = torch.randn(d_sae, d_in, generator=gen)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_enc = W_dec.T.contiguous()
    b_enc = torch.full((d_sae,), -2.5 * hook_scale / d_in**0.5)
    return W_enc, W_dec, b_enc, torch.zeros(d_in)


def pythia_sae_releases(
    cache: HubCache, work: Path, scales: dict[str, float], d_sae: int = 32768, seed: int = 0
) -> None:
    """The three Pythia ``-sm`` releases: ``cfg.json`` + ``sae_weights.safetensors`` per yaml path (true width 32768)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    from safetensors.torch import save_file

    directory = get_pretrained_saes_directory()
    gen = torch.Generator().manual_seed(seed)
    for release in ("pythia-70m-deduped-res-sm", "pythia-70m-deduped-att-sm", "pythia-70m-deduped-mlp-sm"):
        lookup = directory[release]
        for hook, path in lookup.saes_map.items():
            layer = 0 if hook.startswith("blocks.0.hook_resid_pre") else int(hook.split(".")[1])
            W_enc, W_dec, b_enc, b_dec = _sae_tensors(512, d_sae, gen, scales[hook])
            tmp = work / release / path
            tmp.mkdir(parents=True, exist_ok=True)
            cfg = {
                "architecture": "standard",
                "d_in": 512,
                "d_sae": d_sae,
                "dtype": "float32",
                "device": "cpu",
                "model_name": "pythia-70m-deduped",
                "hook_name": hook,
                "hook_layer": layer,
                "hook_head_index": None,
                "activation_fn_str": "relu",
                "apply_b_dec_to_input": True,
                "finetuning_scaling_factor": False,
                "sae_lens_training_version": None,
                "prepend_bos": True,
                "dataset_path": "EleutherAI/the_pile_deduplicated",
                "context_size": 128,
                "normalize_activations": "none",
                "neuronpedia_id": lookup.neuronpedia_id.get(hook),
            }
            (tmp / "cfg.json").write_text(json.dumps(cfg))
            save_file(
                {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}, str(tmp / "sae_weights.safetensors")
            )
            cache.put_dir(lookup.repo_id, tmp, prefix=f"{path}/")


def gemma_scope_saes(
    cache: HubCache,
    work: Path,
    layers: list[int],
    scales: dict[str, float],
    seed: int = 0,
    npz_dtype=np.float16,
    width: str = "16k",
) -> list[str]:
    """Gemma Scope canonical SAEs (``params.npz`` per yaml path; ``width`` 16k or 65k) for ``layers``; returns their specs."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    gen = torch.Generator().manual_seed(seed)
    specs = []
    for layer in layers:
        for kind, hook, d_in in (
            ("att", f"blocks.{layer}.attn.hook_z", 2048),
            ("mlp", f"blocks.{layer}.hook_mlp_out", 2304),
            ("res", f"blocks.{layer}.hook_resid_post", 2304),
        ):
            release = f"gemma-scope-2b-pt-{kind}-canonical"
            sae_id = f"layer_{layer}/width_{width}/canonical"
            lookup = directory[release]
            path = lookup.saes_map[sae_id]
            W_enc, W_dec, b_enc, b_dec = _sae_tensors(d_in, {"16k": 16384, "65k": 65536}[width], gen, scales[hook])
            tmp = work / release / path
            tmp.mkdir(parents=True, exist_ok=True)
            arrays = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc * 0, "b_dec": b_dec, "threshold": -b_enc}
            np.savez(
                tmp / "params.npz", **{k: v.numpy().astype(npz_dtype) for k, v in arrays.items()}
            )  # JumpReLU: the threshold sparsifies
            cache.put(lookup.repo_id, f"{path}/params.npz", tmp / "params.npz")
            specs.append(f"{release}:{sae_id}")
    return specs


def hook_scales(model, tokens: torch.Tensor, hooks: list[str]) -> dict[str, float]:
    """Root-mean-square norm of each hook's activation (flattened per position) on ``tokens``."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in hooks)
    return {h: float(cache[h].flatten(2).norm(dim=-1).pow(2).mean().sqrt()) for h in hooks}


def gpt2_sae_releases(cache: HubCache, work: Path, scales: dict[str, float], d_sae: int = 32768, seed: int = 0) -> None:
    """``gpt2-small-sfc``'s releases at the yaml's repo ids and paths, with the configs SAELens's own loader tests
    expect from the hub: OpenAI's v5 SAEs as converted to SAELens's pre-6.0 format (TopK k=32 written as
    ``activation_fn_str``, ``normalize_activations="layer_norm"``, no BOS, context 64; ``cfg.json`` +
    ``sae_weights.safetensors`` + ``sparsity.safetensors`` per path, e.g. ``v5_32k_layer_0.pt/`` for resid-post)
    and ``gpt2-small-res-jb``'s embedding SAE (old ``hook_point`` keys; its ``center_writing_weights`` comes from
    the yaml's ``config_overrides``). Widths: ``d_sae`` for the v5 SAEs (true: 32768), 3/4 of it for res-jb (true: 24576)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    from safetensors.torch import save_file

    directory = get_pretrained_saes_directory()
    gen = torch.Generator().manual_seed(seed)

    def write(release: str, hook: str, cfg: dict, width: int, sparsity: bool) -> None:
        lookup = directory[release]
        path = lookup.saes_map[hook]
        W_enc, W_dec, b_enc, b_dec = _sae_tensors(768, width, gen, scales[hook])
        if cfg.get("normalize_activations") == "layer_norm":  # the SAE sees its input normalised: unit scale
            b_enc = torch.zeros(width)
        tmp = work / release / path
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "cfg.json").write_text(
            json.dumps({**cfg, "d_sae": width, "neuronpedia_id": lookup.neuronpedia_id.get(hook)})
        )
        save_file(
            {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}, str(tmp / "sae_weights.safetensors")
        )
        if sparsity:
            save_file({"sparsity": torch.full((width,), -3.0)}, str(tmp / "sparsity.safetensors"))
        cache.put_dir(lookup.repo_id, tmp, prefix=f"{path}/")

    write(
        "gpt2-small-res-jb",
        "blocks.0.hook_resid_pre",
        {
            "model_name": "gpt2-small",
            "hook_point": "blocks.0.hook_resid_pre",
            "hook_point_layer": 0,
            "hook_point_head_index": None,
            "d_in": 768,
            "dtype": "torch.float32",
            "device": "cuda",
            "context_size": 128,
            "prepend_bos": True,
            "dataset_path": "Skylion007/openwebtext",
        },
        d_sae * 3 // 4,
        False,
    )
    for release, hook_kind in (
        ("gpt2-small-attn-out-v5-32k", "hook_attn_out"),
        ("gpt2-small-mlp-out-v5-32k", "hook_mlp_out"),
        ("gpt2-small-resid-post-v5-32k", "hook_resid_post"),
    ):
        for layer in range(12):
            hook = f"blocks.{layer}.{hook_kind}"
            write(
                release,
                hook,
                {
                    "architecture": "standard",
                    "d_in": 768,
                    "dtype": "torch.float32",
                    "device": "cuda",
                    "model_name": "gpt2-small",
                    "hook_name": hook,
                    "hook_layer": layer,
                    "hook_head_index": None,
                    "activation_fn_str": "topk",
                    "activation_fn_kwargs": {"k": 32},
                    "apply_b_dec_to_input": True,
                    "finetuning_scaling_factor": False,
                    "sae_lens_training_version": None,
                    "prepend_bos": False,
                    "dataset_path": "Skylion007/openwebtext",
                    "dataset_trust_remote_code": True,
                    "context_size": 64,
                    "normalize_activations": "layer_norm",
                },
                d_sae,
                True,
            )


# the config.yaml fields circuit-tracer writes for a cross-layer transcoder, and SAELens's mntss loader reads
CLT_CONFIG = {
    "model_kind": "cross_layer_transcoder",
    "model_name": "google/gemma-2-2b",
    "feature_input_hook": "hook_resid_mid",
    "feature_output_hook": "hook_mlp_out",
    "scan": "gemma-2-2b-clt-hp",
}


def mntss_clt_release(cache: HubCache, work: Path, n_layers: int, d_model: int, d_sae: int, seed: int = 0) -> dict:
    """``mntss-gemma-2-2b-2.5m-clt-as-per-layer``'s repository as circuit-tracer saves a CLT: ``config.yaml``, and per
    layer ``i`` ``W_enc_i.safetensors`` (``W_enc_i`` ``[d_sae, d_model]``, ``b_enc_i``, ``b_dec_i``) and
    ``W_dec_i.safetensors`` (``W_dec_i`` ``[d_sae, n_layers − i, d_model]``: its writes to layers ``i..``). Returns the
    tensors written, by file."""
    import yaml
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    from safetensors.torch import save_file

    repo = get_pretrained_saes_directory()["mntss-gemma-2-2b-2.5m-clt-as-per-layer"].repo_id
    gen = torch.Generator().manual_seed(seed)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(CLT_CONFIG))
    cache.put(repo, "config.yaml", work / "config.yaml")
    written = {}
    for i in range(n_layers):
        enc = {
            f"W_enc_{i}": torch.randn(d_sae, d_model, generator=gen) * 0.3,
            f"b_enc_{i}": torch.randn(d_sae, generator=gen) * 0.1 - 0.3,
            f"b_dec_{i}": torch.randn(d_model, generator=gen) * 0.1,
        }
        dec = {f"W_dec_{i}": torch.randn(d_sae, n_layers - i, d_model, generator=gen) * 0.3}
        for name, tensors in ((f"W_enc_{i}.safetensors", enc), (f"W_dec_{i}.safetensors", dec)):
            save_file(tensors, str(work / name))
            cache.put(repo, name, work / name)
            written[name] = tensors
    return written


# ---------------------------------------------------------------------------------------------
# LabHC/bias_in_bios: the true schema (hard_text string, profession int64, gender int64), split names and
# hub file layout (data/<split>-00000-of-00001-<16 hex>.parquet, as on the hub's main branch), synthetic texts

BIB_FILES = {
    "train": "data/train-00000-of-00001-0ab65b32c47407e8.parquet",
    "dev": "data/dev-00000-of-00001-e6551072fff26949.parquet",
    "test": "data/test-00000-of-00001-5598c840ce8de1ee.parquet",
}
BIB_README = """---
license: mit
task_categories:
- text-classification
language:
- en
dataset_info:
  features:
  - name: hard_text
    dtype: string
  - name: profession
    dtype: int64
  - name: gender
    dtype: int64
  splits:
  - name: train
  - name: test
  - name: dev
---
# Bias in Bios (offline test replica: synthetic texts)
"""
_BIB_SUBJECT = {0: ["He", "His", "he", "his", "him", "Mr"], 1: ["She", "Her", "she", "her", "hers", "Mrs"]}
_BIB_WORK = {
    21: ["professor", "university", "research", "faculty", "students", "tenure", "lectures", "physics"],
    13: ["nurse", "hospital", "patients", "clinic", "care", "ward", "medication", "health"],
    25: ["surgeon", "surgery", "operating", "hospital", "patients", "residency", "trauma", "clinic"],
    23: ["rapper", "album", "tracks", "studio", "tour", "lyrics", "label", "mixtape"],
}
_BIB_FILLER = ["a", "an", "the", "and", "at", "in", "of", "with", "for", "years", "works", "has", "is", "on", "to"]
BIB_WORDS = sorted({w for ws in (*_BIB_SUBJECT.values(), *_BIB_WORK.values(), _BIB_FILLER) for w in ws} | {"."})

# rows per (profession, gender) and split of the test replica; the interleaving puts the groups out of order
BIB_COUNTS = {
    "train": {(21, 0): 30, (21, 1): 24, (13, 0): 12, (13, 1): 27, (25, 0): 11, (25, 1): 10, (23, 0): 14, (23, 1): 3},
    "dev": {(21, 0): 5, (21, 1): 5, (13, 0): 3, (13, 1): 5},
    "test": {(21, 0): 20, (21, 1): 16, (13, 0): 11, (13, 1): 18, (25, 0): 10, (25, 1): 10, (23, 0): 9, (23, 1): 2},
}


def bib_text(profession: int, gender: int, i: int, n_words: int = 14) -> str:
    """A synthetic biography of ``n_words`` words: pronouns of the gender, words of the profession, filler."""
    rng = random.Random(f"bib-{profession}-{gender}-{i}")
    pool = _BIB_SUBJECT[gender] + _BIB_WORK.get(profession, _BIB_WORK[23]) + _BIB_FILLER
    words = [rng.choice(_BIB_SUBJECT[gender][:1] + _BIB_SUBJECT[gender][2:3]), "works"]
    words += [rng.choice(pool) for _ in range(max(n_words - 3, 0))]
    return " ".join(words + ["."])


def bib_rows(counts: dict[tuple[int, int], int], split: str, n_words: int = 14) -> list[dict]:
    """Rows of one split: each group's rows numbered in order, the groups interleaved by a seeded shuffle."""
    keys = [k for k, n in counts.items() for _ in range(n)]
    random.Random(f"bib-order-{split}").shuffle(keys)
    seen: dict = {}
    rows = []
    for p, g in keys:
        i = seen[(p, g)] = seen.get((p, g), -1) + 1
        rows.append(
            {"hard_text": bib_text(p, g, i + 1000 * HUB_SPLIT_INDEX[split], n_words), "profession": p, "gender": g}
        )
    return rows


HUB_SPLIT_INDEX = {"train": 0, "dev": 1, "test": 2}


def write_bib_parquet(directory: Path, counts=None, n_words: int = 14, files=None) -> dict[str, list[dict]]:
    """The three splits as parquet files under ``directory`` at the hub's paths (``files``); returns the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("hard_text", pa.string()), ("profession", pa.int64()), ("gender", pa.int64())])
    out = {}
    for split, path in (files or BIB_FILES).items():
        rows = bib_rows((counts or BIB_COUNTS)[split], split, n_words)
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), target)
        out[split] = rows
    return out


def bias_in_bios_replica(cache: HubCache, stage: Path, counts=None, n_words: int = 14) -> dict[str, list[dict]]:
    """``LabHC/bias_in_bios`` in the hub cache (``datasets--LabHC--bias_in_bios``: README.md and the three
    parquet files of the main branch, as blobs with snapshot links); returns the rows written."""
    stage.mkdir(parents=True, exist_ok=True)
    rows = write_bib_parquet(stage, counts, n_words)
    (stage / "README.md").write_text(BIB_README)
    cache.put_dir("LabHC/bias_in_bios", stage, repo_type="dataset")
    return rows


# Gemma 3 with Gemma Scope 2, the Qwen3 (mwhanna) and Gemma-2 transcoder repositories: in the package, so that
# ``sfc bench`` builds its full-size replicas with them (they take this module's HubCache as well as their own)
from sfc_plugin.replica import (  # noqa: E402,F401
    GEMMA3_270M_CONFIG,
    QWEN3_0_6B_CONFIG,
    gemma3_hub,
    gemma_scope_2,
    gemma_scope_transcoders,
    mwhanna_transcoders,
    small_qwen3,
)
