"""The Circuit: nodes, weighted edges, thresholds, provenance; ``sfc-circuit/1`` JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import SFCError
from .files import strict_json, write_atomic  # noqa: F401 - re-exported: `from sfc_plugin.circuit import write_atomic`

SCHEMA = "sfc-circuit/1"


@dataclass
class Node:
    id: str
    submodule: str | None
    hook: str | None
    layer: int | None
    kind: str  # feature | error | metric
    feature: int | None
    position: int | None
    effect: float | None
    label: str | None = None


@dataclass
class Edge:
    source: str
    target: str
    weight: float


def node_id(submodule: str, feature: int | None, position: int | None = None) -> str:
    """``<submodule>/<feature>`` or ``<submodule>/err``, with ``@<position>`` when positions are kept."""
    base = f"{submodule}/{'err' if feature is None else feature}"
    return base if position is None else f"{base}@{position}"


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SFCError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _optional_int(value: Any, what: str, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SFCError(f"{what} must be an integer >= {minimum} or null, got {value!r}")
    return value


def _node(raw: Any, i: int, source: str) -> Node:
    where = f"{source}: corrupt circuit: node {i}"
    if not isinstance(raw, dict):
        raise SFCError(f"{where} must be an object, got {type(raw).__name__}")
    for key in ("id", "kind"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            raise SFCError(f"{where}: {key!r} must be a non-empty string, got {raw.get(key)!r}")
    where = f"{source}: corrupt circuit: node {raw['id']!r}"
    unknown = sorted(set(raw) - set(Node.__dataclass_fields__))
    if unknown:
        raise SFCError(f"{where}: unknown field {unknown[0]!r}")
    missing = [k for k in ("submodule", "hook", "layer", "feature", "position", "effect") if k not in raw]
    if missing:
        raise SFCError(f"{where} lacks field {missing[0]!r}")
    kind = raw["kind"]
    if kind not in ("feature", "error", "metric"):
        raise SFCError(f"{where}: kind {kind!r} (known: feature, error, metric)")
    for key in ("submodule", "hook", "label"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise SFCError(f"{where}: {key!r} must be a string or null, got {raw[key]!r}")
    if kind != "metric" and not raw["submodule"]:
        raise SFCError(f"{where}: a {kind} node needs a submodule")
    layer = _optional_int(raw["layer"], f"{where}: 'layer'", minimum=-1)
    feature = _optional_int(raw["feature"], f"{where}: 'feature'")
    if kind == "feature" and feature is None:
        raise SFCError(f"{where}: a feature node needs a feature index")
    position = _optional_int(raw["position"], f"{where}: 'position'")
    effect = None if raw["effect"] is None else _number(raw["effect"], f"{where}: 'effect'")
    if effect is None and kind != "metric":
        raise SFCError(f"{where}: 'effect' must be a finite number, got None")
    return Node(raw["id"], raw["submodule"], raw["hook"], layer, kind, feature, position, effect, raw.get("label"))


def _edge(raw: Any, i: int, source: str) -> Edge:
    where = f"{source}: corrupt circuit: edge {i}"
    if not isinstance(raw, dict):
        raise SFCError(f"{where} must be an object, got {type(raw).__name__}")
    for key in ("source", "target"):
        if not isinstance(raw.get(key), str):
            raise SFCError(f"{where}: {key!r} must be a node id, got {raw.get(key)!r}")
    unknown = sorted(set(raw) - set(Edge.__dataclass_fields__))
    if unknown:
        raise SFCError(f"{where}: unknown field {unknown[0]!r}")
    weight = raw.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise SFCError(f"{source}: edge {raw['source']!r} -> {raw['target']!r} has weight {weight!r}")
    return Edge(raw["source"], raw["target"], float(weight))


@dataclass
class Circuit:
    nodes: list[Node]
    edges: list[Edge]
    total_effect: float | None
    metric: str
    method: str
    steps: int | None
    aggregation: str
    node_threshold: float
    edge_threshold: float
    provenance: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None  # held-out faithfulness (sfc discover), see sfc_plugin.curve
    warnings: list[str] = field(default_factory=list)

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def nodes_per_submodule(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            if n.kind != "metric":
                counts[n.submodule] = counts.get(n.submodule, 0) + 1
        return counts

    def prune(self, node_threshold: float | None = None, edge_threshold: float | None = None) -> Circuit:
        """A sub-circuit at stricter thresholds (no recomputation; thresholds can only rise). A recorded
        ``evaluation`` is re-stated for the new node set (the curve's point for exactly that set, else
        ``"known": False``) and the warnings are recomputed."""
        from .validation import threshold

        nt = self.node_threshold if node_threshold is None else threshold(node_threshold, "node_threshold")
        et = self.edge_threshold if edge_threshold is None else threshold(edge_threshold, "edge_threshold")
        if nt < self.node_threshold or et < self.edge_threshold:
            raise SFCError(
                f"cannot lower thresholds ({nt}, {et}) below the circuit's ({self.node_threshold}, {self.edge_threshold}) without recomputing"
            )
        nodes = [n for n in self.nodes if n.kind == "metric" or abs(n.effect) > nt]
        keep = {n.id for n in nodes}
        edges = [e for e in self.edges if e.source in keep and e.target in keep and abs(e.weight) > et]
        out = Circuit(
            nodes,
            edges,
            self.total_effect,
            self.metric,
            self.method,
            self.steps,
            self.aggregation,
            nt,
            et,
            dict(self.provenance),
        )
        if self.evaluation is not None:  # the curve's point for the new node set, when there is one
            from .curve import at_threshold

            out.evaluation = at_threshold(self.evaluation, sum(n.kind != "metric" for n in nodes), nt)
        from .paths import health_warnings

        out.warnings = health_warnings(out)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "nodes": [asdict(n) for n in self.nodes],
            "edges": [asdict(e) for e in self.edges],
            "total_effect": self.total_effect,
            "metric": self.metric,
            "method": self.method,
            "steps": self.steps,
            "aggregation": self.aggregation,
            "node_threshold": self.node_threshold,
            "edge_threshold": self.edge_threshold,
            "provenance": self.provenance,
            **({"evaluation": self.evaluation} if self.evaluation is not None else {}),
            **({"warnings": list(self.warnings)} if self.warnings else {}),
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The ``sfc-circuit/1`` JSON text; written atomically to ``path`` when given."""
        text = strict_json(self.to_dict(), refuse="circuit", indent=1)  # NaN: one line naming the field
        if path is not None:
            write_atomic(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "circuit") -> Circuit:
        """A circuit from its JSON structure; every field's type and every number's finiteness are checked."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            got = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise SFCError(f"{source}: not an {SCHEMA} circuit (schema {got!r})")
        for key in ("nodes", "edges", "metric", "method", "aggregation", "node_threshold", "edge_threshold"):
            if key not in data:
                raise SFCError(f"{source}: corrupt circuit: no {key!r}")
        for key in ("nodes", "edges"):
            if not isinstance(data[key], list):
                raise SFCError(f"{source}: corrupt circuit: {key!r} must be a list, got {type(data[key]).__name__}")
        nodes = [_node(n, i, source) for i, n in enumerate(data["nodes"])]
        ids: set[str] = set()
        for n in nodes:
            if n.id in ids:
                raise SFCError(f"{source}: corrupt circuit: node {n.id!r} appears twice")
            ids.add(n.id)
        edges = [_edge(e, i, source) for i, e in enumerate(data["edges"])]
        for e in edges:
            if e.source not in ids or e.target not in ids:
                raise SFCError(f"{source}: edge {e.source!r} -> {e.target!r} names a node not in the circuit")
        for key in ("metric", "method", "aggregation"):
            if not isinstance(data[key], str):
                raise SFCError(f"{source}: corrupt circuit: {key!r} must be a string, got {data[key]!r}")
        if data["aggregation"] not in ("sum", "none"):
            raise SFCError(f"{source}: corrupt circuit: aggregation {data['aggregation']!r} (known: sum, none)")
        steps = data.get("steps")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise SFCError(f"{source}: corrupt circuit: 'steps' must be a positive integer or null, got {steps!r}")
        total = data.get("total_effect")
        if total is not None:
            total = _number(total, f"{source}: corrupt circuit: 'total_effect'")
        thresholds = [
            _number(data[k], f"{source}: corrupt circuit: {k!r}") for k in ("node_threshold", "edge_threshold")
        ]
        if min(thresholds) < 0:
            raise SFCError(f"{source}: corrupt circuit: negative threshold {min(thresholds)!r}")
        prov = data.get("provenance") or {}
        if not isinstance(prov, dict):
            raise SFCError(f"{source}: corrupt circuit: 'provenance' must be an object, got {type(prov).__name__}")
        evaluation = data.get("evaluation")
        if evaluation is not None:
            from .curve import check

            evaluation = check(evaluation, source)
        warnings = data.get("warnings") or []
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            raise SFCError(f"{source}: corrupt circuit: 'warnings' must be a list of strings, got {warnings!r}"[:300])
        return cls(
            nodes,
            edges,
            total,
            data["metric"],
            data["method"],
            steps,
            data["aggregation"],
            thresholds[0],
            thresholds[1],
            dict(prov),
            evaluation,
            list(warnings),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> Circuit:
        """Read a circuit file written by :meth:`to_json` (bad files raise a one-line SFCError)."""
        from .validation import json_file

        return cls.from_dict(json_file(path, "circuit file"), source=str(path))

    def to_dot(self) -> str:
        """Graphviz DOT source of the circuit (see ``sfc_plugin.export``)."""
        from .export.dot import circuit_to_dot

        return circuit_to_dot(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        """Jupyter: the text summary, and with Graphviz installed the figure as ``sfc export`` draws it (capped rows
        and edges, nodes without edges left out); never the full DOT source."""
        import html

        from .export.render import dot_binary, render

        summary = self.summary()
        bundle = {"text/plain": summary}
        if dot_binary():
            svg = render(self, "svg").decode("utf-8")
            svg = svg[svg.find("<svg") :]  # inline: without the XML declaration and DOCTYPE
            bundle["text/html"] = f"<pre>{html.escape(summary)}</pre>\n{svg}"
        return bundle

    def __repr__(self) -> str:
        n = sum(node.kind != "metric" for node in self.nodes)
        return (
            f"<Circuit {self.metric} ({self.method}, {self.aggregation}): {n} nodes, {len(self.edges)} edges, "
            f"|effect| > {self.node_threshold:g}>"
        )

    def summary(self, warnings: bool = True) -> str:
        """A few lines: nodes per submodule, edges, total effect; the held-out faithfulness when recorded, and
        the circuit's warnings (unless ``warnings=False``)."""
        per = self.nodes_per_submodule()
        lines = [
            f"nodes: {sum(per.values())} ({', '.join(f'{k} {v}' for k, v in per.items()) or 'none'})",
            f"edges: {len(self.edges)}",
            f"total effect m(patch) - m(clean): {'n/a (zero ablation)' if self.total_effect is None else f'{self.total_effect:.4f}'}",
        ]
        if self.evaluation is not None:
            from .curve import describe

            lines.append(describe(self.evaluation))
        lines += [f"warning: {w}" for w in self.warnings] if warnings else []
        return "\n".join(lines)
