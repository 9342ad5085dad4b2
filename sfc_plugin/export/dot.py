"""Graphviz DOT text of a circuit, laid out like the paper's figures; needs no Graphviz binary.

- ``aggregation="sum"``: one row (``rank=same``) per submodule, embedding at the bottom, the metric
  ``y`` on top, submodule names on the left. Laid out by ``dot``; rows ordered to cut crossings
  (``order="layout"``) or by feature index, error node last (``order="index"``).
- positions kept (``aggregation="none"``): a grid, one column per prompt position with the prompt's
  tokens underneath (``provenance["tokens"]``, else position numbers); coordinates are computed here
  and pinned (``layout=neato``), so columns line up exactly.

Figures of real circuits stay readable: nodes without edges are left out (``keep_isolated=True`` keeps
them), each row can be capped to its strongest nodes with a "+N more" marker (``max_nodes_per_row``) or
wrapped onto several lines (``wrap``), edges capped to the strongest (``max_edges``), and the title says what
was left out. A legend explains node kinds, fill, edge sign and weight scale.

Colours are Okabe–Ito blue (positive) and vermillion (negative), distinguishable with the common colour-vision
deficiencies; sign is also drawn without colour (negative edges and node outlines dashed), so greyscale prints
keep it. Fill shades from white with |effect|; edge width and opacity grow with |weight|. Error nodes are
triangles. Every string that reaches DOT goes through :func:`quote` / :func:`text`.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap

from ..annotations.records import MARKS as STATUS_MARKS
from ..dashboards.autolabel import LOW as LOW_SCORE
from ..errors import SFCError
from ..hook_points import KIND_ORDER, parse_submodule
from ..validation import safe_url

POS_RGB, NEG_RGB = (0, 114, 178), (213, 94, 0)  # edge colours: Okabe–Ito blue and vermillion
POS_FILL, NEG_FILL = (0, 114, 178), (213, 94, 0)  # full-strength node fills
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
    parsed = parse_submodule(submodule or "")
    if parsed is None:
        return (1, 0, 0, submodule or "")
    kind, layer = parsed
    return (0, layer, KIND_ORDER[kind], "")


def node_sort_key(node) -> tuple:
    """Stable order within a row: position, then features by index, then the error node."""
    return (node.position if node.position is not None else -1, node.kind == "error", node.feature or 0, node.id)


def rgb(color: tuple[int, int, int], alpha: float | None = None) -> str:
    out = "#" + "".join(f"{int(c):02x}" for c in color)
    return out if alpha is None else out + f"{int(round(255 * alpha)):02x}"


def fill(effect: float | None, scale: float) -> str:
    """White at zero, shading to blue (positive) or vermillion (negative) at ±``scale``."""
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


def status_line(info: dict | None) -> str | None:
    """The line under a label that says what it is worth: an annotation's status mark and author (``✓ alice``,
    ``⚠`` when forced onto another SAE), or a low-scoring ``auto`` label's score (``⚠ score 0.54``)."""
    info = info or {}
    if info.get("status") in STATUS_MARKS:
        who = str(info.get("author") or "?")
        line = f"{STATUS_MARKS[info['status']]} {who if len(who) <= 14 else who[:13] + '…'}"
        return line + (" ⚠SAE" if info.get("forced") else "")
    if info.get("score_low") and info.get("score") is not None:
        return f"⚠ score {float(info['score']):.2f}"
    return None


def _lines(node, info: dict | None = None) -> list[str]:
    if node.kind == "error":  # a small fixed triangle; its label goes to the tooltip
        return ["ε"]
    extra = status_line(info) if node.label else None
    return (
        [str(node.feature if node.feature is not None else node.id)] + _short(node.label) + ([extra] if extra else [])
    )


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
    negative = node.effect is not None and node.effect < 0
    url = safe_url(info.get("url"))  # links from data: http(s) only, never javascript:/file:/data:
    attrs = _attrs(
        label=text("\n".join(_lines(node, info))),
        shape="triangle" if error else "box",
        fixedsize="true" if error else None,
        width="0.42" if error else None,
        height="0.32" if error else None,
        fillcolor=quote(fill(node.effect, scale)),
        style=quote("filled,dashed") if negative else None,
        penwidth="1.1" if negative else None,
        fontcolor=quote("white") if a > 0.6 else None,
        tooltip=text(tip),
        URL=quote(_url_attr(url)) if url else None,
        target=quote("_blank") if url else None,
    )
    return f"{quote(node.id)} [{attrs}{extra}];"


