"""Corpora for behaviour clustering: the toy world's (labelled), a text / JSON-lines file, a local
Hugging Face ``datasets`` directory.

A corpus is a list of :class:`Document`: text (tokenised later by the model) or word lists with one
category label per word (the toy world's generator knows which kind of sentence each word is in).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import SFCError

TOY = "toy"
TOY_KINDS = ("agreement", "filler", "biography")


@dataclass
class Document:
    text: str
    categories: dict[str, list[str]] | None = None  # per category name, one label per word (toy corpus)


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
    from ..toy import language as L

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


def _from_jsonl(path: Path) -> list[Document]:
    docs = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SFCError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            text = rec if isinstance(rec, str) else rec.get("text") if isinstance(rec, dict) else None
            if not isinstance(text, str):
                raise SFCError(f"{path}:{lineno}: expected a string or an object with a 'text' string")
            docs.append(Document(text))
    return docs


def _from_hf_dir(path: Path) -> list[Document]:
    try:
        import datasets
    except ImportError:
        raise SFCError(f"corpus {str(path)!r} is a directory: reading it needs the 'datasets' package") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise SFCError(
            f"corpus {str(path)!r}: not a Hugging Face datasets directory ({str(exc).splitlines()[0]})"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else sorted(ds)[0]
        ds = ds[split]
    if "text" not in ds.column_names:
        raise SFCError(f"corpus {str(path)!r} has no 'text' column (columns: {', '.join(ds.column_names)})")
    return [Document(t) for t in ds["text"] if isinstance(t, str) and t.strip()]


def load_corpus(spec: str | Path | None, n_documents: int, seed: int = 0) -> Iterable[Document]:
    """Documents of a corpus: ``"toy"`` (default), a ``.txt`` file (one document per non-empty
    line), a ``.jsonl`` file (strings or objects with ``"text"``) or a ``datasets`` directory
    (``save_to_disk``; its ``train`` split or first split, column ``text``). At most ``n_documents``
    (the toy corpus is generated lazily, as many documents as are read)."""
    if spec is None or str(spec) == TOY:
        return toy_documents(n_documents, seed=seed)
    path = Path(spec)
    if path.is_dir():
        docs = _from_hf_dir(path)
    elif path.is_file():
        if path.suffix in (".jsonl", ".json"):
            docs = _from_jsonl(path)
        else:
            docs = [Document(line.strip()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        raise SFCError(f"corpus {str(spec)!r} is neither 'toy' nor an existing file or directory")
    if not docs:
        raise SFCError(f"corpus {str(spec)!r} has no documents")
    return docs[:n_documents]
