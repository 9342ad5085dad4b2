"""A feature's evidence, read from unlabelled text: where it fires most strongly, what it promotes.

The evidence text is the toy world's corpus for the toy model (the same kind of generic text the
paper's dashboards were computed on), a user's text source (:data:`sfc_plugin.corpus.TEXT_HELP`), or
the SHIFT training texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..corpus import TOY, TOY_CONTEXTS, Corpus, is_toy, load_text, toy_rows
from ..dashboards.compute import direct_logit_effects
from ..errors import SFCError
from ..splicing import Submodule, read_hooks


def evidence_texts(model, spec=None, fallback=None) -> tuple[Corpus, str]:
    """``(texts, name)``: ``spec`` a text source; else the toy corpus for the toy model; else ``fallback``
    (a :class:`~sfc_plugin.data.Batch`: the SHIFT training texts)."""
    if spec is not None and str(spec) != TOY:
        return load_text(spec, model, "evidence text"), str(spec)
    if is_toy(model):
        name = f"toy corpus ({TOY_CONTEXTS} contexts)"
        return toy_rows(model, TOY_CONTEXTS, model.cfg.n_ctx, name, what="evidence text"), name
    if spec is not None:
        raise SFCError("evidence text 'toy' needs the toy model")
    if fallback is None:
        raise SFCError("no evidence text: give one (--evidence-text FILE)")
    return Corpus.from_batch(fallback, "SHIFT training texts"), "SHIFT training texts"


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
def feature_evidence(
    model,
    submodules: dict[str, Submodule],
    features,
    texts,
    n_top: int = 20,
    n_promoted: int = 10,
    width: int = 8,
    batch_size: int = 64,
    budget=None,
) -> dict[str, Evidence]:
    """``{id: Evidence}`` for features (objects with ``id``, ``submodule``, ``feature``): the ``n_top``
    strongest activations over ``texts`` (a :class:`~sfc_plugin.corpus.Corpus`, or a ``Batch`` of prompts;
    one pass over the texts for all submodules, each submodule's features encoded alone where the SAE allows:
    :func:`~.encoding.encode_some`), each with up to ``width`` preceding tokens, the firing density, and the
    ``n_promoted`` tokens whose logits the feature raises most directly
    (:func:`~sfc_plugin.dashboards.compute.direct_logit_effects`). ``budget`` caps the texts per batch."""
    from .encoding import encode_some

    if not isinstance(texts, Corpus):
        texts = Corpus.from_batch(texts, "(texts)")
    by_sub: dict[str, list] = {}
    for f in features:
        by_sub.setdefault(f.submodule, []).append(f)
    if not by_sub:
        return {}
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else -1
    device = next(model.parameters()).device
    subs = {name: submodules[name] for name in by_sub}
    idx = {
        name: torch.tensor([f.feature for f in feats], device=subs[name].W_dec.device) for name, feats in by_sub.items()
    }
    last = max(s.layer for s in subs.values())
    stop = min(max(last, 0) + 1, model.cfg.n_layers)  # blocks after the last dictionary's are not run
    if budget is not None:
        per_row = budget.forward_row(texts.context_size, stop, 0, grad=False)
        batch_size = budget.rows(per_row, "feature-evidence", share=0.5, cap=batch_size)
    hooks = {s.read_hook for s in subs.values()}  # features are encoded from the read hook (a transcoder's input)
    vals = {n: [] for n in subs}
    where = {n: [] for n in subs}
    fired = {n: 0 for n in subs}
    counted = 0
    for lo in range(0, len(texts), batch_size):
        mask = texts.mask[lo : lo + batch_size]
        cols = mask.any(0).nonzero()
        cut = int(cols[-1]) + 1 if len(cols) else 1  # padding trimmed to the batch's longest row
        tokens, mask = texts.tokens[lo : lo + batch_size, :cut].to(device), mask[:, :cut].to(device)
        with read_hooks(model, list(subs.values())):
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in hooks, stop_at_layer=stop)
        valid = mask & (tokens != bos)  # BOS activations are no evidence
        counted += int(valid.sum())
        for name, sub in subs.items():
            acts = encode_some(sub, sub.read(cache[sub.read_hook]), idx[name]) * valid[..., None]  # [b, pos, k]
            fired[name] = fired[name] + (acts != 0).sum((0, 1))  # AbsTopK features fire negative too
            flat = acts.reshape(-1, acts.shape[-1])
            i = flat.abs().topk(min(n_top, flat.shape[0]), dim=0).indices  # [n, k]: strongest either sign
            v = flat.gather(0, i)
            pos = acts.shape[1]
            vals[name].append(v)
            where[name].append(torch.stack([lo + i // pos, i % pos], -1))  # [n, k, 2]
        del cache
    out = {}
    for name, feats in by_sub.items():
        sub = subs[name]
        logits = direct_logit_effects(model, sub.W_dec[idx[name]])
        promoted = logits.topk(min(n_promoted, logits.shape[-1]), dim=-1).indices.tolist()
        v_all, w_all = torch.cat(vals[name]), torch.cat(where[name])
        best = v_all.abs().topk(min(n_top, v_all.shape[0]), dim=0).indices
        for j, f in enumerate(feats):
            top = []
            for v, r in zip(v_all.gather(0, best)[:, j].tolist(), best[:, j].tolist()):
                if v == 0:
                    break
                b, t = w_all[r, j].tolist()
                ids = texts.tokens[b, max(0, t - width) : t + 1].tolist()
                top.append(Context([token_text(tok, i) for i in ids], float(v)))
            out[f.id] = Evidence(
                f.id, top, [token_text(tok, i) for i in promoted[j]], float(fired[name][j]) / max(counted, 1)
            )
    return out
