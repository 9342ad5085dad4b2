"""What an edit costs elsewhere: next-token loss, agreement accuracy, overlap with an agreement circuit.

For the edited model against the original (the edit's hooks on and off):

- ``loss``: mean next-token cross-entropy over a text (every token after the first of each sequence);
  by default the toy world's evaluation corpus for the toy model;
- ``agreement``: per pair dataset, the fraction of prompts (clean and patch prompts, each once) whose
  right answer out-scores the wrong one at the last token; by default the toy SVA test splits;
- ``circuit``: how many ablated features are nodes of an agreement circuit; by default the circuit
  ``sfc discover`` finds on the toy world with no options (across-RC agreement).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from ..corpus import TOY, Corpus, is_toy, load_text, toy_rows
from ..errors import SFCError

TOY_LOSS_SEQUENCES = 256


def resolve_text(model, text) -> Corpus:
    """``None``/``"toy"``: the toy corpus's evaluation stream (toy model only); a text source
    (:data:`sfc_plugin.corpus.TEXT_HELP`); a list of strings; a :class:`~sfc_plugin.corpus.Corpus`."""
    if isinstance(text, Corpus):
        return text
    if text is None or (isinstance(text, str) and text == TOY):
        if not is_toy(model):
            raise SFCError(
                "the next-token loss needs a text for this model (--text FILE): the toy corpus fits only the toy model"
            )
        name = f"toy corpus (eval stream, {TOY_LOSS_SEQUENCES} sequences)"
        return toy_rows(model, TOY_LOSS_SEQUENCES, model.cfg.n_ctx, name, stream="eval", what="text")
    out = load_text(text, model, "text")
    if not out.mask[:, 1:].any():
        raise SFCError(f"text {out.name!r} has no token to predict")
    return out


def loss_rows(model, width: int, budget, cap: int = 64, d_sae: int = 0) -> int:
    """Rows per batch of :func:`next_token_loss` that fit half of ``budget`` (logits and their log-softmax
    at every position dominate; ``d_sae``: the widest SAE an edit encodes in full at worst)."""
    if budget is None:
        return cap
    per_row = budget.forward_row(width, model.cfg.n_layers, 2 * width, grad=False) + width * budget.encode_row(d_sae)
    return budget.rows(per_row, "next-token-loss", share=0.5, cap=cap)


@torch.no_grad()
def next_token_loss(model, text: Corpus, fwd_hooks=(), batch_size: int = 64) -> float:
    """Mean cross-entropy of each counted token after the first of its row, given the tokens before it."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for lo in range(0, len(text.tokens), batch_size):
        mask = text.mask[lo : lo + batch_size, 1:]
        cols = mask.any(0).nonzero()
        width = int(cols[-1]) + 2 if len(cols) else 2  # padding trimmed to the batch's longest row
        tokens = text.tokens[lo : lo + batch_size, :width].to(device)
        mask = mask[:, : width - 1].to(device)
        logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks))
        logp = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
        del logits
        total += float(-(logp.double() * mask).sum())
        count += int(mask.sum())
    return total / count


def _prompts(records: list[dict]) -> list[dict]:
    """Clean and patch prompts of pair records, each (prompt, right answer) once, with the wrong answer."""
    out, seen = [], set()
    for i, r in enumerate(records):
        if "patch_prefix" not in r or "patch_answer" not in r or "clean_answer" not in r:
            raise SFCError(f"agreement example {i} needs clean_prefix, patch_prefix, clean_answer and patch_answer")
        for prompt, right, wrong in (
            (r["clean_prefix"], r["clean_answer"], r["patch_answer"]),
            (r["patch_prefix"], r["patch_answer"], r["clean_answer"]),
        ):
            if (prompt, right) not in seen:
                seen.add((prompt, right))
                out.append(
                    {"clean_prefix": prompt, "patch_prefix": prompt, "clean_answer": right, "patch_answer": wrong}
                )
    return out


