"""Submodules (SAE-bearing hooks), their SAEs' affine maps, activations, and the straight-through splice.

The fast attribution path never puts an SAE inside the autograd graph: the splice ``x = decode(f) + ε``
is the identity in value, so ``∇_f m = W_dec ∇_x m`` and ``∇_ε m = ∇_x m``. :func:`splice` is the
reference implementation of the spliced model (used by plugins that want autograd over features, and
by the tests that check the algebra).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from . import validation as check
from .errors import SFCError
from .hook_points import hook_shape, hook_width, is_hook_z, sae_hook, submodule_key, submodule_name

SUPPORTED_ARCHITECTURES = {"standard", "topk", "jumprelu", "gated"}


@dataclass
class Submodule:
    """One node set: an SAE at a hook, with the SAE's effective affine maps in the model's dtype.

    ``W_enc`` is ``[d_in, d_sae]`` (the Jacobian of the pre-activation), ``W_dec`` ``[d_sae, d_in]``
    and ``b_dec`` ``[d_in]``, so ``decode(f) = f @ W_dec + b_dec`` and ``∂f/∂x = mask ⊙ W_enc``.

    The engine works on flat activations ``x`` ``[b, pos, d_in]``. Most hooks carry that shape already;
    ``attn.hook_z`` carries ``[b, pos, n_heads, d_head]`` (``hook_shape = (n_heads, d_head)``): read a hook's
    value with :meth:`flat` and write a flat tensor back with :meth:`unflat`.

    SAEs that normalise their input (SAELens ``normalize_activations="layer_norm"``, e.g. OpenAI's GPT-2
    SAEs) decode to ``(f @ W_dec + b_dec) · σ + μ`` with ``μ, σ`` the input token's mean and standard
    deviation. With those statistics held fixed (as attribution through a LayerNorm usually does), the
    SAE is affine in the activation's own units: ``ln_in`` submodules report features as ``σ · f``
    (each feature's exact contribution ``σ f_i W_dec,i`` to the activation), ``b_dec`` is zero and the
    token-dependent ``σ · b_dec + μ`` belongs to the error term; ``∂(σ f)/∂x = mask ⊙ W_enc · σ/(σ + ε)``
    with ``ε = 10⁻⁵``, so ``W_enc`` stays the encoder Jacobian.
    """

    name: str
    hook: str
    layer: int
    sae: Any
    W_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    hook_shape: tuple[int, ...] | None = None  # trailing shape at the hook when it is not ``(d_in,)``
    ln_in: bool = False  # the SAE layer-normalises its input (features reported as ``σ · f``)

    @property
    def d_sae(self) -> int:
        return self.W_dec.shape[0]

    def flat(self, act: torch.Tensor) -> torch.Tensor:
        """The hook's activation as ``[..., d_in]`` (a view where possible)."""
        return act if self.hook_shape is None else act.flatten(-len(self.hook_shape))

    def unflat(self, x: torch.Tensor) -> torch.Tensor:
        """A flat ``[..., d_in]`` tensor in the hook's shape (what a hook function returns)."""
        return x if self.hook_shape is None else x.unflatten(-1, self.hook_shape)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a flat activation ``[..., d_in]`` (the SAE sees its hook's shape, as SAELens expects)."""
        x_in = x.to(self.sae.W_enc.dtype)
        if getattr(self.sae, "hook_z_reshaping_mode", False):
            x_in = self.unflat(x_in)
        f = self.sae.encode(x_in)
        if self.ln_in:  # SAELens keeps the input's statistics for its own decode: drop them, scale by σ
            for attr in ("ln_mu", "ln_std"):
                self.sae.__dict__.pop(attr, None)
            flat = x.to(f.dtype)
            f = f * (flat - flat.mean(-1, keepdim=True)).std(-1, keepdim=True)
        return f.to(x.dtype)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec


NORMALIZATIONS = ("none", "layer_norm")


def _affine_maps(hook: str, sae, dtype, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cfg = sae.cfg
    arch = cfg.architecture() if callable(getattr(cfg, "architecture", None)) else getattr(cfg, "architecture", "?")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise SFCError(
            f"SAE at {hook!r} has architecture {arch!r}; supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}"
        )
    reshape = "hook_z" if is_hook_z(hook) else "none"
    if getattr(cfg, "reshape_activations", "none") != reshape:
        raise SFCError(
            f"SAE at {hook!r} has reshape_activations={getattr(cfg, 'reshape_activations', 'none')!r}; "
            f"an SAE at this hook needs {reshape!r}"
        )
    norm = getattr(cfg, "normalize_activations", "none")
    if norm not in NORMALIZATIONS:
        raise SFCError(
            f"SAE at {hook!r} has normalize_activations={norm!r}; fold it into the weights first "
            f"(supported: {', '.join(NORMALIZATIONS)})"
        )
    with torch.no_grad():
        W_enc, W_dec, b_dec = sae.W_enc.detach(), sae.W_dec.detach(), sae.b_dec.detach()
        if arch == "gated":
            W_enc = W_enc * torch.exp(sae.r_mag.detach())[None, :]
        if getattr(cfg, "rescale_acts_by_decoder_norm", False):
            norms = W_dec.norm(dim=-1)
            W_enc, W_dec = W_enc * norms[None, :], W_dec * norms[:, None]
        if norm == "layer_norm":
            b_dec = torch.zeros_like(b_dec)
    cast = lambda t: t.to(device=device, dtype=dtype).contiguous()  # noqa: E731
    return cast(W_enc), cast(W_dec), cast(b_dec)


def build_submodules(model, saes: dict[str, Any], *, check_shapes: bool = True) -> list[Submodule]:
    """Validated submodules in model order (embedding first, then attn, mlp, resid per layer).

    ``check_shapes=False`` skips the hook and width checks, for SAEs already checked against the model
    (:class:`sfc_plugin.world.World` checks them once, with :func:`sfc_plugin.models.check_compatible`).
    """
    if not saes:
        raise SFCError("no SAEs given")
    dtype, device = model.cfg.dtype, next(model.parameters()).device
    subs = []
    for hook, sae in saes.items():
        if check_shapes and hook not in model.hook_dict:
            raise SFCError(f"unknown hook {hook!r}: the model has no such hook point")
        name, layer = submodule_name(hook)
        d_in, what = hook_width(model.cfg, hook)
        if check_shapes and sae.cfg.d_in != d_in:
            raise SFCError(f"SAE at {hook!r} has d_in={sae.cfg.d_in} but the model's {what} is {d_in}")
        if sae.W_enc.device != device:
            sae.to(device)
        subs.append(
            Submodule(
                name,
                hook,
                layer,
                sae,
                *_affine_maps(hook, sae, dtype, device),
                hook_shape=hook_shape(model.cfg, hook),
                ln_in=getattr(sae.cfg, "normalize_activations", "none") == "layer_norm",
            )
        )
    names = [s.name for s in subs]
    if len(set(names)) != len(names):
        raise SFCError(f"two SAEs for one submodule among hooks {sorted(saes)}")
    return sorted(subs, key=lambda s: submodule_key(s.name))


@dataclass
class Acts:
    """A submodule's activation ``x`` ``[b, pos, d]``, its features ``f`` ``[b, pos, F]`` and error ``err``."""

    x: torch.Tensor
    f: torch.Tensor
    err: torch.Tensor


@torch.no_grad()
def activations(model, subs: list[Submodule], tokens: torch.Tensor) -> dict[str, Acts]:
    """Run the model once and encode every submodule's (flat) activation."""
    hooks = {s.hook: s for s in subs}
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in hooks, stop_at_layer=model.cfg.n_layers)
    out = {}
    for s in subs:
        x = s.flat(cache[s.hook])
        f = s.encode(x)
        out[s.name] = Acts(x, f, x - s.decode(f))
    return out


def zero_acts(subs: list[Submodule], clean: dict[str, Acts]) -> dict[str, Acts]:
    """Zero ablation: ``f = 0, ε = 0``, so ``x = decode(0)``."""
    out = {}
    for s in subs:
        c = clean[s.name]
        out[s.name] = Acts(s.b_dec.expand_as(c.x).clone(), torch.zeros_like(c.f), torch.zeros_like(c.err))
    return out


def _autograd_layouts(model) -> list[tuple[torch.nn.Parameter, tuple[int, ...]]]:
    """``(parameter, permutation)`` for the block weights TransformerLens copies on every call: gated MLPs
    call ``F.linear(x, W.T.contiguous())``, attention rearranges ``W_Q`` (``W_K``, ``W_V`` where they are
    parameters, not grouped-query expansions) to ``[(head d_head), d_model]`` and
    ``W_O`` to ``[d_model, (head d_head)]``. Stored in that order, the copy is a view; with autograd the copy
    would be kept for the whole pass (~0.31 GB per Gemma-2-2B block in float32)."""
    out = []
    for block in getattr(model, "blocks", []):
        mlp, attn = getattr(block, "mlp", None), getattr(block, "attn", None)
        if mlp is not None and isinstance(getattr(mlp, "W_gate", None), torch.nn.Parameter):
            out += [
                (getattr(mlp, n), (1, 0))
                for n in ("W_gate", "W_in", "W_out")
                if isinstance(getattr(mlp, n, None), torch.nn.Parameter) and getattr(mlp, n).dim() == 2
            ]
        for name, order in (("W_Q", (0, 2, 1)), ("W_K", (0, 2, 1)), ("W_V", (0, 2, 1)), ("W_O", (2, 0, 1))):
            w = getattr(attn, name, None) if attn is not None else None
            if isinstance(w, torch.nn.Parameter) and w.dim() == 3:
                out.append((w, order))
    return out


def _relayout(p: torch.nn.Parameter, order: tuple[int, ...]) -> None:
    """Same shape and values; memory in ``p.permute(order)``'s order (or back to contiguous)."""
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    if p.is_contiguous():
        p.data = p.data.permute(order).contiguous().permute(inverse)
    elif p.data.permute(order).is_contiguous():
        p.data = p.data.contiguous()


@contextlib.contextmanager
def frozen(model):
    """Parameters temporarily ``requires_grad=False`` (gradients go to activations only), and the block
    weights TransformerLens copies on every call stored so that the copy is a view (see
    :func:`_autograd_layouts`): a pass with autograd then holds no copy of them. Restored on exit."""
    params = list(model.parameters())
    before = [p.requires_grad for p in params]
    laid = []
    try:
        for p in params:
            p.requires_grad_(False)
        for p, order in _autograd_layouts(model):
            if p.is_contiguous():
                _relayout(p, order)
                laid.append((p, order))
        yield model
    finally:
        for p, order in laid:
            _relayout(p, order)
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


def _by_hook(saes) -> dict[str, Any]:
    """``{hook: SAE}`` from a mapping or a sequence of SAE objects (hook from ``cfg.metadata.hook_name``), their
    weights checked finite. SAE specs (paths, ``release:sae_id``) load with :meth:`sfc_plugin.World.load`."""
    items = saes.items() if isinstance(saes, Mapping) else [(sae_hook(sae), sae) for sae in saes]
    out = {}
    for hook, sae in items:
        if not isinstance(hook, str) or not hasattr(sae, "cfg") or not hasattr(sae, "encode"):
            raise SFCError(
                f"splice needs {{hook_name: SAE}} or SAELens SAEs with cfg.metadata.hook_name, got {sae!r}"[:300]
            )
        check.sae_weights(sae, f"SAE at hook {hook!r}")
        out[hook] = sae
    return out


@dataclass
class SpliceState:
    """What a spliced forward pass exposes: per hook, the features and error tensors used in it."""

    features: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]


@contextlib.contextmanager
def splice(model, saes: dict[str, Any]):
    """Splice SAEs into ``model`` (straight-through): at each hook ``x ↦ decode(f) + ε``.

    ``f = encode(x)`` and ``ε = x - decode(f)`` stay in the autograd graph, so the forward value is
    unchanged and gradients reaching upstream activations are the model's own. ``f`` and ``ε`` keep
    their gradients (``state.features[hook].grad`` after a backward pass). Yields a :class:`SpliceState`.
    """
    saes = _by_hook(getattr(saes, "saes", saes))  # a World, {hook: SAE} or SAE objects
    state = SpliceState({}, {})

    def hook_fn(act, hook):
        sae = saes[hook.name]
        f = sae.encode(act)
        if not f.requires_grad:  # nothing upstream requires grad: make the nodes leaves
            f = f.detach().requires_grad_(True)
        recon = sae.decode(f)
        err = act - recon.detach() if not act.requires_grad else act - sae.decode(sae.encode(act))
        if not err.requires_grad:
            err = err.detach().requires_grad_(True)
        for t in (f, err):
            if not t.is_leaf:
                t.retain_grad()
        state.features[hook.name], state.errors[hook.name] = f, err
        return recon + err

    with model.hooks(fwd_hooks=[(h, hook_fn) for h in saes]):
        yield state
