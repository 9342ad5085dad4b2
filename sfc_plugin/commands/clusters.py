"""``sfc clusters``: behaviour clusters and a circuit for each; the same command runs under torchrun."""

from __future__ import annotations

import sys
import time

from . import options as opt


def add_parser(subparsers) -> None:
    from ..config import ClusterConfig

    p = subparsers.add_parser(
        "clusters",
        help="cluster the contexts a model predicts confidently; a circuit per cluster",
        description="Collect low-loss next-token contexts from a corpus, describe each by its SAE features' "
        "effects on log p(answer), cluster them, and discover a circuit per cluster (zero ablation, "
        "metric logprob). Resumable: rerun the same command to finish an interrupted run. "
        "Distributed: torchrun --nproc_per_node N -m sfc_plugin.cli clusters ...",
    )
    opt.add_options(p, ClusterConfig)
    opt.add_world_options(p, device="torch device (default: the model's; under torchrun with NCCL, the rank's GPU)")
    opt.add_config_option(p, "clusters")
    p.add_argument("-o", "--out", default="sfc-clusters", help="run directory (default ./sfc-clusters)")
    opt.add_quiet(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import distributed
    from ..clusters.pipeline import find_clusters, format_summary
    from ..config import ClusterConfig, options

    s = opt.settings(args, "clusters")
    started = time.perf_counter()
    group = distributed.init()
    try:
        device = s["device"] or (group.device if group is not None and group.backend == "nccl" else None)
        world = opt.load_world(s, device)
        cfg = ClusterConfig(**{f.name: s[f.name] for f in options(ClusterConfig)}, model=str(world.source))
        summary = find_clusters(world, args.out, cfg, progress=not args.quiet)
        if summary is not None:
            print(
                format_summary(summary, time.perf_counter() - started)
                + ("" if group is None else f"\n{group.world} processes ({group.backend})")
            )
            print(f"wrote {args.out}/clusters.json, {args.out}/index.html and {args.out}/clusters/<k>/circuit.json")
            for c in summary["clusters"]:
                for warning in c.get("warnings", []):
                    print(f"sfc: warning: cluster {c['id']}: {warning}", file=sys.stderr)
    finally:
        distributed.shutdown()
    return 0
