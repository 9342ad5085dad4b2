"""Build the toy world from a seed: datasets, tokenizer, language model, SAEs, quality report.

Everything here is deterministic in the seed: for the duration of the build torch runs single-threaded
with ``torch.use_deterministic_algorithms(True)``, so the same seed, torch version and CPU kind give
bit-identical weights. Heavy imports (torch, transformer_lens, sae_lens) are
local to the functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import signal
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..hook_points import standard_hooks as hook_names
from . import language as L

SPECIAL_TOKENS = ("<bos>", "<eos>", "<pad>", "<unk>")
CONDITIONS = L.CONDITIONS


@dataclass
class BuildConfig:
    """Sizes and hyper-parameters of one build (``full()`` or ``small()``, the reduced build)."""

    reduced: bool = False
    # language model
    n_layers: int = 3
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    d_mlp: int = 256
    n_ctx: int = 32
    lm_sequences: int = 40_000
    lm_steps: int = 1_500
    lm_batch: int = 64
    lm_lr: float = 3e-3
    lm_warmup: int = 100
    # SAEs
    sae_expansion: int = 4
    sae_tokens: int = 800_000
    sae_batch_tokens: int = 1024
    sae_lr: float = 2e-3
    sae_l1: float = 2.0
    sae_l1_overrides: dict = field(default_factory=dict)
    # evaluation
    eval_sequences: int = 256

    @classmethod
    def full(cls) -> BuildConfig:
        return cls()

    @classmethod
    def small(cls) -> BuildConfig:
        """The reduced build: a one-layer model and a few seconds of training (for tests)."""
        return cls(
            reduced=True,
            n_layers=1,
            d_model=32,
            n_heads=2,
            d_head=16,
            d_mlp=64,
            lm_sequences=2_000,
            lm_steps=100,
            lm_batch=32,
            sae_tokens=16_384,
            sae_batch_tokens=512,
            eval_sequences=32,
        )


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(f"[sfc toy build] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# data files


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, sort_keys=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ---------------------------------------------------------------------------------------------
# tokenizer


def build_tokenizer(path: Path):
    """A word-level tokenizer over the toy vocabulary, saved to ``path`` and reloaded from there
    (TransformerLens reloads tokenizers by ``name_or_path``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + L.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, no space before "."
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=1024,
    )
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def _portable_tokenizer_config(path: Path) -> None:
    """Name the generic fast-tokenizer class (loads with transformers 4 and 5) and drop load-time keys."""
    f = path / "tokenizer_config.json"
    if not f.is_file():
        return
    conf = json.loads(f.read_text())
    conf["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("is_local", "local_files_only", "name_or_path"):
        conf.pop(key, None)
    f.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# language model


def model_config(cfg: BuildConfig, d_vocab: int, seed: int):
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        d_head=cfg.d_head,
        d_mlp=cfg.d_mlp,
        n_ctx=cfg.n_ctx,
        d_vocab=d_vocab,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="standard",
        seed=seed,
        model_name="sfc-toy",
        default_prepend_bos=True,
        device="cpu",
    )


def encode_corpus(sequences: list[list[str]], tokenizer):
    import torch

    vocab = tokenizer.get_vocab()
    bos = tokenizer.bos_token_id
    return torch.tensor([[bos] + [vocab[w] for w in seq] for seq in sequences], dtype=torch.long)


