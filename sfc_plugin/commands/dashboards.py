"""``sfc dashboards [CIRCUIT.json] [--features ID ...] [--corpus FILE|NAME] -o DIR``."""

from __future__ import annotations

import time
from pathlib import Path

from ..dashboards.autolabel import LOW, SCORE_CONTEXTS
from ..errors import SFCError
from . import options as opt


def add_parser(subparsers) -> None:
    from ..corpus import TEXT_HELP

    p = subparsers.add_parser(
        "dashboards",
        help="feature dashboards (top contexts, density, histogram, promoted tokens) "
        "for a circuit's features or listed feature ids",
    )
    p.add_argument("circuit", nargs="?", help="circuit file (sfc-circuit/1 JSON): dashboards for its feature nodes")
    p.add_argument(
        "--features", nargs="+", metavar="ID", help="feature ids such as resid_2/173 (in addition to the circuit's)"
    )
    p.add_argument("--corpus", help=f"{TEXT_HELP} (default 'toy': a sample of the toy language)")
    opt.add_world_options(p)
    p.add_argument("-k", type=int, default=20, help="top-activating contexts per feature (default 20)")
    p.add_argument("--context-size", type=int, help="tokens per context (default 32 for toy, else min(n_ctx, 128))")
    p.add_argument("--n-contexts", type=int, help="use at most N contexts of the corpus (toy default 2048)")
    p.add_argument("--batch-size", type=int, default=64, help="contexts per batch (default 64)")
    p.add_argument(
        "--score-contexts",
        type=int,
        default=SCORE_CONTEXTS,
        help=f"score each auto label on up to N held-out contexts (default {SCORE_CONTEXTS}; 0: no scores)",
    )
    p.add_argument(
        "--cache", help="cache directory (default OUT/cache): finished features are reused, an interrupted run resumes"
    )
    p.add_argument("-o", "--out", default="sfc-out/dashboards", help="output directory (default ./sfc-out/dashboards)")
    opt.add_config_option(p, "dashboards")
    opt.add_quiet(p, "no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..circuit import Circuit
    from ..dashboards import compute_dashboards, feature_ids, write_dashboards

    s = opt.settings(args, "dashboards")
    started = time.perf_counter()
    circuit = Circuit.from_json(args.circuit) if args.circuit else None
    ids = list(args.features or [])
    if circuit is not None:
        ids = feature_ids(circuit) + ids
    if not ids:
        raise SFCError("nothing to do: give a circuit file or --features ID ...")
    prov = circuit.provenance if circuit is not None else {}
    if s["model"] is None and not s["sae"] and not s["preset"] and prov.get("model_source") not in (None, "toy"):
        raise SFCError(f"circuit was discovered on model {prov['model_source']!r}: give --model and --sae")
    world = opt.load_world(s)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "cache"
    data = compute_dashboards(
        world,
        ids,
        args.corpus,
        k=args.k,
        batch_size=args.batch_size,
        context_size=args.context_size,
        n_contexts=args.n_contexts,
        score_contexts=args.score_contexts,
        cache_dir=cache,
        progress=not args.quiet,
    )
    path = write_dashboards(data, out)
    c = data["corpus"]
    fired = sum(1 for r in data["features"].values() if r["n_firing"])
    print(
        f"dashboards for {len(data['features'])} features ({fired} fire) over corpus {c['name']!r} "
        f"({c['n_contexts']} contexts, {c['n_tokens']} tokens) in {time.perf_counter() - started:.1f}s"
    )
    scored = [
        r["auto_label"] for r in data["features"].values() if (r.get("auto_label") or {}).get("auroc") is not None
    ]
    if scored:
        low = sum(bool(s["low"]) for s in scored)
        print(f"auto labels scored on held-out contexts: {len(scored)}, {low} low (AUROC < {LOW:g})")
    print(f"wrote {path}")
    return 0
