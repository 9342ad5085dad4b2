"""The Circuit: nodes, weighted edges, thresholds, provenance; ``sfc-circuit/1`` JSON."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import SFCError

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


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write via a temporary file and rename, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    os.replace(tmp, path)
    return path


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

    def prune(self, node_threshold: float | None = None, edge_threshold: float | None = None) -> "Circuit":
        """A sub-circuit at stricter thresholds (no recomputation; thresholds can only rise)."""
        nt = self.node_threshold if node_threshold is None else node_threshold
        et = self.edge_threshold if edge_threshold is None else edge_threshold
        if nt < self.node_threshold or et < self.edge_threshold:
            raise SFCError(f"cannot lower thresholds ({nt}, {et}) below the circuit's ({self.node_threshold}, {self.edge_threshold}) without recomputing")
        nodes = [n for n in self.nodes if n.kind == "metric" or abs(n.effect) > nt]
        keep = {n.id for n in nodes}
        edges = [e for e in self.edges if e.source in keep and e.target in keep and abs(e.weight) > et]
        return Circuit(nodes, edges, self.total_effect, self.metric, self.method, self.steps, self.aggregation,
                       nt, et, dict(self.provenance))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "nodes": [asdict(n) for n in self.nodes], "edges": [asdict(e) for e in self.edges],
                "total_effect": self.total_effect, "metric": self.metric, "method": self.method, "steps": self.steps,
                "aggregation": self.aggregation, "node_threshold": self.node_threshold,
                "edge_threshold": self.edge_threshold, "provenance": self.provenance}

    def to_json(self, path: str | Path | None = None) -> str:
        """The ``sfc-circuit/1`` JSON text; written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        if path is not None:
            write_atomic(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "circuit") -> "Circuit":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            got = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise SFCError(f"{source}: not an {SCHEMA} circuit (schema {got!r})")
        try:
            nodes = [Node(**n) for n in data["nodes"]]
            edges = [Edge(**e) for e in data["edges"]]
            ids = {n.id for n in nodes}
            for e in edges:
                if e.source not in ids or e.target not in ids:
                    raise SFCError(f"{source}: edge {e.source!r} -> {e.target!r} names a node not in the circuit")
                if not math.isfinite(e.weight):
                    raise SFCError(f"{source}: edge {e.source!r} -> {e.target!r} has weight {e.weight!r}")
            return cls(nodes, edges, data["total_effect"], data["metric"], data["method"], data["steps"],
                       data["aggregation"], float(data["node_threshold"]), float(data["edge_threshold"]),
                       dict(data.get("provenance") or {}))
        except (KeyError, TypeError) as exc:
            raise SFCError(f"{source}: corrupt circuit ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_json(cls, path: str | Path) -> "Circuit":
        """Read a circuit file written by :meth:`to_json` (bad files raise a one-line SFCError)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SFCError(f"circuit file {str(path)!r} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SFCError(f"circuit file {str(path)!r} is not valid JSON ({exc})".splitlines()[0]) from None
        return cls.from_dict(data, source=str(path))

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
            svg = svg[svg.find("<svg"):]  # inline: without the XML declaration and DOCTYPE
            bundle["text/html"] = f"<pre>{html.escape(summary)}</pre>\n{svg}"
        return bundle

    def __repr__(self) -> str:
        n = sum(node.kind != "metric" for node in self.nodes)
        return (f"<Circuit {self.metric} ({self.method}, {self.aggregation}): {n} nodes, {len(self.edges)} edges, "
                f"|effect| > {self.node_threshold:g}>")

    def summary(self) -> str:
        """A few lines: nodes per submodule, edges, total effect."""
        per = self.nodes_per_submodule()
        lines = [f"nodes: {sum(per.values())} ({', '.join(f'{k} {v}' for k, v in per.items()) or 'none'})",
                 f"edges: {len(self.edges)}",
                 f"total effect m(patch) - m(clean): {'n/a (zero ablation)' if self.total_effect is None else f'{self.total_effect:.4f}'}"]
        return "\n".join(lines)
