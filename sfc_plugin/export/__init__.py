"""Built-in circuit exporters, registered through the ``sfc_exporters`` hook."""

from __future__ import annotations

from pathlib import Path

from ..plugins import hookimpl


def export_json(circuit, path, **_options) -> None:
    circuit.to_json(path)


def export_dot(circuit, path, **_options) -> None:
    from ..circuit import write_atomic

    write_atomic(Path(path), circuit.to_dot())


@hookimpl
def sfc_exporters():
    return {"json": export_json, "dot": export_dot}
