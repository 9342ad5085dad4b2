"""``find_clusters``: corpus → contexts → behaviour vectors → clusters → a circuit per cluster.

Everything lands in one run directory, each item written atomically as soon as it is finished::

    config.json                   the settings; a different configuration in the same directory is refused
    contexts.json                 the contexts (tokens, answer, loss, text, corpus categories)
    vectors/shard-<i>.safetensors top-k behaviour vectors of contexts [i·S, (i+1)·S)
    assignments.json              cluster of every context
    clusters/<k>/contexts.jsonl   the cluster's contexts;  clusters/<k>/circuit.json (+ .dot, .svg)
    clusters.json                 the summary;  index.html  a page to browse the clusters
    timing.json                   wall time of the last run per phase (the only file that varies)

A restarted run skips whatever exists, so it ends with the same files as an uninterrupted run.
Under torchrun, vector shards and clusters are dealt to ranks (item i to rank i mod world) and rank 0
gathers: it writes the shared files and clusters. Vectors are computed in fixed shards of fixed
batches whatever the world size, so 1 and N processes produce the same numbers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from ..config import ClusterConfig
from ..errors import SFCError
from ..world import world_args

SCHEMA = "sfc-clusters/1"


def write_json(path: Path, data: Any) -> None:
    from ..files import strict_json, write_atomic

    write_atomic(path, strict_json(data, indent=1, ensure_ascii=False) + "\n")


def _check_config(out: Path, config: dict) -> None:
    path = out / "config.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise SFCError(f"{str(path)!r} is not JSON; remove it or use another output directory") from None
    for key in sorted(set(old) | set(config)):
        if old.get(key) != config.get(key):
            raise SFCError(
                f"{str(out)!r} holds a run with {key}={old.get(key)!r}, not {config.get(key)!r}: "
                "use another output directory or the same settings"
            )


def _progress(iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=False)


def _shard_path(out: Path, i: int) -> Path:
    return out / "vectors" / f"shard-{i:05d}.safetensors"


def _vectors(model, subs, contexts, cfg: ClusterConfig, out: Path, group, progress: bool) -> int:
    """Compute this rank's missing shards; returns how many it computed."""
    import torch
    from safetensors.torch import save

    from ..files import write_atomic
    from ..splicing import frozen
    from .vectors import behaviour_vectors

    n_shards = (len(contexts) + cfg.shard_size - 1) // cfg.shard_size
    mine = list(range(n_shards)) if group is None else group.mine(range(n_shards))
    todo = [i for i in mine if not _shard_path(out, i).is_file()]
    with frozen(model):  # once for the run (its weight layout is set once, not per batch)
        for i in _progress(todo, len(todo), "behaviour vectors (shards)", progress):
            shard = contexts[i * cfg.shard_size : (i + 1) * cfg.shard_size]
            parts = [
                behaviour_vectors(model, subs, shard[lo : lo + cfg.batch_size], cfg.vectors, cfg.top_k)
                for lo in range(0, len(shard), cfg.batch_size)
            ]
            tensors = {
                "indices": torch.cat([p[0] for p in parts]).contiguous(),
                "values": torch.cat([p[1] for p in parts]).contiguous(),
            }
            write_atomic(_shard_path(out, i), save(tensors, metadata={"first": str(i * cfg.shard_size)}))
    return len(todo)


