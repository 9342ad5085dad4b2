"""Every text source, read one way and packed into token rows.

A text source (``--corpus``, ``--text``, ``--evidence-text``; :data:`TEXT_HELP`) is

- ``"toy"``: the toy world's language, generated (each caller has its own stream, below);
- a text file: one document per non-empty line (the line as written, without its line ending);
- a JSON-lines file (``.jsonl``, ``.ndjson``, ``.json``): per line a JSON string or an object with a
  ``"text"`` string;
- a directory: a Hugging Face dataset saved with ``save_to_disk`` (a ``DatasetDict`` gives its
  ``train`` split, else its first), or a folder of ``.parquet`` / ``.arrow`` files (e.g. a hub
  snapshot: files of the ``train`` split when their names say so, else all), column ``"text"``;
  rows whose text is null or blank are skipped.

:func:`read_texts` reads every kind but ``"toy"`` with the same one-line errors. Two packers turn
documents into a :class:`Corpus` (token rows and the mask of the tokens that count):

- :func:`load_corpus` — fixed windows: each document tokenised without special tokens, cut into
  windows of ``context_size - 1`` tokens with BOS in front (dashboards; :func:`windows` also cuts
  the clusters' documents);
- :func:`load_text` — whole documents: each tokenised as the model does (``model.to_tokens``) and
  cut to the model's context (SHIFT's next-token loss and feature evidence).

Toy streams, each the text its caller has always used: :func:`toy_rows` (``"dashboards"``: a fresh
sample of the training mix, for dashboards and SHIFT's evidence; ``"eval"``: the build's held-out
evaluation stream, for SHIFT's loss) and :func:`toy_documents` (clusters: text with each word's
sentence kind and role).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any

from .errors import SFCError

TOY = "toy"
TOY_MODEL_NAME = "sfc-toy"
TOY_CONTEXTS = 2048  # default number of toy contexts (32 tokens each: 63,488 counted tokens)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
TEXT_HELP = (
    "'toy' (the toy world's language), a text file (one document per line), a JSON-lines file "
    '(a string or {"text": ...} per line), or a directory: a Hugging Face dataset (save_to_disk) or '
    "parquet/arrow files with a 'text' column"
)


@dataclass
class Corpus:
    """Token rows: ``tokens`` ``[n, L]`` (long, right-padded), ``mask`` ``[n, L]`` (bool: the tokens that
    count — not BOS, not padding), ``name``."""

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

    @classmethod
    def from_batch(cls, batch, name: str, bos: int | None = None) -> Corpus:
        """The clean prompts of a :class:`~sfc_plugin.data.Batch` (on the CPU); BOS tokens do not count."""
        mask = batch.valid.clone()
        if bos is not None:
            mask &= batch.clean != bos
        return cls(name, batch.clean.cpu(), mask.cpu())


@dataclass
class Document:
    """A document's text and, for the toy corpus, one label per word under each category name."""

    text: str
    categories: dict[str, list[str]] | None = None


def is_toy(model) -> bool:
    """Whether ``model`` is the toy world's (whose default text is the toy language)."""
    return getattr(model.cfg, "model_name", None) == TOY_MODEL_NAME


# ---------------------------------------------------------------------------------------------
# reading


def read_texts(spec: str | Path, what: str = "corpus", text_field: str = "text") -> Iterator[str]:
    """The documents of a file or directory (see the module docstring), read lazily. ``what`` names the
    source in errors (``corpus``, ``text``, ``evidence text``). A missing, unreadable or empty source and a
    bad first record fail here, before anything is computed; a later bad line fails when it is read."""
    docs = _texts(Path(spec), str(spec), what, text_field)
    first = next(docs, None)
    if first is None:
        raise SFCError(f"{what} {str(spec)!r} has no text")
    return chain([first], docs)


