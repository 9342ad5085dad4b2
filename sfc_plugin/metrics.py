"""Built-in metrics ``fn(logits, batch) -> tensor[batch]``, read at each prompt's last token.

A metric with ``positions = "last"`` is handed logits only at each prompt's last token (``[b, 1, vocab]``,
``batch.last`` all 0), so the vocabulary is never projected at other positions; without it the metric
gets ``[b, pos, vocab]``.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import SFCError
from .plugins import hookimpl, lookup


def logit_diff(logits, batch):
    """``logit(patch_answer) − logit(clean_answer)``: patching the input should raise it."""
    if batch.patch_answer is None:
        raise SFCError("metric 'logit_diff' needs 'patch_answer' in every example")
    last = logits[batch.rows, batch.last]
    return last.gather(-1, batch.patch_answer[:, None])[:, 0] - last.gather(-1, batch.clean_answer[:, None])[:, 0]


def logprob(logits, batch):
    """Log-probability of the clean answer."""
    last = logits[batch.rows, batch.last].log_softmax(-1)
    return last.gather(-1, batch.clean_answer[:, None])[:, 0]


logit_diff.positions = logprob.positions = "last"  # unembed only each prompt's last token


@hookimpl
def sfc_metrics():
    return {"logit_diff": logit_diff, "logprob": logprob}


def resolve_metric(metric, batch_has_patch_answer: bool, pm=None) -> tuple[Callable, str]:
    """``(fn, name)``: a callable, a registered name, or the default for the data."""
    if callable(metric):
        return metric, getattr(metric, "__name__", "custom")
    name = metric or ("logit_diff" if batch_has_patch_answer else "logprob")
    return lookup("metric", name, pm), name
