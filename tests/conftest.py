"""Tiny random models, SAEs and pair data built in the test (float64, seeded)."""

from __future__ import annotations

import itertools
import json
import os

# One CPU thread in the tests and every subprocess they start, before torch is imported: without it sfc's thread
# policy picks the count from the machine's load, and a subprocess on another count than its reference rounds
# differently (a bfloat16 replica then differs by a few percent).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

# Subprocesses that could hang (a collective, a browser) get this many seconds: far above any run's time on a
# loaded machine, so it only turns a hang into a failure (SFC_TEST_HANG_LIMIT overrides it).
HANG_LIMIT = float(os.environ.get("SFC_TEST_HANG_LIMIT", "3600"))

WORDS = ["the", "a", "cat", "cats", "dog", "dogs", "near", "that", "likes", "like", "is", "are", "big", "old"]


def make_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<bos>", "<pad>", "<unk>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", pad_token="<pad>", unk_token="<unk>")
    path = tmp_path / "tokenizer"
    fast.save_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def make_model(tokenizer, n_layers=2, d_model=16, parallel=False, normalization="LN", seed=0, d_head=4):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_ctx=16,
        d_head=d_head,
        n_heads=d_model // 4,
        d_mlp=4 * d_model,
        d_vocab=len(tokenizer),
        act_fn="gelu",
        normalization_type=normalization,
        parallel_attn_mlp=parallel,
        dtype=torch.float64,
        seed=seed,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    with torch.no_grad():  # larger weights than the default init, so effects are far from zero
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.5 / d_model**0.5 * 2)
    return model.eval()


def make_sae(hook, d_in=16, d_sae=32, arch="standard", seed=0):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    g = torch.Generator().manual_seed(seed)
    reshape = "hook_z" if hook.endswith("attn.hook_z") else "none"
    if arch == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float64", reshape_activations=reshape))
    elif arch == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=6, dtype="float64", reshape_activations=reshape))
    else:
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float64", reshape_activations=reshape))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g, dtype=torch.float64) * 0.4)
        sae.b_enc.copy_(torch.randn(d_sae, generator=g, dtype=torch.float64) * 0.1)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g, dtype=torch.float64) * 0.4)
        sae.b_dec.copy_(torch.randn(d_in, generator=g, dtype=torch.float64) * 0.1)
        if arch == "jumprelu":
            sae.threshold.fill_(0.05)
    sae.cfg.metadata.hook_name = hook
    return sae


def all_hooks(n_layers, embed="hook_embed"):
    return [embed] + [f"blocks.{l}.hook_{k}" for l in range(n_layers) for k in ("attn_out", "mlp_out", "resid_post")]


def z_hooks(n_layers, embed="hook_embed"):
    """Like :func:`all_hooks` with the attention SAEs at ``attn.hook_z`` (before ``W_O``, as Gemma Scope's)."""
    return [embed] + [
        f"blocks.{l}.{k}" for l in range(n_layers) for k in ("attn.hook_z", "hook_mlp_out", "hook_resid_post")
    ]


def make_saes(hooks, arch="standard", d_in=16, d_z=None):
    """SAEs for ``hooks``; those at ``attn.hook_z`` get ``d_in = d_z`` (n_heads * d_head)."""
    return {
        h: make_sae(h, d_in=d_z if d_z and h.endswith("hook_z") else d_in, arch=arch, seed=i)
        for i, h in enumerate(hooks)
    }


def make_records(n=6):
    nouns = [("cat", "cats"), ("dog", "dogs")]
    out = []
    for (sg, pl), mid, adj in itertools.islice(
        itertools.product(nouns, ["near the dog", "that the cat likes", "near a cat"], ["big", "old"]), n
    ):
        for a, b, ca, pa in ((sg, pl, " is", " are"), (pl, sg, " are", " is")):
            out.append(
                {
                    "clean_prefix": f"the {adj} {a} {mid}",
                    "patch_prefix": f"the {adj} {b} {mid}",
                    "clean_answer": ca,
                    "patch_answer": pa,
                    "case": "x",
                }
            )
    return out[:n]


def save_world(d, tokenizer, hooks):
    """A saved tiny model (``d/model``), one SAE per hook (``d/saes/<hook>``) and 4 pairs (``d/pairs.jsonl``)."""
    from sfc_plugin.models import save_model

    save_model(make_model(tokenizer), d / "model")
    for i, hook in enumerate(hooks):
        make_sae(hook, seed=i).save_model(d / "saes" / hook)
    (d / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_records(4)))
    return d


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def world(tokenizer):
    model = make_model(tokenizer)
    return model, make_saes(all_hooks(2)), make_records(6)


