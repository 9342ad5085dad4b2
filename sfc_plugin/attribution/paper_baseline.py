"""BASELINE ONLY: the paper's straightforward algorithm, kept so ``sfc bench`` can compare against it.

``discover`` never uses this module. It follows Marks et al.'s reference scheme literally:

- nodes (IG): for every submodule and every step, one forward pass of the model with *every* SAE
  spliced into the autograd graph (activations re-encoded in every pass, full ``[rows, pos, vocab]``
  logits), the interpolated features and error of that submodule as leaves, one backward pass;
- edges: one spliced forward pass per batch in which every submodule's features and error are fresh
  leaves (so downstream values depend on upstream ones only along direct paths), then **one backward
  pass per downstream circuit node**;
- total effect: separate forward passes on the clean and the patch prompts.

It returns the same quantities as the fast path (mean node effects, mean edge weights), which is how
``sfc bench`` checks that both compute the same thing.
"""

from __future__ import annotations

import time

import torch

from ..splicing import Submodule


def _dense_acts(model, subs: list[Submodule], tokens):
    """Features and errors of every submodule (dense), from one spliced forward pass."""
    out = {}

    def grab(act, hook, s):
        f, err = _encode(s, act)
        out[s.name] = (f, err)
        return s.unflat(s.decode(f) + err)

    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(s.hook, lambda a, hook, s=s: grab(a, hook, s)) for s in subs])
    return out


def _encode(s: Submodule, act):
    """Features and error of a hook's activation (``attn.hook_z``: heads flattened, as the SAE reads them)."""
    x = s.flat(act)
    x_in = x.to(s.sae.W_enc.dtype)
    f = s.sae.encode(s.unflat(x_in) if getattr(s.sae, "hook_z_reshaping_mode", False) else x_in).to(x.dtype)
    return f, x - s.decode(f)


def baseline_nodes(model, subs: list[Submodule], batch, metric, steps: int):
    """Per submodule: mean IG gradients w.r.t. features and error, and the effects summed over the batch.

    Returns ``({name: (feature effects [F], error effect [])}, {name: (∇_f m [b,pos,F], ∇_ε m [b,pos,d])},
    clean acts, patch acts)``.
    """
    clean = _dense_acts(model, subs, batch.clean)
    patch = _dense_acts(model, subs, batch.patch)
    effects, grads = {}, {}
    for target in subs:
        cf, ce = clean[target.name]
        pf, pe = patch[target.name]
        gf, ge = torch.zeros_like(cf), torch.zeros_like(ce)
        for k in range(steps):
            a = k / steps
            leaves = {}

            def spliced(act, hook, s):
                f, err = _encode(s, act)  # re-encoded in every pass
                if s is target:
                    f = (cf + a * (pf - cf)).requires_grad_(True)
                    err = (ce + a * (pe - ce)).requires_grad_(True)
                    leaves["f"], leaves["err"] = f, err
                return s.unflat(s.decode(f) + err)

            hooks = [(s.hook, lambda act, hook, s=s: spliced(act, hook, s)) for s in subs]
            with torch.enable_grad():
                m = metric(model.run_with_hooks(batch.clean, fwd_hooks=hooks), batch).sum()
                g_f, g_e = torch.autograd.grad(m, [leaves["f"], leaves["err"]])
            gf += g_f
            ge += g_e
        gf, ge = gf / steps, ge / steps
        grads[target.name] = (gf, ge)
        effects[target.name] = ((gf * (pf - cf)).sum((0, 1)), (ge * (pe - ce)).sum())
    return effects, grads, clean, patch


