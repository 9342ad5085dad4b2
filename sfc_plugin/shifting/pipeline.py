"""SHIFT (paper §4): remove the SAE features a classifier should not use, and report the table.

Pipeline: train a linear probe on mean-pooled residual activations (ambiguous training data, where
the intended and the spurious attribute agree; the authors' recipe by default) → attribute its signed logit
to SAE features (``ig``, zero ablation, summed over positions; the first ``n_attribution`` training examples)
→ rank → judges decide which to ablate → edit the model (zero ablation, error kept) → optionally retrain the
probe → accuracy table on the test data (intended and spurious accuracy on its balanced rows, worst group
over all of it).

Every pass is sized by one memory budget (``max_memory``); with ``checkpoint_dir`` the pooled activations,
attributions and side effects are kept there as they finish (and long passes as they go), so a run that
is interrupted resumes where it stopped (:mod:`.checkpoints`).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..corpus import is_toy
from ..errors import SFCError
from ..plugins import lookup
from ..splicing import Submodule
from ..world import world_args
from .checkpoints import Checkpoints, digest
from .concept import shipped as shipped_concepts
from .edit import FeatureEdit
from .judges import callable_judge
from .probe import RECIPES, accuracy_row, labelled, pooled, train_probe
from .probe_attribution import attribute, top_units
from .records import USES, FeatureInfo, JudgeContext, judge_uses

ROWS = ("original", "shift", "shift_retrain", "random", "neuron_skyline", "feature_skyline", "oracle")
SKYLINE_PROBES = ("original", "spurious")
SIDE_EFFECT_TEXTS = 256  # training texts the next-token loss reads by default (non-toy models)
SHORT_USES = {
    "ambiguous_train": "train",
    "concept_description": "concept",
    "unlabelled_text": "unlabelled text",
    "human_review": "human",
    "balanced_labels": "val labels",
    "test_labels": "test labels",
    "undeclared": "undeclared judge",
}


def _edit_from(subs: dict[str, Submodule], units, neurons: bool = False, provenance: dict | None = None) -> FeatureEdit:
    edit = FeatureEdit(subs, provenance=provenance)
    target = edit.neurons if neurons else edit.ablate
    for name, i, _ in units:
        target.setdefault(name, []).append(i)
    return edit


def _judge(judge, pm):
    if callable(judge) and not hasattr(judge, "uses"):
        return callable_judge(judge)
    return lookup("judge", judge, pm) if isinstance(judge, str) else judge


def judge_context(judge_fn, model, submodules, val, options: dict, texts, budget=None) -> JudgeContext:
    """What ``judge_fn`` may see: the labelled validation data only if it declares it uses it."""
    return JudgeContext(
        model,
        submodules,
        val if "balanced_labels" in judge_uses(judge_fn) else None,
        dict(options),
        texts=texts,
        budget=budget,
    )


def _forced_candidates(judges: dict, contexts: dict, effects: dict, ranked: list, subs: dict) -> list:
    """Features a judge names as candidates (``judge.candidates(ctx)``, e.g. a decisions file's ``ablate``
    entries) that the ranking left out, with their effects; unknown ids are one-line errors."""
    have = {(n, j) for n, j, _ in ranked}
    extra = []
    for row, fn in judges.items():
        names = getattr(fn, "candidates", None)
        for fid in names(contexts[row]) if names else ():
            name, _, j = str(fid).partition("/")
            if name not in subs or not j.isdigit() or int(j) >= subs[name].d_sae:
                known = ", ".join(subs)
                raise SFCError(f"judge {row!r} names feature {fid!r}, which is no feature of this run's SAEs ({known})")
            if (name, int(j)) not in have:
                have.add((name, int(j)))
                extra.append((name, int(j), float(effects[name][int(j)])))
    return extra


def _uses(*groups) -> list[str]:
    """The union of what went into a row, in the order of ``records.USES``."""
    seen = {u for g in groups for u in g}
    return [u for u in USES if u in seen] + sorted(seen - set(USES))


def _decide(judge_fn, name, infos, ctx) -> dict:
    decisions = {d.id: d for d in judge_fn(infos, ctx)}
    missing = [i.id for i in infos if i.id not in decisions]
    if missing:
        raise SFCError(f"judge {getattr(judge_fn, '__name__', name)!r} gave no decision for feature {missing[0]!r}")
    return decisions


def shift(
    model,
    saes=None,
    train: list[dict] | None = None,
    test: list[dict] | None = None,
    val: list[dict] | None = None,
    *,
    layer: int | None = None,
    judge: str | Callable = "concept",
    compare_judge: str | Callable | None = "labelled",
    top_k: int | None = 50,
    threshold: float | None = None,
    method: str = "ig",
    steps: int = 10,
    intended: str = "profession",
    spurious: str = "gender",
    seed: int = 42,
    batch_size: int = 16,
    probe_recipe: str = "authors",
    n_attribution: int | None = 100,
    skyline_probe: str = "original",
    prepend_bos: bool = True,
    max_memory: str | int | None = None,
    judge_options: dict | None = None,
    probe=None,
    side_effects: bool | dict = True,
    pm=None,
    progress: bool = True,
    device: str | None = None,
    dtype=None,
    provenance: dict | None = None,
    checkpoint_dir=None,
) -> dict:
    """Run SHIFT and the paper's comparison rows: the ``shift.json`` structure (see :func:`public`) with
    the :class:`FeatureEdit` under ``"edit"`` and the probes under ``"probe"``/``"retrained_probe"``.

    ``shift(world, train, test, val)`` with a :class:`~sfc_plugin.world.World`, or ``shift(model, saes, train,
    test, val)`` (model and SAEs as for :func:`~sfc_plugin.discover`, loaded with ``device`` and ``dtype``).
    ``train`` is ambiguous (intended and spurious attributes agree), ``val`` and ``test`` balanced;
    records are ``{"text", intended, spurious}``. ``judge`` decides which candidate features to ablate
    (default ``concept``: label-free, from each feature's evidence and ``judge_options["concept"]``);
    ``compare_judge`` (default ``labelled``) is run on the same candidates and reported beside it as
    rows ``shift_<name>`` and ``shift_<name>_retrain`` (``None``: no comparison). ``val`` serves only
    judges that declare they use labels, the skylines and the oracle probe; ``test`` only the table.
    Every row says in ``uses`` what it used. ``side_effects``: ``True`` (defaults), ``False``, or options
    for :func:`~sfc_plugin.shifting.side_effects.measure_side_effects` (``text``, ``agreement``,
    ``circuit``). ``probe``: your own module over pooled activations. The result's ``provenance`` (also
    carried by every edit, so that a saved edit refuses other SAEs or another model) records the model and
    SAEs with their fingerprints as ``discover`` does, the example counts, and what ``provenance`` adds (the
    CLI: dataset, splits, model source).

    The authors' recipe by default: ``probe_recipe`` (``authors``: AdamW, one epoch, batch 32; ``full-batch``:
    the earlier probe; see :func:`~.probe.train_probe`), ``seed`` 42, features attributed on the first
    ``n_attribution`` (100) training examples, and skylines (``skyline_probe="original"``) that rank units by how
    much they help the original probe predict the spurious label on the first ``n_attribution`` balanced
    examples (``"spurious"``: a probe trained for the spurious label, ranked by |effect|, the earlier default).
    ``prepend_bos``: BOS before every text (TransformerLens's default, and the authors' Gemma-2-2B runs); False: none,
    as the authors' Pythia-70M runs (its Hugging Face tokenizer adds none).
    ``max_memory`` bounds every pass (see :class:`~sfc_plugin.budget.MemoryBudget`); ``checkpoint_dir`` makes
    the run resumable. ``test`` records may say ``"balanced": false``: such rows count for worst-group accuracy
    only.
    """
    from ..budget import MemoryBudget

    world, train, test, val = world_args(model, saes, train, test, val, device=device, dtype=dtype)
    if train is None or test is None or val is None:
        raise SFCError("shift needs train, test and val records")
    if probe_recipe not in RECIPES:
        raise SFCError(f"unknown probe recipe {probe_recipe!r} (known: {', '.join(RECIPES)})")
    if skyline_probe not in SKYLINE_PROBES:
        raise SFCError(f"unknown skyline probe {skyline_probe!r} (known: {', '.join(SKYLINE_PROBES)})")
    model, subs_all = world.model, world.submodules
    prov = {
        **world.provenance(),
        "dataset": "(in memory)",
        "n_examples": {"train": len(train), "val": len(val), "test": len(test)},
    }
    prov.update(provenance or {})
    layer = max(s.layer for s in subs_all) if layer is None else int(layer)
    if not 0 <= layer < model.cfg.n_layers:
        raise SFCError(f"probe layer {layer} is not a layer of the model (0..{model.cfg.n_layers - 1})")
    hook = f"blocks.{layer}.hook_resid_post"
    subs = [s for s in subs_all if s.layer <= layer]
    by_name = {s.name: s for s in subs}
    values = sorted({r.get(intended) for r in train})
    if len(values) != 2:
        raise SFCError(f"SHIFT needs exactly two values of {intended!r} in the training data, got {values}")
    pos_intended = values[1]
    paired = [r[spurious] for r in train if r[intended] == pos_intended]
    pos_spurious = max(sorted(set(paired)), key=paired.count)
    judges = {"shift": _judge(judge, pm)}
    if compare_judge is not None:
        cmp_fn = _judge(compare_judge, pm)
        cmp_name = compare_judge if isinstance(compare_judge, str) else getattr(cmp_fn, "__name__", "compare")
        if cmp_fn is not judges["shift"]:
            judges[f"shift_{cmp_name}"] = cmp_fn
    device = next(model.parameters()).device
    budget = MemoryBudget.resolve(max_memory, model)
    tr, te, va = (
        labelled(model, d, intended, spurious, (pos_intended, pos_spurious), device, bool(prepend_bos))
        for d in (train, test, val)
    )
    options = dict(judge_options or {})
    if options.get("concept") is None and spurious in shipped_concepts():
        options["concept"] = spurious  # the shipped description of the spurious attribute, e.g. gender
    contexts = {row: judge_context(fn, model, by_name, va, options, tr.batch, budget) for row, fn in judges.items()}
    for row, fn in judges.items():
        fn([], contexts[row])  # a misconfigured judge fails now, before the attribution runs
    prints = {
        "model": prov.get("model_fingerprint"),
        "saes": [(s.get("hook"), s.get("fingerprint")) for s in prov.get("saes", [])],
    }
    store = Checkpoints(checkpoint_dir, model_key=digest("shift/1", prints, str(model.cfg.dtype)))
    tokens = {name: digest(d.batch.clean, d.batch.last) for name, d in (("train", tr), ("test", te), ("val", va))}
    kw = dict(method=method, steps=steps, batch_size=batch_size, pm=pm, progress=progress, budget=budget, store=store)
    from .side_effects import edit_digest

    def pool_of(name, data, edit=None):
        key = digest(store.model_key, hook, tokens[name], None if edit is None else edit_digest(edit))
        what = f"pooled activations: {name}" + ("" if edit is None else f" ({edit_names.get(id(edit), 'edited')})")
        return pooled(model, data, hook, edit, budget=budget, progress=progress, desc=what, store=store, key=key)

    def attribution_of(name, data, probe_, signs, neurons=False, label=""):
        key = digest(
            store.model_key,
            hook,
            tokens[name],
            len(data.batch),
            probe_.weight,
            probe_.bias,
            signs,
            method,
            steps,
            neurons,
        )
        return attribute(model, subs, data, hook, probe_, signs, neurons=neurons, key=key, desc=label, **kw)

    edit_names: dict[int, str] = {}
    X_tr, X_te, X_va = pool_of("train", tr), pool_of("test", te), pool_of("val", va)
    probe = probe if probe is not None else train_probe(X_tr, tr.y, seed, probe_recipe)
    tr_attr = tr.head(n_attribution)
    effects = attribution_of("train", tr_attr, probe, 2 * tr_attr.y - 1, label="probe attribution (train)")
    ranked = top_units(effects, top_k, threshold)
    ranked += _forced_candidates(judges, contexts, effects, ranked, by_name)
    infos = [FeatureInfo(f"{name}/{j}", name, j, eff) for name, j, eff in ranked]
    decisions = {row: _decide(fn, row, infos, contexts[row]) for row, fn in judges.items()}
    edits = {
        row: _edit_from(by_name, [(i.submodule, i.feature, i.effect) for i in infos if d[i.id].decision == "ablate"])
        for row, d in decisions.items()
    }
    edit = edits["shift"]
    k = len(edit)
    for e in edits.values():
        e.provenance = prov
    base = ("ambiguous_train",)
    uses = {row: _uses(base, judge_uses(fn)) for row, fn in judges.items()}

    for row, e in edits.items():
        edit_names[id(e)] = row
    rows = [{**accuracy_row("original", probe, X_te, te), "uses": _uses(base)}]
    retrained = None
    for row in judges:
        X_te_edit = pool_of("test", te, edits[row])
        rows.append({**accuracy_row(row, probe, X_te_edit, te), "uses": uses[row]})
        again = train_probe(pool_of("train", tr, edits[row]), tr.y, seed, probe_recipe)
        retrained = again if retrained is None else retrained
        rows.append({**accuracy_row(f"{row}_retrain", again, X_te_edit, te), "uses": uses[row]})
    rng = random.Random(seed)
    pool = [(s.name, j) for s in subs for j in range(s.d_sae)]
    edits["random"] = _edit_from(by_name, [(n, j, 0.0) for n, j in rng.sample(pool, k)], provenance=prov)
    edit_names[id(edits["random"])] = "random"
    rows.append({**accuracy_row("random", probe, pool_of("test", te, edits["random"]), te), "uses": uses["shift"]})
    va_attr = va.head(n_attribution)
    if skyline_probe == "original":  # the authors': the units that most help the original probe predict the label
        sky_probe, signed = probe, True
    else:
        sky_probe, signed = train_probe(X_va, va.z, seed, probe_recipe), False
    signs = 2 * va_attr.z - 1
    neuron_eff = attribution_of("val", va_attr, sky_probe, signs, True, "neuron skyline attribution (val)")
    edits["neuron_skyline"] = _edit_from(
        by_name, top_units(neuron_eff, k, signed=signed), neurons=True, provenance=prov
    )
    feat_eff = attribution_of("val", va_attr, sky_probe, signs, False, "feature skyline attribution (val)")
    edits["feature_skyline"] = _edit_from(by_name, top_units(feat_eff, k, signed=signed), provenance=prov)
    for row in ("neuron_skyline", "feature_skyline"):
        edit_names[id(edits[row])] = row
        rows.append(
            {
                **accuracy_row(row, probe, pool_of("test", te, edits[row]), te),
                "uses": _uses(uses["shift"], ("balanced_labels",)),
            }
        )
    oracle = train_probe(X_va, va.y, seed, probe_recipe)
    rows.append({**accuracy_row("oracle", oracle, X_te, te), "uses": ["balanced_labels"]})

    def feature(i):
        d = decisions["shift"][i.id]
        out = {
            "id": i.id,
            "effect": i.effect,
            "decision": d.decision,
            "judge": d.judge,
            **({"note": d.note} if d.note else {}),
        }
        for row in list(judges)[1:]:
            c = decisions[row][i.id]
            out[row] = {"decision": c.decision, "judge": c.judge, **({"note": c.note} if c.note else {})}
        return out

    result = {
        "rows": rows,
        "features": [feature(i) for i in infos],
        "uses_legend": dict(USES),
        "probe_hook": hook,
        "intended": [intended, pos_intended],
        "spurious": [spurious, pos_spurious],
        "n_ablated": k,
        "seed": seed,
        "recipe": {
            "probe": probe_recipe,
            "n_attribution": {"train": len(tr_attr.batch), "val": len(va_attr.batch)},
            "skyline_probe": skyline_probe,
            "method": method,
            "steps": steps,
            "bos": bool(prepend_bos),
            "test_rows": {"n": len(te.batch), "balanced": int(te.balanced.sum())},
        },
        "edit": edit,
        "edits": edits,
        "probe": probe,
        "retrained_probe": retrained,
        "provenance": prov,
    }
    if side_effects is not False:
        from .side_effects import measure_side_effects

        where = dict(side_effects) if isinstance(side_effects, dict) else {}
        if where.get("text") is None and not is_toy(model):
            where["text"] = [r["text"] for r in train[:SIDE_EFFECT_TEXTS]]  # no other text given: training texts
        result["side_effects"] = measure_side_effects(
            model, edits, saes=world.saes, budget=budget, progress=progress, store=store, **where
        )
    result["checkpoints"] = dict(store.hits)
    return result


def format_uses(uses) -> str:
    return " + ".join(SHORT_USES.get(u, u) for u in uses)


def format_table(result: dict) -> str:
    """The accuracy table as text, with what each row used."""
    lines = [f"{'':<24}{'profession':>11}{'gender':>9}{'worst group':>13}   uses"]
    for r in result["rows"]:
        lines.append(
            f"{r['name']:<24}{100 * r['profession_acc']:>10.1f}%{100 * r['gender_acc']:>8.1f}%"
            f"{100 * r['worst_group_acc']:>12.1f}%   {format_uses(r.get('uses', ()))}"
        )
    return "\n".join(lines)


def public(result: dict) -> dict:
    """The JSON-serialisable form of a :func:`shift` result (``shift.json``): edits as dicts (their common
    provenance once, at the top), no probes."""

    def bare(edit):
        return {k: v for k, v in edit.to_dict().items() if k != "provenance"}

    skip = ("probe", "retrained_probe", "edits", "provenance", "checkpoints")
    out = {k: v for k, v in result.items() if k not in skip}
    out["edit"] = bare(result["edit"])
    out["edits"] = {name: bare(e) for name, e in result["edits"].items()}
    if "provenance" in result:
        out["provenance"] = result["provenance"]
    return out


__all__ = ["shift", "format_table", "format_uses", "public", "ROWS"]
