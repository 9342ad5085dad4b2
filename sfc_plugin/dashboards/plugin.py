"""Built-in plugin: the ``auto`` label provider (labels from feature dashboards)."""

from __future__ import annotations

from ..plugins import hookimpl
from .labels import auto


@hookimpl
def sfc_label_providers():
    return {"auto": auto}
