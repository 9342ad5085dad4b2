"""``index.html``: one self-contained page listing the clusters (opens from ``file://``).

Each cluster shows its size, the answers it predicts, example contexts, its top features and links
to its circuit in the viewer (``clusters/<k>/view/``, ``sfc view``'s site, when the viewer is
installed), its figure (``clusters/<k>/circuit.svg`` when Graphviz was installed), its
``circuit.json`` and its contexts; a circuit with warnings (no path from any node to the metric, kept nodes
carrying under 10% of the effect reaching it) is marked. All data-derived text is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
h1{font-size:1.4em} .meta{color:#555}
table{border-collapse:collapse;width:100%} td,th{border-top:1px solid #ddd;padding:.5em;vertical-align:top;text-align:left}
th{background:#f4f4f4} .ctx{font-family:ui-monospace,monospace;font-size:.9em;margin:.15em 0}
.ans{background:#ffe9a8;font-weight:bold} .feat{font-family:ui-monospace,monospace;font-size:.85em}
.pos{color:#1a5fb4} .neg{color:#c01c28} .warn{color:#a33a00;font-weight:bold;margin:.3em 0}
"""


def _feature(f: dict) -> str:
    sign = "pos" if f["mean_effect"] > 0 else "neg"
    return (
        f'<div class="feat"><span class="{sign}">{f["mean_effect"]:+.2e}</span> {escape(f["id"])} '
        f'<span class="meta">({f["frequency"]:.0%})</span></div>'
    )


def _context(c: dict) -> str:
    return f'<div class="ctx">{escape(c["prefix"])}<span class="ans">{escape(c["answer_text"])}</span></div>'


def _warnings(c: dict) -> str:
    """The mark of a circuit with warnings (e.g. no path to the metric): a sign, the first warning, all on hover."""
    warnings = [str(w) for w in c.get("warnings") or []]
    if not warnings:
        return ""
    return (
        f'<div class="warn" title="{escape(chr(10).join(warnings))}">&#9888; {escape(warnings[0])}'
        + (f" (+{len(warnings) - 1} more)" if len(warnings) > 1 else "")
        + "</div>"
    )


def render_index(summary: dict, figures: set[int], views: set[int] = frozenset()) -> str:
    cfg = summary["config"]
    rows = []
    for c in summary["clusters"]:
        cid = int(c["id"])
        answers = ", ".join(f"{escape(repr(a))}&nbsp;×{n}" for a, n in list(c["answers"].items())[:5])
        links = [
            f'<a href="clusters/{cid}/circuit.json">circuit.json</a>',
            f'<a href="clusters/{cid}/contexts.jsonl">contexts</a>',
        ]
        if cid in figures:
            links.insert(0, f'<a href="clusters/{cid}/circuit.svg">circuit figure</a>')
        if cid in views:
            links.insert(0, f'<a href="clusters/{cid}/view/index.html"><b>circuit viewer</b></a>')
        cats = "".join(
            f'<div class="meta">{escape(name)}: '
            + ", ".join(f"{escape(str(k))} {escape(str(v))}" for k, v in list(counts.items())[:3])
            + "</div>"
            for name, counts in c.get("categories", {}).items()
        )
        rows.append(
            f'<tr id="cluster-{cid}"><td><b>{cid}</b></td><td>{int(c["size"])}</td>'
            f"<td>{answers}{cats}</td><td>{''.join(_context(x) for x in c['contexts'])}</td>"
            f"<td>{''.join(_feature(f) for f in c['top_features'][:6])}</td>"
            f"<td>{int(c['n_nodes'])} nodes, {int(c['n_edges'])} edges{_warnings(c)}<br>{'<br>'.join(links)}</td></tr>"
        )
    agree = "".join(
        f"<div>agreement with the corpus's {escape(name)!s} labels: adjusted Rand index "
        f"{s['adjusted_rand_index']:.3f}, NMI {s['normalized_mutual_info']:.3f}</div>"
        for name, s in summary.get("agreement", {}).items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sfc clusters</title><style>{STYLE}</style></head>
<body><h1>Behaviour clusters</h1>
<p class="meta">{int(summary["n_contexts"])} contexts from corpus {escape(str(cfg["corpus"]))} (loss &lt; {float(cfg["max_loss"])} nats),
{int(summary["n_clusters"])} clusters ({escape(str(cfg["algorithm"]))} on {escape(str(cfg["vectors"]))} vectors, top {int(cfg["top_k"])} entries),
circuits: {escape(str(cfg["method"]))}, zero ablation, metric log p(answer), node threshold {float(cfg["node_threshold"])}.</p>
{agree}
<table><thead><tr><th>cluster</th><th>size</th><th>answers</th><th>example contexts (answer highlighted)</th>
<th>top features (mean effect on log p, share of contexts)</th><th>circuit</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""


def write_index(out: Path, summary: dict) -> Path:
    from ..circuit import write_atomic

    ids = [int(c["id"]) for c in summary["clusters"]]
    figures = {c for c in ids if (out / "clusters" / str(c) / "circuit.svg").is_file()}
    views = {c for c in ids if (out / "clusters" / str(c) / "view" / "index.html").is_file()}
    return write_atomic(out / "index.html", render_index(summary, figures, views))
