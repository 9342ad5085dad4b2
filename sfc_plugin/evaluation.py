"""Faithfulness and completeness of a circuit under mean / zero / resample ablation (paper §3.2).

``m(C)`` runs the model with every node outside ``C`` ablated, in one forward pass: at each
submodule the (already modified) activation is re-encoded (a transcoder's from its read hook), features and
error terms outside the circuit are replaced by their ablation values, and ``decode(f) + ε`` continues
downstream (a transcoder's ``decode(f) + ε`` replaces its MLP's output).
Node effects come from the circuit, so a threshold sweep never recomputes attribution.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import torch

from . import threads
from .circuit import Circuit
from .curve import POINT_KEYS
from .data import resolve_records, tokenize
from .errors import SFCError
from .metrics import resolve_metric
from .plugins import lookup
from .splicing import Submodule, node_hooks, read_hooks
from .world import world_args


def _effect_maps(circuit: Circuit, subs: list[Submodule], width: int):
    """Per submodule: |effect| of features ``[pos?, F]`` and errors ``[pos?]`` (−inf where absent)."""
    per_pos = circuit.aggregation == "none"
    maps = {}
    for s in subs:
        shape_f = (width, s.d_sae) if per_pos else (s.d_sae,)
        feat = torch.full(shape_f, -math.inf, dtype=torch.float64)
        err = torch.full((width,) if per_pos else (), -math.inf, dtype=torch.float64)
        maps[s.name] = [feat, err]
    for n in circuit.nodes:
        if n.kind == "metric" or n.submodule not in maps:
            continue
        sub = next(x for x in subs if x.name == n.submodule)
        if n.kind == "feature" and not 0 <= n.feature < sub.d_sae:
            raise SFCError(
                f"circuit node {n.id!r} names feature {n.feature}, but the SAE at {sub.hook} has {sub.d_sae} features"
            )
        if per_pos and (n.position is None or not 0 <= n.position < width):
            raise SFCError(
                f"circuit node {n.id!r} has position {n.position!r}, outside the evaluation prompts' {width} positions"
            )
        target = maps[n.submodule][0 if n.kind == "feature" else 1]
        index = tuple(i for i in ((n.position if per_pos else None), n.feature) if i is not None)
        target[index] = abs(n.effect)
    return maps


def _thresholds(circuit: Circuit, maps, n: int) -> list[float]:
    effects = torch.cat([torch.cat([f.flatten(), e.flatten()]) for f, e in maps.values()])
    effects = effects[torch.isfinite(effects)]
    if effects.numel() == 0:
        return [circuit.node_threshold]
    lo, hi = max(circuit.node_threshold, float(effects.min()) * 0.999, 1e-6), float(effects.max())
    return sorted({lo * (hi / lo) ** (i / max(n - 1, 1)) for i in range(n)} | {circuit.node_threshold})


def evaluate(
    model,
    saes=None,
    circuit: Circuit | None = None,
    data=None,
    *,
    ablation: str | Callable = "mean",
    thresholds=None,
    start_layer: int = 0,
    include_errors: bool = True,
    metric=None,
    n_thresholds: int = 15,
    batch_size: int | None = None,
    n_examples: int | None = None,
    pm=None,
    progress: bool = True,
    device: str | None = None,
    dtype=None,
    force: bool = False,
    allow_unk: bool = False,
    max_memory=None,
) -> dict[str, Any]:
    """Faithfulness ``(m(C) − m(∅)) / (m(M) − m(∅))`` and completeness ``(m(M∖C) − m(∅)) / (m(M) − m(∅))``.

    Both are None (JSON ``null``) when ablating everything leaves the metric unchanged (``m(M) = m(∅)``).
    ``evaluate(world, circuit, data)`` with a :class:`~sfc_plugin.world.World`, or ``evaluate(model, saes,
    circuit, data)`` (model and SAEs as for :func:`~sfc_plugin.discover`, loaded with ``device`` and ``dtype``).

    Returns the ``faithfulness.json`` structure: the circuit's own point and one point per node set (thresholds
    log-spaced over the circuit's effects by default; thresholds that keep the same nodes are evaluated once, at
    the lowest), each with ``faithfulness_se`` and ``completeness_se``, one standard error across examples
    (:func:`ratio_se`). ``start_layer``: submodules below
    it are never ablated. ``include_errors=False``: error terms are ablated everywhere but in ``M``.
    SAEs or a model other than those the circuit was found with (by the fingerprints in its provenance)
    are refused unless ``force``; the result's ``provenance_check`` says which. ``max_memory`` (e.g.
    ``"4GB"``; default as for discover) caps the examples per forward pass.
    """
    from tqdm.auto import tqdm

    from . import validation as check
    from .fingerprints import check as check_fingerprints

    if thresholds is not None:
        if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__iter__"):
            raise SFCError(f"thresholds must be a list of numbers, got {thresholds!r}")
        thresholds = [check.threshold(t, "threshold") for t in thresholds]
    n_thresholds = check.integer(n_thresholds, "n_thresholds", minimum=1)
    start_layer = check.integer(start_layer, "start_layer", minimum=0)
    batch_size = check.integer(batch_size, "batch_size", minimum=1, optional=True)
    n_examples = check.integer(n_examples, "n_examples", minimum=1, optional=True)
    world, circuit, data = world_args(model, saes, circuit, data, device=device, dtype=dtype)
    if circuit is None:
        raise SFCError("evaluate needs a circuit")
    model, subs = world.model, world.submodules
    fingerprint_record = check_fingerprints(circuit.provenance, model, world.saes, force, "force=True (--force)")
    missing = {n.submodule for n in circuit.nodes if n.kind != "metric"} - {s.name for s in subs}
    if missing:
        raise SFCError(f"circuit has nodes in submodule {sorted(missing)[0]!r} but no SAE was given for it")
    records = resolve_records(data, n_examples, pm)
    device = next(model.parameters()).device
    full = tokenize(model, records, device, allow_unk=allow_unk)
    metric_fn, _ = resolve_metric(metric or circuit.metric, full.patch_answer is not None, pm)
    ablate_fn = ablation if callable(ablation) else lookup("ablation", ablation, pm)
    width = int(full.last.max()) + 1
    if circuit.aggregation == "none" and int(full.last.min()) != int(full.last.max()):
        raise SFCError("a per-position circuit (aggregation 'none') needs evaluation prompts of equal token length")
    maps = _effect_maps(circuit, subs, width)
    points = (
        sorted(set(float(t) for t in thresholds))
        if thresholds is not None
        else _thresholds(circuit, maps, n_thresholds)
    )
    if points and min(points) < circuit.node_threshold:
        raise SFCError(f"threshold {min(points)} is below the circuit's node threshold {circuit.node_threshold}")
    from .attribution.forward import metric_positions, run_metric
    from .budget import MemoryBudget

    budget = MemoryBudget.resolve(max_memory, model, device)
    metric_pos = 1 if metric_positions(metric_fn) == "last" else width
    per_example = budget.forward_row(width, budget.shape.n_layers, metric_pos, grad=False) + width * budget.encode_row(
        max(s.d_sae for s in subs)
    )  # one SAE's dense features at a time
    batches = list(full.split(budget.rows(per_example, "evaluation", share=0.8, cap=int(batch_size or 32))))
    with torch.no_grad():
        abl = ablate_fn(model, subs, full)

        def run(
            keep: Callable[[Submodule, int], tuple[torch.Tensor, torch.Tensor]] | None,
        ) -> tuple[float, torch.Tensor]:
            """Mean metric with nodes outside ``keep`` ablated (``None``: the unmodified model), and its value per
            example (float64, for standard errors)."""
            total, lo, values = 0.0, 0, []
            for b in batches:
                threads.recheck()
                ablate = {}
                for s in subs if keep is not None else []:
                    if s.layer < start_layer:
                        continue
                    kf, ke = keep(s, b.clean.shape[1])
                    a = abl[s.name]
                    af = a.f[lo : lo + len(b)] if a.f.shape[0] == len(full) else a.f
                    ae = a.err[lo : lo + len(b)] if a.err.shape[0] == len(full) else a.err
                    T = b.clean.shape[1]
                    ablate[s.name] = (kf, ke, af[:, :T], ae[:, :T])

                def spliced(s, read, x):
                    kf, ke, af, ae = ablate[s.name]
                    f = s.encode(read)
                    err = x - s.decode(f)
                    return s.decode(torch.where(kf, f, af)) + torch.where(ke[..., None], err, ae)

                hooks = node_hooks([s for s in subs if s.name in ablate], spliced)
                with read_hooks(model, subs):
                    m = run_metric(model, metric_fn, b, hooks)
                total += float(m.sum())
                values.append(m.detach().to("cpu", torch.float64).reshape(-1))
                lo += len(b)
            return total / len(full), torch.cat(values)

        def in_circuit(t: float, complement: bool = False):
            def keep(s: Submodule, T: int):
                f, e = maps[s.name]
                kf, ke = f > t, e > t
                if complement:
                    kf, ke = ~kf, ~ke
                if not include_errors:
                    ke = torch.zeros_like(ke)
                if circuit.aggregation == "none":
                    kf, ke = kf[:T], ke[:T]
                return kf.to(device), (ke if ke.dim() else ke.expand(T)).to(device)

            return keep

        m_full, v_full = run(None)
        m_empty, v_empty = run(in_circuit(math.inf))
        denom = m_full - m_empty
        if not (math.isfinite(m_full) and math.isfinite(m_empty)):
            raise SFCError(
                f"the metric is not finite (model {m_full!r}, everything ablated {m_empty!r}); check the data and SAEs"
            )

        def n_nodes(t: float) -> int:
            return sum(int((f > t).sum() + (e > t).sum()) for f, e in maps.values())

        def point(t: float) -> dict[str, float]:
            out: dict[str, Any] = {"node_threshold": t, "n_nodes": n_nodes(t)}
            for name, complement in (("faithfulness", False), ("completeness", True)):
                m, v = run(in_circuit(t, complement))
                out[name] = (m - m_empty) / denom if denom else None
                out[name + "_se"] = ratio_se(v - v_empty, v_full - v_empty) if denom else None
            return out

        unique = {}  # one threshold per node set (the sets are nested: one per node count), the lowest
        for t in points:
            unique.setdefault(n_nodes(t), t)
        thresholds_run = sorted(unique.values())
        curve = [
            point(t)
            for t in tqdm(thresholds_run, desc="thresholds", file=sys.stderr, disable=not progress, leave=False)
        ]
        own_n = n_nodes(circuit.node_threshold)
        own = next((p for p in curve if p["n_nodes"] == own_n), None) or point(circuit.node_threshold)
    return {
        "ablation": ablation if isinstance(ablation, str) else getattr(ablation, "__name__", "custom"),
        "circuit": {
            k: own[k] for k in ("n_nodes", "faithfulness", "completeness", "faithfulness_se", "completeness_se")
        },
        "points": curve,
        "m_full": m_full,
        "m_empty": m_empty,
        "start_layer": start_layer,
        "include_errors": include_errors,
        "n_examples": len(full),
        "provenance_check": fingerprint_record,
    }


def ratio_se(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Standard error across examples of ``mean(a) / mean(b)`` (the delta method for a ratio of means):
    ``sd(a − R·b) / (√n · |mean(b)|)`` with ``R = mean(a) / mean(b)``; None for fewer than two examples."""
    n = int(a.numel())
    mb = float(b.mean())
    if n < 2 or mb == 0:
        return None
    r = float(a.mean()) / mb
    return float((a - r * b).std(unbiased=True)) / (math.sqrt(n) * abs(mb))


