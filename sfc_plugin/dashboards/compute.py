"""Dashboards for many features in one streaming pass over a corpus, cached and resumable.

Cache layout (``cache_dir``)::

    <run key>/meta.json                          model, corpus and settings the key stands for
    <run key>/<submodule>-<SAE fingerprint>/<feature>.json   finished feature records
    <run key>/partial-<job key>.safetensors/.json            a pass in progress (resume point)

The run key hashes the model's weights, the corpus's tokens and the settings; the SAE fingerprint
hashes the SAE's weights. A finished feature is never recomputed; an interrupted pass resumes from
its last checkpoint and ends with the same records as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..errors import SFCError
from ..splicing import read_hooks
from .autolabel import SCORE_CONTEXTS
from .records import SCHEMA, normalise_id, parse_id
from .stream import EMPTY_KEY, FeatureStream, hist_edges

LOGIT_NOTE = (
    "approximate: the decoder direction's direct path to the logits only (no later layers), through the "
    "final layer norm's centring and weight but not its input-dependent 1/σ scaling and its change; "
    "per unit activation, centred over the vocabulary"
)


def fingerprint_tensors(tensors: dict[str, torch.Tensor], extra: str = "") -> str:
    """sha256 over named tensors (sorted by name: dtype, shape and bytes)."""
    h = hashlib.sha256(extra.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        t = t.reshape(-1)
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _round(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _write_json(path: Path, data: Any) -> None:
    from ..files import strict_json, write_atomic

    write_atomic(path, strict_json(data, separators=(",", ":")) + "\n")


@torch.no_grad()
def direct_logit_effects(model, directions: torch.Tensor) -> torch.Tensor:
    """The direct effect on the logits per unit of residual-stream ``directions`` ``[..., d_model]`` (e.g. a
    feature's decoder row): ``[..., d_vocab]``, centred over the vocabulary; see :data:`LOGIT_NOTE`."""
    d = directions.to(model.W_U.dtype)
    if getattr(model.cfg, "normalization_type", None) in ("LN", "LNPre"):
        d = d - d.mean(-1, keepdim=True)
    w = getattr(getattr(model, "ln_final", None), "w", None)
    if isinstance(w, torch.Tensor):
        d = d * w
    logits = d @ model.W_U
    return logits - logits.mean(-1, keepdim=True)


class _Job:
    """The features of one submodule still to compute."""

    def __init__(self, sub, features: list[int], sae_fp: str, salt: int):
        self.sub, self.features, self.sae_fp, self.salt = sub, features, sae_fp, salt

    @property
    def name(self) -> str:
        return self.sub.name


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc="dashboards", unit="batch", file=sys.stderr, disable=not enabled, leave=False
    )


