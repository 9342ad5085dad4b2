"""Side-by-side timings of the fast paths against straightforward implementations, on the toy world.

    python benchmarks/bench_discover.py [--examples 40] [--steps 10]

1. Node attribution (IG): ours stacks (submodule, step) pairs along the batch with no SAE in the
   autograd graph; the reference loops over submodules and steps, one forward/backward each, with
   every SAE spliced in and the interpolated features/errors as leaves (the paper's scheme).
2. Edges: ours, one batched vector–Jacobian product per downstream submodule; the reference, one
   backward pass per downstream node (same code with a batch of one cotangent).
Both pairs are checked to agree before the times are printed.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

warnings.filterwarnings("ignore", category=DeprecationWarning)

import sfc_plugin  # noqa: E402
from sfc_plugin import toy  # noqa: E402
from sfc_plugin.attribution.context import AttributionContext  # noqa: E402
from sfc_plugin.attribution.edges import edge_effects  # noqa: E402
from sfc_plugin.attribution.methods import ig  # noqa: E402
from sfc_plugin.data import tokenize  # noqa: E402
from sfc_plugin.discovery import _select  # noqa: E402
from sfc_plugin.metrics import logit_diff  # noqa: E402
from sfc_plugin.splicing import activations, build_submodules, frozen  # noqa: E402


def reference_ig(model, subs, batch, clean, patch, steps):
    """Per submodule and step: splice every SAE, make the interpolated f and ε leaves, backward."""
    out = {}
    for target in subs:
        gf = torch.zeros_like(clean[target.name].f)
        ge = torch.zeros_like(clean[target.name].err)
        for k in range(steps):
            a = k / steps
            leaves = {}

            def spliced(act, sub):
                f = sub.sae.encode(act)
                err = act - sub.sae.decode(f)
                if sub is target:
                    c, p = clean[sub.name], patch[sub.name]
                    f = (c.f + a * (p.f - c.f)).requires_grad_(True)
                    err = (c.err + a * (p.err - c.err)).requires_grad_(True)
                    leaves["f"], leaves["err"] = f, err
                return sub.sae.decode(f) + err

            hooks = [(s.hook, lambda act, hook, s=s: spliced(act, s)) for s in subs]
            with torch.enable_grad():
                m = logit_diff(model.run_with_hooks(batch.clean, fwd_hooks=hooks), batch).sum()
                g_f, g_e = torch.autograd.grad(m, [leaves["f"], leaves["err"]])
            gf += g_f
            ge += g_e
        c, p = clean[target.name], patch[target.name]
        out[target.name] = ((gf / steps) * (p.f - c.f), ((ge / steps) * (p.err - c.err)).sum(-1))
    return out


def timed(fn, repeat=3):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, saes = toy.load()
    subs = build_submodules(model, saes)
    records = sfc_plugin.load_dataset("toy/sva-rc", "train")[: args.examples]
    batch = tokenize(model, records)
    with frozen(model), torch.no_grad():
        clean, patch = activations(model, subs, batch.clean), activations(model, subs, batch.patch)
        ctx = AttributionContext(model, subs, batch, logit_diff, clean, patch, args.steps)
        t_ours, ours = timed(lambda: ig(ctx))
        t_ref, ref = timed(lambda: reference_ig(model, subs, batch, clean, patch, args.steps), repeat=1)
        diff = max(max(float((ours.features[s.name] - ref[s.name][0]).abs().max()),
                       float((ours.errors[s.name] - ref[s.name][1]).abs().max())) for s in subs)
        print(f"node attribution (ig, {args.steps} steps, {len(subs)} SAEs, {len(batch)} examples): "
              f"ours {t_ours:.2f}s, reference loop {t_ref:.2f}s, speed-up {t_ref / t_ours:.1f}x (max |diff| {diff:.1e})")

        feat = {s.name: ours.features[s.name].sum(1).mean(0) for s in subs}
        err = {s.name: ours.errors[s.name].sum(1).mean(0) for s in subs}
        nodes = _select(subs, feat, err, 0.1, "sum")
        n_nodes = sum(len(n) for n in nodes.values())
        t_batched, batched = timed(lambda: edge_effects(model, subs, batch, logit_diff, clean, patch, ours.grads, nodes))
        t_loop, looped = timed(lambda: edge_effects(model, subs, batch, logit_diff, clean, patch, ours.grads, nodes, chunk=1), repeat=1)
        diff = max(float((batched[k] - looped[k]).abs().max()) for k in batched)
        print(f"edges ({n_nodes} nodes, {len(batch)} examples): batched {t_batched:.2f}s, one backward per node "
              f"{t_loop:.2f}s, speed-up {t_loop / t_batched:.1f}x (max |diff| {diff:.1e})")


if __name__ == "__main__":
    main()
