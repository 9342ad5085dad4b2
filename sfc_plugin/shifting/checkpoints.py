"""Resumable SHIFT: every expensive result and every long loop's progress in content-addressed files.

Layout (``directory``, by default ``OUT/cache`` of ``sfc shift``)::

    <kind>/<key>.safetensors + <key>.json            a finished result (tensors + what they are)
    <kind>/<key>.partial.safetensors + .partial.json a loop in progress: its state after ``done`` items

``kind`` is the stage (``pooled``, ``attribution``, ``side_effects``); ``key`` hashes everything the result
depends on (model and SAE fingerprints, token ids, the edit, the probe's weights, the settings), so a file
is never used for other inputs and a changed setting simply computes anew. Files are written atomically
(:func:`sfc_plugin.files.write_atomic`); an unreadable file counts as absent. Without a directory nothing
is written and every stage computes (the Python API's default).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

META = "shift-cache.json"


def digest(*parts: Any) -> str:
    """sha256 (hex) of JSON-able parts and tensors (dtype, shape and bytes)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().to("cpu").contiguous()
            h.update(f"tensor:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


class Checkpoints:
    """Finished results and loop progress under ``directory`` (``None``: keep nothing)."""

    def __init__(self, directory: str | Path | None = None, every_s: float = 30.0, model_key: str = ""):
        self.directory = None if directory is None else Path(directory)
        self.every_s = float(every_s)
        self.model_key = model_key  # the model's and SAEs' fingerprints, hashed: part of every key
        self.hits: dict[str, int] = {}
        if self.directory is not None:
            from ..files import write_atomic

            self.directory.mkdir(parents=True, exist_ok=True)
            if not (self.directory / META).is_file():
                write_atomic(self.directory / META, json.dumps({"schema": "sfc-shift-cache/1"}) + "\n")

    def _paths(self, kind: str, key: str, partial: bool = False) -> tuple[Path, Path]:
        stem = self.directory / kind / (key + (".partial" if partial else ""))
        return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")

    def _read(self, kind: str, key: str, partial: bool) -> tuple[dict[str, torch.Tensor], dict] | None:
        if self.directory is None:
            return None
        from safetensors.torch import load_file

        st, js = self._paths(kind, key, partial)
        if not (st.is_file() and js.is_file()):
            return None
        try:
            return load_file(str(st)), json.loads(js.read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - an unreadable checkpoint means computing again, never a wrong result
            return None

    def _write(self, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: dict, partial: bool) -> None:
        if self.directory is None:
            return
        from safetensors.torch import save

        from ..files import write_atomic

        st, js = self._paths(kind, key, partial)
        write_atomic(st, save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}))
        write_atomic(js, json.dumps(meta) + "\n")

    def get(self, kind: str, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """A finished result ``(tensors, meta)``, or None."""
        found = self._read(kind, key, False)
        if found is not None:
            self.hits[kind] = self.hits.get(kind, 0) + 1
        return found

    def put(self, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> None:
        """Store a finished result and drop the loop's progress file."""
        self._write(kind, key, tensors, meta or {}, False)
        if self.directory is not None:
            for path in self._paths(kind, key, True):
                path.unlink(missing_ok=True)

    def loop(self, kind: str, key: str) -> Progress:
        """A loop's progress: ``state``/``done`` to resume from, :meth:`Progress.step` to save now and then."""
        found = self._read(kind, key, True)
        state, done = ({}, 0) if found is None else (found[0], int(found[1].get("done", 0)))
        if done:
            self.hits[kind + " (partial)"] = self.hits.get(kind + " (partial)", 0) + 1
        return Progress(self, kind, key, state, done)


class Progress:
    """A loop over items that saves its ``state`` (tensors) every ``every_s`` seconds of work."""

    def __init__(self, store: Checkpoints, kind: str, key: str, state: dict[str, torch.Tensor], done: int):
        self.store, self.kind, self.key = store, kind, key
        self.state, self.done = state, done
        self._last = time.monotonic()

    def step(self, done: int, state: dict[str, torch.Tensor], force: bool = False) -> None:
        """Record that ``done`` items are finished with ``state``; write it when due (or ``force``)."""
        self.done, self.state = done, state
        if self.store.directory is None:
            return
        if force or time.monotonic() - self._last >= self.store.every_s:
            self.store._write(self.kind, self.key, state, {"done": done}, True)
            self._last = time.monotonic()
