"""Scratch copies of the repository and niced, time-limited pytest runs in them (shared by the mutation scripts).

A mutant is never written into the working tree: :func:`make_scratch` copies the tracked (and untracked, not
ignored) files into a temporary directory, the mutant's file is rewritten there, and pytest runs there with
``PYTHONPATH`` pointing at that copy (so subprocesses import the mutant too).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NICE = int(os.environ.get("SFC_MUTATION_NICE", "10"))
ACTIVE: set[int] = set()  # process groups of the pytest runs in flight (killed by :func:`kill_active`)
SCRATCHES: list[Path] = []  # scratch copies made by this process (removed by :func:`kill_active`)


def kill_active(*_args) -> None:
    """Kill every pytest run in flight (and its children); used as a SIGTERM/SIGINT handler, then exits."""
    for pgid in list(ACTIVE):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for path in SCRATCHES:
        shutil.rmtree(path, ignore_errors=True)
    os._exit(130)


def repo_files(repo: Path = REPO) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (repo / f).is_file()]


def make_scratch(prefix: str = "sfc-mutation-", repo: Path = REPO) -> Path:
    """A copy of the repository's files (no .git, no virtualenv) in a new temporary directory."""
    dest = Path(tempfile.mkdtemp(prefix=prefix))
    SCRATCHES.append(dest)
    for rel in repo_files(repo):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target)
    return dest


@dataclass
class Run:
    status: str  # passed | failed | timeout | error (collection/import error, no tests, internal error)
    seconds: float
    tail: str
    failed: str | None = None  # the first failing test's node id, when pytest names one


def run_pytest(scratch: Path, tests: list[str], timeout: float, first_failure: bool = True) -> Run:
    """``pytest -q [tests]`` in ``scratch`` under ``nice``, killed (with its children) after ``timeout`` seconds."""
    env = dict(os.environ, PYTHONPATH=str(scratch), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("COVERAGE_PROCESS_START", None)
    cmd = ["nice", "-n", str(NICE), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf"]
    cmd += (["-x"] if first_failure else []) + list(tests)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=scratch, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    ACTIVE.add(proc.pid)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return Run("timeout", time.perf_counter() - t0, out.decode("utf-8", "replace")[-3000:])
    finally:
        ACTIVE.discard(proc.pid)
    text = out.decode("utf-8", "replace")
    failed = next((ln.split()[1] for ln in text.splitlines() if ln.startswith("FAILED ")), None)
    status = {0: "passed", 1: "failed"}.get(proc.returncode, "error")
    return Run(status, time.perf_counter() - t0, text[-3000:], failed)
