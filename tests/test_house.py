"""The house stays clean: no import circles, no private imports across modules, one default per setting,
the world loaded and checked once, and ``sfc --help`` without heavy imports."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import sfc_plugin
from sfc_plugin.config import DiscoverConfig, EvaluateConfig, ShiftConfig, default, options

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sfc_plugin"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str):
    """``(imported module, imported name or None)`` for every import in the file, function-level ones too."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub, None) if sub in MODULES else (target, alias.name)


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in _imports(p, m) if t in MODULES and t != m} for m, p in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return path[path.index(t) :] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_circles_among_package_modules():
    assert "sfc_plugin.commands.discover" in MODULES and len(MODULES) > 50
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("where", ["package", "tests"])
def test_no_private_names_imported_from_another_module(where):
    files = MODULES.items() if where == "package" else [(p.stem, p) for p in (ROOT / "tests").glob("*.py")]
    found = [
        f"{path.relative_to(ROOT)}: {target}.{imported}"
        for name, path in files
        for target, imported in _imports(path, name)
        if target.startswith("sfc_plugin")
        and target != name
        and imported
        and imported.startswith("_")
        and not imported.startswith("__")
    ]
    assert not found


def test_hook_points_is_a_leaf_and_libraries_never_import_commands():
    graph = _graph()
    assert graph["sfc_plugin.hook_points"] <= {"sfc_plugin.errors"}
    users = {m for m, targets in graph.items() if any(t.startswith("sfc_plugin.commands") for t in targets)}
    assert users <= {m for m in MODULES if m.startswith("sfc_plugin.commands")} | {"sfc_plugin.cli"}


# ---- one default per setting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, pipeline",
    [
        (DiscoverConfig, "sfc_plugin.discovery:discover"),
        (EvaluateConfig, "sfc_plugin.evaluation:evaluate"),
        (ShiftConfig, "sfc_plugin.shifting.pipeline:shift"),
    ],
)
def test_pipeline_defaults_equal_the_config_defaults(config, pipeline):
    """The data selection aside (``n_examples``: which pairs a command reads), a pipeline's keyword defaults are
    its config's: the command passes every setting, so a default in one place only would drift."""
    import importlib

    module, name = pipeline.split(":")
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    kwargs = config().pipeline_kwargs()
    kwargs.pop("n_examples", None)
    judge_options = kwargs.pop("judge_options", None)
    assert judge_options is None or not any(judge_options.values())  # shift's judge_options=None
    assert kwargs and set(kwargs) <= set(params)
    assert {k: params[k].default for k in kwargs} == kwargs


@pytest.mark.parametrize("command", ["discover", "evaluate", "shift", "clusters", "dashboards", "edit-report"])
def test_cli_options_are_the_config_fields(command):
    from sfc_plugin.cli import build_parser
    from sfc_plugin.commands.options import settings
    from sfc_plugin.config import COMMANDS

    parser = build_parser()
    argv = [command] + {"evaluate": ["c.json"], "edit-report": ["edit.json"]}.get(command, [])
    args = parser.parse_args(argv)
    fields = options(*COMMANDS[command])
    assert {"model", "sae", "preset", "device", "dtype"} <= {f.name for f in fields}
    assert all(getattr(args, f.name) is None for f in fields)  # not given: the config file or the default decides
    assert settings(args, command) == {f.name: default(f) for f in fields}


def test_world_options_on_every_command_that_loads_a_model():
    from sfc_plugin.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command in ("discover", "evaluate", "shift", "clusters", "dashboards", "edit-report"):
        flags = {s for a in sub[command]._actions for s in a.option_strings}
        assert {"--model", "--sae", "--preset", "--device", "--dtype", "--config"} <= flags, command


