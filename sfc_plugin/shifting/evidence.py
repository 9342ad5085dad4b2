"""A feature's evidence, read from unlabelled text: where it fires most strongly, what it promotes.

The evidence text is the toy world's corpus for the toy model (the same kind of generic text the
paper's dashboards were computed on), a user's text file, or the SHIFT training texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import SFCError
from ..splicing import Submodule
from .texts import TOY_CONTEXTS, is_toy, text_file, toy_texts


def evidence_texts(model, spec=None, fallback=None):
    """``(texts, name)``: ``spec`` a file; else the toy corpus for the toy model; else ``fallback``."""
    if spec is not None and str(spec) != "toy":
        return text_file(model, spec), str(spec)
    if is_toy(model):
        return toy_texts(model), f"toy corpus ({TOY_CONTEXTS} contexts)"
    if spec is not None:
        raise SFCError("evidence text 'toy' needs the toy model")
    if fallback is None:
        raise SFCError("no evidence text: give one (--evidence-text FILE)")
    return fallback, "SHIFT training texts"


@torch.no_grad()
def top_contexts(
    model, sub: Submodule, feature: int, texts, n: int = 3, width: int = 6, batch_size: int = 64
) -> list[str]:
    """The ``n`` strongest activations of a feature in ``texts`` (a ``Batch``): the preceding words, the
    token in [brackets], the activation."""
    best: list[tuple[float, int, int]] = []
    for lo, part in zip(range(0, len(texts), batch_size), texts.split(batch_size)):
        _, cache = model.run_with_cache(part.clean, names_filter=sub.hook)
        f = sub.encode(sub.flat(cache[sub.hook]))[..., feature] * part.valid
        for (b, t), v in zip(f.nonzero().tolist(), f[f != 0].tolist()):
            best.append((v, lo + b, t))
    best.sort(key=lambda x: -x[0])
    out = []
    for v, b, t in best[:n]:
        toks = [model.tokenizer.decode([i]) for i in texts.clean[b, max(1, t - width) : t + 1].tolist()]
        out.append(f"{' '.join(toks[:-1])} [{toks[-1]}] ({v:.2f})")
    return out


@dataclass
class Context:
    """One strong activation: the text's tokens up to and including the activating one (``tokens[-1]``)."""

    tokens: list[str]
    act: float


@dataclass
class Evidence:
    """What a person reads about a feature: where it fires most (``top``) and which tokens it promotes."""

    id: str
    top: list[Context] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)
    density: float = 0.0


def token_text(tokenizer, i: int) -> str:
    return tokenizer.decode([int(i)])


@torch.no_grad()
def promoted_tokens(model, direction: torch.Tensor, n: int = 10) -> list[int]:
    """Token ids whose logits a residual-stream direction raises most directly: the direction through the
    final layer norm's centring and weight (its input-dependent scale is left out: it does not change the
    order) and the unembedding. Approximate for any path that is not direct."""
    d = direction.to(model.W_U.dtype)
    ln = getattr(model, "ln_final", None)
    if ln is not None and getattr(model.cfg, "normalization_type", None) in ("LN", "LNPre"):
        d = d - d.mean()
    w = getattr(ln, "w", None) if ln is not None else None
    if w is not None:
        d = d * w
    return (d @ model.W_U).topk(n).indices.tolist()


@torch.no_grad()
def feature_evidence(
    model,
    submodules: dict[str, Submodule],
    features,
    texts,
    n_top: int = 20,
    n_promoted: int = 10,
    width: int = 8,
    batch_size: int = 64,
) -> dict[str, Evidence]:
    """``{id: Evidence}`` for features (objects with ``id``, ``submodule``, ``feature``): the ``n_top``
    strongest activations over ``texts`` (a ``Batch``; one pass per submodule, all its features at once),
    each with up to ``width`` preceding tokens, the firing density, and the ``n_promoted`` tokens promoted."""
    by_sub: dict[str, list] = {}
    for f in features:
        by_sub.setdefault(f.submodule, []).append(f)
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else -1
    out = {}
    for name, feats in by_sub.items():
        sub = submodules[name]
        idx = torch.tensor([f.feature for f in feats], device=sub.W_dec.device)
        vals, where, fired, counted = [], [], 0, 0
        for lo, part in zip(range(0, len(texts), batch_size), texts.split(batch_size)):
            _, cache = model.run_with_cache(part.clean, names_filter=sub.hook)
            valid = part.valid & (part.clean != bos)  # BOS activations are no evidence
            acts = sub.encode(sub.flat(cache[sub.hook]))[..., idx] * valid[..., None]  # [b, pos, k]
            fired = fired + (acts > 0).sum((0, 1))
            counted += int(valid.sum())
            flat = acts.reshape(-1, len(feats))
            v, i = flat.topk(min(n_top, flat.shape[0]), dim=0)  # [n, k]
            pos = acts.shape[1]
            vals.append(v)
            where.append(torch.stack([lo + i // pos, i % pos], -1))  # [n, k, 2]
        vals, where = torch.cat(vals), torch.cat(where)
        best = vals.topk(min(n_top, vals.shape[0]), dim=0)
        for j, f in enumerate(feats):
            top = []
            for v, r in zip(best.values[:, j].tolist(), best.indices[:, j].tolist()):
                if v <= 0:
                    break
                b, t = where[r, j].tolist()
                ids = texts.clean[b, max(0, t - width) : t + 1].tolist()
                top.append(Context([token_text(tok, i) for i in ids], float(v)))
            promoted = [token_text(tok, i) for i in promoted_tokens(model, sub.W_dec[f.feature], n_promoted)]
            out[f.id] = Evidence(f.id, top, promoted, float(fired[j]) / max(counted, 1))
    return out
