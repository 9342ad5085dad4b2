"""``sfc clusters``: behaviour clusters and a circuit for each; the same command runs under torchrun."""

from __future__ import annotations

import argparse
import time


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..corpus import TEXT_HELP
    from .pipeline import ClusterConfig

    d = ClusterConfig()
    p = subparsers.add_parser(
        "clusters",
        help="cluster the contexts a model predicts confidently; a circuit per cluster",
        description="Collect low-loss next-token contexts from a corpus, describe each by its SAE features' "
        "effects on log p(answer), cluster them, and discover a circuit per cluster (zero ablation, "
        "metric logprob). Resumable: rerun the same command to finish an interrupted run. "
        "Distributed: torchrun --nproc_per_node N -m sfc_plugin.cli clusters ...",
    )
    p.add_argument(
        "--corpus",
        default=d.corpus,
        help=f"{TEXT_HELP} (default 'toy': labelled documents of the toy language)",
    )
    p.add_argument("--n-contexts", type=int, default=d.n_contexts, help=f"contexts to collect (default {d.n_contexts})")
    p.add_argument("--n-documents", type=int, default=d.n_documents, help="read at most this many documents")
    p.add_argument(
        "--max-loss",
        type=float,
        default=d.max_loss,
        help=f"keep predictions with loss below this, nats (default {d.max_loss})",
    )
    p.add_argument(
        "--window", type=int, default=d.window, help=f"tokens per corpus window, BOS included (default {d.window})"
    )
    p.add_argument("--k", type=int, default=d.k, help=f"number of clusters (default {d.k})")
    p.add_argument("--algorithm", default=d.algorithm, help="kmeans (default) or spectral (on a cosine k-NN graph)")
    p.add_argument(
        "--vectors", default=d.vectors, help="effects (SAE-feature effects, default) or gradients (∇x log p)"
    )
    p.add_argument("--top-k", type=int, default=d.top_k, help=f"entries kept per behaviour vector (default {d.top_k})")
    p.add_argument(
        "--submodule",
        action="append",
        dest="submodules",
        help="build vectors from this submodule only (e.g. resid_1; repeatable; default all)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the toy corpus and the clustering (default 0)")
    p.add_argument(
        "--shard-size", type=int, default=d.shard_size, help=f"contexts per vector shard (default {d.shard_size})"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"contexts per batch (default {d.batch_size})")
    p.add_argument("--method", default=d.method, help=f"attribution method of the circuits (default {d.method})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"integrated-gradient steps (default {d.steps})")
    p.add_argument(
        "--node-threshold",
        type=float,
        default=d.node_threshold,
        help=f"circuit node threshold (default {d.node_threshold})",
    )
    p.add_argument(
        "--edge-threshold",
        type=float,
        default=d.edge_threshold,
        help=f"circuit edge threshold (default {d.edge_threshold})",
    )
    p.add_argument(
        "--circuit-examples",
        type=int,
        default=d.circuit_examples,
        help=f"contexts per cluster used for its circuit (default {d.circuit_examples})",
    )
    p.add_argument("--no-edges", dest="edges", action="store_false", help="circuits with nodes only")
    p.add_argument("--model", help="model directory or TransformerLens name (default: the toy world)")
    p.add_argument("--sae", action="append", help="SAE directory or release:sae_id (repeatable)")
    p.add_argument("--device", help="torch device (default: the model's; under torchrun with NCCL, the rank's GPU)")
    p.add_argument("-o", "--out", default="sfc-clusters", help="run directory (default ./sfc-clusters)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_clusters)
    return p


def cmd_clusters(args) -> int:
    from .. import distributed
    from ..cli import _load_world
    from .pipeline import ClusterConfig, find_clusters, format_summary

    started = time.perf_counter()
    group = distributed.init()
    try:
        device = args.device or (group.device if group is not None and group.backend == "nccl" else None)
        (model, saes), model_name = _load_world(args.model, args.sae, device)
        cfg = ClusterConfig(
            corpus=str(args.corpus),
            n_contexts=args.n_contexts,
            n_documents=args.n_documents,
            max_loss=args.max_loss,
            window=args.window,
            vectors=args.vectors,
            top_k=args.top_k,
            submodules=args.submodules,
            k=args.k,
            algorithm=args.algorithm,
            seed=args.seed,
            shard_size=args.shard_size,
            batch_size=args.batch_size,
            method=args.method,
            steps=args.steps,
            node_threshold=args.node_threshold,
            edge_threshold=args.edge_threshold,
            circuit_examples=args.circuit_examples,
            edges=args.edges,
            model=str(model_name),
        )
        summary = find_clusters(model, saes, args.out, cfg, progress=not args.quiet)
        if summary is not None:
            print(
                format_summary(summary, time.perf_counter() - started)
                + ("" if group is None else f"\n{group.world} processes ({group.backend})")
            )
            print(f"wrote {args.out}/clusters.json, {args.out}/index.html and {args.out}/clusters/<k>/circuit.json")
    finally:
        distributed.shutdown()
    return 0
