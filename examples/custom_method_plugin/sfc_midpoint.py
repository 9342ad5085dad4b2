"""Midpoint attribution: gradients at halfway between clean and patch (a one-step IG).

An example of adding an attribution method through the ``sfc_attribution_methods`` hook. The
``AttributionContext`` gives each submodule's ``∇_x m`` at interpolated activations (one submodule
moved at a time); ``effects_from_grads`` projects them onto SAE features and error terms.
"""

import sfc_plugin


def midpoint(ctx):
    return ctx.effects_from_grads(ctx.gradients([0.5]))


@sfc_plugin.hookimpl
def sfc_attribution_methods():
    return {"midpoint": midpoint}
