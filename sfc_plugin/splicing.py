"""Submodules (node sets: a dictionary at its hooks), their affine maps, activations, and the straight-through splice.

The fast attribution path never puts a dictionary inside the autograd graph: the splice ``x = decode(f) + ε``
is the identity in value, so ``∇_f m = W_dec ∇_x m`` and ``∇_ε m = ∇_x m``. :func:`splice` is the
reference implementation of the spliced model (used by plugins that want autograd over features, and
by the tests that check the algebra). What each SAELens architecture contributes is in
:mod:`sfc_plugin.dictionaries` (one small kind per architecture).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from . import validation as check
from .dictionaries import TOKEN_SCALED_NORMS, Kind, check_hooks, kind_of, read_hook_of
from .errors import SFCError
from .hook_points import (
    hook_flags,
    hook_shape,
    is_hook_z,
    sae_hook,
    sae_hook_out,
    submodule_key,
    submodule_name,
    transcoder_name,
)


@dataclass
class Submodule:
    """One node set: a dictionary (SAE or transcoder) with its effective affine maps in the model's dtype.

    ``hook`` is where the node set's activation ``x`` lives and where it is spliced: an SAE's hook, a transcoder's
    output hook (``hook_name_out``). ``read_hook`` is the hook the features are encoded from (SAELens's
    ``hook_name``): the same hook for an SAE, the MLP's input for a transcoder. So, for every kind,
    ``f = encode(read activation)``, ``x = decode(f) + ε`` with ``decode(f) = f @ W_dec + b_dec``
    (``W_dec`` ``[d_sae, d_out]``, ``b_dec`` ``[d_out]``) and ``ε = x − decode(f)``.

    ``W_enc`` ``[d_in, d_sae]`` is the encoder's Jacobian where it is a masked linear map (``∂f/∂read = mask ⊙
    W_enc``, the mask being the active features); None for kinds whose encoder the engine differentiates with
    autograd (:meth:`features`: matching pursuit, temporal). ``W_skip`` ``[d_out, d_in]``: a skip transcoder's
    linear term, folded into ``ε`` (:meth:`skip` gives it). ``kind``: the architecture's
    :class:`~sfc_plugin.dictionaries.Kind`.

    The engine works on flat activations ``x`` ``[b, pos, d]``. Most hooks carry that shape already;
    ``attn.hook_z`` carries ``[b, pos, n_heads, d_head]`` (``hook_shape = (n_heads, d_head)``): read a hook's
    value with :meth:`flat` and write a flat tensor back with :meth:`unflat`.

    SAEs that normalise their input per token (SAELens ``normalize_activations="layer_norm"``, e.g. OpenAI's GPT-2
    SAEs, or ``"constant_norm_rescale"``) decode to ``(f @ W_dec + b_dec) · s + μ`` with ``s`` the input token's
    standard deviation and ``μ`` its mean (layer_norm), or ``s = |x| / √d_in`` and ``μ = 0``. With those
    statistics held fixed (as attribution through a LayerNorm usually does), the SAE is affine in the activation's
    own units: such submodules report features as ``s · f`` (each feature's exact contribution ``s f_i W_dec,i``),
    ``b_dec`` is zero and the token-dependent ``s · b_dec + μ`` belongs to the error term;
    ``∂(s f)/∂x = mask ⊙ W_enc`` (times ``σ/(σ + 10⁻⁵)`` for layer_norm), so ``W_enc`` stays the encoder Jacobian.
    """

    name: str
    hook: str
    layer: int
    sae: Any
    W_enc: torch.Tensor | None
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    hook_shape: tuple[int, ...] | None = None  # trailing shape at the hook when it is not ``(d_in,)``
    ln_in: bool = False  # the SAE layer-normalises its input (features reported as ``σ · f``)
    read_hook: str = ""  # where features are encoded from (default: ``hook``)
    kind: Kind | None = None
    W_skip: torch.Tensor | None = None
    normalization: str = "none"
    key: str = ""  # the dictionary's hook in ``World.saes`` (its SAELens ``hook_name``; default: ``read_hook``)

    def __post_init__(self):
        self.read_hook = self.read_hook or self.hook
        self.key = self.key or self.read_hook
        if self.ln_in and self.normalization == "none":
            self.normalization = "layer_norm"

    @property
    def d_sae(self) -> int:
        return self.W_dec.shape[0]

    @property
    def transcoder(self) -> bool:
        """It reads one hook and writes another (a transcoder replacing an MLP)."""
        return self.read_hook != self.hook

    @property
    def tokenwise(self) -> bool:
        """Features at a position depend on that position's read activation only (not so for temporal SAEs)."""
        return self.kind is None or self.kind.tokenwise

    def flat(self, act: torch.Tensor) -> torch.Tensor:
        """The hook's activation as ``[..., d_in]`` (a view where possible)."""
        return act if self.hook_shape is None else act.flatten(-len(self.hook_shape))

    def unflat(self, x: torch.Tensor) -> torch.Tensor:
        """A flat ``[..., d_in]`` tensor in the hook's shape (what a hook function returns)."""
        return x if self.hook_shape is None else x.unflatten(-1, self.hook_shape)

    def read(self, act: torch.Tensor) -> torch.Tensor:
        """The read hook's activation as ``[..., d_in]`` (for an SAE, :meth:`flat`)."""
        return self.flat(act) if not self.transcoder else act

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a flat read activation ``[..., d_in]``, differentiable in ``x`` (the SAE sees its hook's
        shape, as SAELens expects; a kind that is not token-wise needs ``[b, pos, d_in]``)."""
        x_in = x.to(self.sae.W_dec.dtype)
        if getattr(self.sae, "hook_z_reshaping_mode", False):
            x_in = self.unflat(x_in)
        f = self.sae.encode(x_in)
        if self.normalization in TOKEN_SCALED_NORMS:
            # SAELens keeps the input's statistics for its own decode: drop them, report s · f
            for attr in ("ln_mu", "ln_std", "x_norm_coeff"):
                self.sae.__dict__.pop(attr, None)
            flat = x.to(f.dtype)
            if self.normalization == "layer_norm":
                scale = (flat - flat.mean(-1, keepdim=True)).std(-1, keepdim=True)
            else:
                scale = flat.norm(dim=-1, keepdim=True) / flat.shape[-1] ** 0.5
            f = f * scale
        return f.to(x.dtype)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a flat read activation ``[..., d_in]`` (see :meth:`features`), without autograd."""
        return self.features(x)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def skip(self, read: torch.Tensor) -> torch.Tensor | None:
        """A skip transcoder's skip term ``read @ W_skip.T`` ``[..., d_out]`` (part of ``ε``); None without one."""
        return None if self.W_skip is None else read.to(self.W_skip.dtype) @ self.W_skip.T


def _submodule(model, hook: str, sae, dtype, device) -> Submodule:
    """The node set of one dictionary keyed by ``hook`` (its SAELens ``hook_name``), checks included."""
    cfg = sae.cfg
    kind = kind_of(sae, f"SAE at {hook!r}")
    hook_out = sae_hook_out(sae) if kind.transcoder else None
    read = read_hook_of(sae, hook)
    if kind.transcoder:
        if not hook_out:
            raise SFCError(f"transcoder at {hook!r} has no cfg.metadata.hook_name_out (the hook it writes)")
        name, layer = transcoder_name(read, hook_out)
    else:
        name, layer = submodule_name(hook)
        reshape = "hook_z" if is_hook_z(hook) else "none"
        if getattr(cfg, "reshape_activations", "none") != reshape:
            raise SFCError(
                f"SAE at {hook!r} has reshape_activations={getattr(cfg, 'reshape_activations', 'none')!r}; "
                f"an SAE at this hook needs {reshape!r}"
            )
    why = kind.check(sae)
    if why:
        raise SFCError(f"SAE at {hook!r} has {why}")
    norm = getattr(cfg, "normalize_activations", "none")
    with torch.no_grad():
        maps = kind.maps(sae)
    cast = lambda t: None if t is None else t.to(device=device, dtype=dtype).contiguous()  # noqa: E731
    b_dec = maps.b_dec * 0 if norm in TOKEN_SCALED_NORMS else maps.b_dec
    return Submodule(
        name,
        hook_out or hook,
        layer,
        sae,
        cast(maps.W_enc),
        cast(maps.W_dec),
        cast(b_dec),
        hook_shape=hook_shape(model.cfg, hook_out or hook),
        ln_in=norm == "layer_norm",
        read_hook=read,
        kind=kind,
        W_skip=cast(maps.W_skip),
        normalization=norm,
        key=hook,
    )


def build_submodules(model, saes: dict[str, Any], *, check_shapes: bool = True) -> list[Submodule]:
    """Validated submodules in model order (embedding first, then attn, mlp (or tc), resid per layer).

    ``saes``: ``{hook_name: dictionary}`` keyed by each dictionary's SAELens ``hook_name`` (a transcoder's input
    hook). ``check_shapes=False`` skips the hook and width checks, for dictionaries already checked against the
    model (:class:`sfc_plugin.world.World` checks them once, with :func:`sfc_plugin.models.check_compatible`).
    """
    if not saes:
        raise SFCError("no SAEs given")
    dtype, device = model.cfg.dtype, next(model.parameters()).device
    subs = []
    for hook, sae in saes.items():
        if check_shapes:
            check_hooks(model, hook, sae, f"SAE at {hook!r}")
        if sae.W_dec.device != device:
            sae.to(device)
        subs.append(_submodule(model, hook, sae, dtype, device))
    names = [s.name for s in subs]
    for name in set(names):
        if names.count(name) > 1:
            hooks = sorted(s.key for s in subs if s.name == name)
            raise SFCError(f"two dictionaries for one submodule {name!r}: {', '.join(hooks)}")
    return sorted(subs, key=lambda s: submodule_key(s.name))


@contextlib.contextmanager
def read_hooks(model, subs):
    """The model's config flags that make the submodules' read hooks fire (``use_hook_mlp_in`` for transcoders
    reading ``hook_mlp_in``), switched on for the block and restored on exit."""
    flags: dict[str, bool] = {}
    for s in subs:
        flags.update(hook_flags(s.read_hook))
    before = {k: getattr(model.cfg, k, None) for k in flags}
    try:
        for k, v in flags.items():
            setattr(model.cfg, k, v)
        yield model
    finally:
        for k, v in before.items():
            setattr(model.cfg, k, v)


def node_hooks(subs, fn) -> list[tuple[str, Any]]:
    """Forward hooks that replace each submodule's activation by ``fn(sub, read, x)`` (flat tensors; ``read``: the
    read hook's activation in the same pass, ``x`` for an SAE). Run them under :func:`read_hooks`."""
    stash: dict[str, torch.Tensor] = {}

    def write(act, hook, s):
        x = s.flat(act)
        return s.unflat(fn(s, stash.pop(s.name) if s.transcoder else x, x))

    hooks = [(s.hook, lambda act, hook, s=s: write(act, hook, s)) for s in subs]
    hooks += [  # after the writes: a read hook that is also a submodule's hook sees the spliced value
        (s.read_hook, lambda act, hook, s=s: stash.__setitem__(s.name, s.read(act))) for s in subs if s.transcoder
    ]
    return hooks


@dataclass
class Acts:
    """A submodule's activation ``x`` ``[b, pos, d]``, its features ``f`` ``[b, pos, F]`` and error ``err``."""

    x: torch.Tensor
    f: torch.Tensor
    err: torch.Tensor


@torch.no_grad()
def activations(model, subs: list[Submodule], tokens: torch.Tensor) -> dict[str, Acts]:
    """Run the model once and encode every submodule's (flat) activation from its read hook."""
    hooks = {s.hook for s in subs} | {s.read_hook for s in subs}
    with read_hooks(model, subs):
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in hooks, stop_at_layer=model.cfg.n_layers)
    out = {}
    for s in subs:
        x = s.flat(cache[s.hook])
        f = s.encode(s.read(cache[s.read_hook]))
        out[s.name] = Acts(x, f, x - s.decode(f))
    return out