def _load_vectors(out: Path, n: int, shard_size: int):
    import numpy as np
    from safetensors.numpy import load_file

    idx, val = [], []
    for i in range((n + shard_size - 1) // shard_size):
        path = _shard_path(out, i)
        if not path.is_file():
            raise SFCError(f"vector shard {str(path)!r} is missing")
        t = load_file(str(path))
        idx.append(t["indices"])
        val.append(t["values"])
    return np.concatenate(idx), np.concatenate(val)


def _records(contexts: list[dict]) -> list[dict]:
    """Zero-ablation records for ``discover``: token ids as they are, text for people."""
    return [
        {
            "clean_prefix": c["prefix"],
            "clean_answer": c["answer_text"],
            "clean_tokens": c["tokens"],
            "clean_answer_token": c["answer"],
        }
        for c in contexts
    ]


def _circuit(world, cid: int, members: list[dict], cfg: ClusterConfig, out: Path) -> None:
    from ..discovery import discover
    from ..export.render import dot_binary, render_file
    from ..files import strict_json, write_atomic

    d = out / "clusters" / str(cid)
    write_atomic(d / "contexts.jsonl", "".join(strict_json(c, ensure_ascii=False) + "\n" for c in members))
    circuit = discover(
        world,
        _records(_examples(members, cfg.circuit_examples)),
        metric="logprob",
        method=cfg.method,
        steps=cfg.steps,
        node_threshold=cfg.node_threshold,
        edge_threshold=cfg.edge_threshold,
        edges=cfg.edges,
        batch_size=cfg.batch_size,
        progress=False,
        provenance={"dataset": f"cluster {cid}", "cluster": cid, "timings": None},
    )  # no timings: identical files on resume
    write_atomic(d / "circuit.dot", circuit.to_dot())
    if dot_binary():
        render_file(circuit, d / "circuit.svg", "svg")
    build_site = _viewer()
    if build_site is not None:  # the interactive circuit viewer (sfc view), when this version has it
        answers = ", ".join(f"{a!r}×{n}" for a, n in list(_counts(c["answer_text"] for c in members).items())[:3])
        build_site(circuit, d / "view", title=f"cluster {cid} ({len(members)} contexts: {answers})")
    circuit.to_json(d / "circuit.json")  # last: its presence marks the cluster as done


def _viewer():
    """``sfc_plugin.viewer.build_site``, or None where the viewer is not installed."""
    try:
        from ..viewer import build_site
    except ImportError:
        return None
    return build_site


def find_clusters(
    model, saes=None, out: str | Path | None = None, config: ClusterConfig | None = None, progress: bool = True
) -> dict:
    """Run (or resume) the whole pipeline in ``out``; returns the summary (``clusters.json``) on rank 0
    and None on other ranks. ``find_clusters(world, out, config)`` with a :class:`~sfc_plugin.world.World`,
    or ``find_clusters(model, saes, out, config)``. Under torchrun call :func:`sfc_plugin.distributed.init` first."""
    import numpy as np

    from ..corpus import documents
    from ..distributed import current
    from .contexts import collect_contexts, describe
    from .grouping import agreement, cluster, sparse_matrix, top_features
    from .vectors import columns, select_submodules

    world, out, config = world_args(model, saes, out, config)
    if out is None:
        raise SFCError("find_clusters needs an output directory")
    model = world.model
    cfg = config or ClusterConfig()
    cfg.validate()
    group = current()
    main = group is None or group.is_main
    show = progress and main
    out = Path(out)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    subs = world.submodules
    cfg.saes = [[s.hook, s.d_sae] for s in subs]
    conf = cfg.to_json()
    _check_config(out, conf)
    vsubs = select_submodules(subs, cfg.submodules)
    cols = columns(vsubs, cfg.vectors, model.cfg.d_model)

    def sync():
        if group is not None:
            group.barrier()

    def on_main(fn):
        """Run ``fn`` on rank 0; a bad-input error there stops every rank (instead of a hang at a barrier)."""
        error = None
        if main:
            try:
                fn()
            except SFCError as exc:
                error = str(exc)
        if group is not None:
            errors = [e for e in group.all_gather_object(error) if e]
            error = errors[0] if errors else None
        if error:
            raise SFCError(error)

    # 1. contexts (rank 0)
    ctx_path = out / "contexts.json"

    def find_contexts():
        for tmp in out.rglob(".*"):  # temporary files of atomic writes cut short by a killed run
            if tmp.is_file():
                tmp.unlink()
        write_json(out / "config.json", conf)
        if not ctx_path.is_file():
            docs = documents(cfg.corpus, cfg.n_documents, cfg.seed)
            found = collect_contexts(model, docs, cfg.n_contexts, cfg.max_loss, cfg.window, cfg.batch_size, show)
            if not found:
                raise SFCError(f"no context of corpus {cfg.corpus!r} has loss below max_loss={cfg.max_loss}")
            write_json(ctx_path, [{**c.to_dict(), **describe(model, c)} for c in found])

    on_main(find_contexts)
    contexts = json.loads(ctx_path.read_text(encoding="utf-8"))
    timing["contexts"] = time.perf_counter() - t0

    # 2. behaviour vectors (shards dealt to ranks)
    t1 = time.perf_counter()
    computed = _vectors(model, vsubs, contexts, cfg, out, group, show)
    sync()
    timing["vectors"] = time.perf_counter() - t1

    # 3. clustering (rank 0)
    t2 = time.perf_counter()
    assign_path = out / "assignments.json"

    def group_contexts():
        if not assign_path.is_file():
            idx, val = _load_vectors(out, len(contexts), cfg.shard_size)
            labels = cluster(sparse_matrix(idx, val, cols.size), min(cfg.k, len(contexts)), cfg.algorithm, cfg.seed)
            write_json(assign_path, labels.tolist())

    on_main(group_contexts)
    labels = np.array(json.loads(assign_path.read_text(encoding="utf-8")), dtype=np.int64)
    n_clusters = int(labels.max()) + 1
    members = {c: [contexts[i] for i in np.nonzero(labels == c)[0]] for c in range(n_clusters)}
    timing["clustering"] = time.perf_counter() - t2

    # 4. a circuit per cluster (clusters dealt to ranks)
    t3 = time.perf_counter()
    mine = list(range(n_clusters)) if group is None else group.mine(range(n_clusters))
    todo = [c for c in mine if not (out / "clusters" / str(c) / "circuit.json").is_file()]
    for c in _progress(todo, len(todo), "circuits", show):
        _circuit(world, c, members[c], cfg, out)
    sync()
    timing["circuits"] = time.perf_counter() - t3
    if not main:
        return None

    # 5. summary and index page (rank 0)
    from ..circuit import Circuit
    from .page import write_index

    idx, val = _load_vectors(out, len(contexts), cfg.shard_size)
    matrix = sparse_matrix(idx, val, cols.size)
    summary_clusters = []
    for c in range(n_clusters):
        rows = np.nonzero(labels == c)[0]
        circuit = Circuit.from_json(out / "clusters" / str(c) / "circuit.json")
        entry = {
            "id": c,
            "size": int(len(rows)),
            "contexts": [
                {k: ctx[k] for k in ("id", "prefix", "answer_text", "loss")}
                for ctx in _examples(members[c], cfg.n_examples_shown)
            ],
            "top_features": top_features(matrix, rows, cols.name),
            "top_errors": top_features(matrix, rows, cols.name, n=3, errors=True),
            "answers": _counts(ctx["answer_text"] for ctx in members[c]),
            "circuit": f"clusters/{c}/circuit.json",
            "n_nodes": sum(1 for n in circuit.nodes if n.kind != "metric"),
            "n_edges": len(circuit.edges),
        }
        if circuit.warnings:  # e.g. no path from any node to the metric: marked on the page
            entry["warnings"] = list(circuit.warnings)
        cats = {name: _counts(ctx["categories"][name] for ctx in members[c]) for name in _category_names(contexts)}
        if cats:
            entry["categories"] = cats
        summary_clusters.append(entry)
    summary = {
        "schema": SCHEMA,
        "config": conf,
        "n_contexts": len(contexts),
        "n_clusters": n_clusters,
        "columns": cols.to_json(),
        "clusters": summary_clusters,
        "assignments": labels.tolist(),
    }
    names = _category_names(contexts)
    if names:
        summary["agreement"] = {
            name: agreement(labels, [ctx["categories"][name] for ctx in contexts]) for name in names
        }
    write_json(out / "clusters.json", summary)
    write_index(out, summary)
    timing["summary"] = time.perf_counter() - t3 - timing["circuits"]
    timing["total"] = time.perf_counter() - t0
    write_json(
        out / "timing.json",
        {
            "processes": 1 if group is None else group.world,
            "seconds": timing,
            "shards_computed_by_rank_0": computed,
            "circuits_computed_by_rank_0": len(todo),
        },
    )
    return summary


def _examples(members: list[dict], n: int) -> list[dict]:
    """Up to ``n`` example contexts, from as many different documents as possible (in context order)."""
    seen, first, rest = set(), [], []
    for c in members:
        (rest if c["doc"] in seen else first).append(c)
        seen.add(c["doc"])
    return sorted((first + rest)[:n], key=lambda c: c["id"])


def _counts(values) -> dict[str, int]:
    from collections import Counter

    return dict(sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0])))


