"""One memory budget for discovery: every chunk (IG rows, edge cotangents, evaluation batches) is sized from it.

``max_memory`` bounds the *working* memory of a run: what attribution allocates on top of the model and
SAE weights already loaded. Sizes come from per-row estimates that count positions, layers, ``d_model``,
``d_mlp``, heads, ``d_sae``, the vocabulary (only at the positions a metric reads) and the number of
SAEs. The constants below were fitted to measured peaks (see the README's memory model) and err high.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SFCError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
DEFAULT_FRACTION = 0.5  # of the memory free on the device when no budget is given
CPU_DEFAULT_CAP = 2e9  # on the host, at most this much by default: larger chunks are no faster on a CPU, and
# host memory is shared with everything else (a GPU's free memory is the run's to use)


def parse_memory(value) -> int:
    """Bytes from ``4GB``, ``512MiB``, ``1.5e9`` or a number; SFCError naming the value otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(value).lower())
        if not m or m.group(2) not in _UNITS:
            raise SFCError(f"max_memory {value!r} is not a size such as 4GB, 512MiB or 2e9")
        n = float(m.group(1)) * _UNITS[m.group(2)]
    if n <= 0:
        raise SFCError(f"max_memory {value!r} must be positive")
    return int(n)


def format_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def free_memory(device) -> int:
    """Bytes free on ``device`` now: CUDA's free memory, or the host's available memory."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return 8 * 2**30


@dataclass(frozen=True)
class Shape:
    """What the estimates need of a model: taken from a TransformerLens config."""

    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    d_vocab: int
    itemsize: int

    @classmethod
    def of(cls, cfg) -> Shape:
        import torch

        d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
        return cls(
            cfg.n_layers,
            cfg.d_model,
            d_mlp,
            cfg.n_heads,
            cfg.d_vocab_out if cfg.d_vocab_out > 0 else cfg.d_vocab,
            torch.empty((), dtype=cfg.dtype).element_size(),
        )


@dataclass(frozen=True)
class MemoryBudget:
    """``bytes`` of working memory; ``rows(...)`` turns a per-row estimate into a chunk size."""

    bytes: int
    shape: Shape
    given: bool = True  # False: derived from free memory

    @classmethod
    def resolve(cls, max_memory, model, device=None) -> MemoryBudget:
        shape = Shape.of(model.cfg)
        if max_memory is not None:
            return cls(parse_memory(max_memory), shape, True)
        import torch

        dev = torch.device(device or next(model.parameters()).device)
        n = free_memory(dev) * DEFAULT_FRACTION
        if dev.type != "cuda":
            n = min(n, CPU_DEFAULT_CAP)
        return cls(max(int(n), 1), shape, False)

    def rows(self, per_row: float, what: str, share: float = 1.0, cap: int | None = None) -> int:
        """How many rows of ``per_row`` bytes fit in ``share`` of the budget (at least one, or SFCError)."""
        room = self.bytes * share
        n = int(room // max(per_row, 1))
        if n < 1:
            need = per_row / share
            raise SFCError(
                f"max_memory {format_bytes(self.bytes)} is too small: one {what} row needs about "
                f"{format_bytes(per_row)}; give at least --max-memory {need / 1e9:.2f}GB or use shorter prompts"
            )
        return n if cap is None else max(1, min(n, cap))

    def circuit(self, held: float, n_nodes: int, share: float) -> None:
        """SFCError unless ``held`` bytes (what the edges pass keeps for a circuit of ``n_nodes`` nodes:
        its edge weights and node deltas) fit in ``share`` of the budget; it names what would fit."""
        room = self.bytes * share
        if held <= room:
            return
        fit = int(n_nodes * (room / held) ** 0.5)  # edge weights grow with the square of the node count
        raise SFCError(
            f"max_memory {format_bytes(self.bytes)} is too small for a circuit of {n_nodes:,} nodes: its edge "
            f"weights and node deltas need about {format_bytes(held)}; give at least --max-memory "
            f"{held / share / 1e9:.2f}GB or raise --node-threshold (about {fit:,} nodes would fit)"
        )

    # ---- per-row estimates (bytes) -------------------------------------------------------------
    def layer_bytes(self, pos: int, grad: bool) -> float:
        """Activations one block keeps for one row: residual-sized tensors, MLP hidden, attention scores."""
        s = self.shape
        floats = pos * (14 * s.d_model + 4 * s.d_mlp + 4 * s.n_heads * pos)
        return floats * s.itemsize * (1.0 if grad else 0.35)

    def head_bytes(self, metric_pos: int) -> float:
        """Logits at the metric's positions, their softmax and gradient."""
        return 4 * metric_pos * self.shape.d_vocab * self.shape.itemsize

    def forward_row(self, pos: int, layers: int, metric_pos: int, grad: bool = True, extra_d: int = 0) -> float:
        """One row of a (forward[, backward]) pass through ``layers`` blocks; ``extra_d``: more ``[pos, d_model]`` tensors."""
        s = self.shape
        return (
            layers * self.layer_bytes(pos, grad)
            + self.head_bytes(metric_pos)
            + (4 + extra_d) * pos * s.d_model * s.itemsize
        )

    def encode_row(self, d_sae: int) -> float:
        """One token through a dense SAE encoder (pre-activations, features, top-k scratch)."""
        return 3 * d_sae * self.shape.itemsize

    def cotangent_row(self, pos: int, n_up: int) -> float:
        """One downstream node's cotangent ``[pos, d]`` for one example, its VJP into ``n_up`` submodules
        and the backward through one block."""
        s = self.shape
        return pos * s.d_model * s.itemsize * (3 + n_up) + self.layer_bytes(pos, True)
