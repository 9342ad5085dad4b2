"""How well an ``auto`` label predicts where its feature fires, on contexts the label was not made from.

The label's rule (:func:`~.autolabel.label_rule`) says the feature fires on certain tokens (``likes / helps``) or
right after one (``after the:``). Read at every token of held-out contexts as a prediction — "one of the label's
tokens is here" (or "the token before is X") — against where the feature fires (activation ≠ 0), each firing
token weighted by its activation (a label that names where the feature fires strongly is not blamed for faint
firings elsewhere), the score is the weighted AUROC ``(1 + activation recall − false positive rate) / 2``:
0.5 is chance, 1 a rule that covers all the feature's activation and never fires where it is silent, below 0.5
worse than chance. ``recall`` (share of firing tokens, unweighted) and ``precision`` are reported beside it.
Held-out contexts: up to ``score_contexts`` contexts spread evenly over the corpus, minus the feature's own top
contexts (the only ones its label was made from). BOS and padding are not scored.

Limits (also in docs/viewers.md): only the "fires on" part of a label is scored, not what it promotes (``↑``);
the rule is token identity, so a feature that tracks a class of tokens (all verbs of a relative clause) scores
only what the two named tokens cover; the held-out contexts come from the same corpus as the label; with few
firing tokens (``n_firing`` < :data:`MIN_FIRING`) the score is too noisy to flag (``low`` is null).
"""

from ..errors import SFCError
from .autolabel import LOW, MIN_FIRING, SCORE_CONTEXTS, clean


def score_contexts(n: int, limit: int) -> list[int]:
    """Up to ``limit`` context indices spread evenly over ``range(n)`` (deterministic)."""
    if limit <= 0 or n <= 0:
        return []
    if limit >= n:
        return list(range(n))
    return sorted({int(i * n / limit) for i in range(limit)})


def describe(rule: dict) -> str:
    if rule.get("after") is not None:
        return f"fires right after {rule['after']!r}"
    return "fires on " + " or ".join(repr(t) for t in rule["tokens"])


def summary(tp: int, fn: int, fp: int, tn: int, n_contexts: int, mass_hit: float, mass: float, rule: dict) -> dict:
    """The score of one rule from its confusion counts over the held-out tokens and the activation mass it covers."""
    pos, neg = tp + fn, fp + tn
    recall = tp / pos if pos else None
    weighted = mass_hit / mass if pos and mass > 0 else None
    fpr = fp / neg if neg else None
    auroc = None if weighted is None or fpr is None else (1.0 + weighted - fpr) / 2.0
    r = lambda x: None if x is None else round(float(x), 4)  # noqa: E731
    return {
        "rule": describe(rule),
        "auroc": r(auroc),
        "activation_recall": r(weighted),
        "recall": r(recall),
        "precision": r(tp / (tp + fp)) if tp + fp else None,
        "false_positive_rate": r(fpr),
        "n_contexts": int(n_contexts),
        "n_tokens": int(pos + neg),
        "n_firing": int(pos),
        "low": None if auroc is None or pos < MIN_FIRING else bool(auroc < LOW),
    }


def _ids(tokens: list[str], strings: dict[int, str], device):
    import torch

    want = set(tokens)
    return torch.tensor([i for i, s in strings.items() if clean(s) in want], dtype=torch.long, device=device)


def score_rules(model, jobs, corpus, contexts: list[int], batch_size: int = 64) -> dict[str, dict]:
    """``{feature id: score}`` for ``jobs``: ``[(submodule, [(feature, rule, excluded context indices)])]``;
    ``contexts``: the held-out candidates (each feature skips its excluded ones). One pass for every submodule."""
    import torch

    with torch.no_grad():
        return _score(model, jobs, corpus, contexts, batch_size)


