"""The CPU thread policy (cores allowed, cgroup quota, load, overrides) and the floor ``sfc bench`` reports."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import all_hooks, make_model, make_records, make_saes

from sfc_plugin import threads
from sfc_plugin.bench_floor import node_floor
from sfc_plugin.data import tokenize
from sfc_plugin.metrics import logit_diff
from sfc_plugin.splicing import build_submodules


class Stat:
    """A ``/proc/stat`` whose counters advance between reads as if ``load`` cores of ``cpus`` were busy."""

    def __init__(self, path, cpus: int, load: float):
        self.path, self.cpus, self.load, self.t = path, cpus, load, 0
        self.write()

    def write(self):
        total = 1000 * self.cpus * self.t
        busy = int(1000 * self.load * self.t)
        user, idle = busy, total - busy  # user nice system idle iowait irq softirq steal
        self.path.write_text(f"cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n")
        self.t += 1


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A machine of ``cpus`` cores of which this process may use ``allowed``, ``load`` of them busy; returns the
    fake ``/proc/stat``."""

    def set_(cpus: int, allowed: int, load: float):
        monkeypatch.setattr(threads.os, "cpu_count", lambda: cpus)
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(allowed)))
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, load, load))
        stat = Stat(tmp_path / "stat", cpus, load)
        monkeypatch.setattr(threads.time, "sleep", lambda s: stat.write())
        return stat.path

    return set_


@pytest.mark.parametrize(
    "cpu_max, cores", [("max 100000\n", 8), ("150000 100000\n", 2), ("100000 100000\n", 1), ("20000 100000", 1)]
)
def test_cgroup_v2_quota_caps_the_cores(tmp_path, machine, cpu_max, cores):
    machine(8, 8, 0.0)
    (tmp_path / "cpu.max").write_text(cpu_max)
    assert threads.usable_cores(tmp_path) == cores


def test_cgroup_v1_quota_and_no_cgroup(tmp_path, machine):
    machine(16, 16, 0.0)
    assert threads.cgroup_cpu_limit(tmp_path) is None and threads.usable_cores(tmp_path) == 16
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) == 3.0 and threads.usable_cores(tmp_path) == 3
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no quota"
    assert threads.usable_cores(tmp_path) == 16


@pytest.mark.parametrize(
    "cpus, allowed, load, expected",
    [
        (2, 2, 0.1, 2),  # alone: every core
        (2, 2, 1.2, 1),  # one busy process beside us: one thread, not two waiting on each other
        (2, 2, 7.0, 1),  # never fewer than one
        (4, 4, 2.4, 2),
        (64, 4, 60.0, 4),  # a big machine's load says nothing about our 4 allowed cores
    ],
)
def test_threads_are_the_usable_cores_less_the_busy_ones(tmp_path, machine, cpus, allowed, load, expected):
    stat = machine(cpus, allowed, load)
    n, why = threads.choose(environ={}, root=tmp_path, stat=stat)
    assert n == expected
    assert f"{allowed} usable core" in why and (("busy elsewhere" in why) == (expected < allowed))


def test_busy_cores_from_the_load_average_without_proc_stat(tmp_path, machine):
    machine(2, 2, 1.4)
    assert threads.busy_elsewhere(2, stat=tmp_path / "missing") == 1
    assert threads.choose(environ={}, root=tmp_path, stat=tmp_path / "missing") == (
        1,
        "2 usable cores, 1 busy elsewhere",
    )


@pytest.mark.parametrize("autogroup, busy", [("0\n", 100), ("1\n", 1000), (None, 100)])
def test_niced_processes_are_free_only_without_autogroup(tmp_path, autogroup, busy):
    """Niced time (``/proc/stat``'s second field) yields to us, except under autogroup scheduling, where a niced
    job in another session competes as an equal; a kernel without the switch has no autogroup."""
    stat, switch = tmp_path / "stat", tmp_path / "sched_autogroup_enabled"
    stat.write_text("cpu  100 900 0 1000 0 0 0 0 0 0\n")  # user, nice, system, idle, ...
    if autogroup is not None:
        switch.write_text(autogroup)
    assert threads._cpu_times(stat, not threads.autogroup_enabled(switch)) == (busy, 2000)


