"""Graph files for circuit-tracer's attribution-graph viewer (and Neuronpedia), and Neuronpedia feature URLs.

circuit-tracer's viewer reads ``graph_data/<slug>.json`` (top level ``metadata``, ``qParams``, ``nodes``,
``links``) listed in ``graph-metadata.json`` (``{"graphs": [metadata, ...]}``); :func:`export_neuronpedia`
writes both side by side. SFC nodes map to viewer nodes as follows (``l`` the model layer, ``p`` the position):

================  ==================================================================================
SFC               viewer node
================  ==================================================================================
``attn_l/i``      ``layer "l"``, ``feature_type "cross layer transcoder"``, ``feature`` = Cantor pairing
``mlp_l/i``       of (submodule slot, i), unique across submodules and layers as the viewer assumes
``tc_l/i``        (slot: embed 0, attn_l 3l+1, mlp_l or the transcoder tc_l 3l+2, resid_l 3l+3);
``resid_l/i``     ``node_id "<layer>_<feature>_<p>"``
``embed/i``       the same with ``layer "-1"``: drawn in the viewer's embedding row
``<sub>/err``     ``feature_type "<attn|mlp|resid|embed> reconstruction error"`` (``mlp`` for ``tc_l``), ``feature``
                  -1 (mlp, tc), -2 (attn),
                  -3 (resid), -4 (embed); ``node_id "0_<layer>_<p>"`` as circuit-tracer's MLP errors, with
                  ``_<kind>`` appended for the other kinds
prompt tokens     one ``embedding`` node per token, ``node_id "E_<vocab id>_<p>"`` (no edges: SFC does not
                  attribute to tokens)
metric ``y``      ``feature_type "logit"`` at the last position: ``feature`` = the clean answer's vocabulary id,
                  ``clerp 'Output "<answer>" (p=<probability>) …'`` (the form the viewer parses)
effect            ``influence``: cumulative share of total |effect|, largest first (circuit-tracer's cumulative
                  influence); ``metadata.node_threshold`` is 1.0, so the viewer's pruning slider starts with
                  every node shown
activation        the feature's activation on the prompt (``provenance["prompt"]["node_activations"]``)
================  ==================================================================================

The prompt is the circuit's representative prompt, the first example (``provenance["prompt"]``, recorded by
``discover``). Per-position circuits (``aggregation="none"``) place each node at its position. Position-summed
circuits place every node at the prompt's last position, where the metric is read: their effects are sums over
positions, so one column holds them (the viewer's x axis still shows the whole prompt).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..hook_points import parse_submodule

NEURONPEDIA = "https://www.neuronpedia.org"
_KIND_SLOT = {"attn": 1, "mlp": 2, "tc": 2, "resid": 3}  # a transcoder takes its MLP's slot
_ERROR_FEATURE = {"mlp": -1, "tc": -1, "attn": -2, "resid": -3, "embed": -4}


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


def cantor(x: int, y: int) -> int:
    """The Cantor pairing of two non-negative integers (one integer, unique per pair)."""
    return (x + y) * (x + y + 1) // 2 + y


def _kind_layer(node) -> tuple[str, int]:
    parsed = parse_submodule(node.submodule or "")
    if parsed is None:  # a plugin's submodule name: placed by its layer, typed as a residual submodule
        return "resid", int(node.layer if node.layer is not None else 0)
    return parsed


def _slot(kind: str, layer: int) -> int:
    return 0 if kind == "embed" else 3 * layer + _KIND_SLOT[kind]


def prompt_of(circuit) -> dict:
    """The representative prompt: ``provenance["prompt"]``, else the older ``provenance["tokens"]``."""
    prov = circuit.provenance
    info = dict(prov.get("prompt") or {}) if isinstance(prov.get("prompt"), dict) else {}
    if not info.get("tokens") and isinstance(prov.get("tokens"), list):
        info["tokens"] = [str(t) for t in prov["tokens"]]
    return info


def _tokens(circuit, info: dict) -> list[str]:
    if info.get("tokens"):
        return [str(t) for t in info["tokens"]]
    last = max((n.position for n in circuit.nodes if n.position is not None), default=None)
    if last is None:  # summed circuit of unknown prompt: a placeholder column, then the summed column
        return ["(prompt not recorded)", "(all positions)"]
    return [str(i) for i in range(last + 1)]


def _influence(circuit) -> dict[str, float]:
    total = sum(abs(n.effect or 0.0) for n in circuit.nodes if n.kind != "metric") or 1.0
    out, acc = {}, 0.0
    for n in sorted((n for n in circuit.nodes if n.kind != "metric"), key=lambda n: (-abs(n.effect or 0.0), n.id)):
        acc += abs(n.effect or 0.0)
        out[n.id] = min(1.0, acc / total)
    return out


def _node(node_id, feature, layer, ctx, feature_type, js_id, clerp="", influence=None, activation=None, **extra):
    return {
        "node_id": node_id,
        "feature": feature,
        "layer": layer,
        "ctx_idx": ctx,
        "feature_type": feature_type,
        "token_prob": 0.0,
        "is_target_logit": False,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "jsNodeId": js_id,
        "clerp": clerp,
        "influence": influence,
        "activation": activation,
        **extra,
    }


def _logit_clerp(circuit, info: dict) -> tuple[str, float]:
    prob = info.get("answer_prob")
    answer = info.get("answer")
    name = answer if answer is not None else circuit.metric
    p = "n/a" if prob is None else f"{float(prob):.3f}"
    tail = f" {circuit.metric}"
    if info.get("patch_answer") is not None:
        tail += f' vs "{info["patch_answer"]}"'
    if circuit.total_effect is not None:
        tail += f", Δm {circuit.total_effect:+.3g}"
    return f'Output "{name}" (p={p}){tail}', float(prob or 0.0)


def circuit_to_neuronpedia(circuit, slug: str = "sfc-circuit", scan: str | None = None) -> dict:
    """circuit-tracer's graph dict for ``circuit`` (see the module docstring for the mapping)."""
    info = prompt_of(circuit)
    tokens = _tokens(circuit, info)
    last = len(tokens) - 1
    token_ids = info.get("token_ids") if isinstance(info.get("token_ids"), list) else None
    acts = info.get("node_activations") or {}
    influence = _influence(circuit)
    layers = [_kind_layer(n)[1] for n in circuit.nodes if n.kind != "metric"]
    n_layers = int(circuit.provenance.get("n_layers") or (max(layers, default=-1) + 1))
    ids, nodes = {}, []
    for p in range(len(tokens)):
        vid = token_ids[p] if token_ids and p < len(token_ids) else "?"
        nodes.append(_node(f"E_{vid}_{p}", p, "E", p, "embedding", f"E_{vid}-{p}"))
    body = sorted(
        (n for n in circuit.nodes if n.kind != "metric"),
        key=lambda n: (
            _slot(*_kind_layer(n)),
            n.position if n.position is not None else -1,
            n.kind == "error",
            n.feature or 0,
        ),
    )
    for n in body:
        kind, layer = _kind_layer(n)
        ctx = n.position if n.position is not None else last
        base_id = n.id.split("@", 1)[0]
        if n.kind == "error":
            feat = _ERROR_FEATURE[kind]
            mlp = kind in ("mlp", "tc")  # a transcoder's error is circuit-tracer's MLP error node
            node_id = f"0_{layer}_{ctx}" + ("" if mlp else f"_{kind}")
            where = f'"{tokens[ctx]}"' if n.position is not None and ctx < len(tokens) else "(all positions)"
            node = _node(
                node_id,
                feat,
                str(layer),
                ctx,
                f"{'mlp' if mlp else kind} reconstruction error",
                f"{layer}_{feat}-0",
                clerp=f"Err: {n.submodule} {where}",
                influence=influence[n.id],
            )
        else:
            feat = cantor(_slot(kind, layer), int(n.feature))
            act = acts.get(n.id)
            node = _node(
                f"{layer}_{feat}_{ctx}",
                feat,
                str(layer),
                ctx,
                "cross layer transcoder",
                f"{layer}_{feat}-0",
                clerp=n.label or base_id,
                influence=influence[n.id],
                activation=None if act is None else float(act),
            )
        ids[n.id] = node["node_id"]
        nodes.append(node)
    for n in (n for n in circuit.nodes if n.kind == "metric"):
        vid = info.get("answer_id", 0)
        layer = str(n_layers + 1)
        clerp, prob = _logit_clerp(circuit, info)
        node = _node(f"{layer}_{vid}_{last}", int(vid), layer, last, "logit", f"L_{vid}-{last}", clerp=clerp)
        node.update(token_prob=prob, is_target_logit=True)
        ids[n.id] = node["node_id"]
        nodes.append(node)
    links = [
        {"source": ids[e.source], "target": ids[e.target], "weight": float(e.weight)}
        for e in sorted(circuit.edges, key=lambda e: (e.source, e.target))
        if e.source in ids and e.target in ids
    ]
    saes = [i for i in circuit.provenance.get("saes") or [] if isinstance(i, dict)]
    prompt = info.get("text") or " ".join(t.strip() for t in tokens)
    metadata = {
        "slug": slug,
        "scan": scan or str(circuit.provenance.get("model") or "sfc"),
        "transcoder_list": [str(i.get("neuronpedia_id") or i.get("hook") or i.get("submodule")) for i in saes],
        "prompt_tokens": tokens,
        "prompt": str(prompt),
        "node_threshold": 1.0,
        "schema_version": 1,
        "sfc": {
            "metric": circuit.metric,
            "method": circuit.method,
            "aggregation": circuit.aggregation,
            "node_threshold": circuit.node_threshold,
            "edge_threshold": circuit.edge_threshold,
        },
    }
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": qparams, "nodes": nodes, "links": links}


