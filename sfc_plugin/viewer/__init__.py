"""``sfc view``: a circuit as a self-contained static site (opens from ``file://``; no CDN, no server).

The site is ``index.html``, ``viewer.js`` and ``viewer.css`` (shipped in ``assets/``, our own code,
no third-party library) and ``data.js``, which sets ``window.SFC_VIEW`` to the circuit, its feature
dashboards and labels. The page lays the circuit out like the paper's figures (one row per
submodule and layer, embedding at the bottom, the metric on top; features are boxes, error terms
triangles; edge colour and width by signed weight) and offers pan/zoom, hover paths, a card per
node, threshold sliders that prune live and search by id or label. It opens on at most 60 nodes, the
strongest with each one's strongest path to the metric (``paths to y``, on by default, keeps those paths at
any threshold), and its header states the circuit's held-out faithfulness and, from the recorded curve, that
of the nodes above the slider. Labels carry their review status and author (annotations) or their score
(``auto``; low scores flagged ``⚠``); a feature's card lets a reader propose a label and a reviewer accept or
reject one, and downloads the resulting ``sfc-annotations/1`` file (the site never writes anywhere: merge the
download with ``sfc annotate merge``). Data reaches the page only
through ``textContent``/``setAttribute``, so no data-derived string is ever read as markup.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
FILES = ("index.html", "viewer.js", "viewer.css")

__all__ = ["build_site", "site_data", "serve", "ASSETS"]


def _label_info(node, info: dict, records: dict) -> tuple[str | None, dict]:
    """A node's label and what is known of it: an annotation's status, author and reviewer, or an ``auto`` label's
    score (nodes without a label get the ``auto`` label when their dashboard is there)."""
    from ..dashboards.labels import auto_label, label_score

    keep = ("source", "status", "author", "reviewer", "forced", "score", "score_low")
    out = {k: info[k] for k in keep if info.get(k) is not None}
    rec = records.get(node.id.split("@", 1)[0]) if node.kind == "feature" else None
    label = node.label
    if label is None and rec is not None:
        label = auto_label(rec)
        scored = label_score(rec)
        out = {"source": "auto"}
        if scored is not None and scored.get("auroc") is not None:
            out.update(score=scored["auroc"], score_low=scored.get("low"))
    return label, out


def site_data(
    circuit, dashboards: dict | None = None, title: str | None = None, annotations: list | None = None
) -> dict:
    """What ``data.js`` holds: nodes (with their row, label and what is known of the label), edges, thresholds, the
    recorded held-out evaluation and warnings, the features' dashboards (with their labels' scores) and, for the
    feature cards' annotation forms, the SAEs' fingerprints and the records of the ``--labels`` annotations file.

    Nodes without a label get the ``auto`` label when their dashboard is there."""
    from ..annotations import SCHEMA, sae_fingerprints
    from ..export.dot import row_key
    from ..validation import safe_url

    records = (dashboards or {}).get("features", {})
    info = circuit.provenance.get("node_info") or {}
    nodes = []
    for n in circuit.nodes:
        label, about = _label_info(n, info.get(n.id) or {}, records)
        nodes.append(
            {
                "id": n.id,
                "submodule": n.submodule,
                "kind": n.kind,
                "feature": n.feature,
                "position": n.position,
                "effect": n.effect,
                "label": label,
                "row": "y" if n.kind == "metric" else (n.submodule or "?"),
                "url": safe_url((info.get(n.id) or {}).get("url")),
                **about,
            }
        )  # http(s) only (the page checks too)
    rows = sorted({n["row"] for n in nodes if n["row"] != "y"}, key=row_key) + ["y"]
    wanted = {n["id"].split("@", 1)[0] for n in nodes if n["kind"] == "feature"}
    prov = circuit.provenance
    default_title = f"{prov.get('dataset') or 'circuit'} · {circuit.metric} ({circuit.method})"
    return {
        "title": title or default_title,
        "metric": circuit.metric,
        "method": circuit.method,
        "aggregation": circuit.aggregation,
        "total_effect": circuit.total_effect,
        "node_threshold": circuit.node_threshold,
        "edge_threshold": circuit.edge_threshold,
        "rows": rows,
        "nodes": nodes,
        "edges": [{"source": e.source, "target": e.target, "weight": e.weight} for e in circuit.edges],
        "evaluation": circuit.evaluation,  # held-out faithfulness and its curve (the header), or None
        "warnings": list(circuit.warnings),
        "dashboards": {k: v for k, v in records.items() if k in wanted},
        "corpus": (dashboards or {}).get("corpus"),
        "annotations": {
            "schema": SCHEMA,
            "fingerprints": sae_fingerprints(prov),
            "records": list(annotations or []),
            "file": (prov.get("labels") or {}).get("options", {}).get("path"),
        },
    }


def build_site(
    circuit, out_dir: str | Path, dashboards: dict | None = None, title: str | None = None, annotations=None
) -> Path:
    """Write the site into ``out_dir`` (atomically per file); returns the path of ``index.html``. ``annotations``:
    the ``sfc-annotations/1`` records the page's annotation forms build on (their download appends to them)."""
    from ..files import strict_json, write_atomic

    out = Path(out_dir)
    data = strict_json(site_data(circuit, dashboards, title, annotations), separators=(",", ":"), ensure_ascii=True)
    # ensure_ascii keeps U+2028/2029 and any non-ASCII out of the script; "<" only occurs inside JSON strings, where
    # \u003c means the same: no "</script>" or "<!--" in the file however it is embedded
    data = data.replace("<", "\\u003c")
    write_atomic(out / "data.js", "window.SFC_VIEW = " + data + ";\n")
    for name in FILES:
        write_atomic(out / name, (ASSETS / name).read_bytes())
    return out / "index.html"


def serve(site: str | Path, port: int = 8000) -> None:  # pragma: no cover - interactive
    """Serve ``site`` on http://127.0.0.1:PORT until interrupted (the site works from file:// too)."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), handler) as httpd:
        print(f"serving {site} on http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