@pytest.mark.parametrize("autogroup, expected", [("1", 1), ("0", 2)])
def test_a_niced_job_under_autogroup_takes_a_thread(tmp_path, machine, monkeypatch, autogroup, expected):
    machine(2, 2, 0.0)
    stat, switch = tmp_path / "stat", tmp_path / "switch"
    switch.write_text(autogroup)
    stat.write_text("cpu  0 0 0 0 0 0 0 0\n")  # then 1 s of 2 cores: one kept busy by a niced job
    monkeypatch.setattr(threads.time, "sleep", lambda s: stat.write_text("cpu  0 100 0 100 0 0 0 0\n"))
    assert threads.choose(environ={}, root=tmp_path, stat=stat, autogroup=switch)[0] == expected


class Clock:
    """Wall and own-CPU seconds a test moves by hand, and a ``/proc/stat`` for 2 cores that follows them."""

    def __init__(self, stat):
        self.stat, self.wall, self.own, self.busy, self.total = stat, 0.0, 0.0, 0, 0
        self.write()

    def write(self):
        self.stat.write_text(f"cpu  {self.busy} 0 0 {self.total - self.busy} 0 0 0 0\n")

    def run(self, seconds: float, ours: float, others: float):
        """``seconds`` of wall time in which we used ``ours`` cores and other processes ``others``."""
        self.wall += seconds
        self.own += ours * seconds
        self.busy += round(100 * (ours + others) * seconds)
        self.total += round(200 * seconds)
        self.write()


def test_the_governor_follows_the_cores_others_take(tmp_path, monkeypatch):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    c = Clock(tmp_path / "stat")
    g = threads.Governor(2, c.stat, tmp_path / "no-autogroup", clock=lambda: c.wall, own_cpu=lambda: c.own)
    c.run(0.3, ours=2, others=0)
    assert g.check() is None  # under half a second since the last look
    c.run(0.3, ours=2, others=0)
    assert g.check() == 2  # alone
    c.run(2, ours=4 / 3, others=2 / 3)  # a busy job started: our two threads now share the cores with it
    assert g.check() == 1
    c.run(2, ours=1, others=1)  # it keeps going: one thread stays
    assert g.check() == 1
    c.run(2, ours=1, others=0.1)  # it ended (a little background noise remains)
    assert g.check() == 2


def test_recheck_sets_torch_threads_only_while_the_policy_decides(tmp_path, monkeypatch):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    c = Clock(tmp_path / "stat")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(threads, "_governor", None)
        threads.recheck()  # --threads or OMP_NUM_THREADS: nothing to revise
        assert torch.get_num_threads() == 2 and threads.changes() == ""
        g = threads.Governor(2, c.stat, tmp_path / "no-autogroup", clock=lambda: c.wall, own_cpu=lambda: c.own)
        monkeypatch.setattr(threads, "_governor", g)
        c.run(3, ours=1.1, others=0.9)
        threads.recheck()
        assert torch.get_num_threads() == 1 and threads.changes() == "1 at 3.0 s"
        c.run(1.5, ours=1, others=0)
        threads.recheck()
        assert torch.get_num_threads() == 2 and threads.changes() == "1 at 3.0 s, 2 at 4.5 s"
        c.run(1, ours=1, others=1)
        c.stat.unlink()  # /proc/stat gone mid-run: the count in force stands, and attribution goes on
        threads.recheck()
        assert torch.get_num_threads() == 2 and threads._governor is None
    finally:
        torch.set_num_threads(before)


