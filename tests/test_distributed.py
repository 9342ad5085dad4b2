"""torch.distributed: 2 gloo processes on 127.0.0.1 (launched here with torchrun) against 1 process,
for data-parallel ``sfc discover`` and for ``sfc clusters``; a killed run resumed equals an
uninterrupted one. Every process runs with one thread, so 1 and 2 processes do the same arithmetic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
from conftest import HANG_LIMIT as LIMIT  # a hung collective fails the test instead of hanging it

CLUSTERS = [
    "clusters",
    "--n-contexts",
    "160",
    "--k",
    "4",
    "--shard-size",
    "32",
    "--batch-size",
    "16",
    "--circuit-examples",
    "6",
    "--steps",
    "10",
    "-q",
]


def _sfc(args, procs: int = 1, **kwargs):
    if procs == 1:
        cmd = [sys.executable, "-m", "sfc_plugin.cli", *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={procs}",
            "-m",
            "sfc_plugin.cli",
            *args,
        ]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=LIMIT, **kwargs)


def _files(out: Path) -> dict:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "timing.json"
    }


def test_data_parallel_discover_equals_one_process(tmp_path):
    args = ["discover", "--n-examples", "12", "--batch-size", "4", "--steps", "2", "-q"]
    one = _sfc(args + ["-o", str(tmp_path / "one")])
    two = _sfc(args + ["-o", str(tmp_path / "two")], procs=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = (json.loads((tmp_path / d / "circuit.json").read_text()) for d in ("one", "two"))
    nodes_a, nodes_b = ({n["id"]: n["effect"] for n in c["nodes"]} for c in (a, b))
    edges_a, edges_b = ({(e["source"], e["target"]): e["weight"] for e in c["edges"]} for c in (a, b))
    assert nodes_a.keys() == nodes_b.keys() and len(nodes_a) > 10
    assert edges_a.keys() == edges_b.keys() and len(edges_a) > 10
    for k, v in nodes_a.items():
        if v is not None:
            assert nodes_b[k] == pytest.approx(v, abs=1e-6, rel=1e-6)
    for k, v in edges_a.items():
        assert edges_b[k] == pytest.approx(v, abs=1e-6, rel=1e-6)
    assert b["total_effect"] == pytest.approx(a["total_effect"], abs=1e-6, rel=1e-6)
    assert b["provenance"]["n_examples"] == a["provenance"]["n_examples"] == 12


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    done = _sfc(CLUSTERS + ["-o", str(out)])
    assert done.returncode == 0, done.stderr
    return out


def test_two_process_clusters_equal_one_process(uninterrupted, tmp_path):
    out = tmp_path / "two"
    done = _sfc(CLUSTERS + ["-o", str(out)], procs=2)
    assert done.returncode == 0, done.stderr
    assert "2 processes (gloo)" in done.stdout
    assert _files(out) == _files(uninterrupted)
    timing = json.loads((out / "timing.json").read_text())
    assert timing["processes"] == 2
    assert (
        timing["shards_computed_by_rank_0"] == 3 and timing["circuits_computed_by_rank_0"] == 2
    )  # 5 shards, 4 clusters


def test_killed_run_resumes_to_identical_output(uninterrupted, tmp_path):
    """Two processes killed (SIGKILL) once the first circuit is written; the same command again
    finishes the rest, and every file equals the uninterrupted one-process run's."""
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "sfc_plugin.cli",
        *CLUSTERS,
        "-o",
        str(out),
    ]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + LIMIT
    try:
        while not list(out.glob("clusters/*/circuit.json")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = list(out.glob("clusters/*/circuit.json"))
    assert not (out / "clusters.json").exists() and len(finished) < 4
    done = _sfc(CLUSTERS + ["-o", str(out)], procs=2)
    assert done.returncode == 0, done.stderr
    assert _files(out) == _files(uninterrupted)
    assert not [p for p in out.rglob(".*")]  # temporary files of writes cut short are cleared on restart
