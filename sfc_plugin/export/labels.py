"""Feature label providers (the ``sfc_label_providers`` hook) and :func:`apply_labels`.

A provider is ``fn(circuit, **kw) -> {node_id: info}`` where ``info`` is a label string or a dict
with any of ``label``, ``url``, ``tooltip``. Built-ins:

- ``annotations``: a JSON-lines file (``path=``): reviewed ``sfc-annotations/1`` records (accepted labels by default,
  ``status=`` to show others, ``force=`` to use records of another SAE; see :mod:`sfc_plugin.annotations`), or the
  paper's format, ``{"Name": "resid_5/3036", "Annotation": "..."}``, names being node ids with or without ``@<position>``
- ``summary``: the tokens on which each feature fires most over ``texts`` (needs ``model``, ``saes``)
- ``neuronpedia``: links to Neuronpedia feature pages for SAEs with a ``neuronpedia_id`` (no network)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ..errors import SFCError
from .neuronpedia import feature_url, neuronpedia_ids


def _base(node_id: str) -> str:
    return node_id.split("@", 1)[0]


def annotations(circuit, path=None, **_kw) -> dict:
    """Labels from a JSON-lines annotation file: ``sfc-annotations/1`` records, or keys ``Name``/``Annotation``
    (or ``id``/``label``)."""
    if path is not None:
        from ..annotations import annotation_labels, is_annotations_file

        if is_annotations_file(path):
            return annotation_labels(circuit, path, **_kw)
    if path is None:
        raise SFCError('label provider \'annotations\' needs path= (a JSON-lines file of {"Name", "Annotation"})')
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SFCError(f"annotation file {str(path)!r} does not exist") from None
    except UnicodeDecodeError:
        raise SFCError(f"annotation file {str(path)!r} is not UTF-8 text") from None
    names = {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            name = rec.get("Name", rec.get("name", rec.get("id")))
            label = rec.get("Annotation", rec.get("annotation", rec.get("label")))
        except (json.JSONDecodeError, AttributeError):
            raise SFCError(f"annotation file {str(path)!r} line {i}: not a JSON object") from None
        if not isinstance(name, str) or not isinstance(label, str):
            raise SFCError(f'annotation file {str(path)!r} line {i}: needs string fields "Name" and "Annotation"')
        names[name] = label
    return {
        n.id: names.get(n.id, names.get(_base(n.id)))
        for n in circuit.nodes
        if names.get(n.id, names.get(_base(n.id))) is not None
    }


def neuronpedia(circuit, ids: dict | None = None, **_kw) -> dict:
    """Neuronpedia feature-page URLs (``ids`` overrides ``{submodule: neuronpedia_id}`` from provenance)."""
    known = {**neuronpedia_ids(circuit), **(ids or {})}
    out = {}
    for n in circuit.nodes:
        if n.kind == "feature" and n.submodule in known:
            url = feature_url(known[n.submodule], n.feature)
            out[n.id] = {"url": url, "tooltip": f"Neuronpedia: {known[n.submodule]}/{n.feature}"}
    return out


def _top_contexts(model, subs: dict, wanted: dict, texts: list[str], k: int, width: int) -> dict:
    """``{submodule: {feature: [(token, context, activation), ...]}}``, top ``k`` per feature by magnitude."""
    import torch

    from ..splicing import read_hooks

    best = {name: {f: [] for f in fs} for name, fs in wanted.items()}
    reads = {subs[name].read_hook for name in wanted}
    with torch.no_grad(), read_hooks(model, [subs[name] for name in wanted]):
        for t_idx, text in enumerate(texts):
            tokens = model.to_tokens(text)
            _, cache = model.run_with_cache(tokens, names_filter=lambda h: h in reads)
            strs = model.to_str_tokens(tokens[0])
            for name, fs in wanted.items():
                sub = subs[name]
                acts = sub.encode(sub.read(cache[sub.read_hook]))[0][:, torch.tensor(fs)]  # [pos, len(fs)]
                for pos, j in acts.nonzero().tolist():
                    best[name][fs[j]].append((float(acts[pos, j]), t_idx, pos, strs))
    return {
        name: {
            f: [
                (strs[pos], "".join(strs[max(0, pos - width) : pos]) + "[" + strs[pos] + "]", v)
                for v, _, pos, strs in sorted(hits, key=lambda h: (-abs(h[0]), h[1], h[2]))[:k]
            ]
            for f, hits in feats.items()
        }
        for name, feats in best.items()
    }


def summary(circuit, model=None, saes=None, texts=None, k: int = 5, context: int = 4, world=None, **_kw) -> dict:
    """Label each feature with the tokens it fires on most over ``texts`` (contexts in the tooltip), with the
    model and SAEs of ``world`` (or ``model`` and ``saes``)."""
    if (world is None and (model is None or saes is None)) or not texts:
        raise SFCError("label provider 'summary' needs model= and saes= (or world=) and texts= (use it from Python)")
    if world is None:
        from ..world import world_args

        (world,) = world_args(model, saes)
    model, subs = world.model, world.by_name
    texts = [texts] if isinstance(texts, str) else list(texts)
    wanted: dict[str, set] = {}
    for n in circuit.nodes:
        if n.kind == "feature":
            if n.submodule not in subs or subs[n.submodule].hook != n.hook:
                raise SFCError(f"label provider 'summary': no SAE for hook {n.hook!r} of node {n.id!r}")
            wanted.setdefault(n.submodule, set()).add(int(n.feature))
    tops = _top_contexts(
        model, subs, {name: sorted(fs) for name, fs in sorted(wanted.items())}, texts, int(k), int(context)
    )
    out = {}
    for n in circuit.nodes:
        if n.kind != "feature":
            continue
        hits = tops[n.submodule][int(n.feature)]
        if not hits:
            out[n.id] = {"label": "(inactive on these texts)"}
            continue
        toks = list(dict.fromkeys(" ".join(tok.split()) or repr(tok) for tok, _, _ in hits))
        tooltip = "top activations:\n" + "\n".join(f"{v:.3g}  {ctx}" for _, ctx, v in hits)
        out[n.id] = {"label": " · ".join(toks[:3]), "tooltip": tooltip}
    return out


def apply_labels(circuit, provider, **kw):
    """A copy of ``circuit`` with ``Node.label`` filled by ``provider`` (a registered name or a callable).

    URLs and tooltips go to ``provenance["node_info"]`` (``{node_id: {"url", "tooltip"}}``), which the
    DOT/SVG exporters turn into links and hover text, with what else the provider says of a label (:data:`INFO`:
    an annotation's ``status``, ``author``, ``reviewer``, ``forced``; an ``auto`` label's ``score``), which figures
    and the viewer show. Nodes the provider leaves out keep their labels. ``provenance["labels"]`` records the
    provider, its options and the nodes whose labels were forced onto another SAE.
    """
    name = provider if isinstance(provider, str) else getattr(provider, "__name__", "callable")
    recorded = {k: v for k, v in kw.items() if isinstance(v, (str, int, float, bool)) or v is None}
    if isinstance(provider, str):
        from ..plugins import lookup

        provider = lookup("label_provider", provider, kw.pop("pm", None))
    result = provider(circuit, **kw) or {}
    out = copy.deepcopy(circuit)
    info = dict(out.provenance.get("node_info") or {})
    for n in out.nodes:
        got = result.get(n.id)
        if got is None:
            continue
        got = {"label": got} if isinstance(got, str) else dict(got)
        if got.get("label") is not None:
            n.label = str(got["label"])
        extra = {k: str(got[k]) for k in ("url", "tooltip") if got.get(k)}
        extra.update({k: got[k] for k in INFO if got.get(k) is not None})
        if extra:
            info[n.id] = {**info.get(n.id, {}), **extra}
    if info:
        out.provenance["node_info"] = info
    forced = sorted(i for i, x in info.items() if x.get("forced") and i in result)
    out.provenance["labels"] = {"provider": name, "options": recorded, **({"forced": forced} if forced else {})}
    return out


INFO = ("source", "status", "author", "reviewer", "forced", "score", "score_low")
"""What label providers may say of a label besides ``url`` and ``tooltip`` (kept in ``node_info``)."""


PROVIDERS = {"annotations": annotations, "summary": summary, "neuronpedia": neuronpedia}
