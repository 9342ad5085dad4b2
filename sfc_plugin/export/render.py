"""Render a circuit's DOT with the Graphviz ``dot`` program (svg, png, pdf)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import SFCError
from ..files import write_atomic

FORMATS = ("svg", "png", "pdf")
INSTALL_HINT = (
    "install Graphviz (apt-get install graphviz, brew install graphviz, or conda install -c conda-forge "
    "graphviz), or use --format dot, which needs no binary"
)


def dot_binary() -> str | None:
    """Path of the Graphviz ``dot`` program, or None when it is not installed."""
    return shutil.which("dot")


def render(
    circuit_or_dot,
    fmt: str = "svg",
    timeout: float | None = 600,
    max_edges="auto",
    order: str = "layout",
    max_nodes_per_row="auto",
    wrap: int | None = None,
    keep_isolated: bool = False,
    legend: bool = True,
) -> bytes:
    """The rendered figure as bytes; ``circuit_or_dot`` is a Circuit or DOT text.

    So that real circuits stay readable, a figure shows at most ``max_nodes_per_row`` nodes per submodule row, the
    strongest (``"auto"``: 20; ``None``: all), then at most ``max_edges`` edges, the strongest (``"auto"``: three
    per node, at least 150; ``None``: all), and no node without edges unless ``keep_isolated``; the title says
    what was left out. ``wrap`` continues rows longer than that on further lines.
    """
    if fmt not in FORMATS:
        raise SFCError(f"unknown figure format {fmt!r} (known: {', '.join(FORMATS)})")
    exe = dot_binary()
    if exe is None:
        raise SFCError(f"rendering {fmt} needs the Graphviz 'dot' program, which is not installed: {INSTALL_HINT}")
    if isinstance(circuit_or_dot, str):
        source = circuit_or_dot
    else:
        from .dot import circuit_to_dot

        source = circuit_to_dot(
            circuit_or_dot,
            order=order,
            max_edges=max_edges,
            max_nodes_per_row=max_nodes_per_row,
            wrap=wrap,
            keep_isolated=keep_isolated,
            legend=legend,
        )
    args = [exe, f"-T{fmt}"] + (["-Gdpi=110"] if fmt == "png" else [])
    try:
        done = subprocess.run(args, input=source.encode("utf-8"), capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SFCError(
            f"Graphviz took longer than {timeout}s to render; prune the circuit (--node-threshold)"
        ) from None
    if done.returncode != 0:
        msg = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[0]
        raise SFCError(f"Graphviz 'dot' failed to render {fmt} (exit {done.returncode}): {msg}")
    return done.stdout


def render_file(
    circuit,
    path,
    fmt: str | None = None,
    max_edges="auto",
    order: str = "layout",
    max_nodes_per_row="auto",
    wrap: int | None = None,
    keep_isolated: bool = False,
    legend: bool = True,
    **_options,
) -> Path:
    """Render to ``path`` (format from ``fmt`` or the suffix), written atomically; see :func:`render`."""
    path = Path(path)
    data = render(
        circuit,
        fmt or path.suffix.lstrip(".").lower(),
        max_edges=max_edges,
        order=order,
        max_nodes_per_row=max_nodes_per_row,
        wrap=wrap,
        keep_isolated=keep_isolated,
        legend=legend,
    )
    return write_atomic(path, data)