def compute_dashboards(
    model,
    saes=None,
    ids: Iterable[str] | None = None,
    corpus=None,
    *,
    k: int = 20,
    n_samples: int = 32,
    n_bands: int = 4,
    per_band: int = 2,
    n_logits: int = 10,
    window: tuple[int, int] = (24, 8),
    batch_size: int = 64,
    context_size: int | None = None,
    n_contexts: int | None = None,
    cache_dir: str | Path | None = None,
    checkpoint_seconds: float = 30.0,
    checkpoint_every: int | None = None,
    progress: bool = True,
    score_contexts: int = SCORE_CONTEXTS,
) -> dict:
    """``sfc-dashboards/1`` data for feature ids ``"<submodule>/<feature>"`` of ``saes`` on ``model``
    (``compute_dashboards(world, ids, corpus)`` with a :class:`~sfc_plugin.world.World`).

    One streaming pass over ``corpus`` (see :func:`sfc_plugin.corpus.load_corpus`; default the toy
    world's) computes, for every requested feature at once: the ``k`` top-activating contexts with
    per-token activations, ``per_band`` random contexts from each of ``n_bands`` activation quantile
    bands (drawn from a sample of ``n_samples`` firing contexts), the density and a log-binned
    histogram of non-zero activations; the decoder direction's ``n_logits`` most promoted and
    suppressed tokens come from the weights. With ``cache_dir`` finished features are reused and an
    interrupted pass resumes (a checkpoint every ``checkpoint_seconds`` or ``checkpoint_every`` batches).
    Each record's ``auto_label`` is its ``auto`` label with a score of how well the label predicts where the
    feature fires on up to ``score_contexts`` held-out contexts (0: not scored; see :mod:`.scoring`).
    """
    from ..corpus import load_corpus
    from ..world import world_args

    world, ids, corpus = world_args(model, saes, ids, corpus)
    model = world.model
    for name, value, low in (
        ("k", k, 1),
        ("n_samples", n_samples, 0),
        ("n_bands", n_bands, 1),
        ("per_band", per_band, 0),
        ("n_logits", n_logits, 0),
        ("batch_size", batch_size, 1),
        ("score_contexts", score_contexts, 0),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise SFCError(f"{name} must be an integer of at least {low}, got {value!r}")
    ids = list(dict.fromkeys(normalise_id(i) for i in ids or []))  # "resid_2/0023" is feature 23, as in circuits
    if not ids:
        raise SFCError("no feature ids to compute dashboards for")
    subs = world.by_name
    wanted: dict[str, list[int]] = {}
    for fid in ids:
        name, feat = parse_id(fid)
        if name not in subs:
            raise SFCError(f"feature {fid!r}: no SAE for submodule {name!r} (have: {', '.join(subs)})")
        if feat >= subs[name].d_sae:
            raise SFCError(f"feature {fid!r}: the SAE at {subs[name].hook!r} has only {subs[name].d_sae} features")
        wanted.setdefault(name, []).append(feat)
    corpus = load_corpus(corpus, model, context_size=context_size, n_contexts=n_contexts)
    device = next(model.parameters()).device
    settings = {
        "k": k,
        "n_samples": n_samples,
        "n_bands": n_bands,
        "per_band": per_band,
        "n_logits": n_logits,
        "window": list(window),
        "histogram": "log10, 10 bins per decade",
        "score_contexts": score_contexts,
    }
    model_fp = fingerprint_tensors(model.state_dict(), f"{SCHEMA}:model")
    meta = {
        "schema": SCHEMA,
        "model": {"name": getattr(model.cfg, "model_name", None), "fingerprint": model_fp},
        "corpus": corpus.info(),
        "settings": settings,
    }
    run_key = hashlib.sha256(json.dumps([model_fp, meta["corpus"]["fingerprint"], settings]).encode()).hexdigest()[:20]
    run_dir = Path(cache_dir) / run_key if cache_dir is not None else None

    records: dict[str, dict] = {}
    jobs: list[_Job] = []
    for name in sorted(wanted, key=lambda n: list(subs).index(n)):
        sub = subs[name]
        sae_fp = fingerprint_tensors(sub.sae.state_dict(), f"{SCHEMA}:sae:{sub.hook}")
        missing = []
        for feat in sorted(set(wanted[name])):
            path = run_dir / f"{name}-{sae_fp[:16]}" / f"{feat}.json" if run_dir else None
            if path is not None and path.is_file():
                try:
                    records[f"{name}/{feat}"] = json.loads(path.read_text(encoding="utf-8"))
                    continue
                except (json.JSONDecodeError, UnicodeDecodeError):
                    pass  # a damaged cache entry is recomputed
            missing.append(feat)
        if missing:
            jobs.append(_Job(sub, missing, sae_fp, salt=int(sae_fp[:7], 16)))
    if jobs:
        records.update(
            _run(
                model,
                jobs,
                corpus,
                settings,
                device,
                batch_size,
                run_dir,
                meta,
                checkpoint_seconds,
                checkpoint_every,
                progress,
            )
        )
    return {**meta, "features": {fid: records[fid] for fid in ids}}


def _run(
    model,
    jobs: list[_Job],
    corpus,
    settings: dict,
    device,
    batch_size: int,
    run_dir: Path | None,
    meta: dict,
    checkpoint_seconds: float,
    checkpoint_every: int | None,
    progress: bool,
) -> dict[str, dict]:
    length = corpus.context_size
    streams = {
        j.name: FeatureStream(torch.tensor(j.features), j.salt, settings["k"], settings["n_samples"], length)
        for j in jobs
    }
    for s in streams.values():
        for name in FeatureStream.FIELDS:
            setattr(s, name, getattr(s, name).to(device))
        s.idx = s.idx.to(device)
    job_key = hashlib.sha256(json.dumps([[j.name, j.sae_fp, j.features] for j in jobs]).encode()).hexdigest()[:20]
    partial = run_dir / f"partial-{job_key}" if run_dir else None
    start = 0
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "meta.json").is_file():
            _write_json(run_dir / "meta.json", meta)
        start = _resume(partial, streams)
    n = len(corpus)
    hooks = {j.sub.read_hook: j for j in jobs}  # features are encoded from each dictionary's read hook
    n_batches = -(-n // batch_size)
    last_save, since_save = time.monotonic(), 0
    bar = _progress(n_batches, start // batch_size, progress)
    try:
        with torch.no_grad():
            for lo in range(start, n, batch_size):
                tokens = corpus.tokens[lo : lo + batch_size].to(device)
                mask = corpus.mask[lo : lo + batch_size].to(device)
                with read_hooks(model, [j.sub for j in jobs]):
                    _, cache = model.run_with_cache(tokens, names_filter=lambda h: h in hooks, return_type=None)
                for hook, job in hooks.items():
                    stream = streams[job.name]
                    acts = job.sub.encode(job.sub.read(cache[hook]))[..., stream.idx].float()
                    stream.update(acts * mask[..., None], lo)
                del cache
                bar.update(1)
                since_save += 1
                done = min(lo + batch_size, n)
                if (
                    partial is not None
                    and done < n
                    and (
                        (checkpoint_every is not None and since_save >= checkpoint_every)
                        or (checkpoint_every is None and time.monotonic() - last_save >= checkpoint_seconds)
                    )
                ):
                    _checkpoint(partial, streams, done)
                    last_save, since_save = time.monotonic(), 0
    finally:
        bar.close()
    out = {}
    for job in jobs:
        out.update(_records(model, job, streams[job.name], corpus, settings))
    _score_labels(model, jobs, out, corpus, settings, batch_size)
    for job in jobs:
        if run_dir is not None:
            folder = run_dir / f"{job.name}-{job.sae_fp[:16]}"
            for feat in job.features:
                _write_json(folder / f"{feat}.json", out[f"{job.name}/{feat}"])
    if partial is not None:
        for suffix in (".safetensors", ".json"):
            partial.with_name(partial.name + suffix).unlink(missing_ok=True)
    return out


def _score_labels(model, jobs: list[_Job], out: dict, corpus, settings: dict, batch_size: int) -> None:
    """Each record's ``auto_label``: the label, its rule and how well the rule predicts firing on held-out contexts
    (the feature's top contexts, which the label is made from, left out)."""
    from .autolabel import auto_label, label_rule
    from .scoring import score_contexts, score_rules

    rules = {fid: label_rule(rec) for fid, rec in out.items()}
    scores = {}
    if settings["score_contexts"]:
        todo = [
            (
                job.sub,
                [
                    (f, rules[fid], {c["context"] for c in out[fid]["top"]})
                    for f in job.features
                    for fid in [f"{job.name}/{f}"]
                ],
            )
            for job in jobs
        ]
        scores = score_rules(model, todo, corpus, score_contexts(len(corpus), settings["score_contexts"]), batch_size)
    for fid, rec in out.items():
        rec["auto_label"] = {
            "label": auto_label(rec),
            **(scores.get(fid) or {"rule": None, "auroc": None, "low": None}),
        }


def _checkpoint(partial: Path, streams: dict[str, FeatureStream], done: int) -> None:
    from safetensors.torch import save

    from ..files import write_atomic

    tensors = {}
    for name, s in streams.items():
        tensors.update({key: t.to("cpu") for key, t in s.state(name).items()})
    write_atomic(partial.with_name(partial.name + ".safetensors"), save(tensors))
    _write_json(partial.with_name(partial.name + ".json"), {"contexts_done": done})


def _resume(partial: Path, streams: dict[str, FeatureStream]) -> int:
    """Load a checkpoint of this job if there is a readable one; the number of contexts it covers."""
    from safetensors.torch import load_file

    st, js = partial.with_name(partial.name + ".safetensors"), partial.with_name(partial.name + ".json")
    if not (st.is_file() and js.is_file()):
        return 0
    try:
        done = int(json.loads(js.read_text(encoding="utf-8"))["contexts_done"])
        tensors = load_file(str(st))
        for name, s in streams.items():
            device = s.fire.device
            s.load(name, {key: t.to(device) for key, t in tensors.items()})
    except Exception:  # noqa: BLE001 - an unreadable checkpoint means starting over, never wrong results
        for s in streams.values():
            fresh = FeatureStream(s.idx.cpu(), s.salt, s.k, s.r, s.top_acts.shape[-1])
            for field in FeatureStream.FIELDS:
                setattr(s, field, getattr(fresh, field).to(s.idx.device))
        return 0
    return done


def _context(
    tokens: torch.Tensor,
    mask: torch.Tensor,
    acts: torch.Tensor,
    ctx: int,
    window: tuple[int, int],
    strings: dict[int, str] | None,
    value: float,
) -> dict:
    valid = mask.nonzero().flatten()
    first, last = int(valid[0]), int(valid[-1])
    pos = int(torch.argmax(acts)) if value > 0 else first
    lo, hi = max(first, pos - window[0]), min(last, pos + window[1])
    ids = tokens[lo : hi + 1].tolist()
    return {
        "context": ctx,
        "start": lo,
        "position": pos - lo,
        "max": _round(value),
        "tokens": ids if strings is None else [strings[i] for i in ids],
        "acts": [_round(v) for v in acts[lo : hi + 1].tolist()],
    }


def _records(model, job: _Job, s: FeatureStream, corpus, settings: dict) -> dict[str, dict]:
    from ..corpus import token_strings

    s_cpu = {f: getattr(s, f).to("cpu") for f in FeatureStream.FIELDS}
    window = tuple(settings["window"])
    n_tokens = corpus.n_tokens
    edges = hist_edges()
    up_v = up_i = down_v = down_i = std = None
    if settings["n_logits"]:
        logits = direct_logit_effects(model, job.sub.W_dec[s.idx])
        n = min(settings["n_logits"], logits.shape[-1])
        (up_v, up_i), (down_v, down_i) = logits.topk(n, dim=-1), (-logits).topk(n, dim=-1)
        down_v = -down_v
        std = logits.std(-1)
    tok = getattr(model, "tokenizer", None)
    chosen: list[tuple[int, int, str, int]] = []  # (feature column, row, which, band)
    bands_of: dict[int, list] = {}
    for j in range(len(job.features)):
        top_rows = [r for r in range(s.k) if s_cpu["top_ctx"][r, j] >= 0]
        chosen += [(j, r, "top", -1) for r in top_rows]
        top_ctx = {int(s_cpu["top_ctx"][r, j]) for r in top_rows}
        sample = [
            r for r in range(s.r) if s_cpu["res_key"][r, j] < EMPTY_KEY and int(s_cpu["res_ctx"][r, j]) not in top_ctx
        ]
        sample.sort(key=lambda r: (float(s_cpu["res_val"][r, j]), int(s_cpu["res_key"][r, j])))
        bands = []
        nb = settings["n_bands"]
        for band in range(nb):
            rows = sample[band * len(sample) // nb : (band + 1) * len(sample) // nb]
            if not rows:
                continue
            picked = sorted(rows, key=lambda r: int(s_cpu["res_key"][r, j]))[: settings["per_band"]]
            picked.sort(key=lambda r: -float(s_cpu["res_val"][r, j]))
            bands.append((band, rows, picked))
            chosen += [(j, r, "sample", band) for r in picked]
        bands_of[j] = bands
    ids = set()
    for j, r, which, _ in chosen:
        ids.update(corpus.tokens[int(s_cpu[f"{'top' if which == 'top' else 'res'}_ctx"][r, j])].tolist())
    if up_i is not None:
        ids.update(up_i.flatten().tolist())
        ids.update(down_i.flatten().tolist())
    strings = token_strings(tok, ids) if tok is not None else None
    out = {}
    for j, feat in enumerate(job.features):
        fire = int(s_cpu["fire"][j])

        def ctx_of(prefix: str, r: int) -> dict:
            c = int(s_cpu[f"{prefix}_ctx"][r, j])
            return _context(
                corpus.tokens[c],
                corpus.mask[c],
                s_cpu[f"{prefix}_acts"][r, j],
                c,
                window,
                strings,
                float(s_cpu[f"{prefix}_val"][r, j]),
            )

        top = [ctx_of("top", r) for r in range(s.k) if s_cpu["top_ctx"][r, j] >= 0]
        nb = settings["n_bands"]
        quantiles = [
            {
                "quantile": [band / nb, (band + 1) / nb],
                "range": [_round(float(s_cpu["res_val"][rows[0], j])), _round(float(s_cpu["res_val"][rows[-1], j]))],
                "contexts": [ctx_of("res", r) for r in picked],
            }
            for band, rows, picked in reversed(bands_of[j])
        ]
        hist = s_cpu["hist"][j]
        nz = hist.nonzero().flatten()
        if len(nz):
            a, b = int(nz[0]), int(nz[-1])
            hist_edges_ = [_round(e) for e in edges[a : b + 2]]
            hist_edges_[-1] = max(hist_edges_[-1], top[0]["max"] if top else 0.0)
            histogram = {"scale": "log10", "edges": hist_edges_, "counts": hist[a : b + 1].tolist()}
        else:
            histogram = {"scale": "log10", "edges": [], "counts": []}

        def logit_list(values, indices) -> list:
            if values is None:
                return []
            return [
                {"token": strings[int(i)] if strings else int(i), "id": int(i), "value": _round(float(v))}
                for v, i in zip(values[j].tolist(), indices[j].tolist())
            ]

        out[f"{job.name}/{feat}"] = {
            "id": f"{job.name}/{feat}",
            "submodule": job.name,
            "hook": job.sub.hook,
            "feature": feat,
            "sae_fingerprint": job.sae_fp,
            "n_tokens": n_tokens,
            "n_firing": fire,
            "density": _round(fire / n_tokens, 6) if n_tokens else 0.0,
            "max": top[0]["max"] if top else 0.0,
            "mean": _round(float(s_cpu["total"][j]) / fire, 6) if fire else 0.0,
            "histogram": histogram,
            "top": top,
            "quantiles": quantiles,
            "promoted": logit_list(up_v, up_i),
            "suppressed": logit_list(down_v, down_i),
            "logit_std": _round(float(std[j])) if std is not None else None,
            "logit_note": LOGIT_NOTE,
        }
    return out