def test_policy_is_rechecked_between_batches(tokenizer, monkeypatch):
    from sfc_plugin.attribution.engine import attribute
    from sfc_plugin.attribution.methods import atp

    model = make_model(tokenizer)
    subs = build_submodules(model, make_saes(all_hooks(2)))
    batch = tokenize(model, make_records(3), "cpu")
    calls = []
    monkeypatch.setattr(threads, "recheck", lambda: calls.append(1))
    res = attribute(model, subs, batch, logit_diff, atp, batch_size=2, node_threshold=0.0, edges=True)
    n_batches = -(-len(batch) // res.batch_size)
    assert n_batches >= 2 and len(calls) == 2 * n_batches  # before each batch of the node and the edge phase


def test_explicit_threads_and_omp_num_threads_win(tmp_path, machine):
    machine(2, 2, 1.5)
    assert threads.choose(3, environ={"OMP_NUM_THREADS": "2"}, root=tmp_path) == (3, "--threads 3")
    assert threads.choose(environ={"OMP_NUM_THREADS": "2"}, root=tmp_path) == (None, "OMP_NUM_THREADS=2")


def test_threads_option_sets_torch_threads(monkeypatch):
    from sfc_plugin.cli import build_parser
    from sfc_plugin.commands import options

    before = torch.get_num_threads()
    try:
        args = build_parser().parse_args(["discover", "--threads", "1"])
        s = options.settings(args, "discover")
        assert s["threads"] == 1
        options.load_world(s)
        assert torch.get_num_threads() == 1
        assert threads.apply(2).startswith("2 threads (--threads 2)") and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_bad_threads_is_refused(capsys):
    from sfc_plugin.cli import main

    assert main(["discover", "--threads", "0", "-q"]) == 2
    assert "threads" in capsys.readouterr().err
    assert main(["bench", "--threads", "0"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err


# ---- the floor ---------------------------------------------------------------------------------------


def test_floor_counts_the_passes_the_method_needs(tokenizer):
    """One clean pass for every submodule plus (steps − 1) rows per submodule and example, from its block."""
    model = make_model(tokenizer)
    subs = build_submodules(model, make_saes(all_hooks(2)))
    batch = tokenize(model, make_records(6))
    for steps in (1, 4):
        f = node_floor(model, subs, batch, logit_diff, steps=steps, batch_size=4)
        assert f["rows"] == len(batch) * (1 + len(subs) * (steps - 1))
        parts = f["activations_s"] + f["encode_s"] + f["passes_s"]
        assert all(f[k] > 0 for k in ("activations_s", "encode_s", "passes_s"))
        assert f["floor_s"] == pytest.approx(parts, abs=1e-3) and f["floor_cpu_s"] > 0


def test_bench_json_reports_the_floor_and_keeps_its_fields(tmp_path):
    from sfc_plugin.cli import main

    assert main(["bench", "--workload", "toy", "--n-pairs", "4", "--steps", "2", "-q", "-o", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    nodes, edges = data["workloads"][0], data["workloads"][1]
    for key in ("ours_s", "baseline_s", "ratio", "ours_peak_gb", "max_rel_diff", "n_examples", "n_nodes", "steps"):
        assert key in nodes and key in edges
    assert nodes["floor_s"] > 0 and nodes["ours_over_floor"] == pytest.approx(
        nodes["ours_s"] / nodes["floor_s"], rel=0.02
    )
    assert set(nodes["floor_parts"]) == {"activations", "encode", "passes"} and "floor_s" not in edges
    assert data["machine"]["torch"] == torch.__version__ and "thread" in data["machine"]["threads"]


def test_gpu_suite_is_the_true_widths_and_quick_is_small():
    from sfc_plugin.bench import suite

    full = dict((name, kw) for name, kw, _ in suite("gpu"))
    assert full["pythia"]["d_sae"] == 32768 and full["pythia"]["n_pairs"] == 20
    quick = suite("gpu", quick=True)
    assert [name for name, _, _ in quick] == ["pythia", "gemma"]
    assert all(kw["d_sae"] <= 512 and run["steps"] <= 2 for _, kw, run in quick)
