"""Plugin manager: built-ins and entry-point plugins, merged into typed registries."""

from __future__ import annotations

import functools
import importlib
import warnings
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


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Register every ``sfc_plugin`` entry point; a broken one warns and is skipped."""
    for ep in metadata.entry_points(group=PROJECT):
        if pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the rest
            warnings.warn(f"sfc_plugin: plugin {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)
            continue
        dist = getattr(ep, "dist", None)
        pm.register(plugin, name=ep.name if dist is None else f"{dist.name}:{ep.name}")


def new_plugin_manager(entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh manager with the built-ins (and, by default, installed entry-point plugins)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for modname in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname)
    if entry_points:
        _load_entry_points(pm)
    return pm


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built-ins plus installed plugins)."""
    return new_plugin_manager()


def registry(kind: str, pm: pluggy.PluginManager | None = None) -> dict[str, Entry]:
    """``{name: Entry}`` for one registry kind (``method``, ``metric``, ``dataset``, ``exporter``).

    Built-ins are registered first; a later plugin that reuses a name overrides it with a warning.
    """
    pm = pm or get_plugin_manager()
    hook = getattr(pm.hook, REGISTRIES[kind])
    out: dict[str, Entry] = {}
    for impl in reversed(hook.get_hookimpls()):  # registration order
        for name, obj in (impl.function() or {}).items():
            if name in out:
                warnings.warn(f"sfc_plugin: {kind} {name!r} from {out[name].plugin} overridden by {impl.plugin_name}", stacklevel=2)
            out[name] = Entry(name, obj, impl.plugin_name)
    return out


def lookup(kind: str, name: str, pm: pluggy.PluginManager | None = None) -> Any:
    """The registered object, or an SFCError listing the known names."""
    reg = registry(kind, pm)
    if name not in reg:
        raise SFCError(f"unknown {kind} {name!r} (known: {', '.join(sorted(reg)) or 'none'})")
    return reg[name].obj