@torch.no_grad()
def agreement_accuracy(model, records: list[dict], fwd_hooks=(), batch_size: int = 256) -> float:
    """Fraction of prompts whose right answer's logit exceeds the wrong answer's at the prompt's last token."""
    from ..data import tokenize

    prompts = _prompts(records)
    device = next(model.parameters()).device
    correct = 0
    for lo in range(0, len(prompts), batch_size):
        b = tokenize(model, prompts[lo : lo + batch_size], device)
        last = model.run_with_hooks(b.clean, fwd_hooks=list(fwd_hooks))[b.rows, b.last]
        correct += int((last.gather(-1, b.clean_answer[:, None]) > last.gather(-1, b.patch_answer[:, None])).sum())
    return correct / len(prompts)


def resolve_agreement(model, agreement) -> dict[str, list[dict]]:
    """``{name: pair records}``: ``None`` → the toy SVA test splits (toy model; else none); a name or
    path, or a list of them; or a mapping already."""
    from ..data import load_dataset

    if isinstance(agreement, dict):
        return {str(k): list(v) for k, v in agreement.items()}
    if agreement is None:
        if not is_toy(model):
            return {}
        from ..toy import CONDITIONS

        agreement = [f"toy/sva-{c}" for c in CONDITIONS]
    names = [agreement] if isinstance(agreement, (str, Path)) else list(agreement)
    return {str(n): load_dataset(n, "test") for n in names}


def default_circuit(model, saes):
    """The circuit ``sfc discover`` finds with no options on the toy world (nodes only)."""
    from ..data import load_dataset
    from ..discovery import discover

    records = load_dataset("toy/sva-rc", "train")
    return discover(model, saes, records, n_examples=40, edges=False, progress=False)


def resolve_circuit(model, circuit, saes):
    """``None`` → the toy world's default agreement circuit (toy model with SAEs; else none);
    a path to ``circuit.json``; a ``Circuit``; ``False`` → none."""
    from ..circuit import Circuit

    if circuit is False:
        return None, None
    if circuit is None:
        if not (is_toy(model) and saes):
            return None, None
        c = default_circuit(model, saes)
        return c, f"default toy/sva-rc circuit (sfc discover defaults, {len(c.nodes)} nodes)"
    if isinstance(circuit, (str, Path)):
        return Circuit.from_json(circuit), str(circuit)
    return circuit, "(circuit object)"


def _feature_nodes(circuit) -> set[str]:
    return {n.id.split("@", 1)[0] for n in circuit.nodes if n.kind == "feature"}


def edit_features(edit) -> list[str]:
    return [f"{name}/{j}" for name, js in edit.ablate.items() for j in sorted(js)]


