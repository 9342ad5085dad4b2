"""Method ``linear``: circuit-tracer's convention — direct effects in the local replacement model.

circuit-tracer 0.5.0's ``attribute(prompt, model)`` builds, for one prompt, the graph of *direct* effects between
transcoder features, error nodes, token embeddings and the top logits of a model whose attention patterns and
normalisation scales are frozen and whose MLPs are replaced by transcoders (:mod:`.replacement`). Step by step:

1. Nodes. Features: each node set's active features at each position ``1..T−1`` (position 0, the BOS, holds none:
   circuit-tracer zeroes its features and errors). Error nodes: one per node set per position,
   ``ε = x − decode(f) − skip(read)`` — circuit-tracer's error excludes a skip transcoder's skip term, which stays
   in the replacement model as a linear path from what the transcoder reads to what it writes (the ``tc_<l>/err``
   node of the other methods folds the skip in). Token embeddings: one per position (``hook_embed``'s value).
   Targets: circuit-tracer's salient logits — the most probable next tokens at the last position, at most 10,
   until their probabilities reach 0.95 — each the demeaned unembedding column ``W_U[:, v] − mean_v W_U`` read at
   the final normalised residual; or the metric (method ``linear`` in ``discover``).
2. Edges. ``A[t, s] = out_s · ∂in_t/∂write_s`` along the direct paths of the replacement model, where ``in_t`` is a
   feature's pre-activation without its bias (``W_enc[:, t] · read`` at its position) or a target's logit, and
   ``out_s`` is what the source adds at its write: ``a_s W_dec[s]`` for a feature (activations scale the
   *sources*), ``ε`` for an error node, the embedding for a token. Error and token nodes have no inputs.
3. Layout (:class:`LinearGraph`, circuit-tracer's ``Graph``): rows are targets, columns sources, nodes ordered
   ``[features (node set, position, feature), errors (node set, position), tokens (position), logits]``.

:func:`linear_graph` computes that graph for one prompt. As an ``sfc discover`` method, :func:`linear` gives each
node's *total* effect on the metric in the local replacement model (its contribution: the sum over paths of the
graph, each active feature a linear unit; one backward pass) and :func:`linear_edges` the direct effects between
the selected nodes and into the metric, averaged over the examples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from ..errors import SFCError
from ..splicing import Submodule, frozen, read_hooks
from .context import AttributionContext, NodeEffects, chunks
from .replacement import TOKENS, check_linear, error_vectors, replacement, valid_positions
from .sparse import SparseFeatures, node_matrix

GRAPH_FORMAT = "sfc-linear-graph/1"


@dataclass
class LinearGraph:
    """circuit-tracer's ``Graph`` of one prompt: the adjacency (rows targets, columns sources) and its nodes.

    ``active_features`` ``[n, 3]``: ``(node set, position, feature)``, the node set as an index into
    ``submodules`` — with a transcoder at every layer and nothing else, the layer, as in circuit-tracer.
    ``logit_targets``: vocabulary ids (``-1`` for a target that is not one token, such as a metric).
    """

    input_tokens: torch.Tensor  # [T]
    adjacency: torch.Tensor  # [N, N]
    active_features: torch.Tensor  # [n, 3]
    activation_values: torch.Tensor  # [n]
    submodules: list[str]
    logit_targets: torch.Tensor  # [k]
    logit_probabilities: torch.Tensor  # [k]
    target_labels: list[str] = field(default_factory=list)

    @property
    def n_pos(self) -> int:
        return int(self.input_tokens.numel())

    def node_ids(self) -> list[str]:
        """sfc node ids in adjacency order: ``<set>/<feature>@<pos>``, ``<set>/err@<pos>``, ``tokens/<id>@<pos>``,
        ``logit/<id>`` (``logit/<label>`` for a target that is not a token)."""
        ids = [f"{self.submodules[s]}/{j}@{p}" for s, p, j in self.active_features.tolist()]
        ids += [f"{name}/err@{p}" for name in self.submodules for p in range(self.n_pos)]
        ids += [f"{TOKENS}/{t}@{p}" for p, t in enumerate(self.input_tokens.tolist())]
        for v, label in zip(self.logit_targets.tolist(), self.target_labels or [None] * len(self.logit_targets)):
            ids.append(f"logit/{v}" if v >= 0 else f"logit/{label}")
        return ids

    def influence(self, max_iter: int = 1000) -> torch.Tensor:
        """``[N]``: circuit-tracer's node influence (``compute_node_influence``): the logit probabilities carried
        back along the row-normalised ``|A|``, summed over path lengths ``≥ 1`` (the logits' own weights are not
        added)."""
        A = self.adjacency.abs().double()
        A = A / A.sum(1, keepdim=True).clamp(min=1e-10)
        weights = torch.zeros(A.shape[0], dtype=A.dtype)
        k = self.logit_targets.numel()
        if k:
            weights[-k:] = self.logit_probabilities.double()
        current = weights @ A
        total = current.clone()
        for _ in range(max_iter):
            if not bool(current.any()):
                return total
            current = current @ A
            total += current
        raise SFCError(f"node influence did not converge in {max_iter} steps (the graph has a cycle)")

    def save(self, path) -> None:
        """A safetensors file (tensors, and the names and labels as JSON in its metadata; never pickle)."""
        from safetensors.torch import save_file

        tensors = {
            k: getattr(self, k).detach().cpu().contiguous()
            for k in (
                "input_tokens",
                "adjacency",
                "active_features",
                "activation_values",
                "logit_targets",
                "logit_probabilities",
            )
        }
        meta = {"format": GRAPH_FORMAT, "submodules": self.submodules, "target_labels": self.target_labels}
        save_file(tensors, str(path), metadata={"sfc": json.dumps(meta)})

    def to_bytes(self) -> bytes:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "graph.safetensors"
            self.save(path)
            return path.read_bytes()

    @classmethod
    def load(cls, path) -> LinearGraph:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("sfc", "{}"))
            if meta.get("format") != GRAPH_FORMAT:
                raise SFCError(f"{str(path)!r} is not an {GRAPH_FORMAT} file")
            t = {k: f.get_tensor(k) for k in f.keys()}
        return cls(**t, submodules=list(meta["submodules"]), target_labels=list(meta.get("target_labels") or []))


def salient_logits(
    logits: torch.Tensor, W_U: torch.Tensor, max_n_logits: int = 10, desired_logit_prob: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """circuit-tracer's default targets: ``(ids, probabilities, demeaned unembedding vectors [k, d_model])`` of
    the most probable tokens under ``logits`` ``[vocab]``, at most ``max_n_logits``, until their cumulative
    probability reaches ``desired_logit_prob``."""
    probs = torch.softmax(logits, dim=-1)
    top_p, top_idx = torch.topk(probs, min(max_n_logits, probs.numel()))
    cutoff = int(torch.searchsorted(torch.cumsum(top_p, 0), desired_logit_prob)) + 1
    ids = top_idx[:cutoff]
    return ids, probs[ids], logit_vectors(W_U, ids)


def logit_vectors(W_U: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``[k, d_model]``: the unembedding columns of ``ids`` minus the mean column (circuit-tracer's demeaning)."""
    return (W_U[:, ids] - W_U.mean(-1, keepdim=True)).T


