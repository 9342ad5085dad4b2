"""Pair records (the paper's SVA field names), datasets, tokenisation into batches."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from .errors import SFCError
from .plugins import hookimpl

REQUIRED = ("clean_prefix", "clean_answer")


def read_jsonl(path: str | Path) -> list[dict]:
    """Pair records from a JSON-lines file (one JSON object per line; blank lines skipped)."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SFCError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise SFCError(f"{path}:{lineno}: expected a JSON object")
            records.append(rec)
    return records


def load_dataset(name_or_path: str | Path, split: str | None = None, pm=None) -> list[dict]:
    """Pair records from a registered dataset name (e.g. ``"toy/sva-rc"``) or a JSON-lines path."""
    from .plugins import registry

    datasets = registry("dataset", pm)
    if str(name_or_path) in datasets:
        return list(datasets[str(name_or_path)].obj(split))
    path = Path(name_or_path)
    if path.is_file():
        return read_jsonl(path)
    raise SFCError(f"unknown dataset {str(name_or_path)!r}: not a registered name ({', '.join(sorted(datasets)) or 'none'}) nor a file")


def resolve_records(data: Any, n_examples: int | None = None, pm=None) -> list[dict]:
    """Records from a sequence, a path or a dataset name; validated and optionally truncated."""
    records = load_dataset(data, pm=pm) if isinstance(data, (str, Path)) else list(data)
    if n_examples is not None:
        records = records[:n_examples]
    if not records:
        raise SFCError(f"no examples in data {data if isinstance(data, (str, Path)) else '(sequence)'!s}")
    for i, rec in enumerate(records):
        missing = [k for k in REQUIRED if k not in rec]
        if missing:
            raise SFCError(f"example {i} lacks field {missing[0]!r}")
    has_patch = ["patch_prefix" in r for r in records]
    if any(has_patch) and not all(has_patch):
        raise SFCError(f"example {has_patch.index(False)} lacks 'patch_prefix' while others have it")
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
            yield Batch(cut(self.clean), cut(self.patch), cut(self.clean_answer, False), cut(self.patch_answer, False),
                        cut(self.last, False), self.records[lo:hi])

    def select(self, index) -> "Batch":
        """The rows ``index`` (a LongTensor; repeats allowed), same width."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        idx = index.tolist()
        return replace(self, clean=pick(self.clean), patch=pick(self.patch), clean_answer=pick(self.clean_answer),
                       patch_answer=pick(self.patch_answer), last=pick(self.last), records=[self.records[i] for i in idx])

    def repeat(self, n: int) -> "Batch":
        """The batch stacked ``n`` times along the batch dimension."""
        rep = lambda t: None if t is None else t.repeat(n, *([1] * (t.dim() - 1)))  # noqa: E731
        return replace(self, clean=rep(self.clean), patch=rep(self.patch), clean_answer=rep(self.clean_answer),
                       patch_answer=rep(self.patch_answer), last=rep(self.last), records=self.records * n)


def _single_token(model, text: str, what: str) -> int:
    ids = model.to_tokens(text, prepend_bos=False)[0]
    if ids.numel() != 1:
        raise SFCError(f"{what} {text!r} is {ids.numel()} tokens, expected exactly one")
    return int(ids[0])


def tokenize(model, records: Sequence[dict], device=None) -> Batch:
    """Tokenise pair records (right-padded); clean and patch prompts must have equal token length."""
    import torch

    pad = getattr(model.tokenizer, "pad_token_id", None) or 0
    clean, patch, ca, pa = [], [], [], []
    for rec in records:
        # token ids, when a record carries them (contexts cut from a corpus), are used as they are
        c = torch.tensor(rec["clean_tokens"], dtype=torch.long) if "clean_tokens" in rec else model.to_tokens(rec["clean_prefix"])[0]
        clean.append(c)
        if "clean_answer_token" in rec:
            ca.append(int(rec["clean_answer_token"]))
        elif "clean_answer" in rec:
            ca.append(_single_token(model, rec["clean_answer"], "clean_answer"))
        if "patch_prefix" in rec:
            p = model.to_tokens(rec["patch_prefix"])[0]
            if p.numel() != c.numel():
                raise SFCError(f"clean_prefix {rec['clean_prefix']!r} is {c.numel()} tokens but patch_prefix {rec['patch_prefix']!r} is {p.numel()}")
            patch.append(p)
            if "patch_answer" in rec:
                pa.append(_single_token(model, rec["patch_answer"], "patch_answer"))
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
    """No built-in datasets beyond the toy world's (registered by ``sfc_plugin.toy.plugin``)."""
    return {}