def _fmt(value, se=None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" ±{se:.3f}" if se is not None else "")


COLUMNS = ["node_threshold", "n_nodes", "faithfulness", "faithfulness_se", "completeness", "completeness_se"]


def format_table(result: dict[str, Any]) -> str:
    """The curve as a text table (± one standard error across examples)."""
    rows = [f"{'threshold':>10} {'nodes':>6} {'faithfulness':>14} {'completeness':>14}"]
    for p in result["points"]:
        f, c = _fmt(p["faithfulness"], p.get("faithfulness_se")), _fmt(p["completeness"], p.get("completeness_se"))
        rows.append(f"{p['node_threshold']:>10.4g} {p['n_nodes']:>6d} {f:>14} {c:>14}")
    c = result["circuit"]
    rows.append(
        f"circuit: {c['n_nodes']} nodes, faithfulness {_fmt(c['faithfulness'], c.get('faithfulness_se'))}, "
        f"completeness {_fmt(c['completeness'], c.get('completeness_se'))} "
        f"({result['ablation']} ablation, {result['n_examples']} examples; ± one standard error across examples)"
    )
    return "\n".join(rows)


def write_report(result: dict[str, Any], out_dir, title: str | None = None, overwrite: bool = False) -> list:
    """``faithfulness.json``, ``faithfulness.csv`` and ``faithfulness.png`` (log x axis, error bars of one standard
    error across examples) in ``out_dir``, as one set."""
    import csv
    import io

    from .files import strict_json, write_set

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result["points"])
    files = {"faithfulness.json": strict_json(result, indent=1) + "\n", "faithfulness.csv": buf.getvalue()}
    files["faithfulness.png"] = curve_figure(result["points"], title or f"{result['ablation']} ablation")
    return write_set(out_dir, files, overwrite=overwrite)