@torch.no_grad()
def _prompt_nodes(model, subs: list[Submodule], tokens: torch.Tensor):
    """One clean pass: ``(logits at the last position, {set: (pos, feat, val)}, [errors [T, d_out] per set])``."""
    hooks = {s.hook for s in subs} | {s.read_hook for s in subs}
    with read_hooks(model, subs):
        logits, cache = model.run_with_cache(tokens[None], names_filter=lambda n: n in hooks)
    entries, errors = {}, []
    for s in subs:
        x, read = s.flat(cache[s.hook])[0], s.read(cache[s.read_hook])[0]
        f = s.encode(read)
        f[0] = 0  # position 0 holds no nodes
        pos, feat = f.nonzero(as_tuple=True)
        entries[s.name] = (pos, feat, f[pos, feat])
        err = error_vectors(s, x, f, read)
        err[0] = 0
        errors.append(err)
    return logits[0, -1], entries, errors


def _by_position(g: torch.Tensor, pos: torch.Tensor, vecs: torch.Tensor) -> torch.Tensor:
    """``[R, n]``: ``g[:, pos[i]] · vecs[i]``, one matrix product per position (``pos`` sorted, as ``nonzero``
    gives it), never an ``[R, n, d]`` tensor."""
    out = g.new_empty((g.shape[0], len(pos)))
    counts = torch.bincount(pos, minlength=g.shape[1]).tolist()
    lo = 0
    for p, c in enumerate(counts):
        if c:
            out[:, lo : lo + c] = g[:, p] @ vecs[lo : lo + c].T
            lo += c
    return out


