"""The README and the documentation site: what they show runs, their links resolve, the generated pages are whole."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def hooks():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_short_and_keeps_the_ci_test_command():
    readme = README.read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert "./scripts/setup.sh && .venv/bin/sfc discover" in readme
    assert "./scripts/setup.sh && .venv/bin/python -m pytest -q" in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "./scripts/setup.sh" in ci and ".venv/bin/python -m pytest -q" in ci and "mkdocs build --strict" in ci


def test_readme_api_example_runs_as_printed(tmp_path):
    readme = README.read_text(encoding="utf-8")
    start = readme.index("```python", readme.index("## From Python"))
    block = readme[start + len("```python") : readme.index("```", start + 3)]
    assert 5 <= len(block.strip().splitlines()) <= 15
    script = tmp_path / "readme_api.py"
    script.write_text(block + "\nprint('RESULT', len(circuit.nodes) - 1, len(circuit.edges), report['circuit'])\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nodes: 172 (embed 18, attn_0 13" in done.stdout and "edges: 1258" in done.stdout
    assert "17.1245" in done.stdout  # the totals the example's comments state
    result = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    assert result.startswith("RESULT 172 1258 {'n_nodes': 172, 'faithfulness': 0.940")
    assert (tmp_path / "circuit.json").is_file()


def _links(path: Path):
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # not inside code blocks
    for target in re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'<img src="([^"]+)"', text):
        if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
            yield target.split("#", 1)[0]


@pytest.mark.parametrize("page", [README, ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(page):
    missing = [t for t in _links(page) if not (page.parent / t).exists()]
    assert not missing, f"{page.name}: links to missing files {missing}"


def test_readme_links_every_docs_page():
    readme = README.read_text(encoding="utf-8")
    pages = {p.name for p in DOCS.glob("*.md")} - {"changelog.md"}  # the changelog is CHANGELOG.md itself
    assert not [p for p in sorted(pages) if f"docs/{p}" not in readme]


def _walk(parser, prog="sfc"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prog} {name}", sub
                yield from _walk(sub, f"{prog} {name}")


def test_cli_reference_covers_every_command_and_option():
    from sfc_plugin.cli import build_parser

    page = hooks().cli_markdown(build_parser())
    parser = build_parser()
    commands = list(_walk(parser))
    assert len(commands) >= 12
    for prog, sub in commands:
        section = page.split(f"# `{prog}`\n", 1)
        assert len(section) == 2, f"no section for {prog}"
        body = re.split(r"\n#+ `sfc ", section[1], maxsplit=1)[0]
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in body, f"{prog}: {option} missing from the CLI reference"


def test_generated_presets_and_builtins():
    from sfc_plugin.presets import PRESETS

    module = hooks()
    presets = module.presets_markdown()
    for preset in PRESETS.values():
        assert f"### `{preset.name}`" in presets and preset.model in presets
    builtins = module.builtins_markdown()
    for name in ("`ig`", "`logit_diff`", "`toy/sva-rc`", "`circuit-tracer`", "`auto`", "`mean`", "`concept`"):
        assert name in builtins
    assert "](docs/" not in module.changelog_markdown()


def test_docs_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "cli" / "index.html").is_file()