def _texts(path: Path, spec: str, what: str, text_field: str) -> Iterator[str]:
    if not path.exists():
        raise SFCError(f"{what} {spec!r} is neither 'toy' nor an existing file or directory")
    if path.is_dir() or path.suffix.lower() in (".parquet", ".arrow"):
        yield from _texts_of_rows(dataset_rows(path, [text_field], what=what), spec, what, text_field)
        return
    jsonl = path.suffix.lower() in JSONL_SUFFIXES
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise SFCError(f"{what} {spec!r} cannot be read ({exc.strerror or type(exc).__name__})") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise SFCError(
                    f"{what} {spec!r} line {lineno}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1})"
                ) from None
            if not line.strip():
                continue
            if not jsonl:
                yield line
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SFCError(f"{what} {spec!r} line {lineno}: not JSON ({exc.msg})") from None
            text = rec.get(text_field) if isinstance(rec, dict) else rec
            if not isinstance(text, str):
                raise SFCError(
                    f"{what} {spec!r} line {lineno}: needs a string or an object with a {text_field!r} string"
                )
            yield text


def _texts_of_rows(rows: Iterable[dict], spec: str, what: str, text_field: str) -> Iterator[str]:
    for row in rows:
        text = row[text_field]
        if text is None or (isinstance(text, str) and not text.strip()):
            continue
        if not isinstance(text, str):
            raise SFCError(f"{what} {spec!r}: column {text_field!r} holds {type(text).__name__} values, not text")
        yield text


def dataset_rows(
    path: str | Path, columns: list[str] | None = None, split: str | None = None, what: str = "dataset"
) -> Iterator[dict]:
    """Rows (dicts of ``columns``, default all) of a local dataset, without network or cache: a
    ``save_to_disk`` directory (a ``DatasetDict``: ``split``, default ``train``, else its first), a
    ``.parquet`` / ``.arrow`` file, or a folder of them (searched recursively; the files of ``split``,
    default ``train`` when some file names say so, else all, in name order)."""
    path = Path(path)
    spec = str(path)
    if not path.exists():
        raise SFCError(f"{what} {spec!r} does not exist")
    if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        yield from _saved_dataset(path, spec, columns, split, what)
        return
    if path.is_file():
        files = [path]
    else:
        files = sorted(path.rglob("*.parquet")) or sorted(path.rglob("*.arrow"))
        if not files:
            raise SFCError(
                f"{what} {spec!r} is a directory but neither a Hugging Face dataset (save_to_disk) "
                "nor a folder of .parquet/.arrow files"
            )
        splits = {f: _split_of(f.relative_to(path)) for f in files}
        if split is not None or "train" in splits.values():
            want = split or "train"
            chosen = [f for f in files if splits[f] == want]
            if not chosen:
                have = sorted({s for s in splits.values() if s})
                raise SFCError(f"{what} {spec!r} has no split {want!r} (splits: {', '.join(have) or 'none named'})")
            files = chosen
    for f in files:
        yield from _arrow_rows(f, spec, columns, what)


def _split_of(rel: Path) -> str | None:
    """The split a dataset file belongs to by the hub's naming (``train-00000-of-00001.parquet``,
    ``train/0000.parquet``, ``train.parquet``)."""
    for part in rel.parts[:-1]:
        if part in ("train", "test", "validation", "dev", "val"):
            return part
    return re.split(r"[-_.]", rel.name, maxsplit=1)[0] or None


