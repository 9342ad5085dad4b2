"""The classifier SHIFT edits: a linear probe on mean-pooled activations, and its accuracy rows.

The default recipe is the authors' (``experiments/bib_shift.ipynb``): one linear unit with bias on the
attention-mask-weighted mean of the residual stream (:func:`pool`), BCE loss, AdamW with learning rate 1e-2,
one epoch over batches of 32 in the data's order, initialised after ``torch.manual_seed(seed)`` (seed 42).
``recipe="full-batch"`` is this package's earlier probe (Adam, 400 full-batch epochs, small random start).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import torch

from ..data import Batch, tokenize
from ..errors import SFCError
from .records import Labelled

RECIPES = ("authors", "full-batch")


@contextlib.contextmanager
def _default_bos(model, prepend: bool | None):
    before = model.cfg.default_prepend_bos
    if prepend is not None:
        model.cfg.default_prepend_bos = bool(prepend)
    try:
        yield
    finally:
        model.cfg.default_prepend_bos = before


def labelled(
    model,
    records: list[dict],
    intended: str,
    spurious: str,
    pos: tuple[str, str],
    device,
    prepend_bos: bool | None = None,
) -> Labelled:
    """Tokenise ``{"text", intended, spurious}`` records; ``y``/``z`` are 1 where the value is ``pos[0]``/``pos[1]``;
    ``balanced`` is each record's ``"balanced"`` (default true): the rows profession and gender accuracy count.
    ``prepend_bos``: BOS before each text or not (None: the model's default, ``cfg.default_prepend_bos``)."""
    if not records:
        raise SFCError("SHIFT needs non-empty train, validation and test data")
    for i, r in enumerate(records):
        if "text" not in r or intended not in r or spurious not in r:
            raise SFCError(f"record {i} lacks one of 'text', {intended!r}, {spurious!r}")
    with _default_bos(model, prepend_bos):
        batch = tokenize(model, [{"clean_prefix": r["text"]} for r in records], device)
    empty = (batch.valid.sum(1) == 0).nonzero()
    if len(empty):
        raise SFCError(
            f"record {int(empty[0])} has no tokens (text {records[int(empty[0])]['text']!r}): nothing to pool"
        )
    y = torch.tensor([r[intended] == pos[0] for r in records], dtype=torch.float32, device=device)
    z = torch.tensor([r[spurious] == pos[1] for r in records], dtype=torch.float32, device=device)
    balanced = torch.tensor([bool(r.get("balanced", True)) for r in records], device=device)
    return Labelled(batch, y, z, balanced)


def pool(act: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Attention-mask-weighted mean over each text's real (non-padding) positions: ``[n, pos, d] -> [n, d]``."""
    valid = batch.valid[..., None].to(act.dtype)
    return (act * valid).sum(1) / valid.sum(1)


def pooled_rows(model, hook: str, width: int, edit=None, budget=None, cap: int = 64) -> int:
    """Texts per batch of :func:`pooled` that fit ``budget`` (a :class:`~sfc_plugin.budget.MemoryBudget`)."""
    if budget is None:
        return cap
    layer = int(hook.split(".")[1])
    per_row = budget.forward_row(width, layer + 1, 0, grad=False)
    if edit is not None and edit.ablate:  # at worst (SAEs encode_some cannot slice) a full encode per token
        per_row += width * budget.encode_row(max(edit.submodules[n].d_sae for n in edit.ablate))
    return budget.rows(per_row, "pooled-activation", share=0.5, cap=cap)


@torch.no_grad()
def pooled(
    model,
    data: Labelled,
    hook: str,
    edit=None,
    batch_size: int = 64,
    *,
    budget=None,
    progress: bool = False,
    desc: str = "pooled activations",
    store=None,
    key: str | None = None,
) -> torch.Tensor:
    """Mean-pooled (padding-masked) activations at ``hook``: ``[n, d_model]`` (float32, CPU), with ``edit``
    applied. ``budget`` sizes the batches; ``store``/``key`` (a :class:`~.checkpoints.Checkpoints` and the
    result's key) reuse a finished result and resume an interrupted pass."""
    from tqdm.auto import tqdm

    if store is not None and key is not None:
        found = store.get("pooled", key)
        if found is not None:
            return found[0]["x"]
        loop = store.loop("pooled", key)
    else:
        loop = None
    size = min(batch_size, pooled_rows(model, hook, data.batch.clean.shape[1], edit, budget))
    parts = list(data.split(size))
    done = loop.done if loop is not None else 0
    out = [loop.state["x"]] if loop is not None and done else []
    layer = int(hook.split(".")[1])
    hooks = edit.hooks() if edit else []
    bar = tqdm(total=len(data.batch), initial=done, desc=desc, file=sys.stderr, disable=not progress, leave=False)
    with bar:
        start = 0
        for part, _, _ in parts:
            if start < done:
                start += len(part)
                continue
            seen = {}
            with edit.read_hooks(model) if edit else contextlib.nullcontext():  # a transcoder reads its input hook
                model.run_with_hooks(
                    part.clean,
                    fwd_hooks=hooks + [(hook, lambda act, hook: seen.setdefault("x", act))],
                    stop_at_layer=layer + 1,
                )
            out.append(pool(seen["x"], part).float().cpu())
            start += len(part)
            bar.update(len(part))
            if loop is not None:
                loop.step(start, {"x": torch.cat(out)})
    result = torch.cat(out)
    if store is not None and key is not None:
        store.put("pooled", key, {"x": result})
    return result


def train_probe(
    X: torch.Tensor,
    y: torch.Tensor,
    seed: int = 42,
    recipe: str = "authors",
    *,
    lr: float = 0.01,
    epochs: int | None = None,
    batch_size: int = 32,
) -> torch.nn.Linear:
    """A logistic-regression probe (one linear unit with bias, BCE loss) on pooled activations ``X``.

    ``recipe="authors"``: ``torch.manual_seed(seed)``, PyTorch's default initialisation, AdamW (lr ``lr``), one
    epoch (``epochs``) over batches of ``batch_size`` in order. ``"full-batch"``: Adam, 400 full-batch epochs
    from a small random start (the earlier default). The global random state is left as it was."""
    if recipe not in RECIPES:
        raise SFCError(f"unknown probe recipe {recipe!r} (known: {', '.join(RECIPES)})")
    X, y = X.detach().float().cpu(), y.detach().float().cpu()
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    if recipe == "full-batch":
        gen = torch.Generator().manual_seed(seed)
        probe = torch.nn.Linear(X.shape[1], 1)
        with torch.no_grad():
            probe.weight.copy_(torch.randn(probe.weight.shape, generator=gen) * 0.01)
            probe.bias.zero_()
        opt = torch.optim.Adam(probe.parameters(), lr=lr)
        for _ in range(400 if epochs is None else epochs):
            opt.zero_grad()
            loss_fn(probe(X)[:, 0], y).backward()
            opt.step()
        return probe.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = torch.nn.Linear(X.shape[1], 1)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr)
    for _ in range(1 if epochs is None else epochs):
        for lo in range(0, len(X), batch_size):
            opt.zero_grad()
            loss_fn(probe(X[lo : lo + batch_size])[:, 0], y[lo : lo + batch_size]).backward()
            opt.step()
    return probe.eval()


def accuracy_row(name: str, probe, X: torch.Tensor, data: Labelled) -> dict[str, Any]:
    """Intended-attribute and spurious-attribute accuracy of ``probe`` on the balanced rows, and worst-group
    accuracy over all rows (each (intended, spurious) group in full); ``n`` and ``n_balanced`` count them."""
    with torch.no_grad():
        pred = (probe(X.float().cpu())[:, 0] > 0).float()
    y, z = data.y.cpu(), data.z.cpu()
    bal = data.balanced.cpu() if data.balanced is not None else torch.ones_like(y, dtype=torch.bool)
    groups = [
        (pred[(y == a) & (z == b)] == a).float().mean().item()
        for a in (0, 1)
        for b in (0, 1)
        if ((y == a) & (z == b)).any()
    ]
    return {
        "name": name,
        "profession_acc": (pred[bal] == y[bal]).float().mean().item(),
        "gender_acc": (pred[bal] == z[bal]).float().mean().item(),
        "worst_group_acc": min(groups),
    }
