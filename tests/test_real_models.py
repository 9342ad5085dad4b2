"""Real loading paths, offline: TransformerLens names and SAELens releases through a replica of the hub
cache (``HF_HOME`` + ``HF_HUB_OFFLINE=1``), local Hugging Face directories, presets, and the model/SAE checks.

Shapes: Pythia-70M-deduped is built at its true shape (50304 × 512, 6 layers) with the three ``-sm``
releases at the yaml's repo ids and paths and their true width (19 SAEs of 32768 features, 2.5 GB of random
weights: +24 s to build and +30 s to discover over 4096-wide SAEs, measured on 2 shared cores). Gemma-2 has its
true hidden shapes truncated to 2 layers, with the vocabulary cut to the test's words (the true 256k vocabulary
is 2.4 GB per embedding matrix); its Gemma Scope SAEs are 16384 wide (SAELens derives the width from the path),
stored as float16 ``params.npz`` to halve the write. GPT-2 small is built at its true shape with
``gpt2-small-sfc``'s 37 SAEs 2048 wide (the true 36 × 32768 v5 weights are 7.2 GB).
The commands run in a subprocess with the offline environment: no code path knows it is under test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import offline_hub as hub
import pytest
import torch

PY = sys.executable


def sfc(env, *args, cwd=None):
    return subprocess.run(
        [PY, "-m", "sfc_plugin.cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd
    )


def py(env, code: str):
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _logit_diff(hf_dir: Path) -> float:
    from transformers import AutoModelForCausalLM

    from sfc_plugin.hf_convert import load_hf_model_dir

    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32, attn_implementation="eager").eval()
    tl = load_hf_model_dir(hf_dir)
    tokens = tl.to_tokens([r["clean_prefix"] for r in hub.sva_records()], prepend_bos=False)
    with torch.no_grad():
        return float((hf(tokens).logits - tl(tokens)).abs().max()), tl, tokens


SMALL_CONFIGS = {  # each architecture's distinctive features at a small size
    "GPTNeoXForCausalLM": dict(
        model_type="gpt_neox",
        vocab_size=40,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=64,
        rotary_pct=0.25,
        use_parallel_residual=True,
    ),
    "GPT2LMHeadModel": dict(model_type="gpt2", vocab_size=40, n_embd=64, n_layer=2, n_head=4, n_positions=64),
    "Gemma2ForCausalLM": dict(
        model_type="gemma2",
        vocab_size=40,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        intermediate_size=128,
        max_position_embeddings=64,
        query_pre_attn_scalar=16,
        sliding_window=4,
        attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
    ),
    "LlamaForCausalLM": dict(
        model_type="llama",
        vocab_size=40,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        rope_theta=5e5,
    ),
    "Gemma3ForCausalLM": dict(  # qk-norm, local/global layers with their own rotary bases, tied embeddings
        model_type="gemma3_text",
        vocab_size=40,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
        intermediate_size=128,
        max_position_embeddings=64,
        query_pre_attn_scalar=32,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1000.0},
        },
    ),
    "Qwen3ForCausalLM": dict(  # qk-norm, grouped queries, tied embeddings
        model_type="qwen3",
        vocab_size=40,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    ),
}


@pytest.mark.parametrize("arch", sorted(SMALL_CONFIGS))
def test_local_hf_directory_converts_to_the_same_logits(tmp_path, arch):
    """The directory's name says "llama gemma-2": TransformerLens must not pick the architecture from it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from sfc_plugin.hf_convert import load_hf_model_dir
    from sfc_plugin.models import load_model_spec

    fields = dict(SMALL_CONFIGS[arch])
    cfg = AutoConfig.for_model(fields.pop("model_type"), **fields, architectures=[arch])
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():  # weights well away from the defaults (norm gains, biases) so every path is exercised
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / "my-llama-gemma-2-model"
    hf.save_pretrained(str(path))
    tl = load_model_spec(str(path))
    assert tl.cfg.original_architecture == arch and tl.cfg.model_name == "my-llama-gemma-2-model"
    tokens = torch.randint(0, 40, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = float((hf(tokens).logits - tl(tokens)).abs().max())
        scale = float(hf(tokens).logits.abs().max())
    print(f"{arch}: max |Δlogit| {diff:.2e} (logits up to {scale:.2f})")
    assert scale > 0.1 and diff < 1e-4
    assert load_hf_model_dir(path, processing={"center_unembed": True}).cfg.original_architecture == arch


@pytest.fixture(scope="session")
def offline(tmp_path_factory):
    """One hub cache with the Pythia model and releases and the Gemma Scope SAEs, plus a local Gemma-2 dir."""
    root = tmp_path_factory.mktemp("hub")
    cache = hub.HubCache(root / "hf")
    stage = root / "stage"
    info = {}
    # Pythia-70M-deduped: true shape, in the cache under its repo id (the Bias in Bios replica's words appended
    # to the test tokenizer's vocabulary, so the other words keep their ids)
    pythia = hub.hf_model_dir(stage / "pythia", hub.PYTHIA_70M_CONFIG, appended_words=hub.BIB_WORDS)
    info["pythia_logit_diff"], tl, tokens = _logit_diff(pythia)
    from sfc_plugin.presets import get_preset

    hooks = [h for _, h in get_preset("pythia-70m-sfc").saes]
    scales = hub.hook_scales(tl, tokens, hooks)
    del tl
    cache.put_dir("EleutherAI/pythia-70m-deduped", pythia)
    hub.pythia_sae_releases(cache, stage / "saes", scales)
    # Gemma-2-2B truncated to 2 layers: a local directory named like the model
    cfg = {**hub.GEMMA2_2B_CONFIG, "num_hidden_layers": 2, "vocab_size": 64}
    gemma = hub.hf_model_dir(root / "models" / "gemma-2-2b", cfg, bos="<bos>")
    info["gemma_logit_diff"], tl, tokens = _logit_diff(gemma)
    z_hooks = [f"blocks.{l}.{k}" for l in (0, 1) for k in ("attn.hook_z", "hook_mlp_out", "hook_resid_post")]
    scales = hub.hook_scales(tl, tokens, z_hooks)
    del tl
    info["gemma_specs"] = hub.gemma_scope_saes(cache, stage / "gemma", [0, 1], scales)
    info["bib_rows"] = hub.bias_in_bios_replica(cache, stage / "bias_in_bios")  # LabHC/bias_in_bios, synthetic texts
    shutil.rmtree(stage)
    data = hub.write_jsonl(root / "rc_train.json", hub.sva_records())
    yield {"env": cache.env(), "root": root, "gemma": gemma, "data": data, **info}
    shutil.rmtree(root, ignore_errors=True)  # ~1.3 GB


def test_true_shape_conversions_match_the_hf_logits(offline):
    print(
        f"pythia-70m-deduped max |Δlogit| {offline['pythia_logit_diff']:.2e}; "
        f"gemma-2 (2 layers) {offline['gemma_logit_diff']:.2e}"
    )
    assert offline["pythia_logit_diff"] < 1e-4
    assert offline["gemma_logit_diff"] < 1e-4


def test_pythia_preset_discovers_offline_end_to_end(offline, tmp_path):
    done = sfc(
        offline["env"],
        "discover",
        "--preset",
        "pythia-70m-sfc",
        "--data",
        offline["data"],
        "--method",
        "atp",
        "--n-examples",
        8,
        "--node-threshold",
        "0.002",
        "--edge-threshold",
        "0.0005",
        "-q",
        "-o",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    circuit = json.loads((tmp_path / "circuit.json").read_text())
    prov = circuit["provenance"]
    assert prov["model"] == "pythia-70m-deduped" and prov["preset"] == "pythia-70m-sfc"
    assert len(prov["saes"]) == 19
    assert {s["release"] for s in prov["saes"]} == {
        "pythia-70m-deduped-res-sm",
        "pythia-70m-deduped-att-sm",
        "pythia-70m-deduped-mlp-sm",
    }
    embed = next(s for s in prov["saes"] if s["submodule"] == "embed")
    assert (
        embed["sae_id"] == "blocks.0.hook_resid_pre"
        and embed["spec"] == "pythia-70m-deduped-res-sm:blocks.0.hook_resid_pre"
    )
    nodes = [n for n in circuit["nodes"] if n["kind"] != "metric"]
    assert len({n["submodule"] for n in nodes}) >= 10 and len(circuit["edges"]) > 20


def test_a_model_by_name_carries_the_hf_activations_its_saes_were_trained_on(offline):
    """No TransformerLens processing for the Pythia releases: hooks equal the HF model's hidden states;
    TransformerLens's default processing (centred writing weights) would not."""
    out = py(
        offline["env"],
        """
import json, torch, warnings
warnings.filterwarnings("ignore")
from transformers import AutoModelForCausalLM
from transformer_lens import HookedTransformer
from sfc_plugin.models import resolve_world
specs = ["pythia-70m-deduped-res-sm:blocks.2.hook_resid_post", "pythia-70m-deduped-mlp-sm:blocks.2.hook_mlp_out"]
model, saes = resolve_world("pythia-70m-deduped", specs)
hf = AutoModelForCausalLM.from_pretrained("EleutherAI/pythia-70m-deduped", dtype=torch.float32).eval()
default = HookedTransformer.from_pretrained("pythia-70m-deduped")
tokens = torch.tensor([[5, 9, 12, 7, 3, 20]])
with torch.no_grad():
    hidden = hf(tokens, output_hidden_states=True).hidden_states[3]
    ours = model.run_with_cache(tokens)[1]["blocks.2.hook_resid_post"]
    theirs = default.run_with_cache(tokens)[1]["blocks.2.hook_resid_post"]
print(json.dumps({"ours": float((ours - hidden).abs().max()), "default": float((theirs - hidden).abs().max()),
                  "scale": float(hidden.abs().max()), "kwargs_ok": sorted(saes) == sorted(s.split(":")[1] for s in specs)}))
""",
    )
    print(f"pythia resid_post_2: ours vs HF {out['ours']:.2e}, TL default processing vs HF {out['default']:.2e}")
    assert out["kwargs_ok"]
    assert out["ours"] < 1e-4 < out["default"]


def test_gemma_scope_with_hook_z_discovers_offline(offline, tmp_path):
    args = [x for spec in offline["gemma_specs"] for x in ("--sae", spec)]
    done = sfc(
        offline["env"],
        "discover",
        "--model",
        offline["gemma"],
        *args,
        "--data",
        offline["data"],
        "--method",
        "atp",
        "--n-examples",
        6,
        "--node-threshold",
        "0.05",
        "--edge-threshold",
        "0.005",
        "-q",
        "-o",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    circuit = json.loads((tmp_path / "circuit.json").read_text())
    hooks = {s["submodule"]: s["hook"] for s in circuit["provenance"]["saes"]}
    assert hooks["attn_0"] == "blocks.0.attn.hook_z" and hooks["attn_1"] == "blocks.1.attn.hook_z"
    assert {s["release"] for s in circuit["provenance"]["saes"]} == {
        "gemma-scope-2b-pt-att-canonical",
        "gemma-scope-2b-pt-mlp-canonical",
        "gemma-scope-2b-pt-res-canonical",
    }
    assert any((n["submodule"] or "").startswith("attn_") for n in circuit["nodes"])
    assert any(e["source"].startswith("attn_0/") for e in circuit["edges"])


@pytest.fixture(scope="session")
def offline_gpt2(tmp_path_factory):
    """GPT-2 small at its true shape under the ``gpt2`` repo id, with ``gpt2-small-sfc``'s 37 SAEs (2048 wide:
    the true 36 × 32768 × 768 weights are 7.2 GB)."""
    from sfc_plugin.hf_convert import load_hf_model_dir
    from sfc_plugin.presets import get_preset

    root = tmp_path_factory.mktemp("hub-gpt2")
    cache = hub.HubCache(root / "hf")
    gpt2 = hub.hf_model_dir(root / "stage" / "gpt2", hub.GPT2_CONFIG)
    tl = load_hf_model_dir(gpt2, processing={"center_writing_weights": True})
    tokens = tl.to_tokens([r["clean_prefix"] for r in hub.sva_records()], prepend_bos=False)
    scales = hub.hook_scales(tl, tokens, [h for _, h in get_preset("gpt2-small-sfc").saes])
    del tl
    cache.put_dir("gpt2", gpt2)
    hub.gpt2_sae_releases(cache, root / "stage" / "saes", scales, d_sae=2048)
    shutil.rmtree(root / "stage")
    yield {"env": cache.env(), "data": hub.write_jsonl(root / "rc_train.json", hub.sva_records())}
    shutil.rmtree(root, ignore_errors=True)


def test_gpt2_preset_discovers_offline_end_to_end(offline_gpt2, tmp_path):
    done = sfc(
        offline_gpt2["env"],
        "discover",
        "--preset",
        "gpt2-small-sfc",
        "--data",
        offline_gpt2["data"],
        "--method",
        "atp",
        "--n-examples",
        6,
        "--node-threshold",
        "0.002",
        "--edge-threshold",
        "0.0005",
        "-q",
        "-o",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    circuit = json.loads((tmp_path / "circuit.json").read_text())
    prov = circuit["provenance"]
    assert prov["model"] == "gpt2" and prov["preset"] == "gpt2-small-sfc" and len(prov["saes"]) == 37
    by_sub = {s["submodule"]: s for s in prov["saes"]}
    assert by_sub["embed"]["spec"] == "gpt2-small-res-jb:blocks.0.hook_resid_pre"
    assert by_sub["resid_11"]["spec"] == "gpt2-small-resid-post-v5-32k:blocks.11.hook_resid_post"
    assert {s["architecture"] for s in prov["saes"]} == {"standard", "topk"}
    nodes = [n for n in circuit["nodes"] if n["kind"] != "metric"]
    assert len({n["submodule"] for n in nodes}) >= 10 and len(circuit["edges"]) > 20


def test_gpt2_preset_loading_gives_every_sae_its_training_activations(offline_gpt2):
    """The preset centres GPT-2's writing weights (res-jb's kwargs); the v5 SAEs, which layer-normalise their
    input, encode exactly the same features as on the uncentred model, and res-jb's config carries the kwargs."""
    out = py(
        offline_gpt2["env"],
        """
import json, torch, warnings
warnings.filterwarnings("ignore")
from sfc_plugin.models import resolve_world
from sfc_plugin.presets import get_preset
from sfc_plugin.splicing import build_submodules
preset = get_preset("gpt2-small-sfc")
specs = ["gpt2-small-res-jb:blocks.0.hook_resid_pre", "gpt2-small-mlp-out-v5-32k:blocks.3.hook_mlp_out",
         "gpt2-small-resid-post-v5-32k:blocks.7.hook_resid_post"]
centred, saes = resolve_world("gpt2", specs, processing=preset.processing)
plain, _ = resolve_world("gpt2", specs, processing={})
tokens = torch.tensor([[5, 9, 12, 7, 3, 20]])
with torch.no_grad():
    a, b = centred.run_with_cache(tokens)[1], plain.run_with_cache(tokens)[1]
subs = {s.hook: s for s in build_submodules(centred, saes)}
v5 = {h: float((subs[h].encode(a[h]) - subs[h].encode(b[h])).abs().max() / subs[h].encode(b[h]).abs().max())
      for h in specs[1:] for h in [h.split(":")[1]]}
emb = "blocks.0.hook_resid_pre"
jb = saes[emb].cfg.metadata
print(json.dumps({"v5": v5, "embed_mean": float(a[emb].mean(-1).abs().max()), "plain_mean": float(b[emb].mean(-1).abs().max()),
                  "kwargs": jb.model_from_pretrained_kwargs, "norm": saes[specs[2].split(":")[1]].cfg.normalize_activations,
                  "k": saes[specs[2].split(":")[1]].cfg.k, "prepend_bos": saes[specs[2].split(":")[1]].cfg.metadata.prepend_bos}))
""",
    )
    print(out)
    assert out["kwargs"] == {"center_writing_weights": True} and out["norm"] == "layer_norm" and out["k"] == 32
    assert out["prepend_bos"] is False
    assert max(out["v5"].values()) < 1e-4
    assert out["embed_mean"] < 1e-5 < out["plain_mean"]


def _local_sae(path: Path, hook: str, kwargs: dict | None = None) -> Path:
    """An SAELens SAE directory for Pythia-70M's width (to build mismatches the hub releases cannot)."""
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=512, d_sae=64))
    sae.cfg.metadata.hook_name = hook
    sae.cfg.metadata.model_name = "pythia-70m-deduped"
    if kwargs is not None:
        sae.cfg.metadata.model_from_pretrained_kwargs = kwargs
    sae.save_model(str(path))
    return path


@pytest.mark.parametrize("case", ["d_in", "model", "hook", "disagree_model", "disagree_loading"])
def test_mismatched_saes_exit_2_naming_the_sae(offline, tmp_path, case):
    pythia_res = "pythia-70m-deduped-res-sm:blocks.1.hook_resid_post"
    gemma_att = "gemma-scope-2b-pt-att-canonical:layer_1/width_16k/canonical"
    gemma_res = "gemma-scope-2b-pt-res-canonical:layer_1/width_16k/canonical"
    if case == "d_in":
        args, want = (
            ["--model", "pythia-70m-deduped", "--sae", gemma_att],
            f"{gemma_att}: d_in=2048 but the model's n_heads * d_head at 'blocks.1.attn.hook_z' is 512",
        )
    elif case == "model":  # right widths and hooks, wrong model: the Gemma-2 directory under another model's name
        other = offline["root"] / "models" / "gemma-2-9b"
        if not other.exists():
            other.symlink_to(offline["gemma"])
        args, want = (
            ["--model", other, "--sae", gemma_res],
            f"{gemma_res} was trained on model 'gemma-2-2b' but the model is 'gemma-2-9b'",
        )
    elif case == "hook":
        sae = _local_sae(tmp_path / "sae7", "blocks.7.hook_resid_post")
        args, want = (
            ["--model", "pythia-70m-deduped", "--sae", sae],
            f"{sae.resolve()}: hook 'blocks.7.hook_resid_post' is not in the model (6 layers)",
        )
    elif case == "disagree_model":
        args, want = (
            ["--model", "pythia-70m-deduped", "--sae", pythia_res, "--sae", gemma_att],
            f"SAEs disagree on the model: {pythia_res} is for 'pythia-70m-deduped', {gemma_att} is for 'gemma-2-2b'",
        )
    else:
        sae = _local_sae(tmp_path / "centred", "blocks.3.hook_resid_post", {"center_writing_weights": True})
        args, want = (
            ["--model", "pythia-70m-deduped", "--sae", pythia_res, "--sae", sae],
            f"SAEs disagree on how to load the model: {pythia_res} wants no processing, {sae.resolve()} wants",
        )
    done = sfc(offline["env"], "discover", *args, "--data", offline["data"], "-q", "-o", tmp_path / "out")
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("sfc: error: ") and want in line, line


def test_transformer_bridge_gets_a_one_line_answer():
    from transformer_lens.model_bridge import TransformerBridge

    from sfc_plugin.errors import SFCError
    from sfc_plugin.models import resolve_world

    bridge = object.__new__(TransformerBridge)  # never initialised: the check must not touch it
    with pytest.raises(SFCError, match="TransformerBridge models are not supported: pass a HookedTransformer"):
        resolve_world(bridge, {"blocks.0.hook_resid_post": object()})


def test_presets_name_real_releases_and_list_their_submodules(capsys):
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from sfc_plugin.cli import main
    from sfc_plugin.presets import PRESETS

    directory = get_pretrained_saes_directory()
    sizes = {
        "pythia-70m-sfc": 19,
        "gemma-2-2b-sfc": 78,
        "gpt2-small-sfc": 37,
        "gemma-3-270m-sfc": 54,
        "gemma-3-270m-transcoders": 54,
        "gemma-3-1b-sfc": 78,
        "gemma-2-2b-transcoders": 78,
        "qwen3-0.6b-transcoders": 28,
    }
    for name, preset in PRESETS.items():
        assert len(preset.saes) == sizes[name] == len(preset.submodules())
        for spec, _hook in preset.saes:
            release, sae_id = spec.split(":", 1)
            assert sae_id in directory[release].saes_map, spec
            model = {"gpt2-small": "gpt2", "qwen3-0.6b": "Qwen/Qwen3-0.6B"}.get(directory[release].model)
            assert (model or directory[release].model) == preset.model, spec
    assert PRESETS["pythia-70m-sfc"].submodules()["embed"] == "blocks.0.hook_resid_pre"
    assert PRESETS["gemma-2-2b-sfc"].submodules()["attn_25"] == "blocks.25.attn.hook_z"
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "attn_3    blocks.3.attn.hook_z" in out and "gpt2-small-res-jb:blocks.0.hook_resid_pre" in out


def test_unknown_preset_in_toml_exits_2(tmp_path, capsys):
    from sfc_plugin.cli import main

    config = tmp_path / "run.toml"
    config.write_text('preset = "pythia-70m-sfx"\n')
    assert main(["discover", "--config", str(config), "-o", str(tmp_path / "out")]) == 2
    assert (
        "unknown preset 'pythia-70m-sfx' (known: pythia-70m-sfc, gemma-2-2b-sfc, gpt2-small-sfc, gemma-3-270m-sfc,"
        in capsys.readouterr().err
    )


def test_gemma_2_transcoders_with_gemma_scope_saes_discover_offline(offline, tmp_path):
    """``gemma-2-2b-transcoders``'s releases on the 2-layer Gemma-2: ``params.npz`` transcoders (16384 × 2304, as
    SAELens's loader fixes them) read at ``ln2.hook_normalized``, with the attention and residual SAEs."""
    import numpy as np

    from sfc_plugin.hf_convert import load_hf_model_dir
    from sfc_plugin.presets import get_preset

    cache = hub.HubCache(offline["root"] / "hf")
    model = load_hf_model_dir(offline["gemma"])
    specs = hub.gemma_scope_transcoders(cache, tmp_path / "stage", model, [0, 1], npz_dtype=np.float16)
    del model
    preset = set(get_preset("gemma-2-2b-transcoders").sae_specs)
    assert set(specs) <= preset
    others = [s for s in offline["gemma_specs"] if "-mlp-" not in s]
    args = [x for spec in specs + others for x in ("--sae", spec)]
    done = sfc(
        offline["env"],
        "discover",
        "--model",
        offline["gemma"],
        *args,
        "--data",
        offline["data"],
        "--method",
        "atp",
        "--n-examples",
        6,
        "--node-threshold",
        "0.01",
        "--edge-threshold",
        "0.001",
        "-q",
        "-o",
        tmp_path / "out",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    circuit = json.loads((tmp_path / "out" / "circuit.json").read_text())
    saes = {s["submodule"]: s for s in circuit["provenance"]["saes"]}
    assert list(saes) == ["attn_0", "tc_0", "resid_0", "attn_1", "tc_1", "resid_1"]
    assert (
        saes["tc_1"]["hook"] == "blocks.1.ln2.hook_normalized" and saes["tc_1"]["hook_out"] == "blocks.1.hook_mlp_out"
    )
    assert saes["tc_1"]["release"] == "gemma-scope-2b-pt-transcoders" and saes["tc_1"]["d_sae"] == 16384
    assert any(e["source"].startswith("tc_0/") for e in circuit["edges"])


def test_shift_on_bias_in_bios_offline_end_to_end(offline, tmp_path):
    """The issue's acceptance: ``sfc shift --preset pythia-70m-sfc --data bias_in_bios`` with the dataset in the hub
    cache and HF_HUB_OFFLINE=1 writes the table, with the splits counted as by hand (tests/test_bias_in_bios.py:
    train 2 x 27 ambiguous, val 4 x 12 balanced, test 65 of which 4 x 11 balanced). Attribution on 12 examples
    with 3 steps keeps it to a minute here (the defaults, 100 examples and 10 steps, took 7 min on the shared
    2-core machine: docs/benchmarks.md)."""
    argv = ["shift", "--preset", "pythia-70m-sfc", "--data", "bias_in_bios", "--n-attribution", 12, "--steps", 3]
    done = sfc(offline["env"], *argv, "-o", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train 54 ambiguous = 2 x 27" in done.stderr and "test 65 (44 balanced = 4 x 11" in done.stderr
    assert "examples: train 54, val 48, test 65 (44 balanced" in done.stdout
    result = json.loads((tmp_path / "shift.json").read_text())
    prov = result["provenance"]
    assert prov["n_examples"] == {"train": 54, "val": 48, "test": 65} and prov["drawn_from_train"] == ["val"]
    counts = prov["data_counts"]
    assert (counts["train"]["n"], counts["val"]["n"], counts["test"]["n"], counts["test"]["balanced"]) == (
        54,
        48,
        65,
        44,
    )
    assert counts["source"].startswith("LabHC/bias_in_bios (hub cache, snapshot")
    assert result["probe_hook"] == "blocks.4.hook_resid_post"  # the preset's SHIFT layer, the authors'
    assert result["recipe"] == {
        "probe": "authors",
        "n_attribution": {"train": 12, "val": 12},
        "skyline_probe": "original",
        "method": "ig",
        "steps": 3,
        "bos": True,
        "test_rows": {"n": 65, "balanced": 44},
    }
    names = [r["name"] for r in result["rows"]]
    assert names[0] == "original" and names[-1] == "oracle" and {"shift", "shift_retrain"} <= set(names)
    assert all(0 <= r[k] <= 1 for r in result["rows"] for k in ("profession_acc", "gender_acc", "worst_group_acc"))
    assert all(
        f["id"].split("/")[0] in {"embed", *[f"{k}_{l}" for l in range(5) for k in ("attn", "mlp", "resid")]}
        for f in result["features"]
    )  # SAEs through the probe layer only
    lines = done.stdout.splitlines()  # TransformerLens may print its "Loaded pretrained model" line first
    head = next(i for i, line in enumerate(lines) if line.split() == ["profession", "gender", "worst", "group", "uses"])
    assert lines[head + 1].startswith("original") and "side effects" in done.stdout, done.stdout[:600]
