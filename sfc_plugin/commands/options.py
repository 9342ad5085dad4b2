"""What the commands share: options generated from the config dataclasses, the world options, settings, the world."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import WorldConfig, help_text, options, resolve

_TYPES = {"int": int, "float": float, "bool": bool}


def _type(annotation: str):
    """``int``/``float``/``bool`` of an annotation such as ``"int | None"`` or ``"list[float] | None"``."""
    parts = [t.strip() for t in str(annotation).split("|") if t.strip() != "None"]
    name = parts[0] if len(parts) == 1 else ""
    name = name[5:-1] if name.startswith("list[") else name
    return _TYPES.get(name)


def add_options(parser: argparse.ArgumentParser, *classes: type, help: dict[str, str] | None = None) -> None:
    """One option per setting of ``classes`` (see :func:`sfc_plugin.config.setting`), default None: what is not
    given comes from the config file or the dataclass (:func:`settings`). ``help`` replaces fields' help."""
    for f in options(*classes):
        kwargs: dict[str, Any] = dict(f.metadata["argparse"])
        kind = _type(f.type)
        if "action" not in kwargs and (kind is bool or f.metadata.get("check") == "bool"):
            kwargs["action"] = "store_true"
        elif "action" not in kwargs and kind is not None:
            kwargs["type"] = kind
        flags = f.metadata["flags"] or ("--" + f.name.replace("_", "-"),)
        text = (help or {}).get(f.name) or help_text(f)
        parser.add_argument(*flags, dest=f.name, default=None, help=text, **kwargs)


def add_world_options(parser: argparse.ArgumentParser, **help: str) -> None:
    """``--model``, ``--sae``, ``--preset``, ``--device``, ``--dtype``, ``--threads`` (every command that loads a model)."""
    add_options(parser, WorldConfig, help=help)


def add_config_option(parser: argparse.ArgumentParser, command: str, help: str | None = None) -> None:
    parser.add_argument(
        "--config",
        help=help
        or f"TOML file: its [{command}] table (keys as the long option names), else the model/sae/preset/device/dtype "
        "of a discover config",
    )


def add_quiet(parser: argparse.ArgumentParser, help: str = "no progress bars") -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help=help)


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty output directory that sfc did not create"
    )


def settings(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Command line over config file (``--config``) over the dataclasses' defaults, validated."""
    return resolve(command, vars(args), getattr(args, "config", None))


def fill_world(s: dict[str, Any], provenance: dict, what: str = "circuit") -> dict[str, Any]:
    """Model and SAE specs not given (command line, config file or preset) taken from a circuit's or an edit's
    provenance."""
    from ..world import recorded_specs

    if s.get("preset") or (s["model"] is not None and s["sae"]):
        return s
    recorded = recorded_specs(provenance, what)
    return dict(s, model=s["model"] or recorded.get("model"), sae=s["sae"] or recorded.get("sae"))


def load_world(s: dict[str, Any], device: str | None = None):
    """:meth:`sfc_plugin.World.load` with the world settings ``s`` (``device`` replaces ``s["device"]``), after
    setting torch's CPU threads (:mod:`sfc_plugin.threads`)."""
    from .. import threads
    from ..world import World

    threads.apply(s.get("threads"))
    return World.load(
        model=s["model"], sae=s["sae"], preset=s["preset"], device=device or s["device"], dtype=s["dtype"]
    )
