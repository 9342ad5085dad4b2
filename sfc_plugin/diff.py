"""Comparing two circuits (``sfc diff A.json B.json``): which nodes and edges they share, and how alike their effects are.

When both circuits were found with the same SAEs (every submodule they share has the same recorded SAE
fingerprint) a feature means the same thing in both, so nodes and edges compare by id:

- ``jaccard``: overlap of the ``k`` strongest nodes (by |effect|) of each, at matched sizes ``k = 5, 10, 20, …``
  up to the smaller circuit (comparing a 40-node circuit with a 400-node one says little otherwise); the same for
  edges by |weight|; and the overlap of the circuits as given.
- ``rank_correlation``: Spearman's ρ of the signed effects of the nodes in both circuits (None with fewer than 3);
  ``sign_agreement``: the share of shared nodes whose effects have the same sign.
- ``only_a`` / ``only_b``: the nodes in one circuit only, strongest first.

Circuits aggregated differently (``sum`` and ``none``) compare at the feature level: positions are summed away.
With other SAEs or another model, feature indices mean different things. Given both sides' decoders
(``decoders=({submodule: W_dec}, {submodule: W_dec})``; ``sfc diff`` loads them from the circuits' recorded
specs) of the same model width, each feature node of A is matched to the feature of B's SAE at the same
submodule whose decoder direction is closest (cosine ≥ ``min_cosine``, default 0.7), and A's matched nodes take
their partners' ids; error nodes match by submodule; ``matching`` reports how many matched and their cosines.
Without decoders (or with other widths) ``comparable`` says why and only sizes, per-submodule counts, total
effects and held-out faithfulness are compared.
"""

from __future__ import annotations

from .errors import SFCError

SCHEMA = "sfc-diff/1"
SIZES = (5, 10, 20, 50, 100, 200, 500, 1000)
MIN_COSINE = 0.7


def _fingerprints(circuit) -> dict[str, str]:
    from .annotations.records import sae_fingerprints

    return sae_fingerprints(circuit.provenance)


