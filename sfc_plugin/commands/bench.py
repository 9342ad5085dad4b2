"""``sfc bench``: time our discovery path against the paper's algorithm (same process, same inputs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import SFCError
from . import options as opt

CHILD = "SFC_BENCH_REPLICA"  # set in the process that runs the replica workloads with the replica's HF_HOME


def add_parser(subparsers) -> None:
    b = subparsers.add_parser(
        "bench", help="time our discovery path against the paper's algorithm (same process, same inputs)"
    )
    b.add_argument(
        "--workload",
        action="append",
        help="toy (default), pythia, gemma, gemma-3-270m or gemma-3-270m-transcoders (repeatable; the last two: "
        "the whole preset on a replica hub, built once under --replica)",
    )
    b.add_argument(
        "--replica",
        help="directory of the replica hub for the gemma-3-270m workloads (default: ~/.cache/sfc/replica; "
        "about 7 GB; random weights, the true shapes and file layouts)",
    )
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
    replica = [n for n in names if n in bench.REPLICA_WORKLOADS]
    if replica and os.environ.get(CHILD) != "1":
        if len(replica) < len(names) or args.suite:
            raise SFCError("run the gemma-3-270m workloads on their own (they run with the replica hub's HF_HOME)")
        return _on_replica(args)
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
        if name in bench.REPLICA_WORKLOADS:
            w = bench.replica_workload(name, **_given(n_pairs=args.n_pairs, n_tokens=args.n_tokens), device=device)
        elif name == "toy":
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
            baseline=not args.no_baseline and name not in bench.REPLICA_WORKLOADS,  # full size: ours only
            baseline_edges_only=args.baseline_edges_only,
            floor=not args.no_floor and name not in bench.REPLICA_WORKLOADS,
            progress=not args.quiet,
        )
        del w
    print(bench.format_rows(rows))
    revised = threads.changes()
    if revised:
        thread_note += f"; revised between batches: {revised}"
        print(f"torch threads revised between batches: {revised}", file=sys.stderr)
    if args.out:
        print(f"wrote {bench.write_json(rows, args.out, bench.machine(device, thread_note))}")
    return 0


def _on_replica(args) -> int:
    """Build the replica hub once (``--replica``), then rerun this command with its ``HF_HOME``, offline."""
    from .. import replica

    root = Path(args.replica or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sfc" / "replica")
    done = root / "gemma-3-270m.done"
    if not done.exists():
        print(f"building the replica hub in {root} (once; about 7 GB)", file=sys.stderr)
        build = "import sys; from pathlib import Path; from sfc_plugin.replica import gemma3_hub; "
        build += "gemma3_hub(Path(sys.argv[1]), progress=None if sys.argv[2] == 'q' else print)"
        # in a process of its own, so its memory (the model, the activations it calibrates on) is not held here
        if subprocess.run([sys.executable, "-c", build, str(root / "hf"), "q" if args.quiet else "-"]).returncode:
            raise SFCError(f"building the replica hub in {str(root)!r} failed (see above)")
        done.write_text("google/gemma-3-270m, google/gemma-scope-2-270m-pt (width_16k_l0_big)\n")
    env = {**replica.HubCache(root / "hf").env(), CHILD: "1"}
    return subprocess.run([sys.executable, "-m", "sfc_plugin.cli", *_argv(args)], env=env).returncode


def _argv(args) -> list[str]:
    """This command's arguments, for the process that runs it on the replica."""
    out = ["bench"] + [x for w in args.workload for x in ("--workload", w)]
    for flag in (
        "d_sae",
        "n_pairs",
        "n_tokens",
        "layers",
        "steps",
        "n_nodes",
        "batch_size",
        "max_memory",
        "device",
        "threads",
        "out",
    ):
        if getattr(args, flag) is not None:
            out += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    flags = {"no_baseline": "--no-baseline", "baseline_edges_only": "--baseline-edges-only", "quiet": "-q"}
    flags["no_floor"] = "--no-floor"
    return out + [f for k, f in flags.items() if getattr(args, k, False)]
