"""Plugins registered in-process: no package, no entry point, just ``get_plugin_manager().register(module)``.

This script registers itself (any module, class or object with ``@sfc_plugin.hookimpl`` functions is a plugin)
and adds a metric and an attribution method, then discovers a circuit on the shipped toy world with them:

    python examples/in_process_plugin.py

The contracts, as the hooks see them:

- a metric is ``fn(logits, batch) -> tensor[b]``: ``logits`` ``[b, pos, vocab]``; ``batch`` a
  ``sfc_plugin.data.Batch`` with ``clean``/``patch`` token ids ``[b, pos]`` (``patch`` None for zero ablation),
  ``clean_answer``/``patch_answer`` ids ``[b]``, ``last`` (each prompt's last position) ``[b]``, ``rows``
  (``arange(b)``) and the pair ``records``;
- an attribution method is ``fn(ctx: AttributionContext) -> NodeEffects``: ``ctx.submodules`` (name, hook, SAE maps
  ``W_dec``), ``ctx.clean``/``ctx.patch`` activations per submodule (``x`` ``[b, pos, d_model]``, features ``f``
  ``[b, pos, d_sae]``, error ``err``), ``ctx.delta(name)`` = patch − clean, ``ctx.gradients(alphas)`` = mean
  ``∇_x m`` over interpolation points, one submodule moved at a time; it returns per-example effects,
  ``NodeEffects(features={name: [b, pos, d_sae]}, errors={name: [b, pos]}, grads={name: [b, pos, d_model]} or None)``.
"""

import sys

import sfc_plugin
from sfc_plugin.attribution.context import NodeEffects


def answer_logprob(logits, batch):
    """log p(clean answer) at each prompt's last token."""
    logp = logits[batch.rows, batch.last].log_softmax(-1)
    return logp[batch.rows, batch.clean_answer]


def endpoints(ctx):
    """The trapezoid between clean and patch: ``∇_x m`` averaged at α = 0 and α = 1, times the change."""
    grads = ctx.gradients([0.0, 1.0])
    features, errors = {}, {}
    for sub in ctx.submodules:
        d_f, d_err, _ = ctx.delta(sub.name)
        features[sub.name] = (grads[sub.name] @ sub.W_dec.T) * d_f  # ∇_f m = W_dec ∇_x m
        errors[sub.name] = (grads[sub.name] * d_err).sum(-1)  # ∇_ε m = ∇_x m
    return NodeEffects(features, errors, grads)


@sfc_plugin.hookimpl
def sfc_metrics():
    return {"answer_logprob": answer_logprob}


@sfc_plugin.hookimpl
def sfc_attribution_methods():
    return {"endpoints": endpoints}


def main():
    pm = sfc_plugin.get_plugin_manager()
    pm.register(sys.modules[__name__], name="in_process_example")
    try:
        model, saes = sfc_plugin.toy.load()
        circuit = sfc_plugin.discover(
            model,
            saes,
            "toy/sva-rc",
            metric="answer_logprob",
            method="endpoints",
            n_examples=8,
            node_threshold=0.05,
            edges=False,
            progress=False,
        )
        print(circuit.summary())
        top = sorted((n for n in circuit.nodes if n.kind != "metric"), key=lambda n: -abs(n.effect))[:5]
        print("strongest nodes: " + ", ".join(f"{n.id} {n.effect:+.3f}" for n in top))
    finally:
        pm.unregister(name="in_process_example")


if __name__ == "__main__":
    main()
