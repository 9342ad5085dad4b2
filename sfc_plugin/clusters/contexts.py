"""Contexts: prefixes of corpus windows where the model predicts the next token with low loss.

A document is tokenised without special tokens and cut into windows of at most ``window`` tokens
(:func:`sfc_plugin.corpus.windows`), each starting with BOS when the model prepends one; the loss
at every position of a window is read from one forward pass. A context is ``window[: t + 1]`` with
answer ``window[t + 1]``, kept when its loss (nats) is below ``max_loss`` and the prefix holds at
least one token besides BOS. The first ``n`` such contexts in document order are kept: the result
depends only on the corpus and the settings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from ..corpus import Document, windows
from ..errors import SFCError


@dataclass
class Context:
    id: int
    doc: int
    pos: int  # index of the prefix's last token in its window
    tokens: list[int]  # the prefix (BOS first)
    answer: int
    loss: float
    categories: dict[str, str] | None = None  # the corpus's categories of the answer token, if it has any

    def to_dict(self) -> dict:
        return asdict(self)


def _windows(model, docs: Iterable[Document], window: int) -> Iterator[tuple[int, list[int], list[dict | None]]]:
    """``(doc index, tokens, categories per token)`` for every window, lazily."""
    bos = model.tokenizer.bos_token_id if model.cfg.default_prepend_bos else None
    head: list[dict | None] = [None] * (bos is not None)
    for d, doc in enumerate(docs):
        body = model.tokenizer.encode(doc.text, add_special_tokens=False)
        labels: list[dict | None] = [None] * len(body)
        if doc.categories:
            for name, values in doc.categories.items():
                if len(values) != len(body):
                    raise SFCError(f"document {d}: {len(body)} tokens but {len(values)} {name!r} labels")
            labels = [{name: values[i] for name, values in doc.categories.items()} for i in range(len(body))]
        for lo, w in windows(body, window, bos):
            yield d, w, head + labels[lo : lo + len(w) - len(head)]


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def collect_contexts(
    model,
    docs: Iterable[Document],
    n: int,
    max_loss: float = 0.5,
    window: int = 64,
    batch_size: int = 32,
    progress: bool = True,
) -> list[Context]:
    """Up to ``n`` low-loss contexts of ``docs`` (see the module docstring)."""
    import sys

    import torch
    from tqdm.auto import tqdm

    if n < 1:
        raise SFCError(f"n_contexts must be at least 1, got {n}")
    if window < 2:
        raise SFCError(f"window must be at least 2 tokens, got {window}")
    window = min(window, model.cfg.n_ctx)
    wins = (w for w in _windows(model, docs, window) if len(w[1]) >= 3)
    device = next(model.parameters()).device
    pad = getattr(model.tokenizer, "pad_token_id", None) or 0
    out: list[Context] = []
    bar = tqdm(total=n, desc="contexts", file=sys.stderr, disable=not progress, leave=False)
    for chunk in _batches(wins, batch_size):
        width = max(len(t) for _, t, _ in chunk)
        tokens = torch.full((len(chunk), width), pad, dtype=torch.long)
        for i, (_, t, _) in enumerate(chunk):
            tokens[i, : len(t)] = torch.tensor(t)
        with torch.no_grad():
            logp = model(tokens.to(device)).log_softmax(-1)[:, :-1]
            loss = -logp.gather(-1, tokens[:, 1:, None].to(device))[..., 0].float().cpu()
        for i, (d, t, labels) in enumerate(chunk):
            for pos in range(1, len(t) - 1):
                if float(loss[i, pos]) < max_loss:
                    out.append(
                        Context(
                            len(out), d, pos, t[: pos + 1], t[pos + 1], round(float(loss[i, pos]), 6), labels[pos + 1]
                        )
                    )
        bar.update(min(len(out), n) - bar.n)
        if len(out) >= n:
            break
    bar.close()
    return out[:n]


def describe(model, ctx: Context | dict) -> dict:
    """``{"prefix", "answer_text"}``: the context as text (BOS dropped; the answer keeps its leading space)."""
    c = ctx if isinstance(ctx, dict) else ctx.to_dict()
    toks = c["tokens"]
    bos = model.tokenizer.bos_token_id
    body = toks[1:] if toks and toks[0] == bos else toks
    prefix = model.tokenizer.decode(body)
    full = model.tokenizer.decode(body + [c["answer"]])
    answer = full[len(prefix) :] if full.startswith(prefix) else model.tokenizer.decode([c["answer"]])
    return {"prefix": prefix, "answer_text": answer}
