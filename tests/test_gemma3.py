"""Gemma 3 with Gemma Scope 2, offline, at the model's true size.

The replica hub (:mod:`sfc_plugin.replica`) holds ``google/gemma-3-270m`` at its true shape (18 layers, d_model
640, vocabulary 262,144, local/global attention, qk-norm, tied embeddings; random bfloat16 weights, the hub's
config and file names) and ``google/gemma-scope-2-270m-pt`` with its folder layout (``resid_post_all/``,
``attn_out_all/``, ``mlp_out_all/``, ``transcoder_all/``; ``config.json`` in even layers' folders only, so
SAELens infers the others), 64 features wide (SAELens reads the width from the file). The presets run through
``sfc discover`` in a subprocess with ``HF_HUB_OFFLINE=1``; their node effects are recomputed independently:
SAELens's own ``SAE.from_pretrained`` dictionaries on TransformerLens hooks, with autograd on the plain model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from sfc_plugin import replica

PY = sys.executable
VARIANTS = ("width_16k_l0_big", "width_16k_l0_small_affine")  # the default, and skip transcoders with L0 small


def sfc(env, *args):
    return subprocess.run([PY, "-m", "sfc_plugin.cli", *map(str, args)], capture_output=True, text=True, env=env)


def py(env, code: str, *args: str):
    done = subprocess.run([PY, "-c", code, *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("gemma3")
    cache = replica.gemma3_hub(root / "hf", variants=VARIANTS, d_sae=64)
    data = replica.write_jsonl(root / "pairs.jsonl", replica.sva_records())
    yield {"env": cache.env(), "root": root, "data": data, "cache": cache}
    shutil.rmtree(root, ignore_errors=True)  # ~0.6 GB


def test_replica_has_the_true_files_and_layout(hub):
    snap = hub["cache"].snapshot("google/gemma-scope-2-270m-pt")
    assert sorted(p.name for p in snap.iterdir()) == ["attn_out_all", "mlp_out_all", "resid_post_all", "transcoder_all"]
    assert (snap / "transcoder_all/layer_3_width_16k_l0_small_affine/params.safetensors").is_file()
    assert (snap / "resid_post_all/layer_4_width_16k_l0_big/config.json").is_file()
    assert not (snap / "resid_post_all/layer_5_width_16k_l0_big/config.json").exists()
    model = hub["cache"].snapshot("google/gemma-3-270m")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in model.iterdir()}
    assert json.loads((model / "config.json").read_text()) == json.loads(json.dumps(replica.GEMMA3_270M_CONFIG))


HF_SITES = """
import json, torch, warnings
warnings.filterwarnings("ignore")
from transformers import AutoModelForCausalLM
from sfc_plugin.models import resolve_world
specs = ["gemma-scope-2-270m-pt-res-all:layer_7_width_16k_l0_big", "gemma-scope-2-270m-pt-att-all:layer_7_width_16k_l0_big",
         "gemma-scope-2-270m-pt-mlp-all:layer_7_width_16k_l0_big",
         "gemma-scope-2-270m-pt-transcoders-all:layer_7_width_16k_l0_small_affine"]
model, saes = resolve_world("google/gemma-3-270m", specs)
hf = AutoModelForCausalLM.from_pretrained("google/gemma-3-270m", dtype=torch.float32, attn_implementation="eager").eval()
got = {}
def keep(name, inputs=False):
    def fn(mod, args, out):
        t = args[0] if inputs else (out[0] if isinstance(out, tuple) else out)
        got[name] = t.detach()
    return fn
layer = hf.model.layers[7]
layer.register_forward_hook(keep("model.layers.7.output"))
layer.self_attn.o_proj.register_forward_hook(keep("model.layers.7.self_attn.o_proj.input", inputs=True))
layer.post_feedforward_layernorm.register_forward_hook(keep("model.layers.7.post_feedforward_layernorm.output"))
layer.pre_feedforward_layernorm.register_forward_hook(keep("model.layers.7.pre_feedforward_layernorm.output"))
tokens = model.to_tokens(["The pilot that the guards", "The doctors that the senators"])
from sfc_plugin.splicing import build_submodules
subs = build_submodules(model, saes)
with torch.no_grad():
    hf(tokens)
    _, cache = model.run_with_cache(tokens)
