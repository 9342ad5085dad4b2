"""Export a circuit to Graphviz from Python, with custom feature labels.

    python examples/export_graphviz.py                # discover a circuit on the shipped toy world
    python examples/export_graphviz.py circuit.json   # or export an existing sfc-circuit/1 file

Writes ``circuit_labelled.dot`` (needs no Graphviz) and, when the ``dot`` program is installed,
``circuit_labelled.svg`` (hover a node for its effect; Neuronpedia links where the SAEs have ids).
"""

import sys

from sfc_plugin import Circuit, SFCError, discover
from sfc_plugin.export import apply_labels, export
from sfc_plugin.export.render import dot_binary


def load_circuit() -> Circuit:
    if len(sys.argv) > 1:
        return Circuit.from_json(sys.argv[1])
    from sfc_plugin import toy

    model, saes = toy.load()
    return discover(model, saes, "toy/sva-rc", n_examples=16, node_threshold=0.1, edge_threshold=0.02, progress=False)


def rank_labels(circuit, top=5, **_kw):
    """A label provider is any callable: circuit -> {node_id: label or {"label", "url", "tooltip"}}."""
    ranked = sorted((n for n in circuit.nodes if n.kind == "feature"), key=lambda n: -abs(n.effect))[:top]
    return {
        n.id: {"label": f"top {i} ({n.effect:+.2f})", "tooltip": "labelled by rank_labels"}
        for i, n in enumerate(ranked, 1)
    }


if __name__ == "__main__":
    try:
        circuit = load_circuit()
    except SFCError as exc:  # e.g. no toy artifacts yet: pass a circuit.json instead
        sys.exit(f"export_graphviz: {exc}")
    circuit = apply_labels(circuit, rank_labels, top=5)  # custom labels ...
    circuit = apply_labels(circuit, "neuronpedia")  # ... plus links for SAEs with a neuronpedia_id
    print(circuit.summary())
    export(circuit, "circuit_labelled.dot", "dot")
    print("wrote circuit_labelled.dot")
    if dot_binary():
        export(circuit, "circuit_labelled.svg", "svg")
        print("wrote circuit_labelled.svg")