def _url_attr(url: str) -> str:
    """A link as Graphviz may copy it into SVG/HTML attributes unchanged: characters outside a URL's own set
    (quotes, ``<``, ``>``, spaces, non-ASCII) percent-encoded, ``&`` as ``&amp;`` (Graphviz leaves both alone)."""
    from urllib.parse import quote as percent

    return percent(url, safe="/:?#[]@!$&()*+,;=%~-._").replace("&", "&amp;")


def _metric_stmt(node, circuit, extra: str = "") -> str:
    effect = "" if circuit.total_effect is None else f"\nΔm {circuit.total_effect:+.3g}"
    label = f"y = {circuit.metric}{effect}"
    return (
        f"{quote(node.id)} [{_attrs(label=text(label), shape='ellipse', fillcolor=quote('#eeeeee'), tooltip=text(label))}"
        f"{extra}];"
    )


def edge_width(r: float) -> float:
    """Pen width of an edge whose |weight| is ``r`` times the largest."""
    return 0.4 + 3.1 * r


def _edge_stmts(circuit) -> list[str]:
    wmax = max((abs(e.weight) for e in circuit.edges), default=0.0) or 1.0
    out = []
    for e in sorted(circuit.edges, key=lambda e: (e.source, e.target)):
        r = min(1.0, abs(e.weight) / wmax)
        color = rgb(POS_RGB if e.weight >= 0 else NEG_RGB, 0.55 + 0.45 * r)
        attrs = _attrs(
            color=quote(color),
            penwidth=f"{edge_width(r):.2f}",
            style="dashed" if e.weight < 0 else None,
            tooltip=text(f"{e.source} → {e.target}: {e.weight:+.4g}"),
        )
        out.append(f"  {quote(e.source)} -> {quote(e.target)} [{attrs}];")
    return out


def _legend_label(circuit, edges_caption: str = "") -> str:
    """An HTML-like table: node kinds, fill scale, edge sign, the weight scale, what label marks mean and how the
    edges were chosen (numbers and fixed words only: nothing to escape)."""
    scale = max((abs(n.effect) for n in circuit.nodes if n.kind != "metric" and n.effect is not None), default=0.0)
    wmax = max((abs(e.weight) for e in circuit.edges), default=0.0)
    pos, neg = rgb(POS_RGB), rgb(NEG_RGB)
    rows = [
        '<tr><td align="left" colspan="4"><b>legend</b></td></tr>',
        '<tr><td align="left" colspan="4">□ feature (SAE index) · ▲ SAE error · ◯ metric</td></tr>',
        f'<tr><td align="left">effect</td><td bgcolor="{fill(-scale, scale)}"><font color="white">−{scale:.3g}</font></td>'
        f'<td bgcolor="#ffffff" border="1">0</td><td bgcolor="{fill(scale, scale)}"><font color="white">+{scale:.3g}</font>'
        "</td></tr>",
        '<tr><td align="left" colspan="4">negative: dashed outline / dashed edge</td></tr>',
        f'<tr><td align="left">edge</td><td colspan="3" align="left"><font color="{pos}">━━ positive</font>  '
        f'<font color="{neg}">╍╍ negative</font></td></tr>',
    ]
    if wmax:
        steps = [0.1, 0.5, 1.0]
        cells = "  ".join(f'<font point-size="{6 + 6 * r:.0f}">━</font> {r * wmax:.2g}' for r in steps)
        rows.append(f'<tr><td align="left">|weight|</td><td colspan="3" align="left">{cells}</td></tr>')
    info = circuit.provenance.get("node_info") or {}
    shown = {n.id for n in circuit.nodes if n.label}
    if any((info.get(i) or {}).get("status") in STATUS_MARKS for i in shown):
        rows.append(
            '<tr><td align="left" colspan="4">labels: ✓ accepted · ? proposed · ✗ rejected, then the author'
            + (" · ⚠SAE: from another SAE (forced)" if any((info.get(i) or {}).get("forced") for i in shown) else "")
            + "</td></tr>"
        )
    if any((info.get(i) or {}).get("score_low") for i in shown):
        rows.append(
            '<tr><td align="left" colspan="4">⚠ score: auto label predicts its feature\'s firing poorly '
            f"(AUROC &lt; {LOW_SCORE:g} on held-out contexts)</td></tr>"
        )
    if isinstance(edges_caption, str) and edges_caption:
        rows.append(f'<tr><td align="left" colspan="4">{edges_caption}</td></tr>')
    return (
        '<<table border="1" color="#bbbbbb" cellborder="0" cellspacing="1" cellpadding="2">'
        + "".join(rows)
        + "</table>>"
    )