def _saved_dataset(path: Path, spec: str, columns, split, what) -> Iterator[dict]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets comes with sae-lens
        raise SFCError(f"{what} {spec!r} is a saved dataset: reading it needs the 'datasets' package") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure means: not a readable saved dataset
        raise SFCError(
            f"{what} {spec!r} is not a readable Hugging Face dataset ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split is not None and split not in ds:
            raise SFCError(f"{what} {spec!r} has no split {split!r} (splits: {', '.join(ds)})")
        ds = ds[split or ("train" if "train" in ds else next(iter(ds)))]
    _check_columns(columns, ds.column_names, spec, what)
    if columns is not None:
        ds = ds.select_columns(columns)
    for batch in ds.iter(batch_size=1000):
        yield from _batch_rows(batch)


def _arrow_rows(f: Path, spec: str, columns, what) -> Iterator[dict]:
    import pyarrow as pa

    try:
        if f.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            source = pq.ParquetFile(str(f))
            names = source.schema_arrow.names
        else:
            try:
                source = pa.ipc.open_stream(pa.memory_map(str(f)))  # how datasets writes .arrow files
            except pa.ArrowInvalid:
                source = pa.ipc.open_file(pa.memory_map(str(f)))
            names = source.schema.names
    except (OSError, pa.ArrowException) as exc:
        raise SFCError(f"{what} {spec!r}: {f.name} cannot be read ({str(exc).splitlines()[0]})") from None
    _check_columns(columns, names, spec, what)
    if f.suffix.lower() == ".parquet":
        batches = source.iter_batches(batch_size=1000, columns=columns)
    else:
        batches = (b.select(columns) if columns is not None else b for b in source)
    for b in batches:
        yield from _batch_rows(b.to_pydict())


def _check_columns(columns, names, spec, what) -> None:
    for c in columns or ():
        if c not in names:
            raise SFCError(f"{what} {spec!r} has no column {c!r} (columns: {', '.join(names)})")


def _batch_rows(batch: dict) -> Iterator[dict]:
    keys = list(batch)
    for values in zip(*(batch[k] for k in keys)):
        yield dict(zip(keys, values))


# ---------------------------------------------------------------------------------------------
# packing


def windows(ids: list[int], size: int, bos: int | None) -> Iterator[tuple[int, list[int]]]:
    """``(offset, window)``: ``ids`` cut into consecutive windows of ``size`` tokens, BOS (when not None)
    first in each, so ``size - 1`` of ``ids`` per window; ``offset`` is where the window's tokens start in ``ids``."""
    step = size - (bos is not None)
    head = [] if bos is None else [bos]
    for lo in range(0, len(ids), step):
        yield lo, head + ids[lo : lo + step]


def _rows(rows: list, width: int, pad: int, bos: int | None) -> tuple[Any, Any]:
    """``rows`` (token lists or tensors) right-padded to ``width``, and the mask of their tokens less a leading BOS."""
    import torch

    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, ids in enumerate(rows):
        tokens[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        mask[i, int(bos is not None and len(ids) > 0 and int(ids[0]) == bos) : len(ids)] = True
    return tokens, mask


def _pad_id(tokenizer) -> int:
    return getattr(tokenizer, "pad_token_id", None) or 0


def load_corpus(
    spec: str | Path | Corpus | None = None,
    model=None,
    *,
    context_size: int | None = None,
    n_contexts: int | None = None,
    text_field: str = "text",
    seed: int = 0,
) -> Corpus:
    """Fixed windows of a text source (``None`` or ``"toy"``: the toy ``"dashboards"`` stream) for
    ``model.tokenizer``: documents tokenised without special tokens, cut into windows of
    ``context_size - 1`` tokens, each with BOS first (when the tokenizer has one) and right-padded.

    ``context_size`` defaults to 32 for the toy corpus and ``min(model.cfg.n_ctx, 128)`` otherwise;
    ``n_contexts`` caps the number of windows (toy default 2048; files: all of them).
    """
    if isinstance(spec, Corpus):
        return spec
    if context_size is not None and int(context_size) < 2:
        raise SFCError(f"context size must be at least 2, got {context_size!r}")
    if n_contexts is not None and int(n_contexts) < 1:
        raise SFCError(f"number of contexts must be at least 1, got {n_contexts!r}")
    if spec is None or str(spec) == TOY:
        if model is None:
            raise SFCError("corpus 'toy' needs the model (its tokenizer)")
        name = TOY if seed == 0 else f"{TOY}:seed={seed}"
        return toy_rows(model, int(n_contexts or TOY_CONTEXTS), int(context_size or 32), name, seed=seed)
    docs = read_texts(spec, "corpus", text_field)
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise SFCError(f"corpus {str(spec)!r} needs a model with a tokenizer")
    size = int(context_size or min(int(model.cfg.n_ctx), 128))
    bos = tok.bos_token_id
    rows = (w for doc in docs for _, w in windows(tok.encode(doc, add_special_tokens=False), size, bos))
    rows = list(islice(rows, int(n_contexts or 10**12)))
    if not rows:
        raise SFCError(f"corpus {str(spec)!r} has no text")
    return Corpus(str(spec), *_rows(rows, size, _pad_id(tok), bos))


def load_text(spec: str | Path | Iterable[str], model, what: str = "text", text_field: str = "text") -> Corpus:
    """Whole documents of a text source (not ``"toy"``) or of a list of strings: each tokenised by
    ``model.to_tokens`` (BOS first when the model prepends one), cut to ``model.cfg.n_ctx`` tokens,
    right-padded."""
    if isinstance(spec, (str, Path)):
        name, docs = str(spec), read_texts(spec, what, text_field)
    else:
        name, docs = "(texts)", [str(t) for t in spec]
    seqs = [model.to_tokens(t)[0][: model.cfg.n_ctx].cpu() for t in docs]
    if not seqs:
        raise SFCError(f"{what} {name!r} has no text")
    tok = model.tokenizer
    return Corpus(name, *_rows(seqs, max(len(s) for s in seqs), _pad_id(tok), tok.bos_token_id))


# ---------------------------------------------------------------------------------------------
# the toy world's text


def toy_rows(
    model, n: int, length: int, name: str, *, stream: str = "dashboards", seed: int = 0, what: str = "corpus"
) -> Corpus:
    """``n`` rows of ``length`` tokens of the toy language (BOS, then ``length - 1`` words; BOS does not
    count) from the toy generator's ``stream``: ``"dashboards"`` (a fresh sample of the training mix) or
    ``"eval"`` (the build's held-out evaluation stream: test prompts and biographies left out)."""
    import torch

    from .toy import language as L

    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise SFCError(f"{what} 'toy' needs a model with a tokenizer")
    if stream == "eval":
        data = L.make_datasets(seed)
        held_out = {b["text"] for b in data["bios.test"] + data["bios.val"]}
        seqs = L.corpus(seed, n, length - 1, L.held_out_prompts(data), held_out, stream="eval")
    else:
        seqs = L.corpus(seed, n, length - 1, stream=stream)
    vocab = tok.get_vocab()
    missing = sorted({w for s in seqs for w in s} - set(vocab))
    if missing:
        raise SFCError(f"{what} 'toy' needs the toy tokenizer: word {missing[0]!r} is not in the model's vocabulary")
    tokens = torch.tensor([[tok.bos_token_id] + [vocab[w] for w in s] for s in seqs], dtype=torch.long)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    return Corpus(name, tokens, mask)


PRONOUNS = {"She", "He", "she", "he", "her", "his"}


def role(words: list[str], i: int, kind: str) -> str:
    """The toy generator's role of ``words[i]`` in its sentence: what decides the word."""
    w = words[i]
    if w in PRONOUNS:
        return "gendered pronoun"
    if w == ".":
        return "end of sentence"
    if i == 0:
        return "start of sentence"
    if w in ("the", "a"):
        return "determiner"
    if w == ",":
        return "comma"
    return f"{kind} word"


def toy_documents(n: int, length: int = 31, seed: int = 0) -> Iterator[Document]:
    """``n`` documents of ``length`` words packed from the toy generator's sentences (the training
    corpus's 65/15/20 mix, a stream of its own). Each word has two categories: ``kind``, its
    sentence's kind (``agreement``, ``filler``, ``biography``), and ``role`` (:func:`role`)."""
    from .toy import language as L

    rng = random.Random(f"sfc-clusters-toy-{seed}")
    conditions = ("simple", "nounpp", "nounpp", "rc", "rc", "rc")
    for _ in range(n):
        words: list[str] = []
        kinds: list[str] = []
        roles: list[str] = []
        while len(words) < length:
            u = rng.random()
            if u < 0.65:
                sentence, kind = L.sva_sentence(rng, rng.choice(conditions))[0], "agreement"
            elif u < 0.80:
                sentence, kind = L.filler_sentence(rng), "filler"
            else:
                sentence, kind = L.bio_words(rng, rng.choice(L.PROFESSIONS), rng.choice(L.GENDERS)), "biography"
            words += sentence
            kinds += [kind] * len(sentence)
            roles += [role(sentence, i, kind) for i in range(len(sentence))]
        yield Document(L.detok(words[:length]), {"kind": kinds[:length], "role": roles[:length]})


def documents(spec: str | Path | None, n: int, seed: int = 0, what: str = "corpus") -> Iterator[Document]:
    """At most ``n`` documents of a text source, lazily (``None`` or ``"toy"``: :func:`toy_documents`)."""
    if spec is None or str(spec) == TOY:
        return toy_documents(n, seed=seed)
    return (Document(t) for t in islice(read_texts(spec, what), n))


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
