"""torch.distributed for sfc: one process per rank (torchrun), gloo on CPU, NCCL on GPU, same code.

Launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` /
``MASTER_PORT``), :func:`init` joins the process group; on one machine or many, torchrun's rendezvous
does the rest. Without those variables everything runs in one process and :func:`init` returns None.

Work is split statically (item ``i`` goes to rank ``i mod world``), so which rank does what depends
only on the world size, and results gathered on rank 0 do not depend on timing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import SFCError


@dataclass
class Group:
    """This process's place in the process group."""

    rank: int
    world: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> str:
        """The device this rank should compute on: its own GPU with NCCL, else the CPU."""
        return f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"

    def mine(self, items: Sequence) -> list:
        """This rank's share of ``items``: every ``world``-th one, starting at ``rank``."""
        return list(items)[self.rank :: self.world]

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def all_reduce_sum(self, tensor):
        """``tensor`` summed over ranks (returned; reduced in float64 so the order of ranks barely matters)."""
        import torch.distributed as dist

        wide = tensor.detach().to(dtype=_wide(tensor)).clone()
        dist.all_reduce(wide, op=dist.ReduceOp.SUM)
        return wide.to(tensor.dtype)

    def all_gather_object(self, obj: Any) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (small picklable Python values only)."""
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def any_failed(self, failed: bool) -> bool:
        """True on every rank when any rank reports ``failed`` (to stop all ranks together)."""
        return any(self.all_gather_object(bool(failed)))


def reduce_sums(group: Group | None, sums: dict[str, Any]) -> dict[str, Any]:
    """Data parallelism's one reduction: every value of ``sums`` (tensors or floats, by string key)
    summed over ranks, returned on every rank. A rank that had no examples may lack keys: it adds
    zeros of the shape another rank reports. Keys are reduced in sorted order on every rank.
    """
    import torch

    if group is None:
        return sums
    meta: dict[str, Any] = {}
    for reported in group.all_gather_object(
        {
            k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) if torch.is_tensor(v) else None
            for k, v in sums.items()
        }
    ):
        for k, m in reported.items():
            if meta.get(k) is None:  # a tensor's shape wins over a rank's plain 0.0
                meta[k] = m
    out = {}
    for key in sorted(meta):
        value = sums.get(key)
        if meta[key] is None:
            total = torch.tensor([float(value or 0.0)], dtype=torch.float64, device=group.device)
            out[key] = float(group.all_reduce_sum(total)[0])
        else:
            shape, dtype = meta[key]
            if not torch.is_tensor(value):
                value = torch.zeros(shape, dtype=getattr(torch, dtype), device=group.device) + float(value or 0.0)
            out[key] = group.all_reduce_sum(value)
    return out


def reduce_node_sums(group: Group | None, feat: dict, err: dict, total: float) -> tuple[dict, dict, float]:
    """``discover``'s node-effect sums (per submodule) and metric total, summed over ranks."""
    if group is None:
        return feat, err, total
    red = reduce_sums(
        group, {**{f"feat/{k}": v for k, v in feat.items()}, **{f"err/{k}": v for k, v in err.items()}, "total": total}
    )
    return {k: red[f"feat/{k}"] for k in feat}, {k: red[f"err/{k}"] for k in err}, red["total"]


def reduce_edge_sums(group: Group | None, weights: dict) -> dict:
    """``discover``'s edge-weight sums ``{(up, down): tensor}``, summed over ranks."""
    if group is None:
        return weights
    keys = {f"{u}>{d}": (u, d) for u, d in weights}
    for reported in group.all_gather_object(list(keys)):
        keys.update({k: tuple(k.split(">")) for k in reported if k not in keys})
    red = reduce_sums(group, {k: weights[keys[k]] for k in keys if keys[k] in weights})
    return {keys[k]: v for k, v in red.items()}


def _wide(tensor):
    import torch

    return torch.float64 if tensor.is_floating_point() else tensor.dtype


_GROUP: Group | None = None


def launched() -> bool:
    """True when this process was started by torchrun (or another launcher) with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(backend: str | None = None) -> Group | None:
    """Join the process group described by torchrun's environment variables (None for one process).

    ``backend``: ``gloo`` or ``nccl``; default NCCL when CUDA is available, else gloo.
    """
    global _GROUP
    if _GROUP is not None:
        return _GROUP
    if not launched():
        return None
    import torch
    import torch.distributed as dist

    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise SFCError(f"unknown distributed backend {backend!r} (known: gloo, nccl)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    _GROUP = Group(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    return _GROUP


def current() -> Group | None:
    """The group joined by :func:`init`, or None."""
    return _GROUP


def shutdown() -> None:
    """Leave the process group (call once, at the end)."""
    global _GROUP
    if _GROUP is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _GROUP = None