def _legend_stmt(circuit, extra: str = "", edges_caption: str | bool = "") -> str:
    return (
        f'{quote("legend")} [label={_legend_label(circuit, edges_caption)}, shape=plaintext, style="", fontsize=9, '
        f'fillcolor="white"{extra}];'
    )


def _title(circuit, note: str) -> str:
    """Metric and thresholds; the circuit's held-out faithfulness (or that it is not known); its first warning;
    what the figure leaves out."""
    from ..curve import describe

    head = (
        f"{circuit.metric} ({circuit.method}, {circuit.aggregation}) · |effect| > {circuit.node_threshold:.4g}"
        f" · |weight| > {circuit.edge_threshold:.4g}"
    )
    lines = [head, describe(getattr(circuit, "evaluation", None))]
    warnings = getattr(circuit, "warnings", None) or []
    if warnings:
        lines.append("⚠ " + warnings[0] + (f" (+{len(warnings) - 1} more)" if len(warnings) > 1 else ""))
    return "\n".join(lines + ([note] if note else []))


def _header(circuit, layout: str | None, note: str = "") -> list[str]:
    graph = _attrs(
        layout=layout,
        rankdir="BT" if layout is None else None,
        newrank="true" if layout is None else None,
        inputscale="72" if layout else None,
        overlap="true" if layout else None,
        splines="true",
        nodesep="0.1",
        ranksep="0.45",
        outputorder="edgesfirst",
        fontname=quote("Helvetica"),
        label=text(_title(circuit, note)),
        labelloc="t",
        fontsize="12",
        bgcolor=quote("white"),
    )
    return [
        "digraph circuit {",
        f"  graph [{graph}];",
        '  node [style="filled", fontname="Helvetica", fontsize=9, shape=box, height=0.25, width=0.3, '
        'margin="0.05,0.02", penwidth=0.6, color="#555555"];',
        "  edge [arrowsize=0.35];",
    ]


def _rows(circuit) -> dict[str, list]:
    rows: dict[str, list] = {}
    for n in circuit.nodes:
        if n.kind != "metric":
            rows.setdefault(n.submodule or "?", []).append(n)
    return {sub: sorted(rows[sub], key=node_sort_key) for sub in sorted(rows, key=row_key)}


def _infos(circuit) -> dict:
    return dict(circuit.provenance.get("node_info") or {})


def _strength(node) -> tuple:
    return (-abs(node.effect or 0.0),) + node_sort_key(node)


def _more_label(count: int) -> str:
    return f"+{count} more"


def _more_tooltip(sub: str, hidden: tuple[int, float]) -> str:
    return f"{hidden[0]} more nodes in {sub}, each with |effect| ≤ {hidden[1]:.3g} (raise --max-nodes-per-row to show them)"