def measure_side_effects(
    model,
    edits: dict[str, Any],
    *,
    saes=None,
    text=None,
    agreement=None,
    circuit=None,
    batch_size: int = 64,
    budget=None,
    progress: bool = False,
    store=None,
) -> dict:
    """The ``side_effects`` section of ``shift.json`` (and of ``sfc edit-report``) for named edits.

    ``edits``: ``{name: FeatureEdit}``; ``saes``: ``{hook: SAE}`` for the default circuit; ``text``,
    ``agreement``, ``circuit``: see the module docstring and the ``resolve_*`` functions. ``budget`` (a
    :class:`~sfc_plugin.budget.MemoryBudget`) caps the rows per batch at ``batch_size`` or fewer; ``store``
    (:class:`~.checkpoints.Checkpoints`) keeps each edit's measures, so an interrupted run resumes.
    """
    import sys

    from tqdm.auto import tqdm

    from .checkpoints import digest

    for edit in edits.values():  # a loaded edit refuses another model than its own (before any work)
        if hasattr(edit, "check_model"):
            edit.check_model(model)
    text = resolve_text(model, text)
    tasks = resolve_agreement(model, agreement)
    circ, circ_name = resolve_circuit(model, circuit, saes)
    in_circuit = _feature_nodes(circ) if circ is not None else None

    widest = max((edit.submodules[n].d_sae for edit in edits.values() for n in edit.ablate), default=0)
    rows = min(batch_size, loss_rows(model, text.context_size, budget, batch_size, widest))
    base = digest("side-effects/1", text.fingerprint(), tasks, rows, str(model.cfg.dtype))

    def measure(hooks, edit=None) -> dict:
        key = None
        if store is not None:
            key = digest(base, getattr(store, "model_key", ""), None if edit is None else edit_digest(edit))
            found = store.get("side_effects", key)
            if found is not None:
                return found[1]
        got = {
            "loss": next_token_loss(model, text, hooks, rows),
            "agreement": {name: agreement_accuracy(model, recs, hooks) for name, recs in tasks.items()},
        }
        if key is not None:
            store.put("side_effects", key, {}, got)
        return got

    bar = tqdm(total=len(edits) + 1, desc="side effects", file=sys.stderr, disable=not progress, leave=False)
    original = measure([])
    bar.update(1)
    out = {
        "text": text.name,
        "n_tokens": int(text.mask[:, 1:].sum()),
        "circuit": circ_name,
        "agreement_prompts": {name: len(_prompts(recs)) for name, recs in tasks.items()},
        "original": original,
        "edits": {},
    }
    for name, edit in edits.items():
        with edit.read_hooks(model) if hasattr(edit, "read_hooks") else contextlib.nullcontext():
            got = measure(edit.hooks(), edit)
        bar.update(1)
        feats = edit_features(edit)
        row = {
            "n_features": len(feats),
            "n_neurons": sum(map(len, edit.neurons.values())),
            "loss": got["loss"],
            "loss_change": got["loss"] - original["loss"],
            "agreement": got["agreement"],
            "agreement_change": {k: v - original["agreement"][k] for k, v in got["agreement"].items()},
        }
        if in_circuit is not None and (feats or not edit.neurons):  # circuits hold features, not neurons
            shared = [f for f in feats if f in in_circuit]
            row.update(in_circuit=len(shared), in_circuit_features=shared)
        out["edits"][name] = row
    bar.close()
    return out


def edit_digest(edit) -> str:
    """What an edit does, as a hash of its features and neurons by hook (the SAEs' identity is the caller's
    part of a key: :attr:`~.checkpoints.Checkpoints.model_key`)."""
    from .checkpoints import digest

    hooks = {n: edit.submodules[n].hook for n in [*edit.ablate, *edit.neurons]}
    return digest(
        {n: sorted(v) for n, v in sorted(edit.ablate.items())},
        {n: sorted(v) for n, v in sorted(edit.neurons.items())},
        hooks,
    )


def format_side_effects(section: dict) -> str:
    """A small text table: loss change, agreement change per dataset, ablated features in the circuit."""
    tasks = list(section["original"]["agreement"])
    short = [t.split("/")[-1].removeprefix("sva-") for t in tasks]
    head = f"{'edit':<24}{'features':>9}{'loss':>9}{'Δloss':>9}" + "".join(f"{'Δ' + s:>12}" for s in short)
    if section.get("circuit"):
        head += f"{'in circuit':>12}"
    o = section["original"]
    lines = [
        f"side effects (loss on {section['text']}, {section['n_tokens']} tokens; agreement accuracy change"
        + (f"; circuit: {section['circuit']})" if section.get("circuit") else ")"),
        head,
        f"{'(original)':<24}{'':>9}{o['loss']:>9.4f}{'':>9}"
        + "".join(f"{100 * o['agreement'][t]:>11.1f}%" for t in tasks),
    ]
    for name, r in section["edits"].items():
        n = r["n_features"] if not r["n_neurons"] else f"{r['n_neurons']}n"
        line = f"{name:<24}{n!s:>9}{r['loss']:>9.4f}{r['loss_change']:>+9.4f}" + "".join(
            f"{100 * r['agreement_change'][t]:>+11.1f}%" for t in tasks
        )
        if section.get("circuit"):
            line += f"{r.get('in_circuit', '—')!s:>12}"
        lines.append(line)
    return "\n".join(lines)