def _check_tokens(model, tokens) -> torch.Tensor:
    tokens = torch.as_tensor(tokens, dtype=torch.long, device=next(model.parameters()).device).flatten()
    if tokens.numel() < 2:
        raise SFCError(
            f"a linear graph needs a prompt of at least 2 tokens (position 0 holds no nodes), got {tokens.numel()}"
        )
    if int(tokens.max()) >= model.cfg.d_vocab or int(tokens.min()) < 0:
        raise SFCError(f"token ids must lie in [0, {model.cfg.d_vocab}), got {tokens.tolist()}")
    return tokens


def linear_graph(
    model,
    subs: list[Submodule] | None = None,
    tokens=None,
    *,
    targets=None,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    batch_size: int = 256,
) -> LinearGraph:
    """circuit-tracer's attribution graph of one prompt (see the module docstring).

    ``model``: a :class:`~sfc_plugin.world.World` (``subs`` then default to its node sets) or a HookedTransformer
    with ``subs``; ``tokens``: the prompt's token ids, BOS first. ``targets``: None (circuit-tracer's salient
    logits, ``max_n_logits`` and ``desired_logit_prob`` as in its ``attribute``) or token ids. ``batch_size``:
    target rows per backward pass (one forward pass serves them all).
    """
    if subs is None and hasattr(model, "submodules"):
        model, subs = model.model, model.submodules
    check_linear(model, subs)
    tokens = _check_tokens(model, tokens)
    T = tokens.numel()
    with frozen(model):
        logits, entries, errors = _prompt_nodes(model, subs, tokens)
        W_U = model.W_U
        if targets is None:
            ids, probs, vecs = salient_logits(logits, W_U, max_n_logits, desired_logit_prob)
        else:
            ids = torch.as_tensor(targets, dtype=torch.long, device=tokens.device).flatten()
            if not ids.numel() or int(ids.max()) >= model.cfg.d_vocab or int(ids.min()) < 0:
                raise SFCError(f"targets must be token ids in [0, {model.cfg.d_vocab}), got {ids.tolist()}")
            probs, vecs = torch.softmax(logits, -1)[ids], logit_vectors(W_U, ids)
        # rows: every active feature (its encoder row at its read, its position), then every target
        feat_rows = [
            (k, int(p), j) for k, s in enumerate(subs) for p, j in zip(*(t.tolist() for t in entries[s.name][:2]))
        ]
        n_feat = len(feat_rows)
        n = n_feat + (len(subs) + 1) * T + len(ids)
        dtype = torch.promote_types(model.cfg.dtype, torch.float32)
        A = torch.zeros((n, n), dtype=dtype, device=tokens.device)
        rows = list(range(n_feat)) + list(range(n - len(ids), n))
        R = max(1, min(batch_size, len(rows)))
        with replacement(model, subs, tokens[None].expand(R, T)) as p:
            final = p.final()
            leaves = [p.leaves[s.name] for s in subs] + [p.leaves[TOKENS]]
            decoders = [entries[s.name][2][:, None] * s.W_dec[entries[s.name][1]] for s in subs]
            todo = list(chunks(rows, R))
            for c, chunk in enumerate(todo):
                objective = final.new_zeros(())
                inj_final = torch.zeros_like(final)
                inj = {}
                for r, row in enumerate(chunk):
                    if row < n_feat:
                        k, pos, j = feat_rows[row]
                        s = subs[k]
                        if s.name not in inj:
                            inj[s.name] = torch.zeros_like(p.reads[s.name])
                        inj[s.name][r, pos] = s.W_enc[:, j]
                    else:
                        inj_final[r, T - 1] = vecs[row - (n - len(ids))]
                for name, v in inj.items():
                    objective = objective + (v * p.reads[name]).sum()
                objective = objective + (inj_final * final).sum()
                grads = torch.autograd.grad(objective, leaves, retain_graph=c < len(todo) - 1, allow_unused=True)
                none = torch.zeros((R, T), dtype=dtype, device=A.device)  # a leaf no path reaches
                cols = [
                    none[:, :0] if not len(dec) else none[:, :1].expand(R, len(dec)) if g is None else
                    _by_position(g, entries[s.name][0], dec)
                    for s, g, dec in zip(subs, grads, decoders)
                ]  # fmt: skip
                cols += [none if g is None else (g * err[None]).sum(-1) for g, err in zip(grads, errors)]
                cols.append(none if grads[-1] is None else (grads[-1] * p.embed).sum(-1))
                block = torch.cat([c.to(dtype) for c in cols], 1)[: len(chunk)]
                A[torch.tensor(chunk, device=A.device), : n - len(ids)] = block.to(dtype)
    active = [(k, pos, j) for k, pos, j in feat_rows]
    values = torch.cat([entries[s.name][2] for s in subs]) if subs else torch.zeros(0)
    labels = [model.tokenizer.decode([v]) if model.tokenizer is not None else str(v) for v in ids.tolist()]
    return LinearGraph(
        input_tokens=tokens.cpu(),
        adjacency=A.detach().cpu(),
        active_features=torch.tensor(active, dtype=torch.long).reshape(-1, 3),
        activation_values=values.detach().cpu(),
        submodules=[s.name for s in subs],
        logit_targets=ids.detach().cpu(),
        logit_probabilities=probs.detach().cpu(),
        target_labels=labels,
    )