def _ranked(circuit, order: str, note: str, hidden: dict, wrap: int | None, legend: bool) -> list[str]:
    """``aggregation="sum"``: one rank per submodule; ``dot`` lays it out.

    ``order="layout"`` lets ``dot`` order each row to cut edge crossings (deterministic: nodes are declared
    in index order); ``order="index"`` pins rows to feature-index order with invisible flat edges. ``wrap``
    splits longer rows into stacked ranks (strongest |effect| first).
    """
    scale = max((abs(n.effect) for n in circuit.nodes if n.kind != "metric" and n.effect is not None), default=0.0)
    infos, rows = _infos(circuit), _rows(circuit)
    lines = _header(circuit, None, note)
    spine = []
    for sub, row in rows.items():
        chunks = [row]
        if wrap and len(row) > wrap:
            by_strength = sorted(row, key=_strength)
            chunks = [sorted(by_strength[i : i + wrap], key=node_sort_key) for i in range(0, len(row), wrap)]
        for k, nodes in enumerate(chunks):
            head = f"row:{sub}" + (f":{k}" if k else "")
            name = sub if k == 0 else f"{sub} (cont.)"
            tip = None
            if sub in hidden and k == 0:  # the "+N more" marker under the row's name, where it cannot drift
                name += f"\n{_more_label(hidden[sub][0])}"
                tip = f", tooltip={text(_more_tooltip(sub, hidden[sub]))}"
            spine.append(head)
            lines.append(f"  subgraph {quote('row_' + sub + (f'_{k}' if k else ''))} {{ rank=same;")
            lines.append(
                f'    {quote(head)} [label={text(name)}, shape=plaintext, style="", fontsize=11, group=rows{tip or ""}];'
            )
            lines += [f"    {_node_stmt(n, scale, infos.get(n.id, {}))}" for n in nodes]
            if order == "index":
                lines.append(f"    {' -> '.join(quote(x) for x in [head] + [n.id for n in nodes])} [style=invis];")
            else:  # the row name left of every node, the nodes' order left to dot
                lines += [f"    {quote(head)} -> {quote(n.id)} [style=invis];" for n in nodes]
            lines.append("  }")
    metric = [n for n in circuit.nodes if n.kind == "metric"]
    if metric or legend:
        spine.append("row:y")
        lines.append(f"  subgraph {quote('row_y')} {{ rank=same;")
        lines.append(
            f'    {quote("row:y")} [label={text("metric" if metric else "")}, shape=plaintext, style="", '
            "fontsize=11, group=rows];"
        )
        lines += [f"    {_metric_stmt(n, circuit)}" for n in metric]
        if legend:
            lines.append(f"    {_legend_stmt(circuit, edges_caption=legend)}")
        chain = ["row:y"] + [n.id for n in metric] + (["legend"] if legend else [])
        lines.append(f"    {' -> '.join(quote(x) for x in chain)} [style=invis];")
        lines.append("  }")
    if len(spine) > 1:
        lines.append(f"  {' -> '.join(quote(x) for x in spine)} [style=invis];")
    return [ln for ln in lines if ln] + _edge_stmts(circuit) + ["}"]


def _width(node, info: dict | None = None) -> float:
    """Approximate box width in points (Helvetica 9pt ≈ 5.2pt per character)."""
    return 30.0 if node.kind == "error" else max(24.0, 5.2 * max(len(s) for s in _lines(node, info)) + 10.0)


def _grid(circuit, note: str, hidden: dict, wrap: int | None, legend: bool) -> list[str]:
    """Positions kept: one column per position, one row per submodule; coordinates pinned in points.

    ``wrap`` stacks a cell's nodes in lines of at most ``wrap`` (strongest first)."""
    scale = max((abs(n.effect) for n in circuit.nodes if n.kind != "metric" and n.effect is not None), default=0.0)
    infos, rows = _infos(circuit), _rows(circuit)
    positions = sorted({n.position for ns in rows.values() for n in ns if n.position is not None})
    tokens = circuit.provenance.get("tokens")
    if not positions:
        positions = [0]
    if isinstance(tokens, list) and tokens:
        positions = sorted(set(positions) | set(range(len(tokens))))
    cells: dict[tuple, list] = {}
    for sub, ns in rows.items():
        for n in ns:
            cells.setdefault((sub, n.position if n.position is not None else positions[-1]), []).append(n)
    per_line = wrap or max([1] + [len(c) for c in cells.values()])
    lines_of = {
        key: [sorted(c, key=_strength)[i : i + per_line] for i in range(0, len(c), per_line)]
        for key, c in cells.items()
    }
    lines_of = {key: [sorted(line, key=node_sort_key) for line in ls] for key, ls in lines_of.items()}
    gap, col_gap, row_h, line_h = 6.0, 22.0, 62.0, 30.0

    def token_text(p: int) -> str:
        tok = tokens[p] if isinstance(tokens, list) and 0 <= p < len(tokens) else None
        return f"{tok!s}\n{p}" if tok is not None else f"pos {p}"

    def line_width(line) -> float:
        return sum(_width(n, infos.get(n.id)) for n in line) + gap * max(0, len(line) - 1)

    col_x, x = {}, 0.0
    for p in positions:
        widths = [line_width(line) for sub in rows for line in lines_of.get((sub, p), [])]
        tok_w = 5.6 * max(len(s) for s in token_text(p).split("\n")) + 8
        w = max([tok_w, 30.0] + widths)
        col_x[p] = (x, w)
        x += w + col_gap

    lines = _header(circuit, "neato", note)
    pin = lambda px, py: quote(f"{px:.1f},{py:.1f}!")  # noqa: E731
    y = 0.0
    for sub in rows:
        n_lines = max([1] + [len(lines_of.get((sub, p), [])) for p in positions])
        name, tip = sub, ""
        if sub in hidden:  # the "+N more" marker under the row's name
            name, tip = f"{sub}\n{_more_label(hidden[sub][0])}", f", tooltip={text(_more_tooltip(sub, hidden[sub]))}"
        lines.append(
            f'  {quote("row:" + sub)} [label={text(name)}, shape=plaintext, style="", fontsize=11, '
            f"pos={pin(-50, y + line_h * (n_lines - 1) / 2)}{tip}];"
        )
        for p in positions:
            left, w = col_x[p]
            for k, line in enumerate(lines_of.get((sub, p), [])):
                cx = left + (w - line_width(line)) / 2
                for n in line:
                    nw = _width(n, infos.get(n.id))
                    lines.append(
                        "  " + _node_stmt(n, scale, infos.get(n.id, {}), f", pos={pin(cx + nw / 2, y + k * line_h)}")
                    )
                    cx += nw + gap
        y += row_h + line_h * (n_lines - 1)
    top = y
    last_left, last_w = col_x[positions[-1]]
    for n in (n for n in circuit.nodes if n.kind == "metric"):
        lines.append("  " + _metric_stmt(n, circuit, f", pos={pin(last_left + last_w / 2, top)}"))
    if legend:
        lines.append("  " + _legend_stmt(circuit, f", pos={pin(70, top + 25)}", legend))  # top left, above the rows
    for p in positions:
        left, w = col_x[p]
        lines.append(
            f'  {quote(f"tok:{p}")} [label={text(token_text(p))}, shape=plaintext, style="", fontsize=10, '
            f"pos={pin(left + w / 2, -row_h * 0.75)}];"
        )
    return lines + _edge_stmts(circuit) + ["}"]


