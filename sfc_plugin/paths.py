"""Paths to the metric in a circuit's graph: the widest path from each node to ``y``, and the circuit's health.

A path's *width* is its weakest edge's ``|weight|``; a node's strongest path to the metric is the path of
greatest width (ties: the stronger first edge, then node ids), found in one sweep of the graph in reverse
topological order. Figures and the viewer keep each shown node's strongest path so that the mechanism stays
connected; :func:`health_warnings` says when a circuit does not reach the metric at all.

Works on any objects with ``.id``/``.kind``/``.submodule``/``.effect`` (nodes) and ``.source``/``.target``/
``.weight`` (edges); imports nothing from the rest of the package but its errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

METRIC = "y"
EXPLAINED_MIN = 0.1  # kept nodes that carry less than this share of the effect reaching the metric: a warning


def _topological(ids: list[str], edges: list) -> list[str]:
    """``ids`` in an order where every edge's source comes first (Kahn; nodes on a cycle, if any, last)."""
    indeg = dict.fromkeys(ids, 0)
    outs: dict[str, list[str]] = {i: [] for i in ids}
    for e in edges:
        outs[e.source].append(e.target)
        indeg[e.target] += 1
    ready = sorted(i for i in ids if indeg[i] == 0)
    order: list[str] = []
    while ready:
        nxt: list[str] = []
        for i in ready:
            order.append(i)
            for t in outs[i]:
                indeg[t] -= 1
                if indeg[t] == 0:
                    nxt.append(t)
        ready = sorted(nxt)
    seen = set(order)
    return order + [i for i in ids if i not in seen]


def widest_paths(node_ids: Iterable[str], edges: Iterable, sink: str = METRIC) -> dict[str, tuple[float, object]]:
    """For every node with a path to ``sink`` within ``node_ids``: ``(width, first edge of its widest path)``.

    The sink itself maps to ``(inf, None)``; nodes without a path are absent."""
    ids = list(dict.fromkeys(node_ids))
    present = set(ids)
    if sink not in present:
        return {}
    usable = [e for e in edges if e.source in present and e.target in present and e.source != e.target]
    outs: dict[str, list] = {}
    for e in usable:
        outs.setdefault(e.source, []).append(e)
    best: dict[str, tuple[float, object]] = {sink: (math.inf, None)}
    for i in reversed(_topological(ids, usable)):
        if i == sink:
            continue
        found = None
        for e in outs.get(i, ()):
            if e.target not in best:
                continue
            width = min(abs(e.weight), best[e.target][0])
            key = (width, abs(e.weight), e.target)
            if found is None or key > found[0]:
                found = (key, e)
        if found is not None:
            best[i] = (found[0][0], found[1])
    return best


def path_to_metric(node_id: str, best: dict[str, tuple[float, object]]) -> list:
    """The edges of ``node_id``'s widest path (from :func:`widest_paths`); empty without one."""
    out, seen = [], set()
    while node_id in best and best[node_id][1] is not None and node_id not in seen:
        seen.add(node_id)
        edge = best[node_id][1]
        out.append(edge)
        node_id = edge.target
    return out


def backbone(nodes: list, edges: list, sink: str = METRIC) -> tuple[list, set[str]]:
    """The union of the widest paths of ``nodes`` (strongest |effect| first; each edge once) and the ids of the
    nodes among them that have no path to ``sink``."""
    ids = [n.id for n in nodes] + ([sink] if all(n.id != sink for n in nodes) else [])
    best = widest_paths(ids, edges, sink)
    chosen: dict[int, object] = {}
    stranded = set()
    for n in sorted(nodes, key=lambda n: (-abs(n.effect or 0.0), n.id)):
        if n.id == sink or getattr(n, "kind", None) == "metric":
            continue
        path = path_to_metric(n.id, best)
        if not path:
            stranded.add(n.id)
        for e in path:
            chosen.setdefault(id(e), e)
    return list(chosen.values()), stranded


def explained_share(circuit) -> float | None:
    """The share of the effect reaching the metric that the circuit's nodes carry: the sum of the effects of its
    nodes in the submodule that feeds the metric over the sum over *all* that submodule's nodes, recorded at
    discovery (``provenance["metric_inputs"]``). None when not recorded or when that sum is zero."""
    rec = circuit.provenance.get("metric_inputs") if isinstance(circuit.provenance, dict) else None
    if not isinstance(rec, dict) or not isinstance(rec.get("effect"), (int, float)) or not rec["effect"]:
        return None
    kept = sum(n.effect or 0.0 for n in circuit.nodes if n.kind != "metric" and n.submodule == rec.get("submodule"))
    return kept / rec["effect"]


def health_warnings(circuit) -> list[str]:
    """One-line warnings for a circuit that does not explain its metric: no node with a path to ``y`` (when
    the circuit has edges), kept nodes carrying under 10% of the effect reaching the metric, a held-out
    faithfulness under 0.1."""
    out = []
    body = [n for n in circuit.nodes if n.kind != "metric"]
    has_metric = any(n.kind == "metric" for n in circuit.nodes)
    if body and has_metric and circuit.edges:
        best = widest_paths([n.id for n in circuit.nodes], circuit.edges)
        if not any(n.id in best for n in body):
            out.append(f"no path from any of the {len(body)} nodes to the metric: the circuit does not reach y")
    share = explained_share(circuit)
    if share is not None and share < EXPLAINED_MIN:
        share += 0.0  # no "-0.0%"
        sub = circuit.provenance["metric_inputs"].get("submodule")
        out.append(
            f"the kept nodes carry {share:.1%} of the effect reaching the metric (through {sub}), under "
            f"{EXPLAINED_MIN:.0%}: lower the node threshold"
        )
    ev = getattr(circuit, "evaluation", None) or {}
    f = ev.get("faithfulness")
    if ev.get("known", True) and isinstance(f, (int, float)) and f < EXPLAINED_MIN:
        out.append(
            f"held-out faithfulness {f:.3f} is under {EXPLAINED_MIN}: the circuit does not explain the behaviour"
        )
    return out
