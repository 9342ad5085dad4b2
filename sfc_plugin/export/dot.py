"""Graphviz DOT text of a circuit: one row per submodule, embedding at the bottom, ``y`` on top."""

from __future__ import annotations



def quote(text: str) -> str:
    """A DOT double-quoted string with quotes, backslashes and newlines escaped."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n") + '"'


def _row_key(submodule: str) -> tuple[int, int]:
    kind, _, layer = submodule.partition("_")
    return (-1 if kind == "embed" else int(layer), {"embed": 0, "attn": 1, "mlp": 2, "resid": 3}.get(kind, 4))


def _fill(effect: float, scale: float) -> str:
    """Blue for positive, red for negative, white near zero (scaled to the largest |effect|)."""
    a = 0.0 if not scale else max(-1.0, min(1.0, effect / scale))
    fade = int(round(255 * (1 - abs(a))))
    return f"#{fade:02x}{fade:02x}ff" if a >= 0 else f"#ff{fade:02x}{fade:02x}"


def _feature_sort(node) -> tuple:
    return (node.position if node.position is not None else -1, node.kind == "error", node.feature or 0)


def circuit_to_dot(circuit) -> str:
    """Deterministic DOT (same circuit → same text); needs no Graphviz binary."""
    nodes = [n for n in circuit.nodes if n.kind != "metric"]
    scale = max((abs(n.effect) for n in nodes), default=0.0)
    wmax = max((abs(e.weight) for e in circuit.edges), default=0.0)
    lines = ["digraph circuit {", "  rankdir=BT; newrank=true; nodesep=0.15; ranksep=0.5;",
             '  node [style=filled, fontname="Helvetica", fontsize=10, shape=box];', '  edge [arrowsize=0.5];']
    rows: dict[str, list] = {}
    for n in nodes:
        rows.setdefault(n.submodule, []).append(n)
    for sub in sorted(rows, key=_row_key):
        lines.append(f"  subgraph {quote('cluster_' + sub)} {{ label={quote(sub)}; style=invis; rank=same;")
        for n in sorted(rows[sub], key=_feature_sort):
            text = n.id if not n.label else f"{n.id}\n{n.label}"
            shape = "triangle" if n.kind == "error" else "box"
            lines.append(f"    {quote(n.id)} [label={quote(text)}, shape={shape}, fillcolor={quote(_fill(n.effect, scale))}, "
                         f"tooltip={quote(f'{n.id}: effect {n.effect:.4g}')}];")
        lines.append("  }")
    for n in circuit.nodes:
        if n.kind == "metric":
            lines.append(f"  {quote(n.id)} [label={quote('y')}, shape=ellipse, fillcolor={quote('#dddddd')}];")
    for e in sorted(circuit.edges, key=lambda e: (e.source, e.target)):
        width = 0.5 + 3.5 * (abs(e.weight) / wmax if wmax else 0)
        color = "#1f4fd1" if e.weight >= 0 else "#d12f1f"
        lines.append(f"  {quote(e.source)} -> {quote(e.target)} [color={quote(color)}, penwidth={width:.2f}, "
                     f"tooltip={quote(f'{e.weight:.4g}')}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