def _category_names(contexts: list[dict]) -> list[str]:
    first = contexts[0].get("categories") if contexts else None
    return sorted(first) if first else []


def format_summary(summary: dict, seconds: float | None = None) -> str:
    """A few lines for the terminal: counts, agreement with known categories, the largest clusters."""
    lines = [
        f"{summary['n_contexts']} contexts, {summary['n_clusters']} clusters, "
        f"{len(summary['clusters'])} circuits" + (f" in {seconds:.1f}s" if seconds is not None else "")
    ]
    for name, scores in summary.get("agreement", {}).items():
        lines.append(
            f"agreement with the corpus's {name!r} labels: adjusted Rand index {scores['adjusted_rand_index']:.3f}, "
            f"NMI {scores['normalized_mutual_info']:.3f}"
        )
    for c in summary["clusters"][:10]:
        answers = ", ".join(f"{a!r}×{n}" for a, n in list(c["answers"].items())[:3])
        feats = ", ".join(f["id"] for f in c["top_features"][:3])
        mark = "  ⚠ " + c["warnings"][0] if c.get("warnings") else ""
        lines.append(
            f"  cluster {c['id']:>3}  size {c['size']:>5}  circuit {c['n_nodes']:>4} nodes  answers {answers}  top {feats}"
            + mark
        )
    return "\n".join(lines)