EDGE_RULE = "each node's strongest path to y, then the strongest"


def choose_edges(view, edges: list, limit: int) -> tuple[list, int]:
    """At most ``limit`` of ``edges``: each shown node's strongest (widest) path to the metric, strongest nodes
    first and whole paths only, so the mechanism stays connected (positions kept: attention's cross-position
    edges too); then each node still without an edge gets its strongest; then the strongest others. Returns the
    edges (strongest first) and how many shown nodes have no path to ``y`` among the shown nodes."""
    from ..paths import path_to_metric, widest_paths

    ranked = sorted(edges, key=lambda e: (-abs(e.weight), e.source, e.target))
    best = widest_paths([n.id for n in view.nodes], edges)
    chosen: dict[int, object] = {}
    body = sorted((n for n in view.nodes if n.kind != "metric"), key=_strength)
    stranded = 0
    for n in body:
        path = [e for e in path_to_metric(n.id, best) if id(e) not in chosen]
        stranded += n.id not in best
        if len(chosen) + len(path) <= limit:
            chosen.update((id(e), e) for e in path)
    touched = {x for e in chosen.values() for x in (e.source, e.target)}
    for e in ranked:  # nodes still without an edge: their strongest
        if len(chosen) >= limit:
            break
        if e.source not in touched or e.target not in touched:
            chosen[id(e)] = e
            touched |= {e.source, e.target}
    for e in ranked:
        if len(chosen) >= limit:
            break
        chosen.setdefault(id(e), e)
    return [e for e in ranked if id(e) in chosen], stranded


def edges_caption(circuit, view) -> str:
    """The legend's line on the edges: all above the edge threshold, or how the figure chose among them."""
    shown = {n.id for n in view.nodes}
    among = sum(1 for e in circuit.edges if e.source in shown and e.target in shown)
    if not view.edges:
        return ""
    if len(view.edges) < among:
        return f'edges: {len(view.edges)} of {among} shown:<br align="left"/>{EDGE_RULE}<br align="left"/>'
    return f"edges: all with |weight| &gt; {circuit.edge_threshold:g}"


def auto_max_edges(circuit) -> int:
    """The edge budget of a readable figure: three edges per node, at least 150."""
    return max(150, 3 * len(circuit.nodes))


AUTO_NODES_PER_ROW = 20  # figures: at most this many nodes per submodule row unless asked otherwise