def _score(model, jobs, corpus, contexts: list[int], batch_size: int) -> dict[str, dict]:
    import torch

    from ..corpus import token_strings
    from ..splicing import read_hooks

    jobs = [(sub, [x for x in items if x[1] is not None]) for sub, items in jobs]
    jobs = [(sub, items) for sub, items in jobs if items]
    if not jobs or not contexts:
        return {}
    device = next(model.parameters()).device
    idx = torch.tensor(contexts, dtype=torch.long)
    strings = token_strings(model.tokenizer, corpus.tokens[idx].unique().tolist())
    prepared = []
    for sub, items in jobs:
        feats = torch.tensor([f for f, _, _ in items], device=device)
        rules = [(_ids(rule["tokens"], strings, device), rule.get("after")) for _, rule, _ in items]
        after = [None if a is None else _ids([a], strings, device) for _, a in rules]
        prepared.append((sub, items, feats, [r for r, _ in rules], after))
    # per feature: tp, fn, fp, tn, contexts, activation mass at predicted tokens, activation mass
    counts = {f"{sub.name}/{f}": [0, 0, 0, 0, 0, 0.0, 0.0] for sub, items in jobs for f, _, _ in items}
    hooks = {sub.read_hook for sub, _ in jobs}
    for lo in range(0, len(contexts), batch_size):
        part = idx[lo : lo + batch_size]
        tokens, mask = corpus.tokens[part].to(device), corpus.mask[part].to(device).bool()
        prev = torch.cat([torch.full_like(tokens[:, :1], -1), tokens[:, :-1]], 1)
        with read_hooks(model, [sub for sub, _ in jobs]):
            _, cache = model.run_with_cache(tokens, names_filter=lambda h: h in hooks, return_type=None)
        for sub, items, feats, tok_ids, after_ids in prepared:
            acts = sub.encode(sub.read(cache[sub.read_hook]))[..., feats].float().abs() * mask[..., None]
            fires = acts != 0
            for j, (f, _, excluded) in enumerate(items):
                keep = torch.tensor([int(c) not in excluded for c in part.tolist()], device=device)
                valid = mask & keep[:, None]
                pred = torch.isin(prev, after_ids[j]) if after_ids[j] is not None else torch.isin(tokens, tok_ids[j])
                pred, y = pred & valid, fires[..., j] & valid
                c = counts[f"{sub.name}/{f}"]
                tp, p = int((pred & y).sum()), int(pred.sum())
                pos, n = int(y.sum()), int(valid.sum())
                c[0] += tp
                c[1] += pos - tp
                c[2] += p - tp
                c[3] += n - pos - (p - tp)
                c[4] += int(keep.sum())
                c[5] += float((acts[..., j] * pred).sum())
                c[6] += float((acts[..., j] * valid).sum())
        del cache
    out = {}
    for sub, items in jobs:
        for f, rule, _ in items:
            c = counts[f"{sub.name}/{f}"]
            out[f"{sub.name}/{f}"] = summary(*c, rule)
    return out


def label_score(
    model,
    saes=None,
    feature: str | None = None,
    rule: dict | None = None,
    corpus=None,
    *,
    exclude=(),
    score_contexts_limit: int = SCORE_CONTEXTS,
    context_size: int | None = None,
    n_contexts: int | None = None,
    batch_size: int = 64,
) -> dict:
    """The score of any ``rule`` (``{"tokens": [...], "after": None | token}``) for one feature, e.g. to check a
    label of your own: ``label_score(world, feature="resid_2/173", rule={"tokens": ["likes"]})``.
    ``exclude``: context indices to leave out (those the label was made from)."""
    from ..corpus import load_corpus
    from ..world import world_args
    from .records import parse_id

    world, corpus = world_args(model, saes, corpus)
    if feature is None or not rule or not rule.get("tokens") and rule.get("after") is None:
        raise SFCError('label_score needs feature= and rule={"tokens": [...]} or {"after": token}')
    name, feat = parse_id(feature)
    if name not in world.by_name:
        raise SFCError(f"feature {feature!r}: no SAE for submodule {name!r}")
    rule = {"tokens": list(rule.get("tokens") or []), "after": rule.get("after")}
    corpus = load_corpus(corpus, world.model, context_size=context_size, n_contexts=n_contexts)
    contexts = score_contexts(len(corpus), score_contexts_limit)
    jobs = [(world.by_name[name], [(feat, rule, set(exclude))])]
    return score_rules(world.model, jobs, corpus, contexts, batch_size)[f"{name}/{feat}"]
