"""The plain texts SHIFT reads besides its labelled data: the toy world's corpus or a user's text file.

Loaded as token rows (BOS first, right-padded), for feature evidence and for the next-token loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import Batch
from ..errors import SFCError

TOY_MODEL_NAME = "sfc-toy"
TOY_LOSS_SEQUENCES = 256
TOY_CONTEXTS = 2048


@dataclass
class Text:
    """Token sequences (``[n, L]``, right-padded) and ``mask``: the positions whose token is predicted."""

    name: str
    tokens: torch.Tensor
    mask: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())


def is_toy(model) -> bool:
    return getattr(model.cfg, "model_name", None) == TOY_MODEL_NAME


def toy_text(model, n_sequences: int = TOY_LOSS_SEQUENCES, seed: int = 0) -> Text:
    """The toy build's evaluation corpus (the ``eval`` stream its report measures SAEs on): fresh sentences
    of the toy language, packed into sequences of the model's context length, BOS first."""
    from ..toy import language as L

    datasets = L.make_datasets(seed)
    held_out = {b["text"] for b in datasets["bios.test"] + datasets["bios.val"]}
    seqs = L.corpus(seed, n_sequences, model.cfg.n_ctx - 1, L.held_out_prompts(datasets), held_out, stream="eval")
    vocab = model.tokenizer.get_vocab()
    missing = sorted({w for s in seqs for w in s} - set(vocab))
    if missing:
        raise SFCError(f"the toy corpus needs the toy tokenizer: word {missing[0]!r} is not in the model's vocabulary")
    tokens = torch.tensor([[model.tokenizer.bos_token_id] + [vocab[w] for w in s] for s in seqs], dtype=torch.long)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    return Text(f"toy corpus (eval stream, {n_sequences} sequences)", tokens, mask)


def texts_to_tokens(model, texts: list[str], name: str) -> Text:
    """Each text tokenised with BOS, cut to the model's context length, right-padded."""
    if not texts:
        raise SFCError(f"text {name!r} is empty")
    seqs = [model.to_tokens(t)[0][: model.cfg.n_ctx] for t in texts]
    width = max(len(s) for s in seqs)
    pad = getattr(model.tokenizer, "pad_token_id", None) or 0
    tokens = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s.cpu()
        mask[i, 1 : len(s)] = True
    if not mask.any():
        raise SFCError(f"text {name!r} has no token to predict")
    return Text(name, tokens, mask)


def read_text(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, one document each."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SFCError(f"text file {str(path)!r} cannot be read ({exc})".splitlines()[0]) from None
    return [line for line in lines if line.strip()]


def batch_of(tokens: torch.Tensor, lengths: list[int]) -> Batch:
    """Token rows (right-padded) as a text-only ``Batch``."""
    return Batch(tokens, None, None, None, torch.tensor([n - 1 for n in lengths], dtype=torch.long), [])


def toy_texts(model, n: int = TOY_CONTEXTS, seed: int = 0) -> Batch:
    """Generic toy-language text: ``n`` contexts of the model's length (BOS first), a fresh sample of the
    corpus the toy model was trained on (agreement sentences, filler, biographies of every kind)."""
    from ..toy import language as L

    vocab = model.tokenizer.get_vocab()
    seqs = L.corpus(seed, n, model.cfg.n_ctx - 1, stream="dashboards")
    missing = sorted({w for s in seqs for w in s} - set(vocab))
    if missing:
        raise SFCError(f"the toy corpus needs the toy tokenizer: word {missing[0]!r} is not in the model's vocabulary")
    tokens = torch.tensor([[model.tokenizer.bos_token_id] + [vocab[w] for w in s] for s in seqs], dtype=torch.long)
    return batch_of(tokens, [tokens.shape[1]] * len(seqs))


def text_file(model, path) -> Batch:
    """A UTF-8 text file, one document per non-empty line, each cut to the model's context length."""
    seqs = [model.to_tokens(t)[0][: model.cfg.n_ctx].cpu() for t in read_text(path)]
    if not seqs:
        raise SFCError(f"evidence text {str(path)!r} is empty")
    pad = getattr(model.tokenizer, "pad_token_id", None) or 0
    tokens = torch.full((len(seqs), max(len(s) for s in seqs)), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
    return batch_of(tokens, [len(s) for s in seqs])
