"""A circuit's recorded evaluation (``circuit.json``'s ``evaluation``): the held-out faithfulness curve, read back.

Node sets at thresholds are nested (a higher threshold keeps a subset), so a curve point describes the circuit
pruned to threshold ``t`` exactly when it has as many nodes: :func:`at_threshold` tells whether faithfulness
at ``t`` is known. :func:`smallest_reaching` picks the smallest circuit on the curve whose faithfulness reaches
a target (``--target-faithfulness``). Pure Python: figures and the viewer read it without torch.
"""

from __future__ import annotations

from typing import Any

from .errors import SFCError

POINT_KEYS = ("node_threshold", "n_nodes", "faithfulness", "completeness", "faithfulness_se", "completeness_se")


def count_above(circuit, threshold: float) -> int:
    """Nodes (metric aside) of ``circuit`` with ``|effect| > threshold``."""
    return sum(1 for n in circuit.nodes if n.kind != "metric" and abs(n.effect or 0.0) > threshold)


def dedupe(points: list[dict]) -> list[dict]:
    """One point per node set (per node count: the sets are nested), the lowest threshold of each, by threshold."""
    seen: dict[int, dict] = {}
    for p in sorted(points, key=lambda p: p["node_threshold"]):
        seen.setdefault(int(p["n_nodes"]), p)
    return sorted(seen.values(), key=lambda p: p["node_threshold"])


def at_threshold(evaluation: dict, n_nodes: int, threshold: float) -> dict:
    """``evaluation`` re-stated for the circuit pruned to ``threshold`` (``n_nodes`` nodes): the curve keeps its
    points inside the pruned circuit, and the top-level numbers are the curve's point with the same node set
    (``"known": True``), else null (``"known": False``)."""
    curve = [p for p in evaluation.get("curve") or [] if int(p["n_nodes"]) <= n_nodes]
    same = next((p for p in curve if int(p["n_nodes"]) == n_nodes), None)
    out = {**evaluation, "curve": curve, "node_threshold": threshold, "n_nodes": n_nodes, "known": same is not None}
    for key in ("faithfulness", "completeness", "faithfulness_se", "completeness_se"):
        out[key] = None if same is None else same.get(key)
    return out


def smallest_reaching(evaluation: dict | None, target: float, what: str = "--target-faithfulness") -> dict:
    """The curve point with the fewest nodes whose faithfulness is at least ``target``; SFCError naming the best
    point when none is."""
    curve = [p for p in (evaluation or {}).get("curve") or [] if isinstance(p.get("faithfulness"), (int, float))]
    if not curve:
        raise SFCError(f"{what} {target:g}: no held-out faithfulness curve to choose from")
    ok = [p for p in curve if p["faithfulness"] >= target]
    if not ok:
        best = max(curve, key=lambda p: (p["faithfulness"], -p["n_nodes"]))
        raise SFCError(
            f"{what} {target:g}: no circuit on the held-out curve reaches it; the best is faithfulness "
            f"{best['faithfulness']:.3f} with {best['n_nodes']} nodes (node threshold {best['node_threshold']:.4g}): "
            "lower --node-threshold to search larger circuits"
        )
    return min(ok, key=lambda p: (p["n_nodes"], p["node_threshold"]))


def describe(evaluation: dict | None) -> str:
    """One line for titles and summaries: the held-out faithfulness of this circuit, or why it is not known."""
    if not evaluation:
        return "faithfulness not evaluated (sfc evaluate)"
    if not evaluation.get("known", True):
        text = f"faithfulness at |effect| > {evaluation['node_threshold']:.3g} not on the recorded curve"
        below = [p for p in evaluation.get("curve") or [] if isinstance(p.get("faithfulness"), (int, float))]
        if below:
            near = max(below, key=lambda p: p["n_nodes"])
            text += f" (nearest: {near['faithfulness']:.3f} with {near['n_nodes']} node{'s' if near['n_nodes'] != 1 else ''})"
        return text + "; sfc evaluate measures it"
    f, c = evaluation.get("faithfulness"), evaluation.get("completeness")
    if f is None:
        return "faithfulness n/a (ablating everything leaves the metric unchanged)"
    se = evaluation.get("faithfulness_se")
    where = ", ".join(
        str(x)
        for x in (evaluation.get("data"), evaluation.get("split") and f"split {evaluation['split']}")
        if x not in (None, "", False)
    )
    text = f"held-out faithfulness {f:.3f}" + (f" ± {se:.3f}" if isinstance(se, (int, float)) else "")
    if isinstance(c, (int, float)):
        text += f", completeness {c:.3f}"
    detail = f"{evaluation.get('ablation', 'mean')} ablation, {evaluation.get('n_pairs', '?')} pairs"
    return text + f" ({detail}" + (f" of {where}" if where else "") + ")"


def check(raw: Any, source: str) -> dict:
    """``circuit.json``'s ``evaluation``, checked: an object whose numbers are finite (or null) and whose curve
    is a list of points with ``node_threshold`` and ``n_nodes``."""
    import math

    where = f"{source}: corrupt circuit: 'evaluation'"
    if not isinstance(raw, dict):
        raise SFCError(f"{where} must be an object, got {type(raw).__name__}")

    def number(value, name, optional=True):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok and not (optional and value is None):
            raise SFCError(f"{where}: {name} must be a finite number{' or null' if optional else ''}, got {value!r}")

    for key in ("faithfulness", "completeness", "faithfulness_se", "completeness_se"):
        number(raw.get(key), repr(key))
    curve = raw.get("curve", [])
    if not isinstance(curve, list):
        raise SFCError(f"{where}: 'curve' must be a list, got {type(curve).__name__}")
    for i, p in enumerate(curve):
        if not isinstance(p, dict):
            raise SFCError(f"{where}: curve point {i} must be an object, got {type(p).__name__}")
        number(p.get("node_threshold"), f"curve point {i}'s 'node_threshold'", optional=False)
        n = p.get("n_nodes")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise SFCError(f"{where}: curve point {i}'s 'n_nodes' must be an integer >= 0, got {n!r}")
        for key in POINT_KEYS[2:]:
            number(p.get(key), f"curve point {i}'s {key!r}")
    return dict(raw)