def _effects(circuit, strip: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in circuit.nodes:
        if n.kind == "metric" or n.effect is None:
            continue
        key = n.id.split("@", 1)[0] if strip else n.id
        out[key] = out.get(key, 0.0) + float(n.effect)
    return out


def _weights(circuit, strip: bool) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for e in circuit.edges:
        s, t = (e.source.split("@", 1)[0], e.target.split("@", 1)[0]) if strip else (e.source, e.target)
        out[(s, t)] = out.get((s, t), 0.0) + float(e.weight)
    return out


def _top(values: dict, k: int) -> set:
    return set(sorted(values, key=lambda x: (-abs(values[x]), str(x)))[:k])


def jaccard(a: set, b: set) -> float | None:
    return len(a & b) / len(a | b) if a | b else None


def matched_jaccard(a: dict, b: dict) -> list[dict]:
    """Overlap of the ``k`` strongest entries of ``a`` and ``b`` for each matched size ``k``."""
    n = min(len(a), len(b))
    sizes = [k for k in SIZES if k < n] + ([n] if n else [])
    return [{"k": k, "jaccard": round(jaccard(_top(a, k), _top(b, k)), 4)} for k in sizes]


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None with fewer than 3 points or a constant side."""
    if len(x) < 3:
        return None

    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for m in range(i, j + 1):
                r[order[m]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return round(cov / (vx * vy) ** 0.5, 4) if vx and vy else None


def _summary(circuit) -> dict:
    ev = circuit.evaluation or {}
    return {
        "nodes": sum(n.kind != "metric" for n in circuit.nodes),
        "features": sum(n.kind == "feature" for n in circuit.nodes),
        "edges": len(circuit.edges),
        "per_submodule": circuit.nodes_per_submodule(),
        "total_effect": circuit.total_effect,
        "faithfulness": ev.get("faithfulness"),
        "dataset": circuit.provenance.get("dataset"),
        "metric": circuit.metric,
        "aggregation": circuit.aggregation,
    }


def comparability(a, b) -> tuple[bool, str]:
    """Whether node ids mean the same in both circuits, and why (or why not)."""
    fa, fb = _fingerprints(a), _fingerprints(b)
    subs = {n.submodule for c in (a, b) for n in c.nodes if n.kind != "metric"}
    missing = sorted(s for s in subs if s not in fa or s not in fb)
    if missing:
        return False, f"no recorded SAE fingerprint for {', '.join(missing[:3])}: features cannot be matched by id"
    other = sorted(s for s in subs if fa[s] != fb[s])
    if other:
        return False, (
            f"different SAEs for {', '.join(other[:3])}{' …' if len(other) > 3 else ''} (by fingerprint): feature "
            "indices do not correspond"
        )
    ma = (a.provenance.get("model_fingerprint") or {}).get("sha256")
    mb = (b.provenance.get("model_fingerprint") or {}).get("sha256")
    if ma and mb and ma != mb:
        return False, "different models (by fingerprint): features do not correspond"
    return True, f"same SAEs for all {len(subs)} submodules (by fingerprint)"


def match_features(a, decoders: tuple[dict, dict], min_cosine: float = MIN_COSINE) -> tuple[dict[str, str], dict]:
    """``({A feature id: B feature id}, report)``: each feature node of ``a`` matched to the feature of B's SAE at
    the same submodule with the closest decoder direction (cosine at least ``min_cosine``)."""
    import torch

    da, db = decoders
    wanted: dict[str, list[int]] = {}
    for n in a.nodes:
        if n.kind == "feature":
            wanted.setdefault(n.submodule, []).append(n.feature)
    mapping, cosines, unmatched = {}, [], []
    for sub, feats in wanted.items():
        if sub not in da or sub not in db:
            unmatched += [f"{sub}/{f}" for f in feats]
            continue
        wa = torch.as_tensor(da[sub]).detach().float()
        wb = torch.as_tensor(db[sub]).detach().float()
        if wa.shape[-1] != wb.shape[-1]:
            raise SFCError(
                f"{sub}: decoder widths differ ({wa.shape[-1]} vs {wb.shape[-1]}): features cannot be matched"
            )
        idx = torch.tensor(sorted(set(feats)))
        sims = torch.nn.functional.normalize(wa[idx], dim=-1) @ torch.nn.functional.normalize(wb, dim=-1).T
        best, arg = sims.max(dim=-1)
        for f, c, j in zip(idx.tolist(), best.tolist(), arg.tolist()):
            if c >= min_cosine:
                mapping[f"{sub}/{f}"] = f"{sub}/{j}"
                cosines.append(c)
            else:
                unmatched.append(f"{sub}/{f}")
    report = {
        "method": f"decoder-direction cosine >= {min_cosine:g}, same submodule",
        "matched": len(mapping),
        "unmatched": len(unmatched),
        "median_cosine": round(sorted(cosines)[len(cosines) // 2], 4) if cosines else None,
        "unmatched_ids": sorted(unmatched)[:50],
    }
    return mapping, report


def _renamed(values: dict, mapping: dict[str, str], pairs: bool = False) -> dict:
    def name(i: str) -> str:  # an unmatched feature keeps A's id, marked so it never meets a B id by chance
        base, _, pos = i.partition("@")
        feature = "/" in base and not base.endswith("/err")  # not the metric, not an error node
        base = mapping.get(base) or (f"A:{base}" if feature else base)
        return base + (f"@{pos}" if pos else "")

    out: dict = {}
    for k, v in values.items():
        key = (name(k[0]), name(k[1])) if pairs else name(k)
        out[key] = out.get(key, 0.0) + v
    return out


def compare(
    a,
    b,
    names: tuple[str, str] = ("A", "B"),
    n_only: int = 50,
    decoders: tuple[dict, dict] | None = None,
    min_cosine: float = MIN_COSINE,
) -> dict:
    """``sfc-diff/1``: the comparison of circuits ``a`` and ``b`` (see the module docstring)."""
    ok, why = comparability(a, b)
    out = {"schema": SCHEMA, "a": {"name": names[0], **_summary(a)}, "b": {"name": names[1], **_summary(b)}}
    out["comparable"] = {"by_id": ok, "why": why}
    mapping = None
    if not ok and decoders is not None:
        try:
            mapping, out["matching"] = match_features(a, decoders, min_cosine)
        except SFCError as exc:
            out["comparable"]["why"] += f"; {exc}"
            return out
        out["comparable"]["by_decoder"] = True
    if not ok and mapping is None:
        return out
    strip = a.aggregation != b.aggregation
    ea, eb = _effects(a, strip), _effects(b, strip)
    wa, wb = _weights(a, strip), _weights(b, strip)
    if mapping is not None:
        ea, wa = _renamed(ea, mapping), _renamed(wa, mapping, pairs=True)
    shared = sorted(set(ea) & set(eb), key=lambda i: -max(abs(ea[i]), abs(eb[i])))
    rank = spearman([ea[i] for i in shared], [eb[i] for i in shared])

    def only(x, y):
        ids = sorted(set(x) - set(y), key=lambda i: -abs(x[i]))
        return [{"id": i, "effect": round(x[i], 6)} for i in ids[:n_only]]

    out.update(
        {
            "level": "feature (positions summed)" if strip else ("position" if a.aggregation == "none" else "feature"),
            "nodes": {
                "shared": len(shared),
                "only_a": len(set(ea) - set(eb)),
                "only_b": len(set(eb) - set(ea)),
                "jaccard": round(jaccard(set(ea), set(eb)) or 0.0, 4),
                "matched": matched_jaccard(ea, eb),
            },
            "edges": {
                "shared": len(set(wa) & set(wb)),
                "jaccard": round(jaccard(set(wa), set(wb)) or 0.0, 4),
                "matched": matched_jaccard(wa, wb),
            },
            "rank_correlation": rank,
            "sign_agreement": round(sum((ea[i] > 0) == (eb[i] > 0) for i in shared) / len(shared), 4)
            if shared
            else None,
            "shared_effects": [{"id": i, "a": round(ea[i], 6), "b": round(eb[i], 6)} for i in shared],
            "only_a": only(ea, eb),
            "only_b": only(eb, ea),
        }
    )
    return out


def lines(d: dict) -> list[str]:
    """The comparison as a few lines of text (what ``sfc diff`` prints)."""
    a, b = d["a"], d["b"]
    out = [
        f"A: {a['name']} ({a['nodes']} nodes, {a['edges']} edges)",
        f"B: {b['name']} ({b['nodes']} nodes, {b['edges']} edges)",
        f"comparable by id: {'yes' if d['comparable']['by_id'] else 'no'} ({d['comparable']['why']})",
    ]
    m = d.get("matching")
    if m:
        out.append(
            f"features matched by {m['method']}: {m['matched']} of A's, {m['unmatched']} unmatched"
            + ("" if m["median_cosine"] is None else f", median cosine {m['median_cosine']:.3f}")
            + " (A's matched features take B's ids below)"
        )
    if "nodes" not in d:
        for key in ("total_effect", "faithfulness"):
            out.append(f"{key}: {a[key]} vs {b[key]}")
        return out
    n = d["nodes"]
    top = n["matched"][-1] if n["matched"] else None
    out.append(
        f"nodes: {n['shared']} shared, {n['only_a']} only in A, {n['only_b']} only in B; Jaccard {n['jaccard']:.3f}"
        + (f" ({top['jaccard']:.3f} for the {top['k']} strongest of each)" if top else "")
    )
    out.append("  strongest-k Jaccard: " + ", ".join(f"{m['k']}: {m['jaccard']:.2f}" for m in n["matched"]))
    e = d["edges"]
    out.append(f"edges: {e['shared']} shared, Jaccard {e['jaccard']:.3f}")
    rho = d["rank_correlation"]
    out.append(
        f"rank correlation of shared node effects (Spearman): {'n/a' if rho is None else f'{rho:.3f}'}"
        + ("" if d["sign_agreement"] is None else f", same sign {d['sign_agreement']:.0%}")
    )
    for side in ("only_a", "only_b"):
        if d[side]:
            shown = ", ".join(f"{x['id']} ({x['effect']:+.3g})" for x in d[side][:5])
            out.append(f"only in {side[-1].upper()} (strongest): {shown}")
    return out


def figure(d: dict) -> bytes:
    """PNG: strongest-k Jaccard of nodes and edges against k, and the shared nodes' effects in A against B."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "nodes" not in d:
        raise SFCError("no figure: the circuits' features cannot be matched")
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    for key, style in (("nodes", "o-"), ("edges", "s--")):
        pts = d[key]["matched"]
        left.plot([p["k"] for p in pts], [p["jaccard"] for p in pts], style, ms=4, label=key)
    left.set_xscale("log")
    left.set_ylim(-0.02, 1.02)
    left.set_xlabel("k (strongest of each circuit)")
    left.set_ylabel("Jaccard overlap")
    left.legend(fontsize=8)
    left.set_title("overlap at matched sizes", fontsize=10)
    pts = d["shared_effects"]
    right.scatter([p["a"] for p in pts], [p["b"] for p in pts], s=10, alpha=0.7)
    lim = max([abs(v) for p in pts for v in (p["a"], p["b"])] or [1.0]) * 1.05
    right.plot([-lim, lim], [-lim, lim], color="grey", lw=0.5)
    right.set_xscale("symlog", linthresh=0.1)
    right.set_yscale("symlog", linthresh=0.1)
    right.set_xlabel(f"effect in A: {d['a']['name']}", parse_math=False, fontsize=8)
    right.set_ylabel(f"effect in B: {d['b']['name']}", parse_math=False, fontsize=8)
    rho = d["rank_correlation"]
    right.set_title(
        f"{len(pts)} shared nodes, Spearman ρ = {'n/a' if rho is None else f'{rho:.2f}'}", fontsize=10, parse_math=False
    )
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", metadata={"Software": None})
    plt.close(fig)
    return png.getvalue()
