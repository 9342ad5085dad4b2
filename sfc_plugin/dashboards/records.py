"""The ``sfc-dashboards/1`` format: feature ids, reading and writing (no heavy imports)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import SFCError

SCHEMA = "sfc-dashboards/1"
FILENAME = "dashboards.json"


def parse_id(fid: str) -> tuple[str, int]:
    """``"resid_2/173"`` (an ``@position`` suffix is ignored) → ``("resid_2", 173)``; ``"resid_2/0173"`` reads
    as the same feature (see :func:`normalise_id`)."""
    base = str(fid).split("@", 1)[0]
    sub, _, feat = base.rpartition("/")
    if not sub or not (feat.isascii() and feat.isdigit()):
        raise SFCError(f"feature id {fid!r} is not '<submodule>/<feature index>'")
    return sub, int(feat)


def normalise_id(fid: str) -> str:
    """The canonical id of a feature: ``"resid_2/0023@4"`` → ``"resid_2/23"`` (circuits write ids this way)."""
    return "{}/{}".format(*parse_id(fid))


def write_dashboards(data: dict, out_dir: str | Path) -> Path:
    """Write ``out_dir/dashboards.json`` atomically; returns its path."""
    from ..files import strict_json, write_atomic

    path = Path(out_dir) / FILENAME
    write_atomic(path, strict_json(data, separators=(",", ":")) + "\n")
    return path


def load_dashboards(path: str | Path) -> dict:
    """Read ``sfc-dashboards/1`` data from a file or a directory holding ``dashboards.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SFCError(f"dashboards file {str(path)!r} does not exist (run 'sfc dashboards' first)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SFCError(f"dashboards file {str(path)!r} is not valid JSON ({exc})".splitlines()[0]) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("features"), dict):
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise SFCError(f"dashboards file {str(path)!r} is not {SCHEMA} (schema {got!r})")
    return data