out = {}
for s in subs:
    hf_name = saes[s.key].cfg.metadata.hf_hook_name
    ours = cache[s.read_hook].flatten(2)
    out[s.name] = [s.key, s.read_hook, hf_name, float((ours - got[hf_name]).abs().max()), float(got[hf_name].abs().max())]
print(json.dumps(out))
"""


def test_every_gemma_scope_2_dictionary_reads_the_activation_it_was_trained_on(hub):
    """SAELens's ``hf_hook_name`` (the Hugging Face module Gemma Scope 2 trained on) equals the TransformerLens
    hook we read: ``hook_resid_post``, ``attn.hook_z`` (heads flattened: ``o_proj``'s input), ``hook_mlp_out``,
    and for transcoders the MLP's input ``mlp.hook_in`` (SAELens names ``hook_mlp_in``, the residual before
    the pre-MLP norm)."""
    out = py(hub["env"], HF_SITES)
    assert {k: v[:3] for k, v in out.items()} == {
        "resid_7": ["blocks.7.hook_resid_post", "blocks.7.hook_resid_post", "model.layers.7.output"],
        "attn_7": ["blocks.7.attn.hook_z", "blocks.7.attn.hook_z", "model.layers.7.self_attn.o_proj.input"],
        "mlp_7": ["blocks.7.hook_mlp_out", "blocks.7.hook_mlp_out", "model.layers.7.post_feedforward_layernorm.output"],
        "tc_7": ["blocks.7.hook_mlp_in", "blocks.7.mlp.hook_in", "model.layers.7.pre_feedforward_layernorm.output"],
    }
    for name, (*_, diff, scale) in out.items():
        assert scale > 0.1 and diff < 1e-4 * scale, (name, diff, scale)


REFERENCE = """
import json, sys, torch, warnings
warnings.filterwarnings("ignore")
from transformer_lens import HookedTransformer
from sae_lens import SAE
from sae_lens.analysis.hooked_sae_transformer import add_hook_in_to_mlp
from sfc_plugin.data import tokenize
from sfc_plugin.metrics import logit_diff
from sfc_plugin.models import cached_tensor_shapes  # SAELens reads the shapes with an HTTP request otherwise

job = json.loads(sys.argv[1])
model = HookedTransformer.from_pretrained_no_processing("google/gemma-3-270m").eval()
for block in model.blocks:
    add_hook_in_to_mlp(block.mlp)
model.setup()
batch = tokenize(model, job["records"])
B = len(batch)
dicts = []  # (submodule, SAE, hook read, hook written)
for spec in job["specs"]:
    with cached_tensor_shapes():
        sae = SAE.from_pretrained(*spec.split(":", 1), device="cpu")
    hook = sae.cfg.metadata.hook_name
    layer = hook.split(".")[1]
    out = getattr(sae.cfg.metadata, "hook_name_out", None)
    if out:  # a transcoder: trained on the MLP's input (hf_hook_name), written at the MLP's output
        assert sae.cfg.metadata.hf_hook_name == f"model.layers.{layer}.pre_feedforward_layernorm.output"
        name, read = f"tc_{layer}", f"blocks.{layer}.mlp.hook_in"
    else:
        kind = {"hook_resid_post": "resid", "hook_z": "attn", "hook_mlp_out": "mlp"}[hook.split(".")[-1]]
        name, read, out = f"{kind}_{layer}", hook, hook
    dicts.append((name, sae, read, out))
hooks = {h for _, _, r, o in dicts for h in (r, o)}
with torch.no_grad():
    cc = model.run_with_cache(batch.clean, names_filter=lambda n: n in hooks)[1]
    cp = model.run_with_cache(batch.patch, names_filter=lambda n: n in hooks)[1]