def figure_view(
    circuit, max_nodes_per_row: int | str | None = None, keep_isolated: bool = False, max_edges: int | str | None = None
) -> tuple:
    """What a figure shows: ``(circuit, hidden, note)``.

    Drops nodes without edges (unless ``keep_isolated`` or the circuit has no edges), keeps each row's
    ``max_nodes_per_row`` strongest nodes (``"auto"``: ``AUTO_NODES_PER_ROW``; ``hidden``: ``{submodule: (count, largest hidden |effect|)}``), then
    the ``max_edges`` strongest edges among what remains (``"auto"``: :func:`auto_max_edges`). ``note`` says
    what was left out, for the title.
    """
    if max_nodes_per_row == "auto":
        max_nodes_per_row = AUTO_NODES_PER_ROW
    if max_nodes_per_row is not None and int(max_nodes_per_row) < 1:
        raise SFCError(f"max_nodes_per_row must be at least 1, got {max_nodes_per_row!r}")
    body = [n for n in circuit.nodes if n.kind != "metric"]
    total = len(body)
    notes, isolated = [], 0
    if not keep_isolated and circuit.edges:
        linked = {e.source for e in circuit.edges} | {e.target for e in circuit.edges}
        kept = [n for n in body if n.id in linked]
        isolated = total - len(kept)
        body = kept
    hidden: dict[str, tuple[int, float]] = {}
    if max_nodes_per_row is not None:
        rows: dict[str, list] = {}
        for n in body:
            rows.setdefault(n.submodule or "?", []).append(n)
        body = []
        for sub, ns in rows.items():
            ns = sorted(ns, key=_strength)
            body += ns[: int(max_nodes_per_row)]
            rest = ns[int(max_nodes_per_row) :]
            if rest:
                hidden[sub] = (len(rest), abs(rest[0].effect or 0.0))
    shown = {n.id for n in body} | {n.id for n in circuit.nodes if n.kind == "metric"}
    if len(body) < total:
        what = []
        if hidden:
            what.append(f"top {int(max_nodes_per_row)} per row by |effect|")
        if isolated:
            what.append(f"{isolated} without edges hidden")
        notes.append(f"showing {len(body)} of {total} nodes ({', '.join(what)})")
    edges = [e for e in circuit.edges if e.source in shown and e.target in shown]
    view = dataclasses.replace(circuit, nodes=[n for n in circuit.nodes if n.id in shown], edges=edges)
    limit = auto_max_edges(view) if max_edges == "auto" else max_edges
    if limit is not None and 0 <= int(limit) < len(edges):
        kept_edges, stranded = choose_edges(view, edges, int(limit))
        notes.append(f"{len(kept_edges)} of {len(edges)} edges: {EDGE_RULE}")
        if stranded:
            notes.append(f"{stranded} shown node{'s' if stranded > 1 else ''} without a path to y")
        view = dataclasses.replace(view, edges=kept_edges)
    return view, hidden, " · ".join(notes)


def circuit_to_dot(
    circuit,
    order: str = "layout",
    max_edges: int | str | None = None,
    max_nodes_per_row: int | str | None = None,
    wrap: int | None = None,
    keep_isolated: bool = False,
    legend: bool = True,
) -> str:
    """Deterministic DOT (same circuit → byte-identical text); needs no Graphviz binary.

    ``order`` (``"layout"`` or ``"index"``) applies to ranked (``aggregation="sum"``) figures, see :func:`_ranked`.
    ``max_edges``, ``max_nodes_per_row``, ``keep_isolated``: see :func:`figure_view`; the title says what was left
    out. ``wrap``: rows longer than this continue on further lines. ``legend``: draw the legend.
    """
    if order not in ("layout", "index"):
        raise SFCError(f"unknown node order {order!r} (known: layout, index)")
    if wrap is not None and int(wrap) < 1:
        raise SFCError(f"wrap must be at least 1 node per line, got {wrap!r}")
    view, hidden, note = figure_view(circuit, max_nodes_per_row, keep_isolated, max_edges)
    if legend:  # the legend's last row: how the edges were chosen (a string: the legend is drawn)
        legend = edges_caption(circuit, view) or True
    positional = view.aggregation == "none" or any(n.position is not None for n in view.nodes)
    wrap = int(wrap) if wrap else None
    body = _grid(view, note, hidden, wrap, legend) if positional else _ranked(view, order, note, hidden, wrap, legend)
    return "\n".join(body) + "\n"