@torch.no_grad()
def features_of(model, sub: Submodule, tokens: torch.Tensor) -> torch.Tensor:
    """``[b, pos, d_sae]``: the features of ``sub`` on ``tokens`` (one forward pass, read at its read hook)."""
    with read_hooks(model, [sub]):
        _, cache = model.run_with_cache(tokens, names_filter=sub.read_hook)
    return sub.encode(sub.read(cache[sub.read_hook]))


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
    """What a spliced forward pass exposes: per hook, the features and error tensors used in it (keyed by the
    dictionary's ``hook_name``; a transcoder's error is that of its output hook)."""

    features: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]


@contextlib.contextmanager
def splice(model, saes: dict[str, Any]):
    """Splice dictionaries into ``model`` (straight-through) with SAELens's own ``encode`` and ``decode``.

    At an SAE's hook ``x ↦ decode(f) + ε`` with ``f = encode(x)``; a transcoder (``hook_name`` → ``hook_name_out``)
    replaces its output ``x`` by ``decode(f) + ε`` with ``f = encode(read)`` of its input hook's activation in the
    same pass (its skip term, if any, is part of ``ε``). ``f`` and ``ε = x − decode(f)`` stay in the autograd
    graph, so the forward value is unchanged and gradients reaching upstream activations are the model's own.
    ``f`` and ``ε`` keep their gradients (``state.features[hook].grad`` after a backward pass). Yields a
    :class:`SpliceState`.
    """
    saes = _by_hook(getattr(saes, "saes", saes))  # a World, {hook: SAE} or SAE objects
    state = SpliceState({}, {})
    outs = {h: sae_hook_out(sae) for h, sae in saes.items() if kind_of(sae, f"SAE at {h!r}").transcoder}
    reads: dict[str, torch.Tensor] = {}

    def write(act, key):
        sae = saes[key]
        read = reads.pop(key) if key in outs else act
        f = sae.encode(read)
        if not f.requires_grad:  # nothing upstream requires grad: make the nodes leaves
            f = f.detach().requires_grad_(True)
        recon = sae.decode(f)
        err = act - recon.detach() if not act.requires_grad else act - sae.decode(sae.encode(read))
        if not err.requires_grad:
            err = err.detach().requires_grad_(True)
        for t in (f, err):
            if not t.is_leaf:
                t.retain_grad()
        state.features[key], state.errors[key] = f, err
        return recon + err

    fwd = [(outs.get(h, h), lambda act, hook, h=h: write(act, h)) for h in saes]
    fwd += [(h, lambda act, hook, h=h: reads.__setitem__(h, act)) for h in outs]
    flags: dict[str, bool] = {}
    for h in outs:
        flags.update(hook_flags(h))
    before = {k: getattr(model.cfg, k, None) for k in flags}
    try:
        for k, v in flags.items():
            setattr(model.cfg, k, v)
        with model.hooks(fwd_hooks=fwd):
            yield state
    finally:
        for k, v in before.items():
            setattr(model.cfg, k, v)
