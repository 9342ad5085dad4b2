"""A feature's evidence, read from unlabelled text: where it fires most strongly."""

from __future__ import annotations

import torch

from ..splicing import Submodule


@torch.no_grad()
def top_contexts(model, sub: Submodule, feature: int, texts, n: int = 3, width: int = 6, batch_size: int = 64) -> list[str]:
    """The ``n`` strongest activations of a feature in ``texts`` (a ``Batch``): the preceding words, the
    token in [brackets], the activation."""
    best: list[tuple[float, int, int]] = []
    for lo, part in zip(range(0, len(texts), batch_size), texts.split(batch_size)):
        _, cache = model.run_with_cache(part.clean, names_filter=sub.hook)
        f = sub.encode(cache[sub.hook])[..., feature] * part.valid
        for (b, t), v in zip(f.nonzero().tolist(), f[f != 0].tolist()):
            best.append((v, lo + b, t))
    best.sort(key=lambda x: -x[0])
    out = []
    for v, b, t in best[:n]:
        toks = [model.tokenizer.decode([i]) for i in texts.clean[b, max(1, t - width):t + 1].tolist()]
        out.append(f"{' '.join(toks[:-1])} [{toks[-1]}] ({v:.2f})")
    return out