SAE_KINDS = ("standard", "gated", "topk", "abstopk", "jumprelu", "temporal", "matching_pursuit")
TRANSCODER_KINDS = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder")


def make_dictionary(kind, hook, d_in=16, d_sae=32, seed=0, hook_out=None, d_out=None):
    """A dictionary of any SAELens architecture with seeded random weights (float64): one of :data:`SAE_KINDS`
    at ``hook``, or one of :data:`TRANSCODER_KINDS` reading ``hook`` and writing ``hook_out``."""
    import sae_lens as sl

    g = torch.Generator().manual_seed(seed)
    common = dict(d_in=d_in, d_sae=d_sae, dtype="float64")
    if kind in TRANSCODER_KINDS:
        cls = {
            "transcoder": (sl.Transcoder, sl.TranscoderConfig),
            "skip_transcoder": (sl.SkipTranscoder, sl.SkipTranscoderConfig),
            "jumprelu_transcoder": (sl.JumpReLUTranscoder, sl.JumpReLUTranscoderConfig),
            "jumprelu_skip_transcoder": (sl.JumpReLUSkipTranscoder, sl.JumpReLUSkipTranscoderConfig),
        }[kind]
        sae = cls[0](cls[1](**common, d_out=d_out or d_in, apply_b_dec_to_input=False))
    else:
        common["reshape_activations"] = "hook_z" if hook.endswith("attn.hook_z") else "none"
        sae = {
            "standard": lambda: sl.StandardSAE(sl.StandardSAEConfig(**common)),
            "gated": lambda: sl.GatedSAE(sl.GatedSAEConfig(**common)),
            "topk": lambda: sl.TopKSAE(sl.TopKSAEConfig(k=6, **common)),
            "abstopk": lambda: sl.AbsTopKSAE(sl.AbsTopKSAEConfig(k=6, **common)),
            "jumprelu": lambda: sl.JumpReLUSAE(sl.JumpReLUSAEConfig(**common)),
            "matching_pursuit": lambda: sl.MatchingPursuitSAE(
                sl.MatchingPursuitSAEConfig(max_iterations=5, residual_threshold=0.0, **common)
            ),
            "temporal": lambda: sl.TemporalSAE(
                sl.TemporalSAEConfig(n_heads=2, bottleneck_factor=8, kval_topk=6, **common)
            ),
        }[kind]()
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "threshold":
                p.fill_(0.05)
            elif name == "W_dec" and kind == "matching_pursuit":  # unit-norm atoms, as SAELens trains them
                p.copy_(torch.nn.functional.normalize(torch.randn(p.shape, generator=g, dtype=p.dtype), dim=-1))
            elif name == "W_skip":
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
            else:
                scale = 0.3 if name.startswith(("attn_layers", "r_mag")) else 0.4 if p.dim() > 1 else 0.1
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    sae.cfg.metadata.hook_name = hook
    if hook_out is not None:
        sae.cfg.metadata.hook_name_out = hook_out
    return sae


# the 2-layer model has five SAE places besides its MLPs (which hold transcoders): the seven SAE kinds take turns
SAE_PLACES = (
    "hook_embed",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_post",
    "blocks.1.hook_attn_out",
    "blocks.1.hook_resid_post",
)
LAYOUTS = {
    "a": ("standard", "gated", "topk", "abstopk", "jumprelu"),
    "b": ("jumprelu", "matching_pursuit", "temporal", "gated", "abstopk"),
    "c": ("topk", "temporal", "matching_pursuit", "standard", "matching_pursuit"),
}
# transcoders at both MLPs: layer 0 reads hook_mlp_in (TransformerLens must switch it on), layer 1 ln2's output
TRANSCODER_READS = ("blocks.0.hook_mlp_in", "blocks.1.ln2.hook_normalized")


def mixed_dictionaries(layout="a", transcoder="jumprelu_skip_transcoder", reads=TRANSCODER_READS):
    """``{hook_name: dictionary}``: the layout's SAE kinds at :data:`SAE_PLACES` and a transcoder at each MLP."""
    out = {h: make_dictionary(k, h, seed=i) for i, (k, h) in enumerate(zip(LAYOUTS[layout], SAE_PLACES))}
    for layer, read in enumerate(reads):
        out[read] = make_dictionary(transcoder, read, seed=10 + layer, hook_out=f"blocks.{layer}.hook_mlp_out")
    return out
