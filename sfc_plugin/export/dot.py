"""Graphviz DOT text of a circuit, laid out like the paper's figures; needs no Graphviz binary.

- ``aggregation="sum"``: one row (``rank=same``) per submodule, embedding at the bottom, the metric
  ``y`` on top, submodule names on the left. Laid out by ``dot``; rows ordered to cut crossings
  (``order="layout"``) or by feature index, error node last (``order="index"``).
- positions kept (``aggregation="none"``): a grid, one column per prompt position with the prompt's
  tokens underneath (``provenance["tokens"]``, else position numbers); coordinates are computed here
  and pinned (``layout=neato``), so columns line up exactly.

Fill colour: blue positive, red negative, white near zero, scaled to the largest |effect|; error
nodes are triangles; edges are coloured by sign, with width and opacity by |weight|. Every string
that reaches DOT goes through :func:`quote` / :func:`text`.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap

from ..errors import SFCError
from ..validation import safe_url

POS_RGB, NEG_RGB = (33, 102, 172), (178, 24, 43)  # edge colours (blue, red)
POS_FILL, NEG_FILL = (67, 147, 195), (214, 96, 77)  # full-strength node fills
_KIND_ORDER = {"embed": 0, "attn": 1, "mlp": 2, "resid": 3}
_SUBMODULE = re.compile(r"^(embed|attn|mlp|resid)(?:_(-?\d+))?$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def quote(value) -> str:
    """A DOT double-quoted string: backslashes, quotes and newlines escaped, control characters dropped."""
    s = _CONTROL.sub(" ", str(value).replace("\r\n", "\n").replace("\t", " "))
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def text(value) -> str:
    """A quoted DOT string shown as text (label, tooltip): ``&`` is escaped too, since Graphviz reads entities."""
    return quote(str(value).replace("&", "&amp;"))


def row_key(submodule: str | None) -> tuple:
    """Sort key of a submodule row: embedding, then attn/mlp/resid per layer; unknown names last."""
    m = _SUBMODULE.match(submodule or "")
    if not m:
        return (1, 0, 0, submodule or "")
    layer = -1 if m.group(1) == "embed" else int(m.group(2) or 0)
    return (0, layer, _KIND_ORDER[m.group(1)], "")


def node_sort_key(node) -> tuple:
    """Stable order within a row: position, then features by index, then the error node."""
    return (node.position if node.position is not None else -1, node.kind == "error", node.feature or 0, node.id)


def rgb(color: tuple[int, int, int], alpha: float | None = None) -> str:
    out = "#" + "".join(f"{int(c):02x}" for c in color)
    return out if alpha is None else out + f"{int(round(255 * alpha)):02x}"


def fill(effect: float | None, scale: float) -> str:
    """White at zero, shading to blue (positive) or red (negative) at ±``scale``."""
    a = 0.0 if not scale or effect is None else max(-1.0, min(1.0, effect / scale))
    base = POS_FILL if a >= 0 else NEG_FILL
    return rgb(tuple(255 + (c - 255) * abs(a) for c in base))


def _short(label: str | None, width: int = 18, lines: int = 2) -> list[str]:
    if not label:
        return []
    wrapped = textwrap.wrap(" ".join(str(label).split()), width) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: width - 1] + "…"
    return wrapped


def _lines(node) -> list[str]:
    if node.kind == "error":  # a small fixed triangle; its label goes to the tooltip
        return ["ε"]
    return [str(node.feature if node.feature is not None else node.id)] + _short(node.label)


def _attrs(**kw) -> str:
    return ", ".join(f"{k}={v}" for k, v in kw.items() if v is not None)


def _node_stmt(node, scale: float, info: dict, extra: str = "") -> str:
    a = 0.0 if not scale or node.effect is None else abs(node.effect) / scale
    tip = f"{node.id}\neffect {node.effect:+.4g}" if node.effect is not None else node.id
    if node.label:
        tip += f"\n{node.label}"
    if info.get("tooltip"):
        tip += f"\n{info['tooltip']}"
    error = node.kind == "error"
    url = safe_url(info.get("url"))  # links from data: http(s) only, never javascript:/file:/data:
    attrs = _attrs(label=text("\n".join(_lines(node))), shape="triangle" if error else "box",
                   fixedsize="true" if error else None, width="0.42" if error else None, height="0.32" if error else None,
                   fillcolor=quote(fill(node.effect, scale)),
                   fontcolor=quote("white") if a > 0.6 else None, tooltip=text(tip),
                   URL=quote(url) if url else None, target=quote("_blank") if url else None)
    return f"{quote(node.id)} [{attrs}{extra}];"


def _metric_stmt(node, circuit, extra: str = "") -> str:
    effect = "" if circuit.total_effect is None else f"\nΔm {circuit.total_effect:+.3g}"
    label = f"y = {circuit.metric}{effect}"
    return (f"{quote(node.id)} [{_attrs(label=text(label), shape='ellipse', fillcolor=quote('#eeeeee'), tooltip=text(label))}"
            f"{extra}];")


def _edge_stmts(circuit) -> list[str]:
    wmax = max((abs(e.weight) for e in circuit.edges), default=0.0) or 1.0
    out = []
    for e in sorted(circuit.edges, key=lambda e: (e.source, e.target)):
        r = min(1.0, abs(e.weight) / wmax)
        color = rgb(POS_RGB if e.weight >= 0 else NEG_RGB, 0.25 + 0.75 * r)
        attrs = _attrs(color=quote(color), penwidth=f"{0.3 + 3.2 * r:.2f}",
                       tooltip=text(f"{e.source} → {e.target}: {e.weight:+.4g}"))
        out.append(f"  {quote(e.source)} -> {quote(e.target)} [{attrs}];")
    return out


def _header(circuit, layout: str | None, note: str = "") -> list[str]:
    title = (f"{circuit.metric} ({circuit.method}, {circuit.aggregation}) · |effect| > {circuit.node_threshold:g}"
             f" · |weight| > {circuit.edge_threshold:g}{note}")
    graph = _attrs(layout=layout, rankdir="BT" if layout is None else None, newrank="true" if layout is None else None,
                   inputscale="72" if layout else None, overlap="true" if layout else None,
                   splines="true", nodesep="0.1", ranksep="0.45", outputorder="edgesfirst", fontname=quote("Helvetica"),
                   label=text(title), labelloc="t", fontsize="12", bgcolor=quote("white"))
    return ["digraph circuit {", f"  graph [{graph}];",
            '  node [style="filled", fontname="Helvetica", fontsize=9, shape=box, height=0.25, width=0.3, '
            'margin="0.05,0.02", penwidth=0.6, color="#555555"];',
            '  edge [arrowsize=0.35];']


def _rows(circuit) -> dict[str, list]:
    rows: dict[str, list] = {}
    for n in circuit.nodes:
        if n.kind != "metric":
            rows.setdefault(n.submodule or "?", []).append(n)
    return {sub: sorted(rows[sub], key=node_sort_key) for sub in sorted(rows, key=row_key)}


def _infos(circuit) -> dict:
    return dict(circuit.provenance.get("node_info") or {})


def _ranked(circuit, order: str, note: str) -> list[str]:
    """``aggregation="sum"``: one rank per submodule; ``dot`` lays it out.

    ``order="layout"`` lets ``dot`` order each row to cut edge crossings (deterministic: nodes are declared
    in index order); ``order="index"`` pins rows to feature-index order with invisible flat edges.
    """
    scale = max((abs(n.effect) for n in circuit.nodes if n.kind != "metric" and n.effect is not None), default=0.0)
    infos, rows = _infos(circuit), _rows(circuit)
    lines = _header(circuit, None, note)
    spine = []
    for sub, nodes in rows.items():
        head = f"row:{sub}"
        spine.append(head)
        lines.append(f"  subgraph {quote('row_' + sub)} {{ rank=same;")
        lines.append(f"    {quote(head)} [label={text(sub)}, shape=plaintext, style=\"\", fontsize=11, group=rows];")
        lines += [f"    {_node_stmt(n, scale, infos.get(n.id, {}))}" for n in nodes]
        if order == "index":
            lines.append(f"    {' -> '.join(quote(x) for x in [head] + [n.id for n in nodes])} [style=invis];")
        else:  # the row name left of every node, the nodes' order left to dot
            lines += [f"    {quote(head)} -> {quote(n.id)} [style=invis];" for n in nodes]
        lines.append("  }")
    metric = [n for n in circuit.nodes if n.kind == "metric"]
    if metric:
        spine.append("row:y")
        lines.append(f"  subgraph {quote('row_y')} {{ rank=same;")
        lines.append(f"    {quote('row:y')} [label={text('metric')}, shape=plaintext, style=\"\", fontsize=11, group=rows];")
        lines += [f"    {_metric_stmt(n, circuit)}" for n in metric]
        lines.append(f"    {' -> '.join(quote(x) for x in ['row:y'] + [n.id for n in metric])} [style=invis];")
        lines.append("  }")
    if len(spine) > 1:
        lines.append(f"  {' -> '.join(quote(x) for x in spine)} [style=invis];")
    return [ln for ln in lines if ln] + _edge_stmts(circuit) + ["}"]


def _width(node) -> float:
    """Approximate box width in points (Helvetica 9pt ≈ 5.2pt per character)."""
    return 30.0 if node.kind == "error" else max(24.0, 5.2 * max(len(s) for s in _lines(node)) + 10.0)


def _grid(circuit, note: str) -> list[str]:
    """Positions kept: one column per position, one row per submodule; coordinates pinned in points."""
    scale = max((abs(n.effect) for n in circuit.nodes if n.kind != "metric" and n.effect is not None), default=0.0)
    infos, rows = _infos(circuit), _rows(circuit)
    positions = sorted({n.position for ns in rows.values() for n in ns if n.position is not None})
    tokens = circuit.provenance.get("tokens")
    if not positions:
        positions = [0]
    if isinstance(tokens, list) and tokens:
        positions = sorted(set(positions) | set(range(len(tokens))))
    cells = {(sub, n.position if n.position is not None else positions[-1]): [] for sub, ns in rows.items() for n in ns}
    for sub, ns in rows.items():
        for n in ns:
            cells[(sub, n.position if n.position is not None else positions[-1])].append(n)
    gap, col_gap, row_h = 6.0, 22.0, 62.0

    def token_text(p: int) -> str:
        tok = tokens[p] if isinstance(tokens, list) and 0 <= p < len(tokens) else None
        return f"{tok!s}\n{p}" if tok is not None else f"pos {p}"

    col_x, x = {}, 0.0
    for p in positions:
        widths = [sum(_width(n) for n in cells.get((sub, p), [])) + gap * max(0, len(cells.get((sub, p), [])) - 1)
                  for sub in rows]
        tok_w = 5.6 * max(len(s) for s in token_text(p).split("\n")) + 8
        w = max([tok_w, 30.0] + widths)
        col_x[p] = (x, w)
        x += w + col_gap
    lines = _header(circuit, "neato", note)
    pin = lambda px, py: quote(f"{px:.1f},{py:.1f}!")  # noqa: E731
    for r, (sub, ns) in enumerate(rows.items()):
        y = r * row_h
        lines.append(f"  {quote('row:' + sub)} [label={text(sub)}, shape=plaintext, style=\"\", fontsize=11, pos={pin(-50, y)}];")
        for p in positions:
            cell = cells.get((sub, p), [])
            if not cell:
                continue
            left, w = col_x[p]
            total = sum(_width(n) for n in cell) + gap * (len(cell) - 1)
            cx = left + (w - total) / 2
            for n in cell:
                nw = _width(n)
                lines.append("  " + _node_stmt(n, scale, infos.get(n.id, {}), f", pos={pin(cx + nw / 2, y)}"))
                cx += nw + gap
    top = len(rows) * row_h
    last_left, last_w = col_x[positions[-1]]
    for n in (n for n in circuit.nodes if n.kind == "metric"):
        lines.append("  " + _metric_stmt(n, circuit, f", pos={pin(last_left + last_w / 2, top)}"))
    for p in positions:
        left, w = col_x[p]
        lines.append(f"  {quote(f'tok:{p}')} [label={text(token_text(p))}, shape=plaintext, style=\"\", fontsize=10, "
                     f"pos={pin(left + w / 2, -row_h * 0.75)}];")
    return lines + _edge_stmts(circuit) + ["}"]


def auto_max_edges(circuit) -> int:
    """The edge budget of a readable figure: three edges per node, at least 150."""
    return max(150, 3 * len(circuit.nodes))


def circuit_to_dot(circuit, order: str = "layout", max_edges: int | str | None = None) -> str:
    """Deterministic DOT (same circuit → byte-identical text); needs no Graphviz binary.

    ``order`` (``"layout"`` or ``"index"``) applies to ranked (``aggregation="sum"``) figures, see :func:`_ranked`.
    ``max_edges`` keeps only the strongest edges (``"auto"``: :func:`auto_max_edges`); the title says so.
    """
    if order not in ("layout", "index"):
        raise SFCError(f"unknown node order {order!r} (known: layout, index)")
    limit = auto_max_edges(circuit) if max_edges == "auto" else max_edges
    note = ""
    if limit is not None and 0 <= int(limit) < len(circuit.edges):
        kept = sorted(circuit.edges, key=lambda e: (-abs(e.weight), e.source, e.target))[: int(limit)]
        note = f" · strongest {len(kept)} of {len(circuit.edges)} edges"
        circuit = dataclasses.replace(circuit, edges=kept)
    positional = circuit.aggregation == "none" or any(n.position is not None for n in circuit.nodes)
    return "\n".join(_grid(circuit, note) if positional else _ranked(circuit, order, note)) + "\n"
