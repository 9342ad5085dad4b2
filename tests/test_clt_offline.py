"""Cross-layer transcoders as SAELens loads them (``mntss-gemma-2-2b-2.5m-clt-as-per-layer``: each layer's
encoder, its decoders to every later layer summed) are transcoders at their layer: loaded offline from a replica
of the hub repository (circuit-tracer's file layout, a small Gemma-2 beside it), in a mixed circuit with SAEs.

SAELens's loader reads the encoder file's tensor shapes with an HTTP range request, which fails offline even with
the file cached: ``sfc_plugin.models.cached_tensor_shapes`` reads the cached file's header instead.
"""

from __future__ import annotations

import json
import subprocess
import sys

import offline_hub as hub
import pytest
import torch
from conftest import make_dictionary

RELEASE = "mntss-gemma-2-2b-2.5m-clt-as-per-layer"
GEMMA_SMALL = {
    **hub.GEMMA2_2B_CONFIG,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
    "query_pre_attn_scalar": 16,
    "vocab_size": 64,
}


@pytest.fixture(scope="module")
def clt(tmp_path_factory):
    root = tmp_path_factory.mktemp("clt")
    cache = hub.HubCache(root / "hf")
    model = hub.hf_model_dir(root / "models" / "gemma-2-2b", GEMMA_SMALL, bos="<bos>")
    written = hub.mntss_clt_release(cache, root / "stage", n_layers=2, d_model=64, d_sae=48)
    for layer in (0, 1):  # SAEs at the residual stream beside the transcoders
        hook = f"blocks.{layer}.hook_resid_post"
        sae = make_dictionary("jumprelu", hook, d_in=64, d_sae=96, seed=layer).to(torch.float32)
        sae.save_model(root / "saes" / hook)
    data = hub.write_jsonl(root / "pairs.jsonl", hub.sva_records())
    return {"env": cache.env(), "root": root, "model": model, "written": written, "data": data}


def py(env, code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_saelens_loads_each_layer_as_a_transcoder_with_summed_decoders_offline(clt):
    got = py(
        clt["env"],
        f"""
import json, torch
from sfc_plugin.models import load_sae_spec
out = {{}}
for layer in (0, 1):
    (sae,) = load_sae_spec("{RELEASE}:layer_" + str(layer))
    out[layer] = {{"arch": sae.cfg.architecture(), "hook": sae.cfg.metadata.hook_name,
                   "out": sae.cfg.metadata.hook_name_out, "W_dec": sae.W_dec.tolist(), "W_enc": sae.W_enc.tolist(),
                   "b_dec": sae.b_dec.tolist(), "spec": sae.sfc_spec}}
print(json.dumps(out))
""",
    )
    for layer in (0, 1):
        enc = clt["written"][f"W_enc_{layer}.safetensors"]
        dec = clt["written"][f"W_dec_{layer}.safetensors"][f"W_dec_{layer}"]
        g = got[str(layer)]
        assert (g["arch"], g["hook"], g["out"]) == (
            "transcoder",
            f"blocks.{layer}.hook_resid_mid",
            f"blocks.{layer}.hook_mlp_out",
        )
        assert torch.allclose(torch.tensor(g["W_dec"]), dec.sum(1), atol=1e-6)
        assert torch.allclose(torch.tensor(g["W_enc"]), enc[f"W_enc_{layer}"].T, atol=1e-7)
        assert torch.allclose(torch.tensor(g["b_dec"]), enc[f"b_dec_{layer}"])
        assert g["spec"] == {"release": RELEASE, "sae_id": f"layer_{layer}"}


def test_a_mixed_circuit_with_clt_transcoders_discovers_offline(clt, tmp_path):
    out = tmp_path / "out"
    args = ["--model", clt["model"], "--sae", f"{RELEASE}:layer_0", "--sae", f"{RELEASE}:layer_1"]
    args += ["--sae", clt["root"] / "saes", "--data", clt["data"], "--method", "ig", "--n-examples", "8"]
    done = subprocess.run(
        [sys.executable, "-m", "sfc_plugin.cli", "discover", *map(str, args), "--node-threshold", "0.005"]
        + ["--edge-threshold", "0.0005", "-q", "-o", str(out)],
        capture_output=True,
        text=True,
        env=clt["env"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    circuit = json.loads((out / "circuit.json").read_text())
    saes = {s["submodule"]: s for s in circuit["provenance"]["saes"]}
    assert set(saes) == {"tc_0", "resid_0", "tc_1", "resid_1"}
    assert saes["tc_1"]["release"] == RELEASE and saes["tc_1"]["neuronpedia_id"] == "gemma-2-2b/1-clt-hp"
    assert (saes["tc_0"]["hook"], saes["tc_0"]["hook_out"]) == ("blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out")
    nodes = {n["submodule"] for n in circuit["nodes"] if n["kind"] == "feature"}
    assert {"tc_0", "tc_1"} <= nodes
    pairs = {(e["source"].split("/")[0], e["target"].split("/")[0]) for e in circuit["edges"]}
    assert {("tc_0", "resid_0"), ("resid_0", "tc_1"), ("tc_1", "resid_1")} <= pairs


def test_the_clt_splice_leaves_gemma_unchanged_and_its_error_absorbs_the_summed_decoders(clt):
    got = py(
        clt["env"],
        f"""
import json, torch, warnings
warnings.filterwarnings("ignore")
import sfc_plugin
from sfc_plugin.splicing import activations
world = sfc_plugin.World.load("{clt["model"]}", ["{RELEASE}:layer_0", "{RELEASE}:layer_1", "{clt["root"] / "saes"}"])
model = world.model
tokens = model.to_tokens(["The author that the guards like"])
plain = model(tokens)
with sfc_plugin.splice(model, world) as state:
    spliced = model(tokens)
acts = activations(model, world.submodules, tokens)
_, cache = model.run_with_cache(tokens)
tc = world.by_name["tc_1"]
f = tc.sae.encode(cache["blocks.1.hook_resid_mid"])
err = cache["blocks.1.hook_mlp_out"] - (f @ tc.sae.W_dec + tc.sae.b_dec)
print(json.dumps({{"out": float((spliced - plain).abs().max()), "err": float((acts["tc_1"].err - err).abs().max()),
                   "err_size": float(err.norm() / cache["blocks.1.hook_mlp_out"].norm()),
                   "flag": model.cfg.use_hook_mlp_in, "names": [s.name for s in world.submodules]}}))
""",
    )
    assert got["out"] < 1e-5 and got["err"] < 1e-5 and got["err_size"] > 0.1
    assert got["names"] == ["tc_0", "resid_0", "tc_1", "resid_1"] and got["flag"] is False