acts = {}
def keep(x, hook):
    x.retain_grad()
    acts[hook.name] = x
outs = sorted({o for *_, o in dicts})
logit_diff(model.run_with_hooks(batch.clean, fwd_hooks=[(h, keep) for h in outs]), batch).sum().backward()
effects = {}
with torch.no_grad():
    for name, sae, read, out in dicts:
        fc, fp = sae.encode(cc[read].flatten(2)), sae.encode(cp[read].flatten(2))  # heads flattened at hook_z
        ec, ep = cc[out].flatten(2) - sae.decode(fc), cp[out].flatten(2) - sae.decode(fp)
        g = acts[out].grad.flatten(2)
        feat = ((g @ sae.W_dec.T) * (fp - fc)).sum((0, 1)) / B
        for j in feat.nonzero().flatten().tolist():
            effects[f"{name}/{j}"] = float(feat[j])
        effects[f"{name}/err"] = float((g * (ep - ec)).sum() / B)
print(json.dumps(effects))
"""


def _discover_and_recompute(hub, tmp_path, preset: str, n: int = 4):
    from sfc_plugin.presets import get_preset

    done = sfc(
        hub["env"],
        "discover",
        "--preset",
        preset,
        "--data",
        hub["data"],
        "--n-examples",
        n,
        "--method",
        "atp",
        "--node-threshold",
        "0.0005",
        "--no-edges",
        "-q",
        "-o",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    circuit = json.loads((tmp_path / "circuit.json").read_text())
    ours = {x["id"]: x["effect"] for x in circuit["nodes"] if x["kind"] != "metric"}
    job = {"records": replica.sva_records()[:n], "specs": get_preset(preset).sae_specs}
    want = py(hub["env"], REFERENCE, json.dumps(job))
    return circuit, ours, want


def _assert_close(ours: dict, want: dict) -> None:
    scale = max(abs(v) for v in want.values())
    assert len(ours) > 50 and scale > 1e-3
    for k, a in ours.items():  # every node we kept, at its recomputed value
        b = want.get(k, 0.0)
        assert abs(a - b) <= 1e-3 * abs(b) + 1e-6 * scale, (k, a, b)
    missed = [k for k, b in want.items() if abs(b) > 0.0005 * 1.001 and k not in ours]
    assert not missed, missed[:5]  # and every node above the threshold was kept


def test_gemma_3_270m_sfc_preset_equals_an_independent_recomputation(hub, tmp_path):
    circuit, ours, want = _discover_and_recompute(hub, tmp_path, "gemma-3-270m-sfc")
    prov = circuit["provenance"]
    assert prov["model"] == "gemma-3-270m" and len(prov["saes"]) == 54
    assert {s["release"] for s in prov["saes"]} == {f"gemma-scope-2-270m-pt-{k}-all" for k in ("att", "mlp", "res")}
    assert {s["submodule"] for s in prov["saes"]} == {f"{k}_{l}" for k in ("attn", "mlp", "resid") for l in range(18)}
    _assert_close(ours, want)


def test_gemma_3_270m_transcoder_preset_equals_an_independent_recomputation(hub, tmp_path):
    """The mixed circuit: attention and residual SAEs, skip transcoders (``_affine``) in every MLP's place."""
    circuit, ours, want = _discover_and_recompute(hub, tmp_path, "gemma-3-270m-transcoders:width_16k_l0_small_affine")
    saes = {s["submodule"]: s for s in circuit["provenance"]["saes"]}
    assert len(saes) == 54 and saes["tc_5"]["architecture"] == "jumprelu_skip_transcoder"
    assert saes["tc_5"]["hook"] == "blocks.5.hook_mlp_in" and saes["tc_5"]["read_hook"] == "blocks.5.mlp.hook_in"
    assert saes["tc_5"]["hook_out"] == "blocks.5.hook_mlp_out"
    assert saes["tc_5"]["sae_id"] == "layer_5_width_16k_l0_small_affine" and saes["attn_5"]["sae_id"].endswith(
        "l0_small"
    )
    assert any(k.startswith("tc_") and not k.endswith("/err") for k in ours)
    _assert_close(ours, want)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--sae", "gemma-scope-2-270m-pt-res-all:layer_0_width_32k_l0_big"],
            "SAE release 'gemma-scope-2-270m-pt-res-all' has no id 'layer_0_width_32k_l0_big' (closest: "
            "layer_0_width_262k_l0_big; it has layer_L_width_16k_l0_big, layer_L_width_16k_l0_small, "
            "layer_L_width_262k_l0_big, layer_L_width_262k_l0_small for L in 0-17 (72 ids))",
        ),
        (
            ["--sae", "gemma-scope-2-270m-pt-resid-all:layer_0_width_16k_l0_big"],
            "unknown SAE release 'gemma-scope-2-270m-pt-resid-all' (releases like it: gemma-scope-2-270m-pt-res-all,",
        ),
        (
            ["--sae", "gemma-scope-2-270m-pt-att-all:layer_*_width_65k_*"],
            "no SAE id of 'gemma-scope-2-270m-pt-att-all' matches 'layer_*_width_65k_*' (it has layer_L_width_16k_l0_big,",
        ),
        (
            ["--preset", "gemma-3-270m-sfc:width_65k_l0_big"],
            "preset variant 'width_65k_l0_big' of gemma-3-270m-sfc is not width_W_l0_X (W: 16k or 262k; X: small or big)",
        ),
        (
            ["--preset", "gemma-3-270m-sfc:width_16k_l0_big_affine"],
            "preset variant 'width_16k_l0_big_affine': _affine (skip transcoders) is for the transcoder presets",
        ),
    ],
)
def test_bad_specs_exit_2_with_one_line_of_what_exists(tmp_path, capsys, args, message):
    from sfc_plugin.cli import main

    data = replica.write_jsonl(tmp_path / "pairs.jsonl", replica.sva_records())
    model = [] if args[0] == "--preset" else ["--model", "google/gemma-3-270m"]
    assert main(["discover", *model, *args, "--data", str(data), "-q", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_gemma_3_presets_follow_the_releases_and_list_their_size(capsys):
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from sfc_plugin.cli import main
    from sfc_plugin.presets import PRESETS, get_preset

    directory = get_pretrained_saes_directory()
    for name in ("gemma-3-270m-sfc", "gemma-3-270m-transcoders:width_262k_l0_small_affine", "gemma-3-1b-sfc"):
        preset = get_preset(name)
        for spec, hook in preset.saes:
            release, sae_id = spec.split(":", 1)
            assert directory[release].model == preset.model, spec
            layer = int(sae_id.split("_")[1])
            kind = release.split("-pt-")[1].removesuffix("-all")
            assert (
                hook
                == {
                    "att": f"blocks.{layer}.attn.hook_z",
                    "mlp": f"blocks.{layer}.hook_mlp_out",
                    "res": f"blocks.{layer}.hook_resid_post",
                    "transcoders": f"blocks.{layer}.hook_mlp_in",  # SAELens's gemma_3 loader's hook_name
                }[kind]
            )
    big = get_preset("gemma-3-270m-transcoders:width_262k_l0_small_affine")
    assert big.saes[1] == (
        "gemma-scope-2-270m-pt-transcoders-all:layer_0_width_262k_l0_small_affine",
        "blocks.0.hook_mlp_in",
    )
    assert big.saes[0][0] == "gemma-scope-2-270m-pt-att-all:layer_0_width_262k_l0_small"
    assert list(big.submodules())[:3] == ["attn_0", "tc_0", "resid_0"]
    # 18 × (1024·F·2 + 640·F·2 + 640·F·2 + 640·640 skip) float32 numbers and the biases
    assert abs(big.weight_bytes() - 4 * 18 * (2 * 262144 * (1024 + 640 + 640) + 640 * 640)) < 4 * 18 * 10 * 262144
    assert PRESETS["gemma-3-1b-sfc"].model == "google/gemma-3-1b-pt" and len(PRESETS["gemma-3-1b-sfc"].saes) == 78
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "  dictionaries: 54 (54 × 16k features); weights 5.4 GB in float32, 2.7 GB in bfloat16" in out
    assert "  variant: width_16k_l0_big (default); another: --preset gemma-3-270m-sfc:width_W_l0_X" in out
    assert "  tc_17     blocks.17.hook_mlp_in" in out


@pytest.fixture(scope="module")
def qwen3_hub(tmp_path_factory):
    """``Qwen/Qwen3-0.6B``'s config with small widths (its 28 layers kept) and the ``mwhanna`` transcoders."""
    from sfc_plugin.hf_convert import load_hf_model_dir

    root = tmp_path_factory.mktemp("qwen3")
    cache = replica.HubCache(root / "hf")
    snap = replica.hf_model_repo(cache, "Qwen/Qwen3-0.6B", replica.small_qwen3(), root / "stage", norm_noise=0.1)
    model = replica.with_mlp_inputs(load_hf_model_dir(snap))
    replica.mwhanna_transcoders(cache, root / "stage" / "tc", model)
    data = replica.write_jsonl(root / "pairs.jsonl", replica.sva_records())
    yield {"env": cache.env(), "data": data}
    shutil.rmtree(root, ignore_errors=True)


def test_qwen3_transcoder_preset_discovers_offline(qwen3_hub, tmp_path):
    done = sfc(
        qwen3_hub["env"],
        "discover",
        "--preset",
        "qwen3-0.6b-transcoders",
        "--data",
        qwen3_hub["data"],
        "--n-examples",
        6,
        "--method",
        "atp",
        "--node-threshold",
        "0.001",
        "--edge-threshold",
        "0.0001",
        "-q",
        "-o",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    circuit = json.loads((tmp_path / "circuit.json").read_text())
    saes = {s["submodule"]: s for s in circuit["provenance"]["saes"]}
    assert list(saes) == [f"tc_{l}" for l in range(28)]
    assert saes["tc_3"]["hook"] == "blocks.3.mlp.hook_in" and saes["tc_3"]["hook_out"] == "blocks.3.hook_mlp_out"
    assert saes["tc_3"]["release"] == "mwhanna-qwen3-0.6b-transcoders-lowl0" and saes["tc_3"]["d_sae"] == 128
    kept = {n["submodule"] for n in circuit["nodes"] if n["kind"] == "feature"}
    assert len(kept) > 10 and any(
        e["source"].startswith("tc_") and e["target"].startswith("tc_") for e in circuit["edges"]
    )


def test_bench_runs_the_whole_preset_on_the_replica(hub, tmp_path):
    """``sfc bench --workload gemma-3-270m`` on a replica already built (here the test's, 64 features wide): the
    load phase and ours only (no baseline at full size)."""
    (hub["root"] / "gemma-3-270m.done").write_text("the test's replica\n")
    env = {k: v for k, v in hub["env"].items() if k not in ("HF_HOME", "HF_HUB_OFFLINE")}  # bench sets them
    args = ["bench", "--workload", "gemma-3-270m", "--replica", hub["root"], "--n-pairs", 2, "--n-tokens", 5]
    done = sfc(env, *args, "--steps", 2, "--n-nodes", 30, "-q", "-o", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "bench.json").read_text())["workloads"]
    assert [r["phase"] for r in rows] == ["load", "nodes", "edges", "total"]
    assert all(r["name"] == "gemma-3-270m" and r["baseline_s"] is None for r in rows)
    assert "54 dictionaries (3,456 features), 2 pairs x 5 tokens" in rows[0]["description"]
    assert rows[0]["ours_peak_gb"] > 1 and rows[1]["n_nodes"] >= 10


def test_replica_workloads_run_on_their_own(capsys):
    from sfc_plugin.cli import main

    assert main(["bench", "--workload", "gemma-3-270m", "--workload", "toy"]) == 2
    assert "run the gemma-3-270m workloads on their own" in capsys.readouterr().err
