"""Feature dashboards: what each SAE feature responds to and what it writes, computed locally.

    from sfc_plugin import dashboards
    data = dashboards.compute_dashboards(model, saes, ["resid_2/173", "attn_1/5"], corpus=None)  # toy corpus
    print(dashboards.feature_card(data["features"]["resid_2/173"]))
    dashboards.write_dashboards(data, "dash/")           # dash/dashboards.json (sfc-dashboards/1)

The JSON (``sfc-dashboards/1``) has ``model``, ``corpus``, ``settings`` and ``features``: one record
per feature id with ``density``, ``n_firing``, ``n_tokens``, ``max``, ``mean`` (over tokens where it
fires), ``histogram`` (log10 bins of non-zero activations), ``top`` and ``quantiles`` (contexts:
``tokens``, per-token ``acts``, ``position`` of the strongest token, ``context`` index, ``start``
offset), ``promoted`` / ``suppressed`` tokens (direct logit effect; see ``logit_note``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import SFCError
from .compute import SCHEMA, compute_dashboards, parse_id

__all__ = ["SCHEMA", "compute_dashboards", "circuit_dashboards", "feature_ids", "write_dashboards",
           "load_dashboards", "feature_card", "parse_id", "FILENAME"]

FILENAME = "dashboards.json"


def feature_ids(circuit) -> list[str]:
    """The circuit's feature node ids without position suffixes, in circuit order."""
    return list(dict.fromkeys(n.id.split("@", 1)[0] for n in circuit.nodes if n.kind == "feature"))


def circuit_dashboards(circuit, model, saes, corpus=None, **kw) -> dict:
    """:func:`compute_dashboards` for every feature node of ``circuit``."""
    ids = feature_ids(circuit)
    if not ids:
        raise SFCError("the circuit has no feature nodes")
    return compute_dashboards(model, saes, ids, corpus, **kw)


def write_dashboards(data: dict, out_dir: str | Path) -> Path:
    """Write ``out_dir/dashboards.json`` atomically; returns its path."""
    from ..circuit import write_atomic

    path = Path(out_dir) / FILENAME
    write_atomic(path, json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n")
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


def _snippet(ctx: dict, before: int, after: int) -> str:
    toks, p = ctx["tokens"], ctx["position"]
    left = "".join(toks[max(0, p - before):p]).replace("\n", "⏎")
    right = "".join(toks[p + 1:p + 1 + after]).replace("\n", "⏎")
    dots = ("…" if p - before > 0 else "", "…" if p + 1 + after < len(toks) else "")
    return f"{dots[0]}{left}[{toks[p].replace(chr(10), '⏎')}]{right}{dots[1]}"


def _tokens(items: list[dict], n: int) -> str:
    return ", ".join(str(i["token"]).strip() or repr(i["token"]) for i in items[:n])


def feature_card(record: dict, *, n_top: int = 5, n_quantile: int = 1, before: int = 10, after: int = 2,
                 label: str | None = None) -> str:
    """A short plain-text card of a feature's evidence (one ``sfc-dashboards/1`` feature record)."""
    lines = [f"{record['id']}  density {100 * record['density']:.2f}%  max {record['max']:.3g}  "
             f"mean {record['mean']:.3g}"]
    if label:
        lines.append(f"label: {label}")
    if not record["top"]:
        lines.append("never fires on the corpus")
    else:
        lines.append("top contexts:")
        lines += [f"  {c['max']:7.3g}  {_snippet(c, before, after)}" for c in record["top"][:n_top]]
        if n_quantile and record["quantiles"]:
            lines.append("random contexts from lower quantiles:")
            for band in record["quantiles"][1:] or record["quantiles"]:
                lo, hi = band["quantile"]
                lines += [f"  {c['max']:7.3g}  {_snippet(c, before, after)}  ({100 * lo:.0f}–{100 * hi:.0f}%)"
                          for c in band["contexts"][:n_quantile]]
    if record["promoted"]:
        lines.append(f"promotes: {_tokens(record['promoted'], 6)}")
        lines.append(f"suppresses: {_tokens(record['suppressed'], 6)}")
    return "\n".join(lines)
