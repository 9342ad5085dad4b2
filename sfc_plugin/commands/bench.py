"""``sfc bench``: time our discovery path against the paper's algorithm (same process, same inputs)."""

from __future__ import annotations

import sys

from ..errors import SFCError
from . import options as opt


def add_parser(subparsers) -> None:
    b = subparsers.add_parser(
        "bench", help="time our discovery path against the paper's algorithm (same process, same inputs)"
    )
    b.add_argument("--workload", action="append", help="toy (default), pythia or gemma (repeatable)")
    b.add_argument(
        "--suite",
        choices=["gpu"],
        help="gpu: the Pythia-70M and Gemma-2-2B-shaped workloads at true widths against the baseline "
        "(one command for a GPU check; see benchmarks/gpu_check.sh)",
    )
    b.add_argument("--quick", action="store_true", help="the suite at small widths (a smoke test; CPU in a minute)")
    b.add_argument("--d-sae", type=int, help="SAE width for pythia/gemma (default 32768 / 16384)")
    b.add_argument("--n-pairs", type=int, help="examples (default: toy 100, pythia 20, gemma 8)")
    b.add_argument("--n-tokens", type=int, help="tokens per prompt for pythia/gemma (default 10)")
    b.add_argument("--layers", type=int, help="layers of the truncated gemma model (default 4)")
    b.add_argument("--steps", type=int, help="integrated-gradient steps (default 10)")
    b.add_argument("--n-nodes", type=int, help="circuit size for the random-weight workloads (default 200)")
    b.add_argument("--batch-size", type=int, help="examples per batch (default 16)")
    b.add_argument(
        "--max-memory",
        help="our working-memory budget, e.g. 4GB (default: half the free GPU memory; on CPU at most 2GB)",
    )
    b.add_argument("--device", help="torch device (default cpu)")
    b.add_argument("--no-baseline", action="store_true", help="time our path only")
    b.add_argument(
        "--baseline-edges-only",
        action="store_true",
        help="run only the baseline's edge phase, on our IG "
        "gradients (the same values; for widths where its node phase would take hours)",
    )
    b.add_argument("--no-floor", action="store_true", help="do not time the floor (the passes node attribution needs)")
    b.add_argument(
        "--threads", type=int, help="torch CPU threads (default: the usable cores less those busy elsewhere)"
    )
    b.add_argument("-o", "--out", help="directory for bench.json")
    opt.add_quiet(b)
    b.set_defaults(func=run)


def _given(**options) -> dict:
    return {k: v for k, v in options.items() if v is not None}


def run(args) -> int:
    import torch

    from .. import bench, threads

    if args.suite and args.workload:
        raise SFCError("--suite and --workload: give one of them")
    if args.quick and not args.suite:
        raise SFCError("--quick shrinks a --suite; give --suite gpu")
    names = args.workload or ["toy"]
    unknown = [n for n in names if n not in bench.WORKLOADS]
    if unknown:
        raise SFCError(f"unknown workload {unknown[0]!r} (known: {', '.join(bench.WORKLOADS)})")
    for flag in ("d_sae", "n_pairs", "n_tokens", "layers", "steps", "n_nodes"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise SFCError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.threads is not None and args.threads < 1:
        raise SFCError(f"--threads must be at least 1, got {args.threads}")
    thread_note = threads.apply(args.threads)
    print(f"torch: {thread_note}", file=sys.stderr)
    device = args.device or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SFCError(f"--device {device!r}: CUDA is not available")
    if args.suite:
        plan = bench.suite(args.suite, quick=args.quick)
    else:
        plan = [(name, {}, {}) for name in names]
    rows = []
    for (
        name,
        preset,
        run_preset,
    ) in plan:  # options given replace the suite's; the rest: the workload functions' defaults
        if name == "toy":
            w = bench.toy_workload(**{**preset, **_given(n_examples=args.n_pairs)}, device=device)
        elif name == "pythia":
            given = _given(d_sae=args.d_sae, n_pairs=args.n_pairs, n_tokens=args.n_tokens)
            w = bench.pythia_workload(**{**preset, **given}, device=device)
        else:
            given = _given(n_layers=args.layers, d_sae=args.d_sae, n_pairs=args.n_pairs, n_tokens=args.n_tokens)
            w = bench.gemma_workload(**{**preset, **given}, device=device)
        print(f"{name}: {w.description}", file=sys.stderr)
        rows += bench.run_workload(
            w,
            **{**run_preset, **_given(steps=args.steps, batch_size=args.batch_size, n_nodes=args.n_nodes)},
            max_memory=args.max_memory,
            baseline=not args.no_baseline,
            baseline_edges_only=args.baseline_edges_only,
            floor=not args.no_floor,
            progress=not args.quiet,
        )
        del w
    print(bench.format_rows(rows))
    if args.out:
        print(f"wrote {bench.write_json(rows, args.out, bench.machine(device, thread_note))}")
    return 0
