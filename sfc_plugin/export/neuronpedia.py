"""Attribution-graph JSON for the circuit-tracer / Neuronpedia graph viewer, and Neuronpedia feature URLs.

The viewer's file has top-level ``metadata``, ``qParams``, ``nodes`` and ``links``. SFC nodes map to it as:

==================  ==============================================================================
SFC                 viewer node
==================  ==============================================================================
submodule row       ``layer``: the row's index, ``"0"`` for the lowest submodule in the circuit
                    (embed, attn_0, mlp_0, resid_0, ...); the metric sits one row above the last
feature ``s/f``     ``feature_type "cross layer transcoder"``, ``feature`` = SAE feature index,
                    ``node_id "<row>_<f>_<pos>"``
error ``s/err``     ``feature_type "mlp reconstruction error"``, ``feature -1``, ``node_id "<row>_-1_<pos>"``
metric ``y``        ``feature_type "logit"``, ``is_target_logit true``, ``clerp`` names the metric
position            ``ctx_idx`` = the node's position; without positions (``aggregation="sum"``) the
                    prompt's last position (0 when the prompt is unknown)
effect              ``influence``: cumulative share of total |effect| (largest first), as circuit-tracer
                    prunes by; ``activation`` stays null (circuits do not store activations)
label               ``clerp`` (the node id when unlabelled)
==================  ==============================================================================

Edges become ``links`` ``{source, target, weight}`` (upstream → downstream, signed weight).
"""

from __future__ import annotations

import json
from pathlib import Path

from .dot import row_key

NEURONPEDIA = "https://www.neuronpedia.org"


def neuronpedia_ids(circuit) -> dict[str, str]:
    """``{submodule: neuronpedia_id}`` from ``provenance["saes"]`` entries that carry one."""
    out = {}
    for info in circuit.provenance.get("saes") or []:
        if isinstance(info, dict) and info.get("neuronpedia_id") and info.get("submodule"):
            out[info["submodule"]] = str(info["neuronpedia_id"])
    return out


def feature_url(neuronpedia_id: str, feature: int) -> str:
    """``https://www.neuronpedia.org/<model>/<sae>/<feature>`` (no network access)."""
    return f"{NEURONPEDIA}/{neuronpedia_id.strip('/')}/{int(feature)}"


def _tokens(circuit) -> list[str]:
    tokens = circuit.provenance.get("tokens")
    if isinstance(tokens, list) and tokens:
        return [str(t) for t in tokens]
    n = max((n.position for n in circuit.nodes if n.position is not None), default=0) + 1
    return [str(i) for i in range(n)]


def circuit_to_neuronpedia(circuit, slug: str = "sfc-circuit", scan: str | None = None) -> dict:
    """The viewer's graph dict for ``circuit`` (see the module docstring for the mapping)."""
    subs = sorted({n.submodule for n in circuit.nodes if n.kind != "metric"}, key=row_key)
    row = {s: i for i, s in enumerate(subs)}
    tokens = _tokens(circuit)
    last = len(tokens) - 1
    total = sum(abs(n.effect or 0.0) for n in circuit.nodes if n.kind != "metric") or 1.0
    influence, acc = {}, 0.0
    for n in sorted((n for n in circuit.nodes if n.kind != "metric"), key=lambda n: (-abs(n.effect or 0.0), n.id)):
        acc += abs(n.effect or 0.0)
        influence[n.id] = min(1.0, acc / total)
    ids, nodes = {}, []
    for n in circuit.nodes:
        ctx = n.position if n.position is not None else last
        base = {"token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0, "activation": None}
        if n.kind == "metric":
            layer, feat = str(len(subs)), 0
            effect = "" if circuit.total_effect is None else f" (Δm {circuit.total_effect:+.3g})"
            node = dict(base, node_id=f"{layer}_{feat}_{ctx}", feature=feat, layer=layer, ctx_idx=ctx, feature_type="logit",
                        is_target_logit=True, jsNodeId=f"L_{feat}-{ctx}", clerp=f"metric {circuit.metric}{effect}",
                        influence=None)
        else:
            layer = str(row[n.submodule])
            feat = -1 if n.kind == "error" else int(n.feature)
            kind = "mlp reconstruction error" if n.kind == "error" else "cross layer transcoder"
            node = dict(base, node_id=f"{layer}_{feat}_{ctx}", feature=feat, layer=layer, ctx_idx=ctx, feature_type=kind,
                        jsNodeId=f"{layer}_{feat}-{ctx}", clerp=n.label or n.id, influence=influence[n.id])
        ids[n.id] = node["node_id"]
        nodes.append(node)
    links = [{"source": ids[e.source], "target": ids[e.target], "weight": float(e.weight)}
             for e in sorted(circuit.edges, key=lambda e: (e.source, e.target))]
    saes = [i for i in circuit.provenance.get("saes") or [] if isinstance(i, dict)]
    metadata = {"slug": slug, "scan": scan or str(circuit.provenance.get("model") or "sfc"),
                "transcoder_list": [str(i.get("neuronpedia_id") or i.get("hook") or i.get("submodule")) for i in saes],
                "prompt_tokens": tokens, "prompt": str(circuit.provenance.get("prompt") or "".join(tokens)),
                "node_threshold": circuit.node_threshold, "schema_version": 1}
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": qparams, "nodes": nodes, "links": links}


def export_neuronpedia(circuit, path, slug: str | None = None, scan: str | None = None, **_options) -> None:
    """Write the viewer's graph JSON (``slug`` defaults to the file name)."""
    from ..files import write_atomic

    path = Path(path)
    slug = slug or path.name.split(".")[0] or "sfc-circuit"
    write_atomic(path, json.dumps(circuit_to_neuronpedia(circuit, slug, scan), indent=1, ensure_ascii=False) + "\n")
