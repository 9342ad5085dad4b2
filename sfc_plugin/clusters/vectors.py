"""Behaviour vectors: what each context's prediction relies on, stored sparse (top ``k`` entries).

``effects`` (default): the linear (attribution-patching) effect of zero-ablating every SAE feature
and error term on ``log p(answer)``, summed over positions: ``−(∇_f m)·f`` and ``−(∇_ε m)·ε`` from
one forward and backward pass per batch (the fast node attribution, method ``atp``; see
:func:`sfc_plugin.attribution.engine.zero_ablation`).
``gradients``: the paper's alternative, the plain gradient ``∇_x log p(answer)`` at each
submodule's output, summed over positions.

Columns are concatenated over submodules: for ``effects`` each submodule contributes ``d_sae``
feature columns then one error column; for ``gradients`` ``d_model`` columns. Only the ``k``
entries of largest magnitude are kept per context, so memory is ``n_contexts × k × 8`` bytes
whatever the SAE widths (10^5 contexts × k=64: 51 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SFCError

KINDS = ("effects", "gradients")


@dataclass
class Columns:
    """The column layout: per submodule ``(name, width, has_error_column)``."""

    kind: str
    blocks: list[tuple[str, int, bool]]

    @property
    def size(self) -> int:
        return sum(w + e for _, w, e in self.blocks)

    def name(self, col: int) -> str:
        """A node id ``<submodule>/<feature>`` / ``<submodule>/err`` (or ``<submodule>/d<i>`` for gradients)."""
        for sub, width, err in self.blocks:
            if col < width:
                return f"{sub}/{col}" if self.kind == "effects" else f"{sub}/d{col}"
            col -= width
            if err:
                if col == 0:
                    return f"{sub}/err"
                col -= 1
        raise IndexError(col)

    def to_json(self) -> dict:
        return {"kind": self.kind, "blocks": [list(b) for b in self.blocks]}


def select_submodules(subs, names: list[str] | None):
    """The submodules named in ``names`` (all when None), in model order."""
    if not names:
        return subs
    known = {s.name for s in subs}
    for n in names:
        if n not in known:
            raise SFCError(f"unknown submodule {n!r} (known: {', '.join(s.name for s in subs)})")
    return [s for s in subs if s.name in names]


def columns(subs, kind: str, d_model: int) -> Columns:
    if kind not in KINDS:
        raise SFCError(f"unknown behaviour vector kind {kind!r} (known: {', '.join(KINDS)})")
    if kind == "effects":
        return Columns(kind, [(s.name, s.d_sae, True) for s in subs])
    return Columns(kind, [(s.name, d_model, False) for s in subs])


def context_batch(contexts: list[dict], device):
    """A :class:`sfc_plugin.data.Batch` of contexts (right-padded prefixes, answer at each prefix's end)."""
    import torch

    from ..data import Batch

    width = max(len(c["tokens"]) for c in contexts)
    tokens = torch.zeros((len(contexts), width), dtype=torch.long)
    for i, c in enumerate(contexts):
        tokens[i, : len(c["tokens"])] = torch.tensor(c["tokens"])
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
    return Batch(
        tokens.to(device),
        None,
        as_long([c["answer"] for c in contexts]),
        None,
        as_long([len(c["tokens"]) - 1 for c in contexts]),
        list(contexts),
    )


def behaviour_vectors(model, subs, contexts: list[dict], kind: str = "effects", top_k: int = 64):
    """``(indices [n, k] int32, values [n, k] float32)``: each context's top-``k`` columns by magnitude
    (columns as in :func:`columns`; fewer than ``k`` non-zero entries are padded with value 0)."""
    import torch

    from ..attribution.engine import zero_ablation
    from ..metrics import logprob

    batch = context_batch(contexts, next(model.parameters()).device)
    units = "features" if kind == "effects" else "gradients"
    eff = zero_ablation(model, subs, batch, logprob, "atp", units=units)  # padding gets no gradient
    if kind == "gradients":
        parts = [eff.grads[s.name].sum(1) for s in subs]
    else:
        parts = [t for s in subs for t in (eff.features[s.name], eff.errors[s.name][:, None])]
    full = torch.cat(parts, 1).float().cpu()
    k = min(top_k, full.shape[1])
    idx = full.abs().topk(k, dim=1).indices.sort(dim=1).values
    return idx.to(torch.int32), full.gather(1, idx)
