"""Instrumented gemma_memory child: peak RSS per phase (VmHWM reset at each boundary), sizes of held objects."""

import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "tests"))
import gemma_memory as gm
import torch

import sfc_plugin
import sfc_plugin.attribution.edges as E
import sfc_plugin.attribution.engine as eng
import sfc_plugin.discovery as disc
import sfc_plugin.splicing
from sfc_plugin.hf_convert import load_hf_model_dir
from sfc_plugin.models import resolve_world

log = []


def st(field):
    return gm.rss_gb(field)


import ctypes
import os

TRIM = os.environ.get("TRIM") == "1"
libc = ctypes.CDLL("libc.so.6")


def mark(name):
    e = {"at": name, "peak_since_last": round(st("VmHWM"), 4), "rss": round(st("VmRSS"), 4)}
    if TRIM:
        libc.malloc_trim(0)
        e["trimmed"] = round(st("VmRSS"), 4)
    log.append(e)
    Path("/proc/self/clear_refs").write_text("5")


sizes = {"ctx_bytes": [], "grad_bytes": [], "edge_in": []}
orig_sb = eng.state_bytes


def sb(ctx):
    n = orig_sb(ctx)
    sizes["ctx_bytes"].append(n)
    mark("batch-nodes-done")
    return n


eng.state_bytes = sb
orig_ee = eng.edge_effects


def ee(model, subs, b, metric_fn, clean, patch, g, nodes, budget=None):
    sizes["grad_bytes"].append(sum(t.numel() * t.element_size() for t in g.values() if t is not None))
    mark("edge-batch-start")
    out = orig_ee(model, subs, b, metric_fn, clean, patch, g, nodes, budget=budget)
    sizes["edge_out_bytes"] = sum(w.numel() * w.element_size() for w in out.values())
    mark("edge-batch-done")
    return out


eng.edge_effects = ee
orig_attr = disc.attribute


def attr(*a, **k):
    k["on_phase"] = lambda name: mark("phase:" + name)
    r = orig_attr(*a, **k)
    mark("attribute-done")
    return r


disc.attribute = attr
orig_pi = disc._prompt_info


def pi(*a):
    mark("prompt-info-start")
    r = orig_pi(*a)
    mark("prompt-info-done")
    return r


disc._prompt_info = pi

import sfc_plugin.attribution.context as C


def wrap(obj, name, label, every=True):
    f = getattr(obj, name)

    def w(*a, **k):
        mark(label + "-start")
        r = f(*a, **k)
        mark(label + "-done")
        return r

    setattr(obj, name, w)


wrap(C.AttributionContext, "gradients", "grads")
wrap(C.AttributionContext, "effects_from_grads", "effects")
wrap(C.AttributionContext, "_accumulate", "igpass")
orig_prep = eng.prepare


def prep(*a, **k):
    mark("prepare-start")
    r = orig_prep(*a, **k)
    mark("prepare-done")
    return r


eng.prepare = prep
orig_rpp = C.AttributionContext._rows_per_pass


def rpp(self, start):
    r = orig_rpp(self, start)
    log.append({"at": "rows_per_pass", "start": start, "rows": r})
    return r


C.AttributionContext._rows_per_pass = rpp
orig_agg = eng.aggregate


def agg(*a):
    r = orig_agg(*a)
    return r


orig_bs = sfc_plugin.splicing.build_submodules  # World.load builds the submodules


def bs(*a, **k):
    mark("build-subs-start")
    r = orig_bs(*a, **k)
    mark("build-subs-done")
    return r


sfc_plugin.splicing.build_submodules = bs
orig_tok = disc.tokenize


def tok(*a, **k):
    r = orig_tok(*a, **k)
    mark("tokenized")
    return r


disc.tokenize = tok

orig_rm = E.run_metric


def rm(*a, **k):
    r = orig_rm(*a, **k)
    mark("edge-forward-done")
    return r


E.run_metric = rm
orig_rows = E.MemoryBudget.rows if hasattr(E, "MemoryBudget") else None
import sfc_plugin.budget as BU

orig_brows = BU.MemoryBudget.rows


def brows(self, per_row, what, share=1.0, cap=None):
    r = orig_brows(self, per_row, what, share, cap)
    if what != "integrated-gradients":
        log.append({"at": "rows:" + what, "rows": r, "per_row": per_row, "share": share})
    return r


BU.MemoryBudget.rows = brows
orig_ctg = E.Cotangents.__init__


def ctg(self, *a, **k):
    mark("cotangents-start")
    orig_ctg(self, *a, **k)


E.Cotangents.__init__ = ctg


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir")
    ap.add_argument("--specs")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--n-pairs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--max-memory", default="1GB")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_hf_model_dir(args.model_dir)
    gc.collect()
    model, saes = resolve_world(model, json.loads(args.specs))
    gc.collect()
    loaded = st("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    log.append({"at": "loaded", "rss": round(loaded, 4)})
    t = time.perf_counter()
    c = sfc_plugin.discover(
        model,
        saes,
        gm.records(args.n_pairs, args.tokens),
        method="ig",
        steps=10,
        node_threshold=0.002,
        edge_threshold=0.0005,
        max_memory=args.max_memory,
        batch_size=args.batch_size,
        progress=False,
    )
    mark("discover-done")
    peak = max(e.get("peak_since_last", 0) for e in log)
    print(
        json.dumps(
            {
                "layers": args.layers,
                "loaded": loaded,
                "peak": peak,
                "working": peak - loaded,
                "s": time.perf_counter() - t,
                "nodes": len(c.nodes) - 1,
                "edges": len(c.edges),
                "sizes": sizes,
                "log": log,
            }
        ),
        flush=True,
    )


main()
