"""Every hook sfc_plugin calls. A plugin implements any of them with ``@sfc_plugin.hookimpl``.

Each hook returns a ``{name: object}`` mapping that is merged into a typed registry; the built-in
methods, metrics, datasets and exporters are registered through these same hooks. Third-party
plugins are found through the ``sfc_plugin`` entry-point group::

    # pyproject.toml of your distribution
    [project.entry-points.sfc_plugin]
    my_methods = "my_package.sfc_methods"
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("sfc_plugin")


@hookspec
def sfc_attribution_methods():
    """Node-attribution methods: ``{name: fn(ctx: AttributionContext) -> NodeEffects}``.

    ``ctx`` (see ``sfc_plugin.attribution.context.AttributionContext``) carries the model, the submodules,
    the clean/patch activations of one batch and gradient helpers. Example::

        @hookimpl
        def sfc_attribution_methods():
            def midpoint(ctx):
                return ctx.effects_from_grads(ctx.gradients([0.5]))
            return {"midpoint": midpoint}
    """


@hookspec
def sfc_metrics():
    """Metrics: ``{name: fn(logits, batch) -> tensor[batch]}``.

    ``logits`` is ``[batch, pos, vocab]``; ``batch`` is a ``sfc_plugin.data.Batch`` (tokens, answer
    ids, ``last`` = index of each prompt's last token). A metric that reads only each prompt's last token
    should say so with ``fn.positions = "last"``: it then gets logits ``[batch, 1, vocab]`` (and ``last``
    all 0), which saves ``pos × vocab`` logits per row. Example::

        @hookimpl
        def sfc_metrics():
            return {"answer_logit": lambda logits, b: logits[b.rows, b.last, b.clean_answer]}
    """


@hookspec
def sfc_datasets():
    """Named pair datasets: ``{name: fn(split: str | None) -> list[dict]}`` of pair records.

    Example: ``{"mine/agreement": lambda split: read_jsonl(f"agreement_{split or 'test'}.jsonl")}``.
    """


@hookspec
def sfc_exporters():
    """Circuit exporters: ``{format: fn(circuit, path, **options) -> None}``.

    Example: ``{"csv": lambda circuit, path, **kw: write_edges_csv(circuit, path)}``.
    """


@hookspec
def sfc_ablations():
    """Ablation values for evaluation: ``{name: fn(model, submodules, batch) -> {submodule: Acts}}``.

    ``batch`` holds every evaluation example; the returned features/errors broadcast to
    ``[n_examples, pos, ...]`` (e.g. ``[1, pos, F]`` for a per-position mean). Example::

        @hookimpl
        def sfc_ablations():
            return {"half": lambda model, subs, batch: half_of_clean(model, subs, batch)}
    """


@hookspec
def sfc_label_providers():
    """Feature label providers: ``{name: fn(circuit, **kw) -> {node_id: label | {"label", "url", "tooltip"}}}``.

    Used by ``sfc_plugin.export.apply_labels(circuit, name, **kw)``. Example::

        @hookimpl
        def sfc_label_providers():
            return {"mine": lambda circuit, **kw: {n.id: my_db.get(n.id) for n in circuit.nodes if n.id in my_db}}
    """


@hookspec
def sfc_feature_judges():
    """SHIFT feature judges: ``{name: fn(features: list[FeatureInfo], ctx: JudgeContext) -> list[Decision]}``.

    The types live in ``sfc_plugin.shifting.records``. Each ``Decision(id, "ablate" | "keep", judge)``
    records who or what made it. A judge says what information it uses in a ``uses`` attribute (names
    from ``records.USES``); the table's rows report it, and only a judge that lists
    ``"balanced_labels"`` (or declares nothing) is given the labelled validation data (``ctx.val``).
    Example::

        @hookimpl
        def sfc_feature_judges():
            def late_only(features, ctx):
                return [Decision(f.id, "ablate" if f.submodule.startswith("resid") else "keep", "late_only")
                        for f in features]
            late_only.uses = ()  # decides from the feature ids alone
            return {"late_only": late_only}
    """
