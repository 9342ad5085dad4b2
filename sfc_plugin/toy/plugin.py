"""Built-in plugin: registers the toy world's datasets (``toy/sva-<condition>``, ``toy/bios``).

Imports nothing heavy: the JSON-lines files shipped in ``sfc_plugin/toy/artifacts/data`` are read
when a dataset is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import SFCError
from ..plugins import hookimpl

SPLITS = ("train", "test")
BIOS_SPLITS = ("train", "val", "test")
CONDITIONS = ("simple", "nounpp", "rc", "within_rc")


def _data_dir() -> Path:
    from . import ARTIFACTS

    return ARTIFACTS / "data"


def _reader(name: str, stem: str, splits: tuple[str, ...] = SPLITS) -> Callable[[str | None], list[dict]]:
    def load(split: str | None = None) -> list[dict]:
        split = "test" if split is None else split
        if split not in splits:
            raise SFCError(f"unknown split {split!r} for dataset {name!r} (known: {', '.join(splits)})")
        path = _data_dir() / f"{stem}.{split}.jsonl"
        if not path.is_file():
            raise SFCError(f"dataset {name!r}: file {str(path)!r} missing; run 'sfc toy build'")
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    load.__name__ = f"load_{stem.replace('-', '_')}"
    load.__doc__ = f"Records of the toy dataset {name!r} (split {' / '.join(splits)}; None means 'test')."
    return load


@hookimpl
def sfc_datasets():
    """``toy/sva-simple``, ``toy/sva-nounpp``, ``toy/sva-rc``, ``toy/sva-within_rc`` (pair records) and
    ``toy/bios`` (records ``text, profession, gender``; train split ambiguous, val and test balanced)."""
    out = {f"toy/sva-{c}": _reader(f"toy/sva-{c}", f"sva-{c}") for c in CONDITIONS}
    out["toy/bios"] = _reader("toy/bios", "bios", BIOS_SPLITS)
    return out