# ---- the discover method ------------------------------------------------------------------------------------


def _sparse(f) -> SparseFeatures:
    return f if isinstance(f, SparseFeatures) else SparseFeatures.from_dense(f)


def _entry_dots(g: torch.Tensor, tok: torch.Tensor, rows: torch.Tensor, step: int = 4096) -> torch.Tensor:
    """``[nnz]``: ``g[tok[i]] · rows[i]`` in chunks of entries."""
    g = g.reshape(-1, g.shape[-1])
    out = g.new_zeros(tok.numel())
    for lo in range(0, tok.numel(), step):
        out[lo : lo + step] = (g[tok[lo : lo + step]] * rows[lo : lo + step]).sum(-1)
    return out


def _refuse_forward(ctx: AttributionContext) -> None:
    if ctx.forward is not None:
        raise SFCError(
            "method 'linear' attributes the model's own logits (circuit-tracer's convention), not a custom forward pass"
        )


def linear(ctx: AttributionContext) -> NodeEffects:
    """Each node's total effect on the metric in the local replacement model (its contribution, the sign of
    circuit-tracer's edges: positive raises the metric): ``a_f ∂m/∂a_f`` for a feature, ``ε · ∂m/∂ε`` for an error
    node (circuit-tracer's, skip excluded), every active feature a linear unit. Per position ``[b, pos, F]``."""
    model, subs, batch = ctx.model, ctx.submodules, ctx.batch
    check_linear(model, subs)
    _refuse_forward(ctx)
    B, T = batch.clean.shape
    valid = valid_positions(batch.last, T)
    vflat = valid.reshape(-1)
    entries = {}
    for s in subs:
        f = _sparse(ctx.clean[s.name].f)
        tok = f.token_index()
        keep = vflat[tok] & f.val.ne(0)
        entries[s.name] = (tok[keep], f.idx[keep], f.val[keep])
    with replacement(model, subs, batch.clean, {k: v[:2] for k, v in entries.items()}) as p:
        m = p.metric(ctx.metric, batch)
        grads = torch.autograd.grad(m.sum(), [p.leaves[s.name] for s in subs], allow_unused=True)
    feats, errs = {}, {}
    for s, g in zip(subs, grads):
        x, read = p.values[s.name]
        g = torch.zeros_like(x) if g is None else g
        tok, idx, val = entries[s.name]
        contrib = val * _entry_dots(g, tok, s.W_dec[idx])
        index = torch.stack([tok // T, tok % T, idx])
        feats[s.name] = torch.sparse_coo_tensor(index, contrib, (B, T, s.d_sae), check_invariants=False)
        skip = s.skip(read)
        eps = ctx.clean[s.name].err - (0 if skip is None else skip)
        errs[s.name] = (g * eps).sum(-1) * valid
    return NodeEffects(feats, errs, None)


def linear_edges(model, subs: list[Submodule], batch, metric, clean, patch, nodes, budget=None) -> dict:
    """Direct effects between the circuit's nodes, summed over the batch: ``{(up, down): [n_down, n_up]}``, ``down``
    possibly ``"y"`` (the metric, from every node set). Into a feature node: the direct effect on its
    pre-activation wherever it is active (summed over those positions for position-summed nodes); into ``y``: on
    the metric. Error nodes have no inputs."""
    check_linear(model, subs)
    B, T = batch.clean.shape
    valid = valid_positions(batch.last, T)
    vflat = valid.reshape(-1).to(batch.clean.device)
    acts = {}  # node set → [k, B, T] activations of its feature nodes (valid positions)
    for s in subs:
        ns = nodes[s.name]
        if len(ns):
            f = _sparse(clean[s.name].f)
            vals = f.val * vflat[f.token_index()]
            acts[s.name] = node_matrix(vals, f, ns.feat, ns.feat_pos, T).view(-1, B, T)
    rows = []  # (down index in subs or -1 for y, example, node row, [T] mask)
    for i, d in enumerate(subs):
        if d.name in acts and i > 0:
            on = acts[d.name] != 0  # [k, B, T]
            for node, e in on.any(-1).nonzero().tolist():
                rows.append((i, e, node, on[node, e]))
    rows += [(-1, e, 0, None) for e in range(B)]
    upstream = [(i, s) for i, s in enumerate(subs) if s.name in acts or nodes[s.name].err_pos]
    out: dict[tuple[str, str], torch.Tensor] = {}
    wide = {"dtype": torch.promote_types(model.cfg.dtype, torch.float32), "device": vflat.device}
    for i, d in enumerate(subs):
        for j, u in upstream:
            if j < i and len(nodes[d.name]):
                out[(u.name, d.name)] = torch.zeros((len(nodes[d.name]), len(nodes[u.name])), **wide)
    for _, u in upstream:
        out[(u.name, "y")] = torch.zeros((1, len(nodes[u.name])), **wide)
    size = 64
    if budget is not None:
        per_row = budget.forward_row(T, model.cfg.n_layers, 1, grad=True, extra_d=4 * len(subs))
        size = budget.rows(per_row, "linear edge", share=0.5, cap=64)
    for chunk in chunks(rows, size):
        ex = torch.tensor([e for _, e, _, _ in chunk], device=batch.clean.device)
        sub_batch = batch.select(ex)
        with replacement(model, subs, sub_batch.clean) as p:
            objective = p.resid.new_zeros(())
            for i in {r[0] for r in chunk if r[0] >= 0}:
                d = subs[i]
                inj = torch.zeros_like(p.reads[d.name])
                for r, (k, _, node, mask) in enumerate(chunk):
                    if k == i:
                        inj[r, mask] = d.W_enc[:, nodes[d.name].feat[node]].to(inj.dtype)
                objective = objective + (inj * p.reads[d.name]).sum()
            is_y = torch.tensor([k < 0 for k, _, _, _ in chunk], device=ex.device)
            if bool(is_y.any()):
                objective = objective + (p.metric(metric, sub_batch) * is_y).sum()
            grads = torch.autograd.grad(objective, [p.leaves[u.name] for _, u in upstream], allow_unused=True)
        for (j, u), g in zip(upstream, grads):
            if g is None:
                continue
            x, read = p.values[u.name]
            ns = nodes[u.name]
            parts = []
            if u.name in acts:
                proj = g @ u.W_dec[ns.feat].T  # [R, T, k]
                parts.append(torch.einsum("rtk,krt->rk", proj, acts[u.name][:, ex]))
            if ns.err_pos:
                skip = u.skip(read)
                eps = clean[u.name].err[ex] - (0 if skip is None else skip)
                e = (g * eps).sum(-1) * valid[ex]
                parts.append(torch.stack([e.sum(1) if t is None else e[:, t] for t in ns.err_pos], 1))
            w = torch.cat(parts, 1).to(wide["dtype"])
            for k in {r[0] for r in chunk}:
                if 0 <= k <= j:
                    continue
                sel = torch.tensor([r for r, row in enumerate(chunk) if row[0] == k], device=w.device)
                at = torch.tensor([chunk[r][2] for r in sel.tolist()], device=w.device)
                out[(u.name, "y" if k < 0 else subs[k].name)].index_add_(0, at, w[sel])
    return out


linear.edge_effects = linear_edges  # the engine's edges pass uses a method's own edges when it has them