def curve_figure(points: list[dict], title: str, mark: dict | None = None) -> bytes:
    """PNG of faithfulness and completeness against nodes (log x), ± one standard error; ``mark``: a point to
    ring (the circuit's own)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for key, style, label in (("faithfulness", "o-", "faithfulness"), ("completeness", "s--", "completeness")):
        pts = [p for p in points if p["n_nodes"] > 0 and p.get(key) is not None]
        se = [p.get(key + "_se") or 0.0 for p in pts]
        ax.errorbar(
            [p["n_nodes"] for p in pts], [p[key] for p in pts], yerr=se, fmt=style, capsize=2, ms=4, label=label
        )
    if mark and mark.get("faithfulness") is not None and mark.get("n_nodes"):
        ax.plot([mark["n_nodes"]], [mark["faithfulness"]], "o", ms=11, mfc="none", mec="black", label="this circuit")
    ax.set_xscale("log")
    ax.set_xlabel("nodes in circuit")
    ax.set_ylabel("fraction of the model's metric")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_title(title, parse_math=False, fontsize=10)  # a data name's "$" stays text
    ax.legend(fontsize=8)
    fig.text(0.99, 0.01, "bars: ±1 standard error across examples", ha="right", va="bottom", fontsize=6, color="grey")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", metadata={"Software": None})  # no version stamp: byte-identical figures
    plt.close(fig)
    return png.getvalue()


def record(result: dict[str, Any], data: str | None = None, split: str | None = None) -> dict[str, Any]:
    """What ``circuit.json``'s ``evaluation`` holds for an :func:`evaluate` result: the circuit's own point
    (faithfulness, completeness, their standard errors, nodes, threshold), where the pairs came from, the
    settings and the curve (see :mod:`sfc_plugin.curve`)."""
    own = result["circuit"]
    curve = [{k: p.get(k) for k in POINT_KEYS} for p in result["points"]]
    own_point = next((p for p in curve if p["n_nodes"] == own["n_nodes"]), None)
    return {
        "faithfulness": own["faithfulness"],
        "completeness": own["completeness"],
        "faithfulness_se": own.get("faithfulness_se"),
        "completeness_se": own.get("completeness_se"),
        "n_nodes": own["n_nodes"],
        "node_threshold": own_point["node_threshold"] if own_point else None,
        "known": True,
        "n_pairs": result["n_examples"],
        "data": data,
        "split": split,
        "ablation": result["ablation"],
        "start_layer": result["start_layer"],
        "include_errors": result["include_errors"],
        "m_full": result["m_full"],
        "m_empty": result["m_empty"],
        "curve": curve,
    }


def attach(circuit: Circuit, result: dict[str, Any], data: str | None = None, split: str | None = None) -> Circuit:
    """Record an :func:`evaluate` result in ``circuit`` (its ``evaluation``, written to ``circuit.json``, shown in
    figure titles and the viewer) and refresh its warnings; returns the circuit. ``data``/``split`` say where the
    held-out pairs came from. ``sfc discover`` does this on the dataset's held-out split."""
    from .paths import health_warnings

    circuit.evaluation = record(result, data, split)
    circuit.warnings = health_warnings(circuit)
    return circuit
