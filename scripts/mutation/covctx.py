"""pytest plugin for ``mutate.py map``: one coverage context per test (its node id) and each test's duration."""

from __future__ import annotations

import json
import os
import time

import coverage
import pytest

_durations: dict[str, float] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cov = coverage.Coverage.current()
    if cov is not None:
        cov.switch_context(item.nodeid)
    t0 = time.perf_counter()
    yield
    _durations[item.nodeid] = round(time.perf_counter() - t0, 3)
    if cov is not None:
        cov.switch_context("")


def pytest_sessionfinish(session):
    path = os.environ.get("SFC_MUTATION_DURATIONS")
    if path:
        with open(path, "w") as fh:
            json.dump(_durations, fh)
