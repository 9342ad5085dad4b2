"""Built-in circuit exporters and feature label providers, registered through the same hooks as plugins.

Exporters (``sfc_exporters``): ``dot`` (DOT text, no binary needed), ``svg``/``png``/``pdf`` (rendered by
the Graphviz ``dot`` program), ``json`` (``sfc-circuit/1``), ``neuronpedia`` or its alias ``circuit-tracer`` (circuit-tracer's graph
files: ``<slug>.json`` plus ``graph-metadata.json``).
Label providers (``sfc_label_providers``): ``annotations``, ``summary``, ``neuronpedia``.
"""

from __future__ import annotations

from pathlib import Path

from ..plugins import hookimpl
from .labels import PROVIDERS, apply_labels

__all__ = ["apply_labels", "export", "EXTENSIONS"]

# format -> default file extension
EXTENSIONS = {
    "dot": ".dot",
    "svg": ".svg",
    "png": ".png",
    "pdf": ".pdf",
    "json": ".json",
    "neuronpedia": ".neuronpedia.json",
    "circuit-tracer": ".neuronpedia.json",
}


def export_json(circuit, path, **_options) -> None:
    circuit.to_json(path)


def export_dot(
    circuit,
    path,
    order: str = "layout",
    max_edges=None,
    max_nodes_per_row=None,
    wrap=None,
    keep_isolated: bool = False,
    legend: bool = True,
    **_options,
) -> None:
    from ..files import write_atomic
    from .dot import circuit_to_dot

    write_atomic(
        Path(path),
        circuit_to_dot(
            circuit,
            order=order,
            max_edges=max_edges,
            max_nodes_per_row=max_nodes_per_row,
            wrap=wrap,
            keep_isolated=keep_isolated,
            legend=legend,
        ),
    )


def _figure(fmt: str):
    def export_figure(circuit, path, **options) -> None:
        from .render import render_file

        render_file(circuit, path, fmt, **options)

    export_figure.__name__ = f"export_{fmt}"
    return export_figure


def export_neuronpedia(circuit, path, **options) -> None:
    from .neuronpedia import export_neuronpedia as write

    write(circuit, path, **options)


def export(circuit, path, fmt: str, pm=None, **options) -> Path:
    """Write ``circuit`` to ``path`` with the exporter registered for ``fmt``."""
    from ..plugins import lookup

    lookup("exporter", fmt, pm)(circuit, path, **options)
    return Path(path)


@hookimpl
def sfc_exporters():
    return {
        "json": export_json,
        "dot": export_dot,
        "svg": _figure("svg"),
        "png": _figure("png"),
        "pdf": _figure("pdf"),
        "neuronpedia": export_neuronpedia,
        "circuit-tracer": export_neuronpedia,
    }


@hookimpl
def sfc_label_providers():
    return dict(PROVIDERS)
