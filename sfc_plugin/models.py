"""Loading models and SAEs from local files (and, on request, from a hub).

Model directory layout written by :func:`save_model` (used by the shipped toy world)::

    config.json          HookedTransformerConfig fields (JSON)
    model.safetensors    state dict
    tokenizer/           a Hugging Face tokenizer saved with ``save_pretrained``
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import SFCError
from .hook_points import sae_hook


def save_model(model, path: str | Path) -> Path:
    """Save a HookedTransformer (config, weights, tokenizer) so :func:`load_model` reopens it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = dict(model.cfg.to_dict())  # to_dict() returns the live __dict__
    cfg["dtype"] = str(cfg["dtype"]).removeprefix("torch.")
    cfg.pop("device", None)
    (path / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True, default=str))
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(path / "model.safetensors")
    )
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(path / "tokenizer"))
    return path


def load_model(path: str | Path, device: str | None = None):
    """Open a model directory written by :func:`save_model`."""
    import torch
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from . import validation as check

    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise SFCError(f"model directory {str(path)!r} lacks config.json or model.safetensors")
    raw = check.json_file(path / "config.json", "model config")
    if not isinstance(raw, dict):
        raise SFCError(f"model config {str(path / 'config.json')!r} must be a JSON object")
    check.safetensors_file(path / "model.safetensors", "model weights")
    check.device(device)
    dtype = raw.get("dtype", "float32")
    if not isinstance(dtype, str) or not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise SFCError(f"model config {str(path / 'config.json')!r}: unknown dtype {dtype!r}")
    raw["dtype"] = getattr(torch, dtype)
    fields = HookedTransformerConfig.__dataclass_fields__
    cfg_kwargs = {k: v for k, v in raw.items() if k in fields and fields[k].init}
    if device is not None:
        cfg_kwargs["device"] = device
    tokenizer = None
    try:
        if (path / "tokenizer").is_dir():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
        cfg = HookedTransformerConfig(**cfg_kwargs)
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=True)
        state = load_file(str(path / "model.safetensors"))
        model.load_state_dict(state, strict=True)
    except SFCError:
        raise
    except Exception as exc:  # noqa: BLE001 - a config or weights that do not fit: one line naming the directory
        raise SFCError(f"cannot load model {str(path)!r} ({type(exc).__name__}: {exc})".splitlines()[0][:400]) from None
    for name, tensor in model.named_parameters():  # buffers such as attention masks hold -inf by design
        check.finite_tensor(tensor, f"model {str(path)!r}: {name}")
    model.eval()
    return model


def load_model_spec(spec: str, device: str | None = None, dtype=None, processing: dict | None = None):
    """A model from a spec: a Hugging Face model directory, a directory written by :func:`save_model`, or a
    TransformerLens pretrained name (through the Hugging Face cache; ``HF_HUB_OFFLINE=1`` works once cached).

    ``processing``: TransformerLens processing options (SAELens's ``model_from_pretrained_kwargs``) on top
    of none at all, so by default every hook carries the Hugging Face model's activations.
    """
    from .hf_convert import is_hf_model_dir, load_hf_model_dir

    dtype = resolve_dtype(dtype)
    path = Path(spec)
    if path.is_dir() and is_hf_model_dir(path):
        return load_hf_model_dir(path, device, dtype, processing)
    if path.exists():
        model = load_model(path, device)
        return model if dtype is None else _cast(model, dtype)
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(spec)
    except ValueError:
        raise SFCError(f"model {spec!r} is neither a directory nor a TransformerLens model name") from None
    try:
        kwargs = {"dtype": dtype} if dtype is not None else {}
        return HookedTransformer.from_pretrained_no_processing(
            spec, device=device, **kwargs, **(processing or {})
        ).eval()
    except Exception as exc:  # noqa: BLE001
        raise SFCError(f"cannot load model {spec!r} ({type(exc).__name__}: {exc})".splitlines()[0]) from None


DTYPES = ("float32", "bfloat16", "float16")


def resolve_dtype(dtype):
    """``None``, a torch dtype, or one of :data:`DTYPES` → torch dtype (or ``None``)."""
    if dtype is None or not isinstance(dtype, str):
        return dtype
    if dtype not in DTYPES:
        raise SFCError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    import torch

    return getattr(torch, dtype)


