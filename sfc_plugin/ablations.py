"""Built-in ablations for evaluation (``mean``, ``zero``, ``resample``), registered through ``sfc_ablations``.

Each returns ``{submodule: Acts}`` whose ``f``/``err`` broadcast to ``[n_examples, pos, ...]``. Values
come from the evaluation set's patch inputs (clean inputs when there are none).
"""

from __future__ import annotations

from .plugins import hookimpl


def _source_tokens(batch):
    return batch.patch if batch.patch is not None else batch.clean


def _sum_acts(model, subs, batch, per_position: bool, chunk: int = 64):
    """Sum of features and errors over examples (and over real positions unless ``per_position``)."""
    from .splicing import activations

    sums = {}
    for part in batch.split(chunk):
        acts = activations(model, subs, _source_tokens(part))
        valid = part.valid[..., None].to(part.clean.device)
        for s in subs:
            f, e = acts[s.name].f * valid, acts[s.name].err * valid
            f, e = (f.sum(0), e.sum(0)) if per_position else (f.sum((0, 1)), e.sum((0, 1)))
            prev = sums.get(s.name)
            sums[s.name] = (f, e) if prev is None else (prev[0] + f, prev[1] + e)
    return sums


def mean_ablation(model, subs, batch):
    """Mean over the evaluation set: per position when all prompts have one length, else over positions."""
    from .splicing import Acts

    per_position = int(batch.last.min()) == int(batch.last.max())
    count = len(batch) if per_position else int(batch.valid.sum())
    return {
        name: Acts(
            None,
            f[None] / count if per_position else f[None, None] / count,
            e[None] / count if per_position else e[None, None] / count,
        )
        for name, (f, e) in _sum_acts(model, subs, batch, per_position).items()
    }


def zero_ablation(model, subs, batch):
    """Features and errors set to zero (``x = decode(0)``)."""
    import torch

    from .splicing import Acts

    return {
        s.name: Acts(
            None,
            torch.zeros(1, 1, s.d_sae, dtype=s.W_dec.dtype, device=s.W_dec.device),
            torch.zeros(1, 1, s.W_dec.shape[1], dtype=s.W_dec.dtype, device=s.W_dec.device),
        )
        for s in subs
    }


def resample_ablation(model, subs, batch, seed: int = 0):
    """Each example takes the activations of a shuffled partner of the same token length (seeded)."""
    import torch

    from .splicing import Acts, activations

    gen = torch.Generator().manual_seed(seed)
    lengths = batch.last.cpu()
    partner = torch.arange(len(batch))
    for length in lengths.unique():
        idx = (lengths == length).nonzero().flatten()
        partner[idx] = idx[torch.randperm(idx.numel(), generator=gen)]
    acts = activations(model, subs, _source_tokens(batch)[partner.to(batch.clean.device)])
    return {s.name: Acts(None, acts[s.name].f, acts[s.name].err) for s in subs}


@hookimpl
def sfc_ablations():
    return {"mean": mean_ablation, "zero": zero_ablation, "resample": resample_ablation}
