"""circuit-tracer 0.5.0's attribution graph of a model and transcoders given as files.

Runs in circuit-tracer's own virtualenv (it pins transformers <= 4.57.3 and transformer-lens 3.2, so it cannot share
sfc's); ``tests/circuit_tracer_cases.py`` writes the inputs (and, run as a script, the committed references under
``tests/data/circuit_tracer/``) and ``tests/test_linear.py`` compares the output with ``sfc``'s method ``linear``.
Only safetensors and JSON cross between the two (never pickle).

    python scripts/circuit_tracer_reference.py DIR

``DIR/config.json``: ``{"model": {HookedTransformerConfig fields, "dtype": "float64"}, "feature_input_hook",
"feature_output_hook", "tokens": [ids, BOS first], "batch_size", "special_tokens": {"bos_token": ...}}``; ``DIR/model.safetensors``: the
HookedTransformer's parameters; ``DIR/layer_<l>.safetensors``: one transcoder per layer in circuit-tracer's layout
(``W_enc`` ``[d_transcoder, d_model]``, ``W_dec``, ``b_enc``, ``b_dec``, optional ``threshold`` (JumpReLU) and
``W_skip`` ``[d_model, d_model]``); ``DIR/tokenizer.json``: a ``tokenizers`` file. Writes
``DIR/graph.safetensors`` (the Graph's tensors and circuit-tracer's ``compute_node_influence`` of it) and
``DIR/result.json`` (versions, seconds).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path


def main(directory: str) -> None:
    started = time.perf_counter()
    import torch
    import torch.nn.functional as F
    from circuit_tracer import attribute
    from circuit_tracer.graph import compute_node_influence
    from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
    from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet
    from circuit_tracer.transcoder.activation_functions import JumpReLU
    from safetensors.torch import load_file, save_file
    from transformer_lens import HookedTransformerConfig
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    d = Path(directory)
    spec = json.loads((d / "config.json").read_text())
    fields = dict(spec["model"])
    dtype = getattr(torch, fields.pop("dtype"))
    cfg = HookedTransformerConfig(**fields, dtype=dtype, device="cpu")
    transcoders = {}
    for layer in range(cfg.n_layers):
        w = load_file(str(d / f"layer_{layer}.safetensors"))
        act = JumpReLU(w["threshold"].to(dtype), 0.1) if "threshold" in w else F.relu
        tc = SingleLayerTranscoder(
            cfg.d_model,
            w["W_enc"].shape[0],
            act,
            layer,
            skip_connection="W_skip" in w,
            device=torch.device("cpu"),
            dtype=dtype,
        )
        with torch.no_grad():
            for name in ("W_enc", "W_dec", "b_enc", "b_dec") + (("W_skip",) if "W_skip" in w else ()):
                getattr(tc, name).copy_(w[name])
        transcoders[layer] = tc
    tset = TranscoderSet(transcoders, spec["feature_input_hook"], spec["feature_output_hook"], scan="sfc-parity")
    tmp = tempfile.mkdtemp()  # TransformerLens reloads the tokenizer from its directory: kept until the end
    fast = PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"), **spec.get("special_tokens", {}))
    fast.save_pretrained(tmp)
    tokenizer = AutoTokenizer.from_pretrained(tmp)
    model = TransformerLensReplacementModel.from_config(cfg, tset, tokenizer=tokenizer)
    weights = load_file(str(d / "model.safetensors"))
    missing = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("transcoders."):
                continue
            ours = name.replace(".old_mlp.", ".").replace("unembed.old_unembed.", "unembed.")
            if ours not in weights:
                missing.append(name)
                continue
            p.copy_(weights[ours].to(p.dtype))
    if missing:
        raise SystemExit(f"model.safetensors lacks {missing}")
    built = time.perf_counter()
    graph = attribute(torch.tensor(spec["tokens"]), model, batch_size=int(spec.get("batch_size", 256)))
    done = time.perf_counter()
    logit_weights = torch.zeros(graph.adjacency_matrix.shape[0], dtype=graph.adjacency_matrix.dtype)
    logit_weights[-len(graph.logit_targets) :] = graph.logit_probabilities
    influence = compute_node_influence(graph.adjacency_matrix, logit_weights)
    save_file(
        {
            "adjacency": graph.adjacency_matrix.contiguous(),
            "active_features": graph.active_features.contiguous(),
            "activation_values": graph.activation_values.contiguous(),
            "selected_features": graph.selected_features.contiguous(),
            "logit_targets": torch.tensor([t.vocab_idx for t in graph.logit_targets]),
            "logit_probabilities": graph.logit_probabilities.contiguous(),
            "input_tokens": graph.input_tokens.contiguous(),
            "influence": influence.contiguous(),
        },
        str(d / "graph.safetensors"),
    )
    result = {
        "versions": {k: metadata.version(k) for k in ("circuit-tracer", "transformer-lens", "torch")},
        "seconds": {"total": done - started, "attribute": done - built},
    }
    (d / "result.json").write_text(json.dumps(result, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