def _cast(model, dtype):
    model.to(dtype)
    model.cfg.dtype = dtype
    return model


def _is_sae_dir(path: Path) -> bool:
    return (path / "cfg.json").is_file()


def sae_label(sae, hook: str | None = None) -> str:
    """How messages and provenance name an SAE: its spec, else its hook."""
    spec = getattr(sae, "sfc_spec", None)
    if spec:
        return spec.get("path") or f"{spec['release']}:{spec['sae_id']}"
    return f"SAE at {hook!r}" if hook else "SAE"


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``"0-2, 5, 7-8"``."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def id_summary(ids: list[str], limit: int = 320) -> str:
    """What a release holds, in one line: its ids with the layer number (and a per-layer ``average_l0_N``) folded
    into templates, e.g. ``layer_L_width_16k_l0_big, layer_L_width_16k_l0_small for L in 0-17 (36 ids)``."""
    import re

    templates: dict[str, list[int]] = {}
    for i in ids:
        m = re.search(r"layer_(\d+)", i)
        t = re.sub(r"average_l0_\d+", "average_l0_N", re.sub(r"layer_\d+", "layer_L", i))
        templates.setdefault(t, []).append(int(m.group(1)) if m else -1)
    by_layers: dict[str, list[str]] = {}
    for t, layers in templates.items():
        layers = sorted({x for x in layers if x >= 0})
        by_layers.setdefault(f" for L in {_ranges(layers)}" if layers else "", []).append(t)
    text = "; ".join(", ".join(ts) + where for where, ts in by_layers.items())
    if len(text) > limit:
        text = text[: limit - 1].rsplit(",", 1)[0] + ", …"
    return f"{text} ({len(ids)} ids)"


def _release(release: str):
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        import difflib

        close = difflib.get_close_matches(release, list(directory), n=6, cutoff=0.6)
        family = sorted(r for r in directory if r.rsplit("-", 1)[0] == release.rsplit("-", 1)[0] and r not in close)
        known = (close + family)[:8]
        hint = (
            f"releases like it: {', '.join(known)}"
            if known
            else f"{len(directory)} releases: see SAELens's pretrained_saes.yaml"
        )
        raise SFCError(f"unknown SAE release {release!r} ({hint})")
    return directory[release]


def _release_ids(release: str, sae_id: str = "*") -> list[str]:
    """The ids of ``release`` that ``sae_id`` names: itself, or those a shell pattern (``*``, ``?``, ``[..]``)
    matches, in the yaml's order; a one-line SFCError listing what the release holds when there are none."""
    import difflib
    from fnmatch import fnmatchcase

    ids = list(_release(release).saes_map)
    if any(c in sae_id for c in "*?["):
        found = [i for i in ids if fnmatchcase(i, sae_id)]
        if found:
            return found
        raise SFCError(f"no SAE id of {release!r} matches {sae_id!r} (it has {id_summary(ids)})")
    if sae_id in ids:
        return [sae_id]
    close = difflib.get_close_matches(sae_id, ids, n=1, cutoff=0.5)
    near = f"closest: {close[0]}; " if close else ""
    raise SFCError(f"SAE release {release!r} has no id {sae_id!r} ({near}it has {id_summary(ids)})")


def load_sae_dir(path: str | Path, device: str | None = None):
    """One SAELens SAE directory, checked first: cfg.json valid JSON, weights complete, every weight finite."""
    from sae_lens import SAE

    from . import validation as check

    path = Path(path)
    cfg = check.json_file(path / "cfg.json", "SAE config")
    if not isinstance(cfg, dict):
        raise SFCError(f"SAE config {str(path / 'cfg.json')!r} must be a JSON object, got {type(cfg).__name__}")
    check.safetensors_file(path / "sae_weights.safetensors", "SAE weights")
    arch = cfg.get("architecture")
    if arch is not None:
        from sae_lens.registry import SAE_CLASS_REGISTRY

        if arch not in SAE_CLASS_REGISTRY:
            raise SFCError(
                f"SAE {str(path)!r} has architecture {arch!r}, which is not an architecture SAELens registers "
                f"(registered: {', '.join(sorted(SAE_CLASS_REGISTRY))})"[:400]
            )
    try:
        sae = SAE.load_from_disk(str(path), device=device or "cpu")
    except Exception as exc:  # noqa: BLE001 - any way SAELens fails on a bad directory is one line naming it
        raise SFCError(f"cannot load SAE {str(path)!r} ({type(exc).__name__}: {exc})".splitlines()[0][:400]) from None
    check.sae_weights(sae, f"SAE {str(path)!r}")
    check.sae_works(sae, f"SAE {str(path)!r}")
    return sae


