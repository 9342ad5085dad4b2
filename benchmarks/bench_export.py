"""Time DOT export (and the SVG render when Graphviz is installed) of a synthetic 1,000-node, 5,000-edge circuit.

python benchmarks/bench_export.py [--nodes 1000] [--edges 5000] [--no-render]
"""

from __future__ import annotations

import argparse
import random
import time

from sfc_plugin.circuit import Circuit, Edge, Node
from sfc_plugin.export.render import dot_binary, render


def synthetic(n_nodes: int, n_edges: int, n_layers: int = 6, seed: int = 0) -> Circuit:
    """Random layered circuit: features spread over embed + attn/mlp/resid rows, edges to the next rows."""
    rng = random.Random(seed)
    subs = ["embed"] + [f"{k}_{l}" for l in range(n_layers) for k in ("attn", "mlp", "resid")]
    nodes, rows = [Node("y", None, None, None, "metric", None, None, 1.0)], {s: [] for s in subs}
    for i in range(n_nodes):
        s = subs[i % len(subs)]
        layer = -1 if s == "embed" else int(s.split("_")[1])
        f = None if i < len(subs) else 10 * i + rng.randrange(10)  # one error node per row
        n = Node(
            f"{s}/{'err' if f is None else f}",
            s,
            f"hook.{s}",
            layer,
            "error" if f is None else "feature",
            f,
            None,
            rng.choice([-1, 1]) * rng.uniform(0.1, 3),
        )
        nodes.append(n)
        rows[s].append(n)
    edges, seen = [Edge(n.id, "y", n.effect) for n in rows[subs[-1]]], set()
    while len(edges) < n_edges:
        i = rng.randrange(len(subs) - 1)
        u, d = rng.choice(rows[subs[i]]), rng.choice(rows[subs[min(len(subs) - 1, i + rng.choice([1, 1, 2, 3]))]])
        if (u.id, d.id) not in seen:
            seen.add((u.id, d.id))
            edges.append(Edge(u.id, d.id, rng.choice([-1, 1]) * rng.uniform(0.01, 1)))
    return Circuit(nodes, edges, 1.0, "logit_diff", "ig", 10, "sum", 0.1, 0.01, {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--edges", type=int, default=5000)
    ap.add_argument("--no-render", action="store_true")
    args = ap.parse_args()
    circuit = synthetic(args.nodes, args.edges)
    t = time.perf_counter()
    text = circuit.to_dot()
    dot_s = time.perf_counter() - t
    print(f"circuit: {len(circuit.nodes) - 1} nodes, {len(circuit.edges)} edges")
    print(f"dot export: {dot_s:.3f} s ({len(text) / 1e6:.1f} MB of DOT)")
    if args.no_render:
        return
    if dot_binary() is None:
        print("svg render: skipped (Graphviz 'dot' is not installed)")
        return
    t = time.perf_counter()
    svg = render(text, "svg")
    print(f"svg render: {time.perf_counter() - t:.1f} s ({len(svg) / 1e6:.1f} MB of SVG)")


if __name__ == "__main__":
    main()
