"""The classifier SHIFT edits: a linear probe on mean-pooled residual activations, and its accuracy rows."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..data import Batch, tokenize
from ..errors import SFCError
from .records import Labelled


def labelled(model, records: list[dict], intended: str, spurious: str, pos: tuple[str, str], device) -> Labelled:
    """Tokenise ``{"text", intended, spurious}`` records; ``y``/``z`` are 1 where the value is ``pos[0]``/``pos[1]``."""
    if not records:
        raise SFCError("SHIFT needs non-empty train, validation and test data")
    for i, r in enumerate(records):
        if "text" not in r or intended not in r or spurious not in r:
            raise SFCError(f"record {i} lacks one of 'text', {intended!r}, {spurious!r}")
    batch = tokenize(model, [{"clean_prefix": r["text"]} for r in records], device)
    y = torch.tensor([r[intended] == pos[0] for r in records], dtype=torch.float32, device=device)
    z = torch.tensor([r[spurious] == pos[1] for r in records], dtype=torch.float32, device=device)
    return Labelled(batch, y, z)


def pool(act: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean over each text's real (non-padding) positions: ``[n, pos, d] -> [n, d]``."""
    valid = batch.valid[..., None].to(act.dtype)
    return (act * valid).sum(1) / valid.sum(1)


@torch.no_grad()
def pooled(model, data: Labelled, hook: str, edit=None, batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled (padding-masked) activations at ``hook``: ``[n, d_model]``, with ``edit`` applied."""
    out = []
    for part, _, _ in data.split(batch_size):
        seen = {}
        hooks = (edit.hooks() if edit else []) + [(hook, lambda act, hook: seen.setdefault("x", act))]
        with edit.read_hooks(model) if edit else contextlib.nullcontext():
            model.run_with_hooks(part.clean, fwd_hooks=hooks, stop_at_layer=int(hook.split(".")[1]) + 1)
        out.append(pool(seen["x"], part).float())
    return torch.cat(out)


def train_probe(
    X: torch.Tensor, y: torch.Tensor, seed: int = 0, epochs: int = 400, lr: float = 0.01
) -> torch.nn.Linear:
    """A logistic-regression probe (BCE, full-batch Adam, seeded) on standardised inputs."""
    gen = torch.Generator().manual_seed(seed)
    probe = torch.nn.Linear(X.shape[1], 1)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(probe.weight.shape, generator=gen) * 0.01)
        probe.bias.zero_()
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    X, y = X.detach().float().cpu(), y.detach().float().cpu()
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(probe(X)[:, 0], y).backward()
        opt.step()
    return probe.eval()


def accuracy_row(name: str, probe, X: torch.Tensor, data: Labelled) -> dict[str, Any]:
    """Intended-attribute, spurious-attribute and worst-group accuracy of ``probe`` (same direction)."""
    with torch.no_grad():
        pred = (probe(X.float().cpu())[:, 0] > 0).float()
    y, z = data.y.cpu(), data.z.cpu()
    groups = [
        (pred[(y == a) & (z == b)] == a).float().mean().item()
        for a in (0, 1)
        for b in (0, 1)
        if ((y == a) & (z == b)).any()
    ]
    return {
        "name": name,
        "profession_acc": (pred == y).float().mean().item(),
        "gender_acc": (pred == z).float().mean().item(),
        "worst_group_acc": min(groups),
    }
