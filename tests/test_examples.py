"""The examples in examples/ run as a user would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sfc_plugin import Circuit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script, *args, cwd):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=cwd, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_saelens_project_example(tmp_path):
    out = run("saelens_project.py", tmp_path / "out", cwd=tmp_path)
    circuit = Circuit.from_json(tmp_path / "out" / "circuit.json")
    assert "nodes:" in out and circuit.provenance["n_examples"] == 20 and len(circuit.edges) > 10
    assert {s["hook"] for s in circuit.provenance["saes"]} >= {"blocks.0.hook_resid_pre", "blocks.2.hook_resid_post"}


def test_export_graphviz_example(tmp_path):
    out = run("export_graphviz.py", cwd=tmp_path)
    dot = (tmp_path / "circuit_labelled.dot").read_text()
    assert "wrote circuit_labelled.dot" in out and "top 1 (" in dot


def test_in_process_plugin_example(tmp_path):
    out = run("in_process_plugin.py", cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("nodes: ") and lines[1] == "edges: 0" and "strongest nodes: " in lines[-1]
    assert float(lines[2].rsplit(" ", 1)[1]) < 0  # patching the number lowers log p(clean answer)


def test_docs_in_process_registration_runs_as_written(tmp_path):
    """The in-process registration block of docs/plugins.md, run as a script exactly as printed there."""
    page = (EXAMPLES.parent / "docs" / "plugins.md").read_text(encoding="utf-8")
    start = page.index("```python", page.index("Without packaging anything"))
    block = page[start + len("```python") : page.index("```", start + 3)]
    assert "get_plugin_manager().register(" in block and "NodeEffects" in block
    script = tmp_path / "readme_block.py"
    script.write_text(block + "\nprint(len(circuit.nodes), len(circuit.edges), circuit.method, circuit.metric)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    n_nodes, n_edges, method, metric = done.stdout.split()
    assert int(n_nodes) > 1 and int(n_edges) > 0 and (method, metric) == ("endpoints", "answer_logprob")


@pytest.mark.parametrize("script", ["custom_method_plugin/sfc_midpoint.py"])
def test_plugin_example_imports_cleanly(script, tmp_path):
    run(script, cwd=tmp_path)
