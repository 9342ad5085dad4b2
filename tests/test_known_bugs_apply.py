"""The known-bug patches of ``scripts/mutation/known_bugs.py`` still apply to the code they break.

Each patch replaces text that must occur exactly once in its file; when the code moves (as SHIFT's feature
encoding did into ``shifting/encoding.py``) a patch that no longer applies would silently stop guarding its test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "mutation"))
import known_bugs  # noqa: E402


@pytest.mark.parametrize("bug", known_bugs.BUGS, ids=lambda b: b.name)
def test_each_known_bug_patch_applies_once_to_its_file(bug):
    source = (REPO / bug.file).read_text(encoding="utf-8")
    for old, new in bug.patches:
        assert source.count(old) == 1, f"{bug.name}: {old!r} occurs {source.count(old)} times in {bug.file}"
        assert old != new
    assert all((REPO / t.split("::")[0]).is_file() for t in bug.tests), f"{bug.name}: a named test file is missing"
