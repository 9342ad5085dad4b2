"""Small models with transcoders at every MLP, written as files circuit-tracer's own code reads.

``scripts/circuit_tracer_reference.py`` (run in a virtualenv with circuit-tracer 0.5.0) turns such a directory into
circuit-tracer's graph; ``tests/test_linear.py`` compares it with method ``linear``. The committed references under
``tests/data/circuit_tracer/<case>/`` were made by running this module as a script::

    python tests/circuit_tracer_cases.py PYTHON_WITH_CIRCUIT_TRACER

which writes each case's inputs (seed 0) and runs the reference script on them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "circuit_tracer"
SCRIPT = ROOT / "scripts" / "circuit_tracer_reference.py"
# case → (block, transcoder kind, what it reads)
CASES = {
    "gpt": ("sequential", "jumprelu_skip_transcoder", "ln2.hook_normalized"),
    "gemma": ("gemma", "jumprelu_skip_transcoder", "ln2.hook_normalized"),
    "relu": ("sequential", "transcoder", "hook_resid_mid"),
}
PROMPT = "the cat near the dogs likes a big"
# the HookedTransformerConfig fields the cases set (both TransformerLens versions know them)
CONFIG_FIELDS = (
    "n_layers d_model n_ctx d_head n_heads n_key_value_heads d_mlp d_vocab act_fn gated_mlp normalization_type "
    "use_normalization_before_and_after positional_embedding_type rotary_dim attn_scores_soft_cap "
    "output_logits_soft_cap parallel_attn_mlp seed eps"
).split()
SPECIAL = {"bos_token": "<bos>", "pad_token": "<pad>", "unk_token": "<unk>"}


def build(case: str, tokenizer, seed: int = 0):
    """``(model, {read hook: transcoder}, tokens)`` of ``case``: norms with weights of their own, a transcoder of the
    case's kind at every MLP."""
    from conftest import make_dictionary, make_model
    from test_dictionaries import gemma_like

    block, kind, read = CASES[case]
    model = gemma_like(tokenizer, seed=seed) if block == "gemma" else make_model(tokenizer, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln" in name or name.startswith("ln_final"):
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    saes = {
        f"blocks.{layer}.{read}": make_dictionary(
            kind, f"blocks.{layer}.{read}", seed=10 * seed + 10 + layer, hook_out=f"blocks.{layer}.hook_mlp_out"
        )
        for layer in range(model.cfg.n_layers)
    }
    tokens = [tokenizer.bos_token_id] + tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    return model, saes, tokens


def write_inputs(d: Path, model, saes: dict, tokens: list[int], tokenizer_json: Path) -> None:
    """The files :mod:`scripts.circuit_tracer_reference` reads (see its docstring)."""
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    reads = {key.split(".", 2)[2] for key in saes}
    (read,) = reads
    fields = {k: v for k, v in model.cfg.to_dict().items() if k in CONFIG_FIELDS}
    spec = {
        "model": {**fields, "dtype": str(model.cfg.dtype).removeprefix("torch.")},
        "feature_input_hook": read,
        "feature_output_hook": "hook_mlp_out",
        "tokens": list(tokens),
        "batch_size": 64,
        "special_tokens": SPECIAL,
    }
    (d / "config.json").write_text(json.dumps(spec, indent=1))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    for layer in range(model.cfg.n_layers):
        sae = saes[f"blocks.{layer}.{read}"]
        w = {"W_enc": sae.W_enc.T, "W_dec": sae.W_dec, "b_enc": sae.b_enc, "b_dec": sae.b_dec}
        if hasattr(sae, "threshold"):
            w["threshold"] = sae.threshold
        if getattr(sae, "W_skip", None) is not None:
            w["W_skip"] = sae.W_skip
        save_file({k: v.detach().contiguous() for k, v in w.items()}, str(d / f"layer_{layer}.safetensors"))
    (d / "tokenizer.json").write_bytes(Path(tokenizer_json).read_bytes())


def load_inputs(d: Path):
    """``(model, {read hook: transcoder}, tokens)`` from a directory :func:`write_inputs` wrote (SAELens's
    transcoder classes, TransformerLens's HookedTransformer; no tokenizer)."""
    from conftest import make_dictionary
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    spec = json.loads((d / "config.json").read_text())
    fields = dict(spec["model"])
    dtype = getattr(torch, fields.pop("dtype"))
    model = HookedTransformer(HookedTransformerConfig(**fields, dtype=dtype, device="cpu"))
    model.load_state_dict(load_file(str(d / "model.safetensors")), strict=False)
    model.eval()
    read = spec["feature_input_hook"]
    saes = {}
    for layer in range(model.cfg.n_layers):
        w = load_file(str(d / f"layer_{layer}.safetensors"))
        kind = ("jumprelu_" if "threshold" in w else "") + ("skip_transcoder" if "W_skip" in w else "transcoder")
        key = f"blocks.{layer}.{read}"
        sae = make_dictionary(
            kind, key, d_in=model.cfg.d_model, d_sae=w["W_enc"].shape[0], hook_out=f"blocks.{layer}.hook_mlp_out"
        )
        with torch.no_grad():
            for name, value in w.items():
                getattr(sae, name).copy_(value.T if name == "W_enc" else value)
        saes[key] = sae
    return model, saes, spec["tokens"]


def run_reference(d: Path, python: str, timeout: float = 600) -> dict:
    """Run circuit-tracer's own code on ``d`` (``python``: an interpreter with circuit-tracer 0.5.0); returns
    ``DIR/result.json``."""
    r = subprocess.run([python, str(SCRIPT), str(d)], capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"{SCRIPT.name} failed:\n{r.stderr[-4000:]}")
    return json.loads((d / "result.json").read_text())


def main(python: str) -> None:
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = make_tokenizer(Path(tmp))
        for case in CASES:
            model, saes, tokens = build(case, tokenizer)
            d = DATA / case
            write_inputs(d, model, saes, tokens, Path(tmp) / "tokenizer" / "tokenizer.json")
            print(case, run_reference(d, python))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