def test_config_file_for_world_only_commands(tmp_path):
    from sfc_plugin.config import load_config

    cfg = tmp_path / "run.toml"
    cfg.write_text("model = 'm'\nsae = ['s']\nmethod = 'atp'\n[dashboards]\npreset = 'p'\n")
    assert load_config(str(cfg), "clusters") == {"model": "m", "sae": ["s"]}  # the world of a discover config
    assert load_config(str(cfg), "dashboards") == {"preset": "p"}  # its own table
    cfg.write_text("[clusters]\nk = 3\nmodel = 'm'\n")
    assert load_config(str(cfg), "clusters") == {"k": 3, "model": "m"}
    cfg.write_text("[edit-report]\nk = 3\n")
    with pytest.raises(sfc_plugin.SFCError, match=r"unknown key 'k' in \[edit-report\]"):
        load_config(str(cfg), "edit-report")


# ---- the world -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_world():
    return sfc_plugin.World.load()


def test_world_load_gives_checked_submodules_in_circuit_order(toy_world):
    w = toy_world
    assert w.toy and w.source == "toy" and w.model_spec is None and w.preset is None
    assert [s.hook for s in w.submodules] == sfc_plugin.toy.hook_names(3) == list(w.saes)
    assert list(w.by_name)[:4] == ["embed", "attn_0", "mlp_0", "resid_0"]
    assert w.provenance()["model_spec"] is None and len(w.provenance()["saes"]) == 10


def test_a_world_is_never_resolved_again(toy_world, monkeypatch):
    """discover(world, data) checks nothing twice: no loading, no finite check, no compatibility check."""
    from sfc_plugin import models, splicing, validation

    def fail(*a, **k):
        raise AssertionError("the World was resolved again")

    for module, name in ((models, "resolve_world"), (models, "check_compatible"), (validation, "sae_weights")):
        monkeypatch.setattr(module, name, fail)
    monkeypatch.setattr(splicing, "build_submodules", fail)
    circuit = sfc_plugin.discover(toy_world, "toy/sva-rc", n_examples=2, steps=1, edges=False, progress=False)
    assert circuit.provenance["n_examples"] == 2
    with pytest.raises(sfc_plugin.SFCError, match="used as it is"):
        sfc_plugin.discover(toy_world, "toy/sva-rc", device="cpu")


def test_world_load_checks_once(monkeypatch):
    """Each SAE's weights are checked once and the model against the SAEs once (the toy SAEs as they load)."""
    from sfc_plugin import models, validation

    seen = {"sae_weights": 0, "check_compatible": 0}
    for module, name in ((validation, "sae_weights"), (models, "check_compatible")):
        real = getattr(module, name)

        def counted(*a, _real=real, _name=name, **k):
            seen[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(module, name, counted)
    world = sfc_plugin.World.load()
    assert seen == {"sae_weights": len(world.saes), "check_compatible": 1}


def test_world_from_objects_and_the_old_forms(tokenizer):
    from conftest import make_model, make_records, make_sae

    from sfc_plugin.world import World, world_args

    model = make_model(tokenizer)
    saes = {h: make_sae(h) for h in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")}
    world = World.load(model, list(saes.values()))
    assert world.model is model and world.saes == saes and world.model_spec is None and not world.toy
    assert world_args(world, "data", None) == (world, "data")  # discover(world, data)
    assert world_args(world, None, "data") == (world, "data")  # discover(world, data=data)
    assert world_args(world, "circuit", None, "data") == (world, "circuit", "data")  # evaluate(w, c, data=...)
    with pytest.raises(sfc_plugin.SFCError, match="too many positional"):
        world_args(world, "a", "b")
    records = make_records(4)
    kw = dict(method="atp", node_threshold=0.05, progress=False, provenance={"timings": None})
    old = sfc_plugin.discover(model, saes, records, **kw)
    new = sfc_plugin.discover(world, records, **kw)
    assert old.to_json() == new.to_json()


# ---- sfc --help ----------------------------------------------------------------------------------------


def test_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom sfc_plugin.cli import build_parser\nbuild_parser()\n"
        "print(sorted(m for m in ('torch', 'sae_lens', 'transformer_lens', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