def slug_of(path) -> str:
    """The viewer loads ``graph_data/<slug>.json``: the file name without ``.json``."""
    name = Path(path).name
    return name[: -len(".json")] if name.endswith(".json") else name


def export_neuronpedia(circuit, path, slug: str | None = None, scan: str | None = None, **_options) -> None:
    """Write ``path`` (``<slug>.json``) and add its entry to ``graph-metadata.json`` in the same folder."""
    from ..errors import SFCError
    from ..files import strict_json, write_atomic

    path = Path(path)
    if not path.name.endswith(".json"):
        raise SFCError(f"circuit-tracer graph files end in .json, got {str(path)!r}")
    if slug is not None and slug != slug_of(path):
        raise SFCError(
            f"slug {slug!r} must be the file name without .json ({slug_of(path)!r}): the viewer loads <slug>.json"
        )
    graph = circuit_to_neuronpedia(circuit, slug_of(path), scan)
    write_atomic(path, strict_json(graph, indent=1, ensure_ascii=False) + "\n")
    index = path.parent / "graph-metadata.json"
    graphs = []
    if index.exists():
        try:
            graphs = [
                g
                for g in json.loads(index.read_text(encoding="utf-8")).get("graphs", [])
                if isinstance(g, dict) and g.get("slug") != graph["metadata"]["slug"]
            ]
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            raise SFCError(f"{str(index)!r} exists but is not a circuit-tracer graph-metadata.json") from None
    graphs.append(graph["metadata"])
    write_atomic(index, strict_json({"graphs": graphs}, indent=2, ensure_ascii=False) + "\n")
