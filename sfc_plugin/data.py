"""Pair records (the paper's SVA field names), datasets, tokenisation into batches."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import SFCError
from .plugins import hookimpl

REQUIRED = ("clean_prefix", "clean_answer")


TEXT_FIELDS = ("clean_prefix", "patch_prefix", "clean_answer", "patch_answer")


class Records(list):
    """A list of pair records that remembers where each came from (``file:line``), for error messages;
    ``info``: what a dataset says about how it built them (e.g. ``bias_in_bios``'s counts)."""

    def __init__(self, records=(), where=None, source: str | None = None, info: dict | None = None):
        super().__init__(records)
        self.where = list(where) if where is not None else None
        self.source = source
        self.info = info

    def origin(self, i: int) -> str:
        """``example i`` plus its file and line when known."""
        return f"example {i}" + (f" ({self.where[i]})" if self.where and i < len(self.where) else "")

    def head(self, n: int | None) -> Records:
        if n is None:
            return self
        return Records(self[:n], None if self.where is None else self.where[:n], self.source, self.info)


def origin(records, i: int) -> str:
    return records.origin(i) if isinstance(records, Records) else f"example {i}"


def read_jsonl(path: str | Path) -> Records:
    """Pair records from a JSON-lines file (one JSON object per line; blank lines skipped).

    Bad bytes, bad JSON, non-finite numbers and non-objects are one-line errors naming file and line.
    """
    from .validation import read_text_lines, strict_json_loads

    records, where = [], []
    for lineno, line in read_text_lines(path, "data file"):
        if not line.strip():
            continue
        rec = strict_json_loads(line, f"{path}:{lineno}", one_line=True)
        if not isinstance(rec, dict):
            raise SFCError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        records.append(rec)
        where.append(f"{path}:{lineno}")
    return Records(records, where, str(path))


def _takes_argument(fn) -> bool:
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def load_dataset(name_or_path: str | Path, split: str | None = None, pm=None) -> list[dict]:
    """Records from a registered dataset name (e.g. ``"toy/sva-rc"``), ``NAME:ARG`` for a dataset that takes
    an argument (``"bias_in_bios:surgeon,nurse"``: the dataset's function is called as ``fn(split, ARG)``),
    or a JSON-lines path."""
    from .plugins import lookup, registry

    datasets = registry("dataset", pm)
    name = str(name_or_path)
    base, sep, arg = name.partition(":")
    if name not in datasets and sep and base in datasets and not Path(name).exists():
        fn = lookup("dataset", base, pm)
        if not _takes_argument(fn.resolve() if hasattr(fn, "resolve") else fn):
            raise SFCError(f"dataset {base!r} takes no argument, got {name!r}")
        records = fn(split, arg)
        if isinstance(records, (str, bytes)) or not hasattr(records, "__iter__"):
            raise SFCError(f"dataset {name!r} returned {type(records).__name__}, expected a list of records")
        return records if isinstance(records, Records) else list(records)
    if name in datasets:
        records = lookup("dataset", name, pm)(split)  # a plugin's failure is one line naming it
        if isinstance(records, (str, bytes)) or not hasattr(records, "__iter__"):
            raise SFCError(
                f"dataset {str(name_or_path)!r} ({datasets[str(name_or_path)].plugin}) returned "
                f"{type(records).__name__}, expected a list of records"
            )
        return records if isinstance(records, Records) else list(records)
    path = Path(name_or_path)
    if path.is_file():
        return read_jsonl(path)
    if path.is_dir():
        raise SFCError(f"data {str(name_or_path)!r} is a directory, expected a JSON-lines file or a dataset name")
    raise SFCError(
        f"unknown dataset {str(name_or_path)!r}: not a registered name ({', '.join(sorted(datasets)) or 'none'}) nor a file"
    )


def resolve_records(data: Any, n_examples: int | None = None, pm=None) -> Records:
    """Records from a sequence, a path or a dataset name; validated and optionally truncated."""
    from .validation import integer

    n_examples = integer(n_examples, "n_examples", minimum=1, optional=True)
    if isinstance(data, (str, Path)):
        records = load_dataset(data, pm=pm)
    elif isinstance(data, (bytes, dict)) or not hasattr(data, "__iter__"):
        raise SFCError(f"data must be pair records, a JSON-lines path or a dataset name, got {type(data).__name__}")
    else:
        records = data
    records = records if isinstance(records, Records) else Records(records)
    records = records.head(n_examples)
    if not records:
        raise SFCError(
            f"no examples in data {data if isinstance(data, (str, Path)) else records.source or '(sequence)'!s}"
        )
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise SFCError(f"{records.origin(i)}: expected a record (dict), got {type(rec).__name__}")
        missing = [k for k in REQUIRED if k not in rec]
        if missing:
            raise SFCError(f"{records.origin(i)} lacks field {missing[0]!r}")
        for key in TEXT_FIELDS:
            if key in rec and not isinstance(rec[key], str):
                raise SFCError(f"{records.origin(i)}: {key!r} must be a string, got {rec[key]!r}"[:300])
        for key in ("clean_prefix", "patch_prefix"):
            if key in rec and not rec[key].strip():
                raise SFCError(f"{records.origin(i)}: {key!r} is empty")
    has_patch = ["patch_prefix" in r for r in records]
    if any(has_patch) and not all(has_patch):
        raise SFCError(f"{records.origin(has_patch.index(False))} lacks 'patch_prefix' while others have it")
    return records


@dataclass
class Batch:
    """Tokenised pairs. ``last[i]`` is the index of prompt i's last token (the metric's position)."""

    clean: Any  # LongTensor [b, pos]
    patch: Any  # LongTensor [b, pos] or None (zero ablation)
    clean_answer: Any  # LongTensor [b]
    patch_answer: Any  # LongTensor [b] or None
    last: Any  # LongTensor [b]
    records: list

    @property
    def rows(self):
        import torch

        return torch.arange(self.clean.shape[0], device=self.clean.device)

    @property
    def valid(self):
        """Bool ``[b, pos]``: real (non-padding) positions."""
        import torch

        return torch.arange(self.clean.shape[1], device=self.clean.device)[None, :] <= self.last[:, None]

    def __len__(self) -> int:
        return self.clean.shape[0]

    def split(self, size: int):
        """Consecutive sub-batches of at most ``size`` examples, padding trimmed to each one's longest."""
        for lo in range(0, len(self), size):
            hi = min(lo + size, len(self))
            width = int(self.last[lo:hi].max()) + 1
            cut = lambda t, two_d=True: None if t is None else (t[lo:hi, :width] if two_d else t[lo:hi])  # noqa: E731
            yield Batch(
                cut(self.clean),
                cut(self.patch),
                cut(self.clean_answer, False),
                cut(self.patch_answer, False),
                cut(self.last, False),
                self.records[lo:hi],
            )

    def select(self, index) -> Batch:
        """The rows ``index`` (a LongTensor; repeats allowed), same width."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        idx = index.tolist()
        return replace(
            self,
            clean=pick(self.clean),
            patch=pick(self.patch),
            clean_answer=pick(self.clean_answer),
            patch_answer=pick(self.patch_answer),
            last=pick(self.last),
            records=[self.records[i] for i in idx],
        )

    def repeat(self, n: int) -> Batch:
        """The batch stacked ``n`` times along the batch dimension."""
        rep = lambda t: None if t is None else t.repeat(n, *([1] * (t.dim() - 1)))  # noqa: E731
        return replace(
            self,
            clean=rep(self.clean),
            patch=rep(self.patch),
            clean_answer=rep(self.clean_answer),
            patch_answer=rep(self.patch_answer),
            last=rep(self.last),
            records=self.records * n,
        )


def _unk_id(model) -> int | None:
    """The tokenizer's unknown-token id, when it has a real one (GPT-2's doubles as BOS/EOS: no unknown token)."""
    tok = getattr(model, "tokenizer", None)
    unk = getattr(tok, "unk_token_id", None)
    if unk is None or unk in {getattr(tok, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}:
        return None
    return int(unk)


def _check_tokens(model, ids, text: str, what: str, where: str, allow_unk: bool, context: bool = True) -> None:
    unk = _unk_id(model)
    if unk is not None and not allow_unk and bool((ids == unk).any()):
        tok = model.tokenizer
        raise SFCError(
            f"{where}: {what} {text!r} contains the unknown token {tok.unk_token!r} (a word outside the "
            f"vocabulary); fix the data or allow it with allow_unk=True (--allow-unk)"
        )
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if context and n_ctx is not None and ids.numel() > n_ctx:
        raise SFCError(f"{where}: {what} is {ids.numel()} tokens, longer than the model's context (n_ctx {n_ctx})")


def _single_token(model, text: str, what: str, where: str = "", allow_unk: bool = False) -> int:
    ids = model.to_tokens(text, prepend_bos=False, truncate=False)[0]
    if ids.numel() != 1:
        raise SFCError(f"{where + ': ' if where else ''}{what} {text!r} is {ids.numel()} tokens, expected exactly one")
    _check_tokens(model, ids, text, what, where or "answer", allow_unk, context=False)
    return int(ids[0])


def tokenize(model, records: Sequence[dict], device=None, allow_unk: bool = False) -> Batch:
    """Tokenise pair records (right-padded); clean and patch prompts must have equal token length.

    Words outside the vocabulary (the tokenizer's unknown token) are errors unless ``allow_unk``;
    prompts longer than the model's context are always errors (they would be cut, and the metric read mid-prompt).
    """
    import torch

    pad = getattr(model.tokenizer, "pad_token_id", None) or 0
    clean, patch, ca, pa = [], [], [], []
    for i, rec in enumerate(records):
        where = origin(records, i)
        # token ids, when a record carries them (contexts cut from a corpus), are used as they are
        if "clean_tokens" in rec:
            c = torch.tensor(rec["clean_tokens"], dtype=torch.long)
        else:
            c = model.to_tokens(rec["clean_prefix"], truncate=False)[0]
            _check_tokens(model, c, rec["clean_prefix"], "clean_prefix", where, allow_unk)
        clean.append(c)
        if "clean_answer_token" in rec:
            ca.append(int(rec["clean_answer_token"]))
        elif "clean_answer" in rec:
            ca.append(_single_token(model, rec["clean_answer"], "clean_answer", where, allow_unk))
        if "patch_prefix" in rec:
            p = model.to_tokens(rec["patch_prefix"], truncate=False)[0]
            _check_tokens(model, p, rec["patch_prefix"], "patch_prefix", where, allow_unk)
            if p.numel() != c.numel():
                raise SFCError(
                    f"{where}: clean_prefix {rec['clean_prefix']!r} is {c.numel()} tokens but patch_prefix {rec['patch_prefix']!r} is {p.numel()}"
                )
            patch.append(p)
            if "patch_answer" in rec:
                pa.append(_single_token(model, rec["patch_answer"], "patch_answer", where, allow_unk))
    if len(pa) not in (0, len(records)) or len(ca) not in (0, len(records)):
        raise SFCError("either every example or none has 'clean_answer' / 'patch_answer'")
    width = max(t.numel() for t in clean)

    def stack(seqs):
        out = torch.full((len(seqs), width), pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : s.numel()] = s
        return out.to(device)

    as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=device) if xs else None  # noqa: E731
    return Batch(
        clean=stack(clean),
        patch=stack(patch) if patch else None,
        clean_answer=as_long(ca),
        patch_answer=as_long(pa),
        last=as_long([t.numel() - 1 for t in clean]),
        records=list(records),
    )


@hookimpl
def sfc_datasets():
    """``bias_in_bios`` (SHIFT's splits of ``LabHC/bias_in_bios``, read offline: :mod:`sfc_plugin.bias_in_bios`);
    the toy world's datasets are registered by ``sfc_plugin.toy.plugin``."""
    from .plugins import Lazy

    return {"bias_in_bios": Lazy("sfc_plugin.bias_in_bios", "load")}


def pair_fingerprint(record: dict) -> str:
    """A short hash of a pair record's prompts and answers: circuits record theirs (``provenance["pair_hashes"]``)
    so that evaluation can tell held-out pairs from the ones a circuit was found on."""
    import hashlib

    key = [record.get(k) for k in ("clean_prefix", "patch_prefix", "clean_answer", "patch_answer")]
    return hashlib.sha256(json.dumps(key, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def example_fingerprint(record: dict) -> str:
    """:func:`pair_fingerprint` for pair records; for text records (e.g. SHIFT's ``{"text", ...}``) the same
    short hash of the text alone, so that one text under other labels still counts as the same example."""
    if isinstance(record, dict) and "clean_prefix" not in record and isinstance(record.get("text"), str):
        import hashlib

        return hashlib.sha256(record["text"].encode("utf-8")).hexdigest()[:16]
    return pair_fingerprint(record)
