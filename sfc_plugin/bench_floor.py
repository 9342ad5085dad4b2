"""The floor of node attribution: the passes the method cannot avoid, timed on the workload itself.

For ``ig`` with ``N`` steps (``N = 1`` is attribution patching) over submodules ``S`` and a batch of ``B`` pairs:

- **activations**: one forward pass of the clean and one of the patch batch, caching the hooked
  activations and the residual stream entering each block;
- **encode**: the dense encoder of every dictionary on the clean and the patch activations;
- **passes**: one forward and backward pass at α = 0 for all submodules at once, then, for every submodule
  ``s`` and α = k/N (k = 1..N−1), one forward and backward from the block where ``s`` sits (TransformerLens
  ``start_at_layer``) with a gradient into the residual stream.

Not in the floor: computing effects from the gradients (a projection through ``W_dec`` restricted to active
features), the total effect, sparse bookkeeping. The passes are timed with rows stacked as our path stacks
them (as many per pass as the memory budget allows) and scaled linearly to the rows needed, so the floor
measures the work, not a batching choice. See the Performance page of the docs.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from .attribution.context import prepare
from .attribution.forward import collect, run_metric, start_of
from .splicing import frozen, read_hooks


class _Clock:
    """Wall and CPU seconds accumulated over ``with clock:`` blocks."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    @contextmanager
    def __call__(self, sync):
        sync()
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            sync()
            self.wall += time.perf_counter() - w
            self.cpu += time.process_time() - c


def _grad_pass(model, metric, batch, hooks_at, start=None, resid=None) -> None:
    """One forward and backward with a zero leaf added at each of ``hooks_at`` (or to ``resid``)."""
    leaves = []

    def add_leaf(act, hook):
        leaf = torch.zeros_like(act, requires_grad=True)
        leaves.append(leaf)
        return act + leaf

    with torch.enable_grad():
        if resid is not None:
            resid = resid + torch.zeros_like(resid, requires_grad=True)
            leaves.append(resid)
        m = run_metric(model, metric, batch, [(h, add_leaf) for h in hooks_at], start, resid).sum()
        torch.autograd.grad(m, leaves, allow_unused=True)


def node_floor(model, subs, batch, metric, steps: int = 10, budget=None, batch_size: int = 16) -> dict:
    """``{"floor_s", "floor_cpu_s", "activations_s", "encode_s", "passes_s", "rows"}`` for ``batch``, in
    chunks of ``batch_size`` examples as :func:`~sfc_plugin.attribution.engine.attribute` runs them."""
    dev = batch.clean.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    parts = {k: _Clock() for k in ("activations", "encode", "passes")}
    hooks = list(dict.fromkeys([s.hook for s in subs] + [s.read_hook for s in subs]))
    layers = sorted({start_of(s.hook, model.cfg)[0] for s in subs} - {None})
    n_rows = 0
    with frozen(model):
        for lo in range(0, len(batch), batch_size):
            b = batch.select(torch.arange(lo, min(len(batch), lo + batch_size), device=dev))
            ctx = prepare(model, subs, b, metric, steps, budget=budget)  # untimed: for the rows per pass
            resid = ctx.resid
            for tokens in (b.clean, b.patch):
                if tokens is None:
                    continue
                with torch.no_grad(), read_hooks(model, subs):
                    with parts["activations"](sync):
                        acts, resid_t, _ = collect(model, hooks, layers, b, tokens, metric)
                    with parts["encode"](sync):
                        for s in subs:
                            read = s.read(acts[s.read_hook])
                            for chunk in read.reshape(-1, read.shape[-1]).split(4096):
                                s.encode(chunk)
                del acts, resid_t
            with parts["passes"](sync):
                _grad_pass(model, metric, b, list(dict.fromkeys(s.hook for s in subs)))
            n_rows += len(b)
            groups: dict[int | None, int] = {}
            for s in subs:
                start = start_of(s.hook, model.cfg)[0]
                start = start if start in (resid or {}) else None
                groups[start] = groups.get(start, 0) + 1
            for start, n_subs in groups.items():
                need = n_subs * (steps - 1) * len(b)
                if not need:
                    continue
                reps = max(1, min(need, ctx.rows_per_pass(start)) // len(b))
                rb = b.repeat(reps) if reps > 1 else b
                res = None if start is None else resid[start].repeat(reps, 1, 1)
                clock = _Clock()
                with clock(sync):
                    _grad_pass(model, metric, rb, [] if start is not None else [subs[0].hook], start, res)
                parts["passes"].wall += clock.wall * need / len(rb)
                parts["passes"].cpu += clock.cpu * need / len(rb)
                n_rows += need
            del ctx
    out = {f"{k}_s": round(c.wall, 4) for k, c in parts.items()}
    out["floor_s"] = round(sum(c.wall for c in parts.values()), 4)
    out["floor_cpu_s"] = round(sum(c.cpu for c in parts.values()), 4)
    out["rows"] = n_rows
    return out