def baseline_edges(model, subs: list[Submodule], batch, metric, grads, clean, patch, nodes):
    """Edge weights summed over the batch, ``{(up, down): [n_down, n_up]}``: one backward pass per downstream node."""
    f_leaf, e_leaf, down = {}, {}, {}

    def cut(act, hook, s):
        f, err = _encode(s, act)
        down[s.name] = (f, err)  # functions of the upstream leaves (direct paths only)
        f_leaf[s.name] = f.detach().requires_grad_(True)
        e_leaf[s.name] = err.detach().requires_grad_(True)
        return s.unflat(s.decode(f_leaf[s.name]) + e_leaf[s.name])

    hooks = [(s.hook, lambda act, hook, s=s: cut(act, hook, s)) for s in subs]
    result = {}

    def contract(u, gfu, geu):  # the paper's ``upstream_act.grad @ right_vec``, read at the upstream nodes
        cf, ce = clean[u.name]
        pf, pe = patch[u.name]
        ns = nodes[u.name]
        feat = (gfu * (pf - cf)).sum((0, 1))[ns.feat]
        return torch.cat([feat, (geu * (pe - ce)).sum().expand(len(ns.err_pos))])

    with torch.enable_grad():
        m = metric(model.run_with_hooks(batch.clean, fwd_hooks=hooks), batch).sum()
        for i, d in enumerate(subs):
            ups = [u for u in subs[:i] if len(nodes[u.name])]
            if not ups or not len(nodes[d.name]):
                continue
            fd, ed = down[d.name]
            gfd, ged = grads[d.name]
            rows = {u.name: [] for u in ups}
            for j, _ in nodes[d.name].entries():  # one backward pass per downstream node
                s = (ged * ed).sum() if j is None else (gfd[..., j] * fd[..., j]).sum()
                inputs = [f_leaf[u.name] for u in ups] + [e_leaf[u.name] for u in ups]
                gs = torch.autograd.grad(s, inputs, retain_graph=True, allow_unused=True)
                for k, u in enumerate(ups):
                    gfu, geu = gs[k], gs[len(ups) + k]
                    if gfu is None:
                        gfu = torch.zeros_like(f_leaf[u.name])
                    if geu is None:
                        geu = torch.zeros_like(e_leaf[u.name])
                    rows[u.name].append(contract(u, gfu, geu))
            for u in ups:
                result[(u.name, d.name)] = torch.stack(rows[u.name])
        ups = [u for u in subs[:-1] if len(nodes[u.name])]
        if ups:
            gs = torch.autograd.grad(
                m, [f_leaf[u.name] for u in ups] + [e_leaf[u.name] for u in ups], allow_unused=True
            )
            for k, u in enumerate(ups):
                if gs[k] is not None:
                    result[(u.name, "y")] = contract(u, gs[k], gs[len(ups) + k])[None]
    return {k: v.detach() for k, v in result.items()}


def _given(model, subs: list[Submodule], batch, gx: dict[str, torch.Tensor]):
    """``(grads, clean, patch)`` as :func:`baseline_nodes` returns them, from given ``∇_x m`` per submodule."""
    grads = {s.name: (gx[s.name].to(s.W_dec.dtype) @ s.W_dec.T, gx[s.name]) for s in subs}
    return grads, _dense_acts(model, subs, batch.clean), _dense_acts(model, subs, batch.patch)


def baseline_total(model, batch, metric) -> float:
    """``Σ m(patch) − m(clean)`` over the batch, from two full forward passes."""
    with torch.no_grad():
        return float((metric(model(batch.patch), batch) - metric(model(batch.clean), batch)).sum())


def baseline_discover(
    model,
    subs: list[Submodule],
    full,
    metric,
    *,
    steps: int = 10,
    batch_size: int = 16,
    nodes=None,
    phases=("nodes", "edges", "total"),
    on_phase=None,
    given_grads=None,
):
    """The paper's algorithm over all batches: mean node effects, mean edge weights (for ``nodes``),
    mean total effect, and seconds per phase. ``on_phase(name)`` is called as each phase starts.

    ``given_grads(batch) -> {name: ∇_x m}`` (edges only, for a width where the baseline's node phase would
    take hours): the edge phase takes the IG gradients of each batch from there instead of from its own
    node phase (``∇_f m = W_dec ∇_x m``, the same values) and is timed alone."""
    batches = list(full.split(batch_size))
    n = len(full)
    out = {"features": {}, "errors": {}, "edges": {}, "total": 0.0, "timings": {}}
    kept = []
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        if given_grads is not None:
            kept = [_given(model, subs, b, given_grads(b)) for b in batches]
            phases = ("edges",)
        if on_phase and "nodes" in phases:
            on_phase("nodes")
        t0 = time.perf_counter()
        for b in batches if "nodes" in phases else ():
            eff, grads, clean, patch = baseline_nodes(model, subs, b, metric, steps)
            for name, (fe, ee) in eff.items():
                out["features"][name] = out["features"].get(name, 0) + fe / n
                out["errors"][name] = out["errors"].get(name, 0) + ee / n
            kept.append((grads, clean, patch) if "edges" in phases else None)
        if "nodes" in phases:
            out["timings"]["nodes"] = time.perf_counter() - t0
        if "edges" in phases and nodes is not None:
            if on_phase:
                on_phase("edges")
            t0 = time.perf_counter()
            for b, (grads, clean, patch) in zip(batches, kept):
                for key, w in baseline_edges(model, subs, b, metric, grads, clean, patch, nodes).items():
                    out["edges"][key] = out["edges"].get(key, 0) + w / n
            out["timings"]["edges"] = time.perf_counter() - t0
        if "total" in phases and full.patch is not None:
            if on_phase:
                on_phase("total")
            t0 = time.perf_counter()
            out["total"] = sum(baseline_total(model, b, metric) for b in batches) / n
            out["timings"]["total_effect"] = time.perf_counter() - t0
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    return out
