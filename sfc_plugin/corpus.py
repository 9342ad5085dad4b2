"""Text corpora as fixed-length token contexts (for dashboards and other passes over plain text).

:func:`load_corpus` accepts

- ``None`` or ``"toy"``: a fresh sample of the toy world's language (seeded; the toy tokenizer);
- a text file: one document per non-empty line;
- a JSON-lines file: one document per line, a JSON string or an object with a ``"text"`` field;
- a local Hugging Face ``datasets`` directory (``Dataset.save_to_disk``; a ``DatasetDict`` uses its
  ``train`` split, else its first), column ``"text"``.

Documents are tokenised without special tokens, cut into chunks of ``context_size - 1`` tokens and
each chunk gets the tokenizer's BOS token in front (when it has one). ``mask`` marks the real tokens
that count (not BOS, not padding).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SFCError

TOY = "toy"
TOY_CONTEXTS = 2048  # default number of toy contexts (32 tokens each: 63,488 counted tokens)


@dataclass
class Corpus:
    """``tokens`` ``[n, L]`` (long), ``mask`` ``[n, L]`` (bool: tokens that count), ``name``."""

    name: str
    tokens: Any
    mask: Any

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def context_size(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())

    def fingerprint(self) -> str:
        """sha256 of the token ids and the mask (what every result computed from the corpus depends on)."""
        h = hashlib.sha256(f"{tuple(self.tokens.shape)}".encode())
        h.update(self.tokens.to("cpu").contiguous().numpy().astype("<i8").tobytes())
        h.update(self.mask.to("cpu").contiguous().numpy().astype("u1").tobytes())
        return h.hexdigest()

    def info(self) -> dict:
        return {
            "name": self.name,
            "n_contexts": len(self),
            "context_size": self.context_size,
            "n_tokens": self.n_tokens,
            "fingerprint": self.fingerprint(),
        }


def _toy_corpus(model, n_contexts: int, context_size: int, seed: int) -> Corpus:
    import torch

    from .toy import language as L

    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise SFCError("corpus 'toy' needs a model with a tokenizer")
    vocab = tok.get_vocab()
    seqs = L.corpus(seed, n_contexts, context_size - 1, stream="dashboards")
    missing = sorted({w for s in seqs for w in s} - set(vocab))
    if missing:
        raise SFCError(f"corpus 'toy' needs the toy tokenizer: word {missing[0]!r} is not in the model's vocabulary")
    tokens = torch.tensor([[tok.bos_token_id] + [vocab[w] for w in s] for s in seqs], dtype=torch.long)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    return Corpus(TOY if seed == 0 else f"{TOY}:seed={seed}", tokens, mask)


def _documents(path: Path, text_field: str) -> Iterator[str]:
    if path.is_dir():
        try:
            from datasets import DatasetDict, load_from_disk
        except ImportError:  # pragma: no cover - datasets comes with sae-lens
            raise SFCError(
                f"corpus {str(path)!r} is a directory, but the 'datasets' package is not installed"
            ) from None
        try:
            ds = load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure means: not a saved dataset
            raise SFCError(
                f"corpus {str(path)!r} is not a Hugging Face datasets directory ({type(exc).__name__})"
            ) from None
        if isinstance(ds, DatasetDict):
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
        if text_field not in ds.column_names:
            raise SFCError(f"corpus {str(path)!r} has no column {text_field!r} (columns: {', '.join(ds.column_names)})")
        for row in ds:
            yield str(row[text_field])
        return
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise SFCError(f"corpus {str(path)!r} cannot be read ({exc.strerror})") from None
    with fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if not jsonl:
                    yield line.rstrip("\n")
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SFCError(f"corpus {str(path)!r} line {lineno}: not JSON ({exc.msg})") from None
                if isinstance(rec, dict) and isinstance(rec.get(text_field), str):
                    yield rec[text_field]
                elif isinstance(rec, str):
                    yield rec
                else:
                    raise SFCError(
                        f"corpus {str(path)!r} line {lineno}: needs a string or an object with a {text_field!r} string"
                    )
        except UnicodeDecodeError:
            raise SFCError(f"corpus {str(path)!r} is not UTF-8 text") from None


def _chunks(docs: Iterable[str], tokenizer, size: int, limit: int) -> Iterator[list[int]]:
    body = size - (tokenizer.bos_token_id is not None)
    for doc in docs:
        ids = tokenizer.encode(doc, add_special_tokens=False)
        for i in range(0, len(ids), body):
            yield ids[i : i + body]
            limit -= 1
            if limit <= 0:
                return


def load_corpus(
    spec: str | Path | Corpus | None = None,
    model=None,
    *,
    context_size: int | None = None,
    n_contexts: int | None = None,
    text_field: str = "text",
    seed: int = 0,
) -> Corpus:
    """The corpus named by ``spec`` (see the module docstring), tokenised with ``model.tokenizer``.

    ``context_size`` defaults to 32 for the toy corpus and ``min(model.cfg.n_ctx, 128)`` otherwise;
    ``n_contexts`` caps the number of contexts (toy default 2048; files: all of them).
    """
    if isinstance(spec, Corpus):
        return spec
    import torch

    if context_size is not None and int(context_size) < 2:
        raise SFCError(f"context size must be at least 2, got {context_size!r}")
    if n_contexts is not None and int(n_contexts) < 1:
        raise SFCError(f"number of contexts must be at least 1, got {n_contexts!r}")
    if spec is None or str(spec) == TOY:
        if model is None:
            raise SFCError("corpus 'toy' needs the model (its tokenizer)")
        return _toy_corpus(model, int(n_contexts or TOY_CONTEXTS), int(context_size or 32), seed)
    path = Path(spec)
    if not path.exists():
        raise SFCError(f"corpus {str(spec)!r}: no such file or directory (nor the name 'toy')")
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise SFCError(f"corpus {str(spec)!r} needs a model with a tokenizer")
    size = int(context_size or min(int(model.cfg.n_ctx), 128))
    rows = list(_chunks(_documents(path, text_field), tok, size, int(n_contexts or 10**12)))
    rows = [r for r in rows if r]
    if not rows:
        raise SFCError(f"corpus {str(spec)!r} has no text")
    bos = tok.bos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    tokens = torch.full((len(rows), size), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), size), dtype=torch.bool)
    start = int(bos is not None)
    for i, ids in enumerate(rows):
        if bos is not None:
            tokens[i, 0] = bos
        tokens[i, start : start + len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[i, start : start + len(ids)] = True
    return Corpus(str(spec), tokens, mask)


def token_strings(tokenizer, ids: Iterable[int]) -> dict[int, str]:
    """``{id: text}`` for display. Tokenizers whose decoder joins tokens with spaces (word-level ones)
    get a leading space on every token, as byte-level BPE tokens already have."""
    ids = sorted({int(i) for i in ids})
    out = {i: tokenizer.decode([i]) for i in ids}
    if len(ids) >= 2:
        a, b = ids[0], ids[-1]
        if tokenizer.decode([a, b]) == out[a] + " " + out[b] and not out[b].startswith(" "):
            out = {i: (s if s.startswith(" ") else " " + s) for i, s in out.items()}
    return out