def train_model(model, tokens, cfg: BuildConfig, seed: int, verbose: bool = False) -> dict:
    """Next-token training (AdamW, warm-up then cosine decay); returns training stats."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lm_lr, betas=(0.9, 0.98), weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < cfg.lm_warmup:
            return (step + 1) / cfg.lm_warmup
        t = (step - cfg.lm_warmup) / max(1, cfg.lm_steps - cfg.lm_warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    n = tokens.shape[0]
    perm = torch.randperm(n, generator=gen)
    pos = 0
    losses = []
    t0 = time.time()
    for step in range(cfg.lm_steps):
        if pos + cfg.lm_batch > n:
            perm = torch.randperm(n, generator=gen)
            pos = 0
        batch = tokens[perm[pos : pos + cfg.lm_batch]]
        pos += cfg.lm_batch
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if verbose and (step + 1) % max(1, cfg.lm_steps // 10) == 0:
            _log(
                True,
                f"LM step {step + 1}/{cfg.lm_steps} loss {sum(losses[-50:]) / len(losses[-50:]):.4f} "
                f"({time.time() - t0:.0f}s)",
            )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return {"steps": cfg.lm_steps, "batch": cfg.lm_batch, "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 5)}


# ---------------------------------------------------------------------------------------------
# SAEs (SAELens's own training runner)


@contextlib.contextmanager
def _quiet_sae_lens(progress: bool = False):
    """Silence SAELens's logger, warnings and (unless ``progress``) progress bars; keep the process
    signal handlers as they were (the runner installs its own)."""
    import importlib

    logger = logging.getLogger("sae_lens")
    old_level = logger.level
    logger.setLevel(logging.ERROR)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    patched = []
    if not progress:
        for modname in (
            "sae_lens.training.sae_trainer",
            "sae_lens.training.activation_scaler",
            "sae_lens.training.activations_store",
        ):
            try:
                mod = importlib.import_module(modname)
            except ImportError:
                continue
            orig = getattr(mod, "tqdm", None)
            if orig is None:
                continue

            def quiet(*args, _orig=orig, **kwargs):
                kwargs["disable"] = True
                return _orig(*args, **kwargs)

            mod.tqdm = quiet
            patched.append((mod, orig))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for mod, orig in patched:
            mod.tqdm = orig
        logger.setLevel(old_level)
        for s, h in handlers.items():
            try:
                signal.signal(s, h)
            except (ValueError, TypeError):  # not the main thread / handler not settable
                pass


def train_sae(model, dataset, hook: str, cfg: BuildConfig, seed: int, progress: bool = False):
    """One standard (ReLU, L1) SAE at ``hook`` trained with ``LanguageModelSAETrainingRunner``."""
    import torch
    from sae_lens import (
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
        StandardTrainingSAEConfig,
    )

    d_in = cfg.d_model
    steps = cfg.sae_tokens // cfg.sae_batch_tokens
    sae_cfg = StandardTrainingSAEConfig(
        d_in=d_in,
        d_sae=cfg.sae_expansion * d_in,
        l1_coefficient=cfg.sae_l1_overrides.get(hook, cfg.sae_l1),
        l1_warm_up_steps=steps // 10,
        normalize_activations="expected_average_only_in",
        device="cpu",
        dtype="float32",
    )
    runner_cfg = LanguageModelSAERunnerConfig(
        sae=sae_cfg,
        model_name="sfc-toy",
        model_class_name="HookedTransformer",
        hook_name=hook,
        dataset_path="sfc-toy-corpus",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=cfg.n_ctx,
        n_batches_in_buffer=4 * cfg.sae_batch_tokens // cfg.n_ctx,
        training_tokens=cfg.sae_tokens,
        store_batch_size_prompts=32,
        train_batch_size_tokens=cfg.sae_batch_tokens,
        device="cpu",
        seed=seed,
        prepend_bos=True,
        lr=cfg.sae_lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=steps // 20,
        lr_decay_steps=steps // 5,
        logger=LoggingConfig(log_to_wandb=False),
        n_checkpoints=0,
        checkpoint_path=None,
        output_path=None,
        verbose=progress,
        model_from_pretrained_kwargs={},
        n_batches_for_norm_estimate=16,
        dead_feature_window=max(10, steps // 4),
        feature_sampling_window=max(20, steps // 2),
    )
    torch.manual_seed(seed)  # the runner does not seed from cfg.seed
    with _quiet_sae_lens(progress):
        runner = LanguageModelSAETrainingRunner(runner_cfg, override_model=model, override_dataset=dataset)
        sae = runner.run()
    sae.cfg.metadata.hook_name = hook
    sae.cfg.metadata.model_name = "sfc-toy"
    return sae


# ---------------------------------------------------------------------------------------------
# evaluation


def _prompt_batches(model, records: list[dict]):
    """Distinct (prompt, right answer, wrong answer) triples of pair records, as token tensors."""
    import torch

    prompts, right, wrong = [], [], []
    seen = set()
    for r in records:
        for prefix, ans, other in (
            (r["clean_prefix"], r["clean_answer"], r["patch_answer"]),
            (r["patch_prefix"], r["patch_answer"], r["clean_answer"]),
        ):
            if (prefix, ans) in seen:
                continue
            seen.add((prefix, ans))
            prompts.append(prefix)
            right.append(_single_token(model, ans))
            wrong.append(_single_token(model, other))
    toks = [model.to_tokens(p)[0] for p in prompts]
    lengths = {len(t) for t in toks}
    if len(lengths) != 1:
        raise ValueError(f"prompts of unequal token lengths {sorted(lengths)}")
    return torch.stack(toks), torch.tensor(right), torch.tensor(wrong)


def _single_token(model, answer: str) -> int:
    ids = model.to_tokens(answer, prepend_bos=False)[0]
    if len(ids) != 1:
        raise ValueError(f"answer {answer!r} is {len(ids)} tokens, not one")
    return int(ids[0])


def agreement_accuracy(model, records: list[dict], fwd_hooks=(), batch_size: int = 512) -> float:
    """Fraction of prompts (clean and patch) whose right answer out-scores the wrong one."""
    import torch

    tokens, right, wrong = _prompt_batches(model, records)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(tokens), batch_size):
            logits = model.run_with_hooks(tokens[i : i + batch_size], fwd_hooks=list(fwd_hooks))[:, -1]
            rows = torch.arange(logits.shape[0])
            correct += int((logits[rows, right[i : i + batch_size]] > logits[rows, wrong[i : i + batch_size]]).sum())
    return correct / len(tokens)


def splice_hooks(saes: dict) -> list:
    """Forward hooks replacing each hooked activation by its SAE reconstruction (no error term)."""

    def make(sae):
        def hook(act, hook):  # noqa: ARG001
            return sae.decode(sae.encode(act)).to(act.dtype)

        return hook

    return [(name, make(sae)) for name, sae in saes.items()]


def sae_quality(model, saes: dict, tokens) -> dict:
    """L0, fraction of variance unexplained and dead-feature fraction of each SAE on ``tokens``."""
    import torch

    out = {}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=list(saes))
        for name, sae in saes.items():
            x = cache[name].reshape(-1, cache[name].shape[-1]).float()
            f = sae.encode(x)
            x_hat = sae.decode(f)
            fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
            out[name] = {
                "d_in": int(sae.cfg.d_in),
                "d_sae": int(sae.cfg.d_sae),
                "l0": round(float((f > 0).float().sum(-1).mean()), 3),
                "fvu": round(float(fvu), 5),
                "dead_fraction": round(float(((f > 0).sum(0) == 0).float().mean()), 4),
            }
    return out


def evaluate(model, saes: dict, data_dir: Path, eval_tokens) -> dict:
    """The quality numbers of the report (accuracy, SAE quality, spliced accuracy)."""
    acc, spliced, n = {}, {}, {}
    hooks = splice_hooks(saes)
    for cond in CONDITIONS:
        recs = read_jsonl(data_dir / f"sva-{cond}.test.jsonl")
        n[cond] = len(recs)
        acc[cond] = round(agreement_accuracy(model, recs), 5)
        spliced[cond] = round(agreement_accuracy(model, recs, fwd_hooks=hooks), 5)
    return {
        "accuracy": acc,
        "n_test_pairs": n,
        "saes": sae_quality(model, saes, eval_tokens),
        "spliced_accuracy": spliced,
        "eval_tokens": int(eval_tokens.numel()),
    }


# ---------------------------------------------------------------------------------------------
# the build


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def build(
    out_dir: str | Path, seed: int = 0, reduced: bool = False, verbose: bool = True, config: BuildConfig | None = None
) -> dict:
    """Regenerate every toy artifact in ``out_dir`` from ``seed``; returns the quality report."""
    import torch
    from transformer_lens import HookedTransformer

    from ..models import load_model, save_model

    t_start = time.time()
    cfg = config or (BuildConfig.small() if reduced else BuildConfig.full())
    out = Path(out_dir)  # an empty staging directory (see sfc_plugin.toy.build)
    out.mkdir(parents=True, exist_ok=True)

    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    # one thread: the tiny matrices gain nothing from more, and results do not depend on core count
    torch.set_num_threads(1)
    try:
        # 1. datasets
        datasets = L.make_datasets(seed, reduced=cfg.reduced)
        for name, recs in datasets.items():
            write_jsonl(out / "data" / f"{name}.jsonl", recs)
        _log(verbose, f"datasets: {', '.join(f'{k} ({len(v)})' for k, v in datasets.items())}")

        # 2. tokenizer, corpus
        tokenizer = build_tokenizer(out / "model" / "tokenizer")
        exclude = L.held_out_prompts(datasets)
        bios_test = {b["text"] for b in datasets["bios.test"] + datasets.get("bios.val", [])}
        train_seqs = L.corpus(seed, cfg.lm_sequences, cfg.n_ctx - 1, exclude, bios_test, stream="train")
        eval_seqs = L.corpus(seed, cfg.eval_sequences, cfg.n_ctx - 1, exclude, bios_test, stream="eval")
        train_tokens = encode_corpus(train_seqs, tokenizer)
        eval_tokens = encode_corpus(eval_seqs, tokenizer)

        # 3. language model
        random.seed(seed)
        torch.manual_seed(seed)
        model = HookedTransformer(model_config(cfg, len(tokenizer.get_vocab()), seed), tokenizer=tokenizer)
        t0 = time.time()
        lm_stats = train_model(model, train_tokens, cfg, seed, verbose)
        lm_stats["train_seconds"] = round(time.time() - t0, 1)
        save_model(model, out / "model")
        _portable_tokenizer_config(out / "model" / "tokenizer")
        # train the SAEs on what ships, as it will be loaded (save_model may also touch model.cfg)
        model = load_model(out / "model")
        for p in model.parameters():
            p.requires_grad_(False)
        _log(verbose, f"LM trained in {lm_stats['train_seconds']}s (loss {lm_stats['final_loss']})")

        # 4. SAEs
        from datasets import Dataset

        dataset = Dataset.from_dict({"tokens": train_tokens.tolist()})
        saes = {}
        t0 = time.time()
        for i, hook in enumerate(hook_names(cfg.n_layers)):
            sae = train_sae(model, dataset, hook, cfg, seed * 1000 + i)
            sae.eval()
            for p in sae.parameters():
                p.requires_grad_(False)
            sae.save_inference_model(str(out / "saes" / hook))
            cfg_file = out / "saes" / hook / "cfg.json"  # stable key order: byte-identical rebuilds
            cfg_file.write_text(json.dumps(json.loads(cfg_file.read_text()), sort_keys=True, indent=1) + "\n")
            saes[hook] = sae
            _log(verbose, f"SAE {hook} trained ({time.time() - t0:.0f}s)")
        sae_seconds = round(time.time() - t0, 1)

        # 5. report
        from sae_lens import SAE

        model = load_model(out / "model")  # evaluate what ships, as it will be loaded
        saes = {h: SAE.load_from_disk(str(out / "saes" / h)) for h in hook_names(cfg.n_layers)}
        quality = evaluate(model, saes, out / "data", eval_tokens)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)

    import sae_lens
    import transformer_lens

    report = {
        "schema": "sfc-toy-report/1",
        "seed": seed,
        "reduced": cfg.reduced,
        **quality,
        "model": {
            "n_layers": cfg.n_layers,
            "d_model": cfg.d_model,
            "n_heads": cfg.n_heads,
            "d_mlp": cfg.d_mlp,
            "n_ctx": cfg.n_ctx,
            "d_vocab": len(tokenizer.get_vocab()),
            "n_params": int(sum(p.numel() for p in model.parameters())),
            "train_sequences": cfg.lm_sequences,
            **lm_stats,
        },
        "sae_training": {
            "architecture": "standard",
            "expansion": cfg.sae_expansion,
            "training_tokens": cfg.sae_tokens,
            "batch_tokens": cfg.sae_batch_tokens,
            "lr": cfg.sae_lr,
            "l1_coefficient": cfg.sae_l1,
            "l1_overrides": cfg.sae_l1_overrides,
            "normalize_activations": "expected_average_only_in",
            "seconds": sae_seconds,
        },
        "build_seconds": round(time.time() - t_start, 1),
        "artifact_bytes": dir_size(out),  # everything but report.json itself
        "versions": {
            "torch": torch.__version__,
            "sae_lens": sae_lens.__version__,
            "transformer_lens": getattr(transformer_lens, "__version__", "unknown"),
        },
    }
    from ..files import strict_json

    (out / "report.json").write_text(strict_json(report, indent=1) + "\n")
    for f in out.rglob("*"):
        if f.is_file():
            f.chmod(0o644)
    _log(verbose, f"done in {report['build_seconds']}s, {report['artifact_bytes'] / 1e6:.2f} MB")
    return report
