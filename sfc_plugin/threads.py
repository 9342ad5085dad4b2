"""How many CPU threads torch should use here: the cores this process may run on, less the ones others keep busy.

torch starts one intra-op thread per core it sees. On a shared machine (a CI runner, a server, a laptop with a
browser open) some of those cores are busy, and every parallel region then waits for a descheduled thread:
on 2 cores with one other busy process the toy node phase ran 6.9× slower with torch's default than alone,
1.4× with one thread. The policy, in order:

1. an explicit count (``sfc ... --threads N``, :func:`apply` ``(N)``);
2. ``OMP_NUM_THREADS`` in the environment (torch reads it itself; we leave it alone);
3. otherwise the usable cores — CPU affinity (``sched_getaffinity``) capped by a cgroup CPU quota
   (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) — minus the cores the rest of the
   machine keeps busy (measured from ``/proc/stat`` over 0.2 s while we sleep; the 1-minute load average where
   that file is missing), when the machine has no more cores than we may use; at least one. Niced processes'
   time counts as free only where the kernel's autogroup scheduling is off: with it on (most desktop and server
   distributions), a niced job started from another terminal or session competes with us as an equal.

While a chosen count is in force, attribution and evaluation call :func:`recheck` between batches: from
``/proc/stat`` and this process's own CPU time since the last look (at least half a second ago; nothing sleeps) it
counts the cores others keep busy and sets the threads again, so a run that started on an idle machine gives a
core back when another job starts beside it, and takes it again when that job ends.

CUDA work is not affected: the policy sets torch's CPU intra-op threads only.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP) -> float | None:
    """The cgroup's CPU quota in cores (``2.5`` for 250 ms per 100 ms), or None without a quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000" or "250000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores(root: Path = CGROUP) -> int:
    """Cores this process may use: its CPU affinity, capped by the cgroup quota (rounded up), at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


def autogroup_enabled(path: Path = AUTOGROUP) -> bool:
    """Whether the kernel schedules by autogroup (one group per session): then a process's nice value only ranks
    it within its own session, and a niced job in another session takes its full share of a core."""
    try:
        return path.read_text().strip() != "0"
    except OSError:
        return False


def _cpu_times(stat: Path, nice_is_free: bool = True) -> tuple[int, int]:
    """``(busy, total)`` jiffies of all cores from ``/proc/stat``'s first line. With ``nice_is_free`` niced
    processes' time (``nice``) counts as free: they yield a core to a process of normal priority."""
    fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
    free = fields[3] + (fields[4] if len(fields) > 4 else 0) + (fields[1] if nice_is_free else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - free, total


def busy_elsewhere(
    cores: int, window: float = 0.2, stat: Path = Path("/proc/stat"), autogroup: Path = AUTOGROUP
) -> int:
    """Cores kept busy by other processes, rounded: measured over ``window`` seconds from ``/proc/stat`` while this
    process sleeps (else the 1-minute load average). Machine-wide figures say nothing about our share on a machine
    with more cores than this process may use: there, 0."""
    if (os.cpu_count() or cores) > cores:
        return 0
    nice_is_free = not autogroup_enabled(autogroup)
    try:
        b0, t0 = _cpu_times(stat, nice_is_free)
        time.sleep(window)
        b1, t1 = _cpu_times(stat, nice_is_free)
        busy = (b1 - b0) / max(t1 - t0, 1) * (os.cpu_count() or cores)
    except (OSError, ValueError, IndexError):
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0
    return int(busy + 0.5)


def choose(
    requested: int | None = None,
    *,
    environ=os.environ,
    root: Path = CGROUP,
    stat: Path = Path("/proc/stat"),
    autogroup: Path = AUTOGROUP,
) -> tuple[int | None, str]:
    """``(threads, why)``: the count to set (None: leave torch as it is) and a one-line reason."""
    if requested is not None:
        return requested, f"--threads {requested}"
    if environ.get("OMP_NUM_THREADS"):
        return None, f"OMP_NUM_THREADS={environ['OMP_NUM_THREADS']}"
    cores = usable_cores(root)
    busy = min(busy_elsewhere(cores, stat=stat, autogroup=autogroup), cores - 1)
    why = f"{cores} usable core{'s' * (cores != 1)}"
    return cores - busy, why + (f", {busy} busy elsewhere" if busy else "")


class Governor:
    """The policy again between batches: the cores others kept busy since the last look, from ``/proc/stat`` less
    this process's own CPU time over the same wall time (so nothing sleeps), at most once per ``interval``."""

    def __init__(
        self,
        cores: int,
        stat: Path = Path("/proc/stat"),
        autogroup: Path = AUTOGROUP,
        interval: float = 0.5,
        clock=time.monotonic,
        own_cpu=time.process_time,
    ):
        self.cores, self.stat, self.interval, self.clock, self.own_cpu = cores, stat, interval, clock, own_cpu
        self.nice_is_free = not autogroup_enabled(autogroup)
        self.started = clock()
        self.changes: list[tuple[float, int]] = []  # (seconds since start, threads set)
        self._mark()

    def _mark(self) -> None:
        self.busy, self.total = _cpu_times(self.stat, self.nice_is_free)
        self.own, self.wall = self.own_cpu(), self.clock()

    def check(self) -> int | None:
        """Threads to use now; None before ``interval`` has passed since the last look."""
        busy, total, own, wall = self.busy, self.total, self.own, self.wall
        if self.clock() - wall < self.interval:
            return None
        self._mark()
        machine = (self.busy - busy) / max(self.total - total, 1) * (os.cpu_count() or self.cores)
        others = max(0.0, machine - (self.own - own) / max(self.wall - wall, 1e-9))
        return self.cores - min(int(others + 0.5), self.cores - 1)


_governor: Governor | None = None  # set by apply() while the policy (not --threads or OMP_NUM_THREADS) decides


def apply(requested: int | None = None) -> str:
    """Set torch's intra-op threads by the policy; returns the reason (for logs and ``bench.json``).

    When the policy chose the count on a machine whose every core we may use, :func:`recheck` revises it later."""
    import torch

    global _governor
    threads, why = choose(requested)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    _governor = None
    cores = usable_cores()
    if requested is None and threads is not None and (os.cpu_count() or threads) <= cores:
        try:
            _governor = Governor(cores)
        except (OSError, ValueError, IndexError):  # no /proc/stat: the choice at start stands
            pass
    return f"{torch.get_num_threads()} thread{'s' * (torch.get_num_threads() != 1)} ({why})"


def recheck() -> None:
    """Revise torch's threads by the cores others have kept busy since the last look (a no-op unless
    :func:`apply` left the policy in charge, and at most every half second). Attribution and evaluation call it
    between batches."""
    global _governor
    if _governor is None:
        return
    try:
        threads = _governor.check()
    except (OSError, ValueError, IndexError):  # /proc/stat unreadable now: the count in force stands
        _governor = None
        return
    if threads is not None:
        import torch

        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            _governor.changes.append((round(_governor.clock() - _governor.started, 1), threads))


def changes() -> str:
    """The revisions :func:`recheck` made, as ``"1 at 2.3 s, 2 at 9.8 s"`` (threads, seconds after
    :func:`apply`; empty: none)."""
    return ", ".join(f"{n} at {t} s" for t, n in (_governor.changes if _governor is not None else []))
