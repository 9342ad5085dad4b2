"""Edge attribution ``IE(u→d) = ∇_d m · ∂d/∂u · Δu`` between circuit nodes.

``∂d/∂u`` is the direct-path Jacobian at the clean input: one forward pass turns every submodule's
activation into a fresh leaf, so the value computed at a downstream hook depends on upstream
submodules only along paths that avoid every other submodule (exactly "the others held fixed").
Into a resid submodule that path is the identity, so its backward pass is a sum; into attn/mlp it
is one batched vector–Jacobian product (``is_grads_batched``) for a chunk of downstream nodes at once,
the chunk sized from the memory budget. Only features active in the clean run (downstream) or in
either run (upstream) are touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..splicing import Acts, Submodule, read_hooks
from .forward import run_metric
from .sparse import GATHER_FLOATS, SparseFeatures, node_matrix


@dataclass
class NodeSet:
    """The circuit nodes of one submodule: features (``feat``; with ``feat_pos`` per position) then errors."""

    feat: torch.Tensor  # [k] feature indices
    feat_pos: torch.Tensor | None  # [k] positions, or None when summed over positions
    err_pos: list  # [] (no error node), [None] (summed over positions) or positions

    def __len__(self) -> int:
        return self.feat.numel() + len(self.err_pos)

    def entries(self) -> list[tuple[int | None, int | None]]:
        """``(feature or None for the error, position or None)`` for every node, in order."""
        pos = [None] * self.feat.numel() if self.feat_pos is None else self.feat_pos.tolist()
        return list(zip(self.feat.tolist(), pos)) + [(None, t) for t in self.err_pos]


def _sparse(f) -> SparseFeatures:
    return f if isinstance(f, SparseFeatures) else SparseFeatures.from_dense(f)


class Cotangents:
    """``∇_node m · ∂node/∂(activations)`` for the nodes of a downstream ``sub``, built a chunk of nodes at a time.

    A chunk is ``{output: [c, B, T, width]}`` for the tensors of the edge pass's graph the nodes are functions of:
    ``"x"`` (the activation at ``sub.hook``), ``"read"`` (a transcoder's read activation), ``"f"`` and ``"eps"``
    (the features and error computed in the graph, for kinds whose encoder is differentiated with autograd).
    """

    def __init__(self, sub: Submodule, grad: torch.Tensor, f: SparseFeatures, nodes: NodeSet):
        B, T, D = grad.shape
        self.shape, self.nodes, self.sub = (B, T, D), nodes, sub
        # ∇_f m at the clean run's active entries (the encoder's mask): [nnz]
        gf = f.project(grad, sub.W_dec) * f.val.ne(0)
        self.coeff = node_matrix(gf, f, nodes.feat, nodes.feat_pos, T)  # [k, N]
        self.linear = sub.W_enc is not None
        self.W = sub.W_enc[:, nodes.feat].T if self.linear else None  # [k, d_in]
        self.err = self.err_read = None
        if nodes.err_pos and not self.linear:  # ε is computed in the graph: its cotangent is ∇_x m
            self.err = grad
        elif nodes.err_pos:  # ∇_ε m · (I − ∂decode(f)/∂x): ∇_x m at x, −Σ_active ∇_f m W_enc[:, j] at the read
            back = f.weighted_rows(gf, sub.W_enc.T).view(B, T, -1)
            if sub.transcoder:
                self.err, self.err_read = grad, -back
            else:
                self.err = grad - back

    def __len__(self) -> int:
        return len(self.nodes)

    def _errors(self, out: torch.Tensor, lo: int, hi: int, value: torch.Tensor) -> None:
        k = self.nodes.feat.numel()
        for i in range(max(lo, k), hi):
            t = self.nodes.err_pos[i - k]
            if t is None:
                out[i - lo] = value
            else:
                out[i - lo, :, t] = value[:, t]

    def rows(self, r: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cotangent rows of nodes ``r`` at flat tokens ``t`` (one row per pair; masked-linear kinds only):
        ``{"x": [n, D]}``, and ``"read"`` ``[n, d_in]`` for a transcoder."""
        B, T, D = self.shape
        k = self.nodes.feat.numel()
        is_feat = r < k
        feat = self.coeff[r[is_feat], t[is_feat], None] * self.W[r[is_feat]]
        if not self.sub.transcoder:
            c = torch.empty((r.numel(), D), dtype=self.W.dtype, device=self.W.device)
            c[is_feat] = feat
            if self.err is not None:
                c[~is_feat] = self.err.reshape(B * T, D)[t[~is_feat]]
            return {"x": c}
        read = self.W.new_empty((r.numel(), self.W.shape[-1]))
        read[is_feat] = feat
        x = self.W.new_zeros((r.numel(), D))
        if self.err is not None:
            read[~is_feat] = self.err_read.reshape(B * T, -1)[t[~is_feat]]
            x[~is_feat] = self.err.reshape(B * T, D)[t[~is_feat]]
        return {"x": x, "read": read}

    def chunk(self, lo: int, hi: int) -> dict[str, torch.Tensor]:
        B, T, D = self.shape
        k = self.nodes.feat.numel()
        f_hi = min(hi, k)
        if not self.linear:  # one-hot ∇_f m rows on the features, ∇_x m on the error
            out = {}
            if lo < k:
                rows = self.coeff.new_zeros((hi - lo, B * T, self.sub.d_sae))
                idx = torch.arange(f_hi - lo, device=rows.device)
                rows[idx, :, self.nodes.feat[lo:f_hi]] = self.coeff[lo:f_hi]
                out["f"] = rows.view(hi - lo, B, T, -1)
            if hi > k:
                out["eps"] = self.err.new_zeros((hi - lo, B, T, D))
                self._errors(out["eps"], lo, hi, self.err)
            return out
        d_in = self.W.shape[-1]
        feat = self.W.new_zeros((hi - lo, B, T, d_in))
        if lo < k:
            feat[: f_hi - lo] = (self.coeff[lo:f_hi, :, None] * self.W[lo:f_hi, None, :]).view(f_hi - lo, B, T, d_in)
        if not self.sub.transcoder:
            self._errors(feat, lo, hi, self.err)
            return {"x": feat}
        out = {"read": feat}
        if hi > k:
            self._errors(feat, lo, hi, self.err_read)
            out["x"] = self.err.new_zeros((hi - lo, B, T, D))
            self._errors(out["x"], lo, hi, self.err)
        return out


def _upstream(sub: Submodule, clean: Acts, patch: Acts, nodes: NodeSet):
    """``(Δf of the nodes [k, b·pos] (dense over tokens), Δε [b, pos, d])`` of an upstream submodule."""
    delta = _sparse(patch.f).minus(_sparse(clean.f))
    T = clean.x.shape[1]
    return node_matrix(delta.val, delta, nodes.feat, nodes.feat_pos, T), patch.err - clean.err


def _contract(v: torch.Tensor, sub: Submodule, df: torch.Tensor, derr: torch.Tensor, nodes: NodeSet) -> torch.Tensor:
    """``Σ_{b,pos} v · Δ(node)`` for every node of the upstream ``sub``: ``[n_down, n_up]``.

    A feature node's ``Δ`` is ``Δf[node, token] · W_dec[feature]``: project ``v`` on the nodes' decoder rows
    (one matrix product), then weight by ``Δf`` and sum over tokens."""
    parts = []
    k = nodes.feat.numel()
    if k:
        vf = v.reshape(v.shape[0], -1, v.shape[-1])  # [c, N, d]
        step = max(1, GATHER_FLOATS // max(1, vf.shape[0] * vf.shape[1]))
        for lo in range(0, k, step):
            hi = min(k, lo + step)
            proj = vf @ sub.W_dec[nodes.feat[lo:hi]].T  # [c, N, chunk]
            parts.append((proj * df[lo:hi].T[None]).sum(1))
    for t in nodes.err_pos:
        parts.append(((v * derr).sum((1, 2, 3)) if t is None else (v[:, :, t] * derr[:, t]).sum((1, 2)))[:, None])
    return torch.cat(parts, 1)


def mlp_inputs(model, subs: list[Submodule], d: Submodule):
    """For a downstream ``blocks.l.hook_mlp_out``: the upstream submodules its MLP reads, when it reads them
    token by token (the residual entering block ``l`` is a submodule, and in a sequential block so is
    ``hook_attn_out``: every other path is cut), else None."""
    cfg, l = model.cfg, d.layer
    if d.hook != f"blocks.{l}.hook_mlp_out" or getattr(cfg, "attn_only", False) or d.W_enc is None:
        return None
    if d.transcoder and _read_fn(model, d) is None:
        return None
    by_hook = {s.hook: s for s in subs}
    prev = by_hook.get("blocks.0.hook_resid_pre" if l == 0 else f"blocks.{l - 1}.hook_resid_post")
    if prev is None:
        return None
    if getattr(cfg, "parallel_attn_mlp", False):
        return [prev]
    attn = by_hook.get(f"blocks.{l}.hook_attn_out")
    return None if attn is None else [prev, attn]


def resid_inputs(model, subs: list[Submodule], d: Submodule):
    """For a downstream ``blocks.l.hook_resid_post``: ``[(upstream, map)]`` when every path into it is a sum of
    submodules (the residual entering block ``l``, ``hook_attn_out`` or ``attn.hook_z``, ``hook_mlp_out``), so
    it is read token by token; ``map`` takes a cotangent ``[rows, d_model]`` to the upstream's ``[rows, d_in]``
    (the identity, or ``W_O`` for ``attn.hook_z``). Else None."""
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    cfg, l = model.cfg, d.layer
    if d.hook != f"blocks.{l}.hook_resid_post" or d.W_enc is None:
        return None
    by_hook = {s.hook: s for s in subs}
    prev = by_hook.get("blocks.0.hook_resid_pre" if l == 0 else f"blocks.{l - 1}.hook_resid_post")
    if prev is None:
        return None
    ident = lambda c: c  # noqa: E731
    out = [(prev, ident)]
    attn, z = by_hook.get(f"blocks.{l}.hook_attn_out"), by_hook.get(f"blocks.{l}.attn.hook_z")
    if attn is not None:
        out.append((attn, ident))
    elif z is not None and not (
        getattr(cfg, "use_normalization_before_and_after", False)
        or getattr(cfg, "load_in_4bit", False)
        or cfg.original_architecture in POST_NORM_ARCHITECTURES
    ):
        W_O = model.blocks[l].attn.W_O  # [heads, d_head, d_model]: hook_attn_out = z W_O + b_O
        out.append((z, lambda c, W=W_O.reshape(-1, W_O.shape[-1]): c @ W.T))
    else:
        return None
    if not getattr(cfg, "attn_only", False):
        mlp = by_hook.get(f"blocks.{l}.hook_mlp_out")
        if mlp is None:
            return None
        out.append((mlp, ident))
    return out


def _mlp_fn(model, layer: int):
    """The block's map from the MLP's input (residual, ``[rows, 1, d]``) to ``hook_mlp_out``."""
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    block = model.blocks[layer]
    if model.cfg.original_architecture in POST_NORM_ARCHITECTURES:
        return block.apply_mlp
    return lambda x: block.apply_mlp(block.ln2(x))


def _read_fn(model, d: Submodule):
    """A transcoder's read activation as a function of its MLP's input (the residual the MLP reads), when it is one:
    ``hook_mlp_in`` (and ``hook_resid_mid`` in sequential blocks, ``hook_resid_pre`` in parallel ones) is that
    input, ``ln2.hook_normalized`` its normalisation (before the norm's weight and bias), ``mlp.hook_in`` the
    norm's output; else None."""
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    cfg, l = model.cfg, d.layer
    if cfg.original_architecture in POST_NORM_ARCHITECTURES:
        return None
    parallel = getattr(cfg, "parallel_attn_mlp", False)
    same = {f"blocks.{l}.hook_mlp_in", f"blocks.{l}.hook_resid_pre" if parallel else f"blocks.{l}.hook_resid_mid"}
    if d.read_hook in same:
        return lambda x: x
    if d.read_hook == f"blocks.{l}.mlp.hook_in":  # the MLP's own input: the norm's output, weight included
        return model.blocks[l].ln2
    if d.read_hook != f"blocks.{l}.ln2.hook_normalized":
        return None
    ln = model.blocks[l].ln2  # hook_normalized is inside it, before the weight and bias

    def normalized(x):
        got = {}
        handle = ln.hook_normalized.register_forward_hook(lambda module, args, out: got.__setitem__("x", out))
        try:
            ln(x)
        finally:
            handle.remove()
        return got["x"]

    return normalized


def _tokenwise_vjp(model, subs: list[Submodule], d: Submodule, clean: dict[str, Acts]):
    """``(inputs, vjp)`` when ``d`` reads its upstream submodules token by token (an MLP or a transcoder,
    :func:`mlp_inputs`, or a residual, :func:`resid_inputs`), else None. ``vjp(c, t)`` maps cotangent rows ``c``
    (``{"x": [rows, d_model]}``, and ``"read"`` for a transcoder, as :meth:`Cotangents.rows` builds them) at flat
    tokens ``t`` to ``{input name: [rows, d_in]}``. An MLP is linearised at its clean input, the sum of all its
    inputs, whether or not they hold circuit nodes."""
    ins = mlp_inputs(model, subs, d)
    if ins is not None:
        B, T, D = clean[d.name].x.shape
        x = sum(clean[u.name].x for u in ins).reshape(B * T, D)
        fn = _mlp_fn(model, d.layer)
        read = _read_fn(model, d) if d.transcoder else None

        def vjp(c, t):
            xr = x[t][:, None].detach().requires_grad_(True)
            outs, cots = [], []
            with torch.enable_grad():
                if "x" in c:
                    outs.append(fn(xr))
                    cots.append(c["x"][:, None])
                if "read" in c:
                    outs.append(read(xr))
                    cots.append(c["read"][:, None])
                (v,) = torch.autograd.grad(outs, xr, grad_outputs=cots)
            return dict.fromkeys((u.name for u in ins), v[:, 0])

        return ins, vjp
    pairs = resid_inputs(model, subs, d)
    if pairs is None:
        return None
    return [u for u, _ in pairs], lambda c, t: {u.name: f(c["x"]) for u, f in pairs}


def tokenwise_edges(
    ins: list[Submodule], vjp, cot: Cotangents, up_delta, nodes: dict[str, NodeSet], budget, share: float = 0.5
) -> dict[str, torch.Tensor]:
    """Edges into a submodule that reads its inputs ``ins`` token by token (an MLP, :func:`mlp_inputs`, or a residual,
    :func:`resid_inputs`; ``vjp(c, t)`` maps its cotangent rows to theirs): one VJP row per
    (downstream node, token) with a nonzero cotangent, instead of every token of every example for every node.

    ``{up: [n_down, n_up]}`` for the submodules in ``ins``."""
    B, T, D = cot.shape
    W = cot.W  # dtype and device of the rows
    ns, k = cot.nodes, cot.nodes.feat.numel()
    node_row, tok = cot.coeff.nonzero().unbind(1)  # feature nodes: tokens where they are active
    err_rows, err_tok = [], []
    for i, t in enumerate(ns.err_pos):
        toks = torch.arange(B * T, device=W.device)
        toks = toks if t is None else toks[toks % T == t]
        err_rows.append(torch.full_like(toks, k + i))
        err_tok.append(toks)
    node_row, tok = torch.cat([node_row, *err_rows]), torch.cat([tok, *err_tok])
    s = budget.shape if budget is not None else None
    n_up = sum(len(nodes[u.name]) for u in ins)  # each row's weights into every upstream node, and their products
    D_in = max([D] + [u.W_dec.shape[-1] for u in ins])
    per_row = (12 * D_in + 6 * (s.d_mlp if s else 4 * D) + 4 * n_up) * W.element_size()
    size = budget.rows(per_row, "edge cotangent", share=share) if budget is not None else 4096
    out = {u.name: W.new_zeros((len(ns), len(nodes[u.name]))) for u in ins}
    for lo in range(0, node_row.numel(), size):
        r, t = node_row[lo : lo + size], tok[lo : lo + size]
        vs = vjp(cot.rows(r, t), t)
        for u in ins:
            v = vs[u.name]
            df, derr = up_delta[u.name]
            nu, ku = nodes[u.name], nodes[u.name].feat.numel()
            w = v.new_zeros((r.numel(), len(nu)))
            if ku:
                w[:, :ku] = (v @ u.W_dec[nu.feat].T) * df[:, t].T
            e = (v * derr.reshape(B * T, -1)[t]).sum(-1)
            for j, p in enumerate(nu.err_pos):
                w[:, ku + j] = e if p is None else e * (t % T == p)
            out[u.name].index_add_(0, r, w)
    return out


def direct_paths(outs: dict[str, torch.Tensor], leaves: dict[str, torch.Tensor]) -> dict[str, set[str]]:
    """``{down: {up, ...}}``: the upstream leaves each output's autograd graph reaches (no arithmetic).

    A pair outside it has no direct path: autograd gives None for it, its edges are all zero."""
    names = {id(t): name for name, t in leaves.items()}
    out = {}
    for down, t in outs.items():
        found, seen, stack = set(), set(), [t.grad_fn]
        while stack:
            fn = stack.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            var = getattr(fn, "variable", None)
            if var is not None and id(var) in names:
                found.add(names[id(var)])
            stack.extend(nxt for nxt, _ in fn.next_functions)
        out[down] = found
    return out


def circuit_bytes(
    subs: list[Submodule], nodes: dict[str, NodeSet], paths: dict[str, set[str]], tokens: int, itemsize: int
) -> int:
    """Bytes the edges pass holds for a circuit (what grows with its size), for ``tokens`` = examples × positions.

    Edge weights ``[n_down, n_up]`` of the pairs with a direct path (``paths``, ``"y"`` for the metric), twice
    (this batch's and the running sum, at least float32); each upstream submodule's ``Δf`` ``[k, tokens]`` and
    ``Δε``; and, for one downstream submodule at a time (two while the next is built), its cotangent
    coefficients ``[k, tokens]``, encoder rows ``[k, d]`` and the (node, token) indices of the token-wise
    MLP path (int64)."""
    size = {s.name: len(nodes[s.name]) for s in subs}
    size["y"] = 1
    pairs = sum(size.get(d, 0) * size.get(u, 0) for d, ups in paths.items() for u in ups)
    held, down = 0, 0
    for s in subs:
        if size[s.name]:
            k, d = nodes[s.name].feat.numel(), s.W_dec.shape[-1]
            held += (k + d) * tokens * itemsize
            down = max(down, 2 * k * (tokens * (itemsize + 32) + d * itemsize))
    return int(2 * pairs * max(itemsize, 4) + held + down)


def edge_effects(
    model,
    subs: list[Submodule],
    batch,
    metric,
    clean: dict[str, Acts],
    patch: dict[str, Acts],
    grads: dict[str, torch.Tensor],
    nodes: dict[str, NodeSet],
    chunk: int = 64,
    budget=None,
) -> dict[tuple[str, str], torch.Tensor]:
    """Edge weights summed over the batch: ``{(up, down): [n_down, n_up]}``; ``down`` may be ``"y"``.

    Edges into ``y`` come from every submodule but the last (whose edges into ``y`` are its node
    effects, added by the caller) through the direct path to the metric. ``chunk``: downstream nodes
    per batched backward pass (with ``budget``, at most what fits in it). A pair with no direct path
    (autograd gives no gradient, e.g. a residual SAE between them) is absent: absent means all zero.
    With ``budget``, what the circuit holds (:func:`circuit_bytes`) must fit in a quarter of it
    (SFCError otherwise, naming what would fit); the cotangent chunks take half of it less that.
    """
    leaves, outs, reads = {}, {}, {}

    def cut(act, hook, sub):
        outs[sub.name] = sub.flat(act)
        leaves[sub.name] = outs[sub.name].detach().requires_grad_(True)
        return sub.unflat(leaves[sub.name])

    hooks = [(s.hook, lambda act, hook, sub=s: cut(act, hook, sub)) for s in subs]
    hooks += [  # a transcoder's read activation, in the graph (after the cuts: it may be a submodule's leaf)
        (s.read_hook, lambda act, hook, sub=s: reads.__setitem__(sub.name, sub.read(act)))
        for s in subs
        if s.transcoder and len(nodes[s.name])
    ]
    active = [s for s in subs if len(nodes[s.name])]
    result: dict[tuple[str, str], torch.Tensor] = {}
    B, T = batch.clean.shape
    share = 0.5
    with torch.enable_grad(), read_hooks(model, subs):
        m = run_metric(model, metric, batch, hooks).sum()
        if budget is not None:
            paths = direct_paths({**outs, **{(n, "read"): r for n, r in reads.items()}, "y": m}, leaves)
            for n in reads:  # a transcoder's nodes are functions of what it reads and what its MLP writes
                paths[n] |= paths.pop((n, "read"))
            held = circuit_bytes(subs, nodes, paths, B * T, budget.shape.itemsize)
            budget.circuit(held, sum(len(ns) for ns in nodes.values()), share=0.25)
            share = 0.5 - held / budget.bytes
        up_delta = {s.name: _upstream(s, clean[s.name], patch[s.name], nodes[s.name]) for s in active}
        for i, d in enumerate(subs):
            ups = [u for u in subs[:i] if len(nodes[u.name])]
            if not ups or not len(nodes[d.name]):
                continue
            size = chunk
            if budget is not None:
                n_up = sum(u.name in paths[d.name] for u in ups)  # the others' VJPs are None: nothing allocated
                row = budget.cotangent_row(T, max(1, n_up))
                if d.W_enc is None:  # one-hot feature cotangents and the encoder's backward
                    row += 3 * T * d.d_sae * budget.shape.itemsize
                size = budget.rows(B * row, "edge cotangent", share=share, cap=chunk)
            cot = None  # the previous downstream submodule's, freed before this one's is built
            cot = Cotangents(d, grads[d.name], _sparse(clean[d.name].f), nodes[d.name])
            tokenwise = _tokenwise_vjp(model, subs, d, clean)
            if tokenwise is not None and all(
                u.name in {s.name for s in ups} or not len(nodes[u.name]) for u in tokenwise[0]
            ):
                ins = [u for u in tokenwise[0] if len(nodes[u.name])]
                got = tokenwise_edges(ins, tokenwise[1], cot, up_delta, nodes, budget, share) if ins else {}
                for u, w in got.items():  # every other upstream path into it is cut: those pairs are absent
                    result[(u, d.name)] = w
                continue
            graph = {"x": outs[d.name], "read": reads.get(d.name)}
            if d.W_enc is None:  # features and error as functions in the graph, the encoder differentiated
                f = d.features(reads.get(d.name, outs[d.name]))
                graph.update(f=f, eps=outs[d.name] - d.decode(f))
            out: dict[str, torch.Tensor] = {}  # allocated at the first chunk with a gradient
            for lo in range(0, len(cot), size):
                hi = min(len(cot), lo + size)
                c = cot.chunk(lo, hi)
                vs = torch.autograd.grad(
                    [graph[key] for key in c],
                    [leaves[u.name] for u in ups],
                    grad_outputs=list(c.values()),
                    is_grads_batched=True,
                    retain_graph=True,
                    allow_unused=True,
                )
                for u, v in zip(ups, vs):
                    if v is None:  # no direct path from u (the same for every chunk)
                        continue
                    if u.name not in out:
                        out[u.name] = v.new_zeros((len(cot), len(nodes[u.name])))
                    out[u.name][lo:hi] = _contract(v, u, *up_delta[u.name], nodes[u.name])
                del c, vs
            del graph
            for u, w in out.items():
                result[(u, d.name)] = w
        ups = [u for u in subs[:-1] if len(nodes[u.name])]
        if ups:
            gy = torch.autograd.grad(m, [leaves[u.name] for u in ups], allow_unused=True)
            for u, g in zip(ups, gy):
                if g is not None:
                    result[(u.name, "y")] = _contract(g[None], u, *up_delta[u.name], nodes[u.name])
    return result
