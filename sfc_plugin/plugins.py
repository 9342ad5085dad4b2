"""Plugin manager: built-ins and entry-point plugins, merged into typed registries."""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import SFCError

PROJECT = "sfc_plugin"
hookimpl = pluggy.HookimplMarker(PROJECT)

BUILTIN_PLUGINS = (
    "sfc_plugin.attribution.builtin",
    "sfc_plugin.metrics",
    "sfc_plugin.data",
    "sfc_plugin.export",
    "sfc_plugin.dashboards.plugin",
    "sfc_plugin.ablations",
    "sfc_plugin.shifting.judges",
    "sfc_plugin.toy.plugin",
)

# registry kind -> hook name
REGISTRIES = {
    "method": "sfc_attribution_methods",
    "metric": "sfc_metrics",
    "dataset": "sfc_datasets",
    "exporter": "sfc_exporters",
    "label_provider": "sfc_label_providers",
    "ablation": "sfc_ablations",
    "judge": "sfc_feature_judges",
}


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    plugin: str


class Lazy:
    """A registry value that imports ``module:attr`` on first use, so listing names stays import-light.

    Built-ins whose code needs torch register ``Lazy(...)`` references; :func:`lookup` returns the real object.
    """

    def __init__(self, module: str, attr: str):
        self.module, self.attr = module, attr

    def resolve(self) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Lazy({self.module}:{self.attr})"


def broken_plugins(pm: pluggy.PluginManager | None = None) -> dict[str, str]:
    """``{plugin name: why it was skipped}`` for plugins that failed to load, register or answer a hook."""
    pm = pm or get_plugin_manager()
    return getattr(pm, "sfc_broken", {})


def _mark_broken(pm: pluggy.PluginManager, name: str, why: str) -> None:
    """Record a broken plugin and warn once, naming it (the host goes on without it)."""
    broken = pm.__dict__.setdefault("sfc_broken", {})
    if name in broken:
        return
    broken[name] = why
    warnings.warn(f"sfc_plugin: plugin {name!r} skipped: {why}", stacklevel=3)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Register every ``sfc_plugin`` entry point; a broken one (any exception, ``sys.exit`` included) warns and is skipped."""
    try:
        eps = list(metadata.entry_points(group=PROJECT))
    except Exception as exc:  # noqa: BLE001 - unreadable metadata of some distribution
        _mark_broken(pm, "(entry points)", f"cannot read installed entry points ({_describe(exc)})")
        return
    for ep in eps:
        dist = getattr(ep, "dist", None)
        name = ep.name if dist is None else f"{dist.name}:{ep.name}"
        if pm.has_plugin(ep.name) or pm.has_plugin(name):
            continue
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken plugin must not break the rest
            _mark_broken(pm, name, f"failed to load {ep.value} ({_describe(exc)})")
            continue
        try:
            pm.register(plugin, name=name)
            pm.check_pending()  # a hook the project does not define (a typo) is an error, not silence
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - e.g. a hook with a signature the spec does not have
            if pm.has_plugin(name):
                pm.unregister(name=name)
            _mark_broken(pm, name, f"failed to register ({_describe(exc)})")


def new_plugin_manager(entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh manager with the built-ins (and, by default, installed entry-point plugins)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.sfc_broken = {}
    for modname in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname)
    if entry_points:
        _load_entry_points(pm)
    return pm


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built-ins plus installed plugins)."""
    return new_plugin_manager()


def _hook_result(pm, kind: str, impl) -> dict[str, Any] | None:
    """One plugin's answer to a registry hook, or None (with one warning) when it raises or answers wrongly."""
    try:
        result = impl.function()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolate plugins from the host
        if impl.plugin_name in BUILTIN_PLUGINS:
            raise
        _mark_broken(pm, impl.plugin_name, f"hook {REGISTRIES[kind]} raised {_describe(exc)}")
        return None
    if result is None:
        return {}
    if not isinstance(result, Mapping):
        why = f"hook {REGISTRIES[kind]} returned {type(result).__name__}, expected a dict of {{name: callable}}"
    else:
        bad = next(((k, v) for k, v in result.items() if not isinstance(k, str) or not k or not callable(v)), None)
        if bad is None:
            return dict(result)
        why = (
            f"hook {REGISTRIES[kind]} returned name {bad[0]!r}"
            if not isinstance(bad[0], str) or not bad[0]
            else f"hook {REGISTRIES[kind]} returned {type(bad[1]).__name__} for {kind} {bad[0]!r}, expected a callable"
        )
    _mark_broken(pm, impl.plugin_name, why)
    return None


def registry(kind: str, pm: pluggy.PluginManager | None = None) -> dict[str, Entry]:
    """``{name: Entry}`` for one registry kind (``method``, ``metric``, ``dataset``, ``exporter``, ...).

    Built-ins are registered first; a later plugin that reuses a name overrides it with a warning. A plugin
    whose hook raises (``SystemExit`` included) or returns something other than ``{name: callable}`` is
    skipped with one warning naming it (see :func:`broken_plugins`).
    """
    pm = pm or get_plugin_manager()
    hook = getattr(pm.hook, REGISTRIES[kind])
    out: dict[str, Entry] = {}
    for impl in reversed(hook.get_hookimpls()):  # registration order
        if impl.plugin_name in broken_plugins(pm):
            continue
        for name, obj in (_hook_result(pm, kind, impl) or {}).items():
            if name in out:
                warnings.warn(
                    f"sfc_plugin: {kind} {name!r} from {out[name].plugin} overridden by {impl.plugin_name}",
                    stacklevel=2,
                )
            out[name] = Entry(name, obj, impl.plugin_name)
    return out


def _guarded(obj: Any, kind: str, name: str, plugin: str) -> Any:
    """A third-party plugin's callable whose failures (``SystemExit`` included) become one-line SFCErrors."""

    @functools.wraps(obj)
    def call(*args, **kwargs):
        try:
            return obj(*args, **kwargs)
        except SFCError:
            raise
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            raise SFCError(f"{kind} {name!r} of plugin {plugin!r} failed: {_describe(exc)}") from exc

    return call


def lookup(kind: str, name: str, pm: pluggy.PluginManager | None = None) -> Any:
    """The registered object, or an SFCError listing the known names.

    A third-party plugin's object comes wrapped so that its failures are one-line SFCErrors naming the plugin.
    """
    reg = registry(kind, pm)
    if name not in reg:
        raise SFCError(f"unknown {kind} {name!r} (known: {', '.join(sorted(reg)) or 'none'})")
    entry = reg[name]
    obj = entry.obj.resolve() if isinstance(entry.obj, Lazy) else entry.obj
    return obj if entry.plugin in BUILTIN_PLUGINS else _guarded(obj, kind, name, entry.plugin)
