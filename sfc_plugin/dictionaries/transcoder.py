"""Transcoders: ``transcoder``, ``skip_transcoder``, ``jumprelu_transcoder``, ``jumprelu_skip_transcoder``.

A transcoder replaces MLP ``l``: it reads the MLP's input at its ``hook_name`` (``blocks.<l>.hook_mlp_in``,
``ln2.hook_normalized``, ``hook_resid_mid`` or ``hook_resid_pre``) and writes the MLP's output at its
``hook_name_out`` (``blocks.<l>.hook_mlp_out``). The node set ``tc_<l>``:

- features ``f = encode(read)``: ``ReLU(read W_enc + b_enc)``, or JumpReLU with the transcoder's threshold; a
  masked linear map of the *read* activation, so ``∂f/∂read = mask ⊙ W_enc``;
- ``decode(f) = f W_dec + b_dec`` in the MLP output's units (``d_out``);
- skip transcoders add ``read @ W_skip.T`` to their output. That skip term is a dense linear function of the
  MLP's input, not a sparse feature, and it is **folded into the error node**;
- error ``ε = write − decode(f) = (write − transcoder(read)) + read @ W_skip.T``: the transcoder's own error
  (``actual MLP output − transcoder output``, skip included) plus the skip term. Without a skip, the error is
  exactly ``write − transcoder(read)``.

The splice replaces the MLP's output by ``decode(f) + ε``, which is the MLP's output, so the model's outputs are
unchanged; edges into the features run from upstream nodes to the read hook, edges into the error node run to both
hooks (``∂ε/∂write = I``, ``∂ε/∂read = −W_decᵀ (mask ⊙ W_enc)ᵀ``). A linear-attribution mode that wants
circuit-tracer's error node (skip outside the error) takes ``ε − read @ W_skip.T``
(:meth:`sfc_plugin.splicing.Submodule.skip`).

Cross-layer transcoders as SAELens loads them (``mntss-gemma-2-2b-2.5m-clt-as-per-layer``: the layer's encoder,
and its decoders to every later layer summed into one) are ``transcoder``s at their layer: the features are the
CLT's own; their writes to later layers all land at layer ``l``'s MLP output, so the error node at ``tc_<l>`` holds
what the CLT writes elsewhere and what layer ``l``'s MLP really writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import IDENTITY_NORMS, Kind, Maps

_NODES = "{act}(read W_enc + b_enc) of the MLP's input: one node per feature"
_ERROR = "MLP output − decode(f){skip}"


@dataclass(frozen=True)
class Transcoder(Kind):
    skip: bool = False

    def maps(self, sae) -> Maps:
        W_skip = sae.W_skip.detach() if self.skip else None
        return Maps(sae.W_enc.detach(), sae.W_dec.detach(), sae.b_dec.detach(), W_skip)


def _kind(architecture: str, act: str, skip: bool) -> Transcoder:
    return Transcoder(
        architecture,
        _NODES.format(act=act),
        _ERROR.format(skip=": the transcoder's error plus its skip term read W_skipᵀ" if skip else ""),
        transcoder=True,
        normalizations=IDENTITY_NORMS,
        skip=skip,
    )


TRANSCODER = _kind("transcoder", "ReLU", False)
SKIP_TRANSCODER = _kind("skip_transcoder", "ReLU", True)
JUMPRELU_TRANSCODER = _kind("jumprelu_transcoder", "JumpReLU", False)
JUMPRELU_SKIP_TRANSCODER = _kind("jumprelu_skip_transcoder", "JumpReLU", True)