def safetensors_shapes(path: str | Path) -> dict[str, list[int]]:
    """``{tensor: shape}`` from a safetensors file's header (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
    return {name: info["shape"] for name, info in header.items() if name != "__metadata__"}


@contextlib.contextmanager
def cached_tensor_shapes():
    """SAELens reads some files' tensor shapes with HTTP range requests (Gemma Scope 2, the ``mntss`` CLTs), which
    fails offline even when the file is in the Hugging Face cache: inside this block it reads the cached file's
    header instead, when there is one (else it asks the hub as before)."""
    from huggingface_hub import try_to_load_from_cache
    from sae_lens.loading import pretrained_sae_loaders as loaders

    original = loaders.get_safetensors_tensor_shapes

    def shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
        cached = try_to_load_from_cache(repo_id, filename)
        return safetensors_shapes(cached) if isinstance(cached, str) else original(repo_id, filename)

    loaders.get_safetensors_tensor_shapes = shapes
    try:
        yield
    finally:
        loaders.get_safetensors_tensor_shapes = original


def load_sae_spec(spec: str, device: str | None = None) -> list:
    """SAEs from a spec: an SAELens SAE directory, a directory of them, ``release:sae_id``, ``release:*`` or
    ``release:PATTERN`` (a shell pattern over the release's ids, e.g. ``layer_*_width_16k_l0_big``).

    Each SAE gets ``sfc_spec`` (``{"release", "sae_id"}`` or ``{"path"}``) for provenance and messages.
    """
    from sae_lens import SAE

    path = Path(spec)
    if path.exists():
        dirs = [path] if _is_sae_dir(path) else sorted(p for p in path.iterdir() if _is_sae_dir(p))
        if not dirs:
            raise SFCError(f"no SAELens SAE (cfg.json) in {spec!r}")
        out = []
        for d in dirs:
            sae = load_sae_dir(d, device)
            sae.sfc_spec = {"path": str(d.resolve())}
            out.append(sae)
        return out
    if ":" not in spec:
        raise SFCError(f"SAE {spec!r} is neither a directory nor 'release:sae_id'")
    release, sae_id = spec.split(":", 1)
    ids = _release_ids(release, sae_id)
    out = []
    for i in ids:
        try:
            with cached_tensor_shapes(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="This loads the CLT layer as a single layer transcoder")
                sae = SAE.from_pretrained(release, i, device=device or "cpu")
        except Exception as exc:  # noqa: BLE001
            raise SFCError(f"cannot load SAE {release}:{i} ({type(exc).__name__}: {exc})".splitlines()[0]) from None
        sae.sfc_spec = {"release": release, "sae_id": i}
        out.append(sae)
    return out


def saes_by_hook(
    saes: Mapping[str, Any] | Iterable[Any], device: str | None = None, dtype=None, *, checked: bool = False
) -> dict[str, Any]:
    """``{hook_name: SAE}`` from a mapping or a sequence of SAEs (hook from ``cfg.metadata.hook_name``).

    Sequence items may also be SAE specs for :func:`load_sae_spec` (a directory saved by SAELens, a
    directory of them, ``release:sae_id`` or ``release:*``); SAEs loaded from specs are cast to ``dtype``
    when given (one copy of their weights, in the model's dtype). SAE objects are used as they are, their
    weights checked finite unless ``checked`` (they were, as they loaded: :func:`load_sae_dir`).
    """
    from . import validation as check

    if isinstance(saes, Mapping):
        for hook, sae in saes.items():
            if not isinstance(hook, str):
                raise SFCError(f"SAE mapping keys must be hook names, got {hook!r}")
            if not hasattr(sae, "cfg") or not hasattr(sae, "state_dict"):
                raise SFCError(f"SAE for hook {hook!r} is a {type(sae).__name__}, not an SAELens SAE")
            if not checked:
                check.sae_weights(sae, f"SAE at hook {hook!r}")
            reshape_hook_z(sae, hook)
        return dict(saes)
    if isinstance(saes, (str, Path)):
        saes = [saes]
    loaded, loaded_from_dirs = [], set()  # SAEs loaded from a directory were checked there, naming their path
    for item in saes:
        if isinstance(item, (str, Path)):
            for sae in load_sae_spec(str(item), device):
                if dtype is not None and sae.W_dec.dtype != dtype:
                    sae.to(dtype=dtype)
                loaded.append(sae)
                if Path(item).exists():
                    loaded_from_dirs.add(id(sae))
        else:
            loaded.append(item)
    out: dict[str, Any] = {}
    for sae in loaded:
        if not hasattr(sae, "cfg") or not hasattr(sae, "state_dict"):
            raise SFCError(f"{type(sae).__name__} {sae!r} is not an SAELens SAE nor an SAE spec"[:300])
        hook = sae_hook(sae)
        if not hook:
            raise SFCError(f"SAE {type(sae).__name__} has no cfg.metadata.hook_name; pass saes as {{hook_name: sae}}")
        if hook in out:
            raise SFCError(f"two SAEs for hook {hook!r}: {sae_label(out[hook])} and {sae_label(sae)}")
        if id(sae) not in loaded_from_dirs and not checked:
            check.sae_weights(sae, f"SAE at hook {hook!r}")
        out[hook] = reshape_hook_z(sae, hook)
    return out


def reshape_hook_z(sae, hook: str):
    """``sae`` reading ``attn.hook_z`` (``[..., n_heads, d_head]``) with its heads flattened, as SAELens does for
    SAEs with ``reshape_activations="hook_z"``. SAELens 6.54's ``gemma_3`` loader leaves Gemma Scope 2's
    attention SAEs (trained on ``o_proj``'s input: the same numbers, heads concatenated) at ``"none"``, so they
    cannot encode TransformerLens's ``hook_z`` as loaded; this turns SAELens's own reshaping on for them."""
    if (
        isinstance(hook, str)
        and hook.endswith("attn.hook_z")
        and getattr(sae.cfg, "reshape_activations", None) == "none"
    ):
        sae.cfg.reshape_activations = "hook_z"
        sae.turn_on_forward_pass_hook_z_reshaping()
    return sae


def _meta(sae, key: str):
    return getattr(getattr(sae.cfg, "metadata", None), key, None)


def _official_name(name: str | None) -> str | None:
    if not name:
        return None
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        return get_official_model_name(name)
    except ValueError:
        return None


def model_processing(saes: Mapping[str, Any]) -> dict:
    """The TransformerLens processing the SAEs were trained under (SAELens's ``model_from_pretrained_kwargs``
    on top of ``from_pretrained_no_processing``); SAEs that disagree are an error."""
    chosen, first = None, None
    for hook, sae in saes.items():
        kwargs = dict(_meta(sae, "model_from_pretrained_kwargs") or {})
        kwargs = {
            k: v
            for k, v in kwargs.items()
            if v
            or k
            not in (
                "fold_ln",
                "center_writing_weights",
                "center_unembed",
                "fold_value_biases",
                "refactor_factored_attn_matrices",
            )
        }
        if chosen is None:
            chosen, first = kwargs, sae_label(sae, hook)
        elif kwargs != chosen:
            raise SFCError(
                f"SAEs disagree on how to load the model: {first} wants {chosen or 'no processing'}, "
                f"{sae_label(sae, hook)} wants {kwargs or 'no processing'}"
            )
    return chosen or {}


def check_compatible(model, saes: Mapping[str, Any]) -> None:
    """Every SAE fits the model: its hook (a transcoder's input and output hooks) exists with the SAE's ``d_in``
    (``d_out``) as its width, its model name matches
    (when both are TransformerLens names), and all SAEs name one model."""
    from .dictionaries import check_hooks

    cfg = model.cfg
    names: dict[str, str] = {}  # official (or given) model name -> first SAE naming it
    for hook, sae in saes.items():
        sae_model = _meta(sae, "model_name")
        if sae_model:
            key = _official_name(sae_model) or sae_model
            names.setdefault(key, f"{sae_label(sae, hook)} is for {sae_model!r}")
    if len(names) > 1:
        first, second = list(names.values())[:2]
        raise SFCError(f"SAEs disagree on the model: {first}, {second}")
    model_official = _official_name(getattr(cfg, "model_name", None))
    for hook, sae in saes.items():
        label = sae_label(sae, hook)
        check_hooks(model, hook, sae, label)
        sae_model = _meta(sae, "model_name")
        official = _official_name(sae_model)
        if official and model_official and official != model_official:
            raise SFCError(f"{label} was trained on model {sae_model!r} but the model is {cfg.model_name!r}")


def add_read_hooks(model, saes: Mapping[str, Any]) -> None:
    """Give every MLP of ``model`` an ``mlp.hook_in`` (the MLP's input; SAELens's ``HookedSAETransformer`` adds it
    the same way, with SAELens's own function) when a dictionary in ``saes`` reads it. Idempotent."""
    from .dictionaries import read_hook_of

    if not any(isinstance(h, str) and read_hook_of(sae, h).endswith(".mlp.hook_in") for h, sae in saes.items()):
        return
    mlps = [b.mlp for b in getattr(model, "blocks", []) if hasattr(b, "mlp") and not hasattr(b.mlp, "hook_in")]
    if mlps:
        from sae_lens.analysis.hooked_sae_transformer import add_hook_in_to_mlp

        for mlp in mlps:
            add_hook_in_to_mlp(mlp)
        model.setup()


def share_tied_embedding(model):
    """``model`` with its unembedding a view of its embedding where the two are equal (tied embeddings, e.g. Qwen3:
    TransformerLens loads ``W_U`` as a copy of ``W_Eᵀ``). The engine and TransformerLens read ``W_U`` through
    matrix products, which take the transposed view as it is. Not Gemma: TransformerLens folds Gemma's √d_model
    embedding scale into ``W_E``, so its ``W_U`` differs and stays a copy."""
    import torch

    W_E, W_U = model.embed.W_E, getattr(getattr(model, "unembed", None), "W_U", None)
    if W_U is None or W_U.shape != W_E.T.shape or W_U.data_ptr() == W_E.data_ptr():
        return model
    with torch.no_grad():
        if torch.equal(W_U, W_E.T):
            model.unembed.W_U = torch.nn.Parameter(W_E.T, requires_grad=W_U.requires_grad)
    return model


def _is_bridge(model) -> bool:
    return any(c.__name__ == "TransformerBridge" for c in type(model).__mro__)


def resolve_world(
    model, saes, *, device: str | None = None, dtype=None, processing: dict | None = None, checked: bool = False
) -> tuple[Any, dict[str, Any]]:
    """``(HookedTransformer, {hook: SAE})`` from specs or objects, checked against each other.

    SAEs are loaded first, so a model given by name or directory is loaded the way they were trained
    (their ``model_from_pretrained_kwargs``; none: no processing, the Hugging Face activations).
    ``processing`` overrides that choice (presets whose SAEs disagree say which to follow). ``checked``:
    the SAE objects' weights were checked finite already. :meth:`sfc_plugin.World.load` builds on this.
    """
    if _is_bridge(model):
        raise SFCError(
            "TransformerBridge models are not supported: pass a HookedTransformer "
            "(HookedTransformer.from_pretrained_no_processing(name)) or the model's name or directory"
        )
    by_hook = saes_by_hook(saes, device, resolve_dtype(dtype), checked=checked)
    if not by_hook:
        raise SFCError("no SAEs given")
    if isinstance(model, (str, Path)):
        chosen = model_processing(by_hook) if processing is None else processing
        model = share_tied_embedding(load_model_spec(str(model), device, dtype, chosen))
    elif not hasattr(model, "hook_dict") or not hasattr(model, "run_with_hooks"):
        raise SFCError(f"model of type {type(model).__name__} is not a TransformerLens HookedTransformer")
    else:
        if device is not None:
            model.to(device)
        if dtype is not None:
            _cast(model, resolve_dtype(dtype))
    add_read_hooks(model, by_hook)
    check_compatible(model, by_hook)
    return model, by_hook
