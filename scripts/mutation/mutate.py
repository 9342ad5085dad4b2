"""Curated mutation testing of the core modules: small AST mutants, each run against the tests that cover it.

    .venv/bin/python scripts/mutation/mutate.py map       # coverage map: which test runs which line (~15 min)
    .venv/bin/python scripts/mutation/mutate.py map --only files.py --tests tests/test_files.py  # re-map one module
    .venv/bin/python scripts/mutation/mutate.py list      # the sampled mutants (no test run)
    .venv/bin/python scripts/mutation/mutate.py run       # run them (resumable; results in .mutation/)
    .venv/bin/python scripts/mutation/mutate.py report    # the figures and survivors, into docs/testing.md

``map`` runs the whole suite once under coverage.py with one context per test. ``run`` writes each mutant into a
scratch copy of the repository (never the working tree) and runs, under ``nice`` and a time limit, first the
fastest tests that execute the mutated lines (up to ``--budget`` seconds of their measured time), then, for a
mutant that survives those, more of them (up to ``--full-budget`` seconds). A mutant is killed when a test fails,
errors or hangs. Mutants are sampled (seeded) from every operator at every site, so the figures estimate the whole space.
Survivors judged equivalent (no test could tell them apart) are listed, with the reason, in ``equivalent.toml``
next to this script, matched by file, line text and mutation, so the list survives unrelated edits.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from scratch import REPO, kill_active, make_scratch, run_pytest  # noqa: E402

STATE = REPO / ".mutation"
DOCS = REPO / "docs" / "testing.md"
BEGIN, END = "<!-- mutation-report:begin -->", "<!-- mutation-report:end -->"

MODULES = [
    "sfc_plugin/attribution/engine.py",
    "sfc_plugin/attribution/context.py",
    "sfc_plugin/attribution/methods.py",
    "sfc_plugin/attribution/edges.py",
    "sfc_plugin/attribution/sparse.py",
    "sfc_plugin/attribution/forward.py",
    "sfc_plugin/splicing.py",
    "sfc_plugin/dictionaries/__init__.py",  # the dictionary kinds splicing builds node sets from
    "sfc_plugin/dictionaries/base.py",
    "sfc_plugin/dictionaries/sae.py",
    "sfc_plugin/dictionaries/transcoder.py",
    "sfc_plugin/dictionaries/temporal.py",
    "sfc_plugin/dictionaries/matching_pursuit.py",
    "sfc_plugin/discovery.py",
    "sfc_plugin/evaluation.py",
    "sfc_plugin/curve.py",  # evaluation's curve and its standard errors
    "sfc_plugin/ablations.py",
    "sfc_plugin/circuit.py",
    "sfc_plugin/shifting/probe.py",
    "sfc_plugin/shifting/edit.py",
    "sfc_plugin/shifting/pipeline.py",
    "sfc_plugin/export/dot.py",
    "sfc_plugin/export/neuronpedia.py",
    "sfc_plugin/paths.py",  # figures' paths to the metric
    "sfc_plugin/files.py",
    "sfc_plugin/fingerprints.py",
    # added after the first report; last, so the seeded sample of the modules above stays what it was
    "sfc_plugin/attribution/linear.py",  # --method linear: the local replacement model (circuit-tracer parity)
    "sfc_plugin/attribution/replacement.py",
]

CMP_SWAP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult}
REDUCTIONS = {"sum": "mean", "mean": "sum", "max": "min", "min": "max", "amax": "amin", "amin": "amax"}
# keyword arguments that only size batches, chunks or memory shares: results are invariant to them by design
# (tests check that invariance), so mutating their constants gives equivalent mutants
SIGNATURE_TESTS = {"tests/test_house.py"}  # tests that read default arguments from signatures
SIZING_KEYWORDS = {"share", "cap", "chunk", "size", "tokens_per_chunk", "max_rows", "timeout"}


@dataclass
class Mutant:
    file: str
    line: int
    end_line: int
    col: int
    operator: str
    original: str  # the source segment replaced
    replacement: str
    line_text: str  # the first original line, stripped (the key equivalence notes use)
    scope: tuple[int, int] | None = None  # lines of the enclosing function's body (None: module level)
    default: bool = False  # a default argument's value (read by signature-comparing tests, not only by calls)

    @property
    def key(self) -> str:
        raw = f"{self.file}|{self.line_text}|{self.col}|{self.operator}|{self.original}|{self.replacement}"
        return hashlib.sha1(raw.encode()).hexdigest()[:10]


def _segment(source_lines: list[str], node) -> str:
    return ast.get_source_segment("".join(source_lines), node) or ""


class _Collector(ast.NodeVisitor):
    """Every mutation site of one module: (operator, node, replacement source)."""

    def __init__(self, source: str):
        self.source = source
        self.sites: list[tuple[str, ast.AST, str, tuple[int, int] | None, bool]] = []
        self._skip = 0
        self._scope: list[tuple[int, int]] = []
        self._default = False

    def _add(self, op: str, node: ast.AST, new_node_or_src) -> None:
        if self._skip:
            return
        src = new_node_or_src if isinstance(new_node_or_src, str) else ast.unparse(new_node_or_src)
        self.sites.append((op, node, src, self._scope[-1] if self._scope else None, self._default))

    def _skipped(self, node) -> None:
        self._skip += 1
        self.generic_visit(node)
        self._skip -= 1

    # never mutated: messages, docstrings, annotations
    def visit_Raise(self, node):
        self._skipped(node)

    def visit_JoinedStr(self, node):
        self._skipped(node)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)

    def visit_arg(self, node):
        return

    def visit_FunctionDef(self, node):
        # defaults run at import, before any test: the tests that run the function's body are the ones to run
        self._scope.append((node.body[0].lineno, node.body[-1].end_lineno))
        self._default = True
        for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(d)
        self._default = False
        for stmt in node.body:
            self.visit(stmt)
        self._scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_keyword(self, node):
        if node.arg in SIZING_KEYWORDS:
            return
        self.visit(node.value)

    def visit_Assert(self, node):
        self._skipped(node)

    def visit_Compare(self, node):
        swap = CMP_SWAP.get(type(node.ops[0]))
        if swap is not None:
            new = ast.Compare(node.left, [swap()] + node.ops[1:], node.comparators)
            self._add("compare", node, new)
        self.generic_visit(node)

    def visit_BinOp(self, node):
        swap = BIN_SWAP.get(type(node.op))
        strings = any(
            isinstance(x, (ast.JoinedStr, ast.Constant)) and isinstance(getattr(x, "value", None), str)
            for x in (node.left, node.right)
        )
        if swap is not None and not strings and not isinstance(node.left, ast.JoinedStr):
            self._add("arithmetic", node, ast.BinOp(node.left, swap(), node.right))
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        swap = BIN_SWAP.get(type(node.op))
        if swap is not None:
            self._add("arithmetic", node, ast.AugAssign(node.target, swap(), node.value))
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self._add("boolean", node, ast.BoolOp(other, node.values))
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.Not):
            self._add("negation", node, node.operand)
        elif isinstance(node.op, ast.USub) and not isinstance(node.operand, ast.Constant):
            self._add("negation", node, node.operand)
        self.generic_visit(node)

    def visit_IfExp(self, node):
        self._add("negation", node.test, ast.UnaryOp(ast.Not(), node.test))
        self.generic_visit(node)

    def visit_If(self, node):
        if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            self._add("negation", node.test, ast.UnaryOp(ast.Not(), node.test))
        self.generic_visit(node)

    def visit_Constant(self, node):
        v = node.value
        if isinstance(v, bool):
            self._add("constant", node, repr(not v))
        elif isinstance(v, int):
            self._add("constant", node, repr(v + 1 if v != 1 else 0))
        elif isinstance(v, float) and math.isfinite(v):
            self._add("constant", node, repr(v * 2 if v else 1.0))

    def visit_Call(self, node):
        f = node.func
        if isinstance(f, ast.Name) and f.id == "abs" and len(node.args) == 1:
            self._add("call", node, node.args[0])
        if isinstance(f, ast.Name) and f.id in ("min", "max") and len(node.args) >= 1:
            self._add("call", node, ast.Call(ast.Name("max" if f.id == "min" else "min"), node.args, node.keywords))
        if isinstance(f, ast.Attribute) and f.attr in REDUCTIONS:
            new = ast.Call(ast.Attribute(f.value, REDUCTIONS[f.attr]), node.args, node.keywords)
            self._add("call", node, new)
        self.generic_visit(node)

    def visit_Expr(self, node):
        if isinstance(node.value, ast.Call):
            self._add("statement", node, "pass")
        self.generic_visit(node)

    def visit_Assign(self, node):
        self.generic_visit(node)


def collect(rel: str) -> list[Mutant]:
    source = (REPO / rel).read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    for stmt in ast.walk(tree):  # docstrings are Constant expressions: not sites
        body = getattr(stmt, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            body[0].value._docstring = True
    col = _Collector(source)
    col.visit(tree)
    out = []
    for op, node, src, scope, default in col.sites:
        if getattr(node, "_docstring", False) or not hasattr(node, "lineno"):
            continue
        original = _segment(lines, node)
        if not original or original == src:
            continue
        line_text = lines[node.lineno - 1].strip()
        out.append(
            Mutant(rel, node.lineno, node.end_lineno, node.col_offset, op, original, src, line_text, scope, default)
        )
    return out


def apply(source: str, m: Mutant) -> str | None:
    """The module's text with the mutant; None when it does not compile."""
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    node = next(
        (
            n
            for n in ast.walk(tree)
            if getattr(n, "lineno", None) == m.line
            and getattr(n, "col_offset", None) == m.col
            and getattr(n, "end_lineno", None) == m.end_line
            and ast.get_source_segment(source, n) == m.original
        ),
        None,
    )
    if node is None:
        return None
    # col offsets are UTF-8 byte offsets: convert each line prefix through bytes
    line_bytes = lines[node.lineno - 1].encode("utf-8")
    start = sum(len(x) for x in lines[: node.lineno - 1]) + len(line_bytes[: node.col_offset].decode("utf-8"))
    end_bytes = lines[node.end_lineno - 1].encode("utf-8")
    end = sum(len(x) for x in lines[: node.end_lineno - 1]) + len(end_bytes[: node.end_col_offset].decode("utf-8"))
    statement = isinstance(node, ast.stmt)
    new = m.replacement if statement else f"({m.replacement})"
    text = source[:start] + new + source[end:]
    try:
        compile(text, m.file, "exec")
    except SyntaxError:
        return None
    return text


# ---- sampling --------------------------------------------------------------------------------------------------


def sample(total: int, seed: int, modules=None) -> list[Mutant]:
    """``total`` mutants spread over the modules (∝ sites^0.75, at least 8 each), seeded, compiling ones only."""
    rng = random.Random(seed)
    by_module = {m: collect(m) for m in (modules or MODULES)}
    weights = {m: len(ms) ** 0.75 for m, ms in by_module.items()}
    out = []
    for m, ms in by_module.items():
        n = max(8, round(total * weights[m] / sum(weights.values())))
        source = (REPO / m).read_text(encoding="utf-8")
        pool = list(ms)
        rng.shuffle(pool)
        picked = []
        for mut in pool:
            if len(picked) == n:
                break
            if apply(source, mut) is not None:
                picked.append(mut)
        out += sorted(picked, key=lambda x: (x.line, x.col, x.operator))
    return out


# ---- coverage map ----------------------------------------------------------------------------------------------


def build_map(args) -> None:
    STATE.mkdir(exist_ok=True)
    scratch = make_scratch("sfc-mutation-map-")
    try:
        data_file = scratch / ".coverage"
        env = dict(
            os.environ,
            PYTHONPATH=f"{scratch}{os.pathsep}{HERE}",
            OMP_NUM_THREADS="1",
            SFC_MUTATION_DURATIONS=str(scratch / "durations.json"),
        )
        cmd = ["nice", "-n", str(args.nice), sys.executable, "-m", "coverage", "run", f"--data-file={data_file}"]
        cmd += ["--source=sfc_plugin", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "covctx"]
        cmd += args.tests or ["tests"]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=scratch, env=env)
        print(f"suite under coverage: exit {done.returncode} in {time.perf_counter() - t0:.0f}s")
        import coverage

        data = coverage.CoverageData(basename=str(data_file))
        data.read()
        lines: dict[str, dict[int, list[str]]] = {}
        for path in data.measured_files():
            rel = Path(path).resolve().relative_to(scratch.resolve()).as_posix()
            if rel in MODULES:
                by_line = data.contexts_by_lineno(path)
                lines[rel] = {int(k): sorted(c for c in v if c) for k, v in by_line.items()}
        durations = json.loads((scratch / "durations.json").read_text())
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        cov = {"commit": commit, "lines": lines, "durations": durations}
        if args.tests:  # a partial map: these modules' lines replace the earlier map's, from these tests only
            cov = load_map()
            keep = [f for f in MODULES if not args.only or any(f.endswith(o) for o in args.only)]
            for rel in keep:
                cov["lines"][rel] = lines.get(rel, {})
                cov.setdefault("module_commits", {})[rel] = commit
            cov["durations"].update(durations)
            print(f"re-mapped {len(keep)} modules from {len(durations)} tests ({' '.join(args.tests)})")
        (STATE / "map.json").write_text(json.dumps(cov))
        print(f"map of {len(cov['lines'])} modules, {len(cov['durations'])} tests -> {STATE / 'map.json'}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _head() -> str:
    """The commit the scratch copies are made from (``+`` when the working tree differs from it)."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return head + ("+" if dirty.stdout.strip() else "")


def load_map() -> dict:
    path = STATE / "map.json"
    if not path.exists():
        sys.exit(f"no coverage map at {path}: run `{Path(sys.argv[0]).name} map` first")
    return json.loads(path.read_text())


def covering(cov: dict, m: Mutant) -> list[str]:
    """Tests that executed any line of the mutant, fastest first. Lines that run only at import (default arguments,
    module constants) belong to no test: then the tests that run the enclosing function's body, or any line of the
    module for module-level code and functions that only run at import."""
    by_line = cov["lines"].get(m.file, {})

    def tests_of(lines) -> set[str]:
        return {t for ln in lines for t in by_line.get(str(ln), [])}

    tests = tests_of(range(m.line, m.end_line + 1))
    if not tests and str(m.line) in by_line:  # executed, but outside any test
        tests = tests_of(range(m.scope[0], m.scope[1] + 1)) if m.scope else set()
        if not tests:  # module level, or a function only called at import (a registry's constructor)
            tests = tests_of(int(k) for k in by_line)
    if m.default:  # defaults are also compared between pipelines and configs, by signature, running no line
        tests |= {t for t in cov["durations"] if t.split("::")[0] in SIGNATURE_TESTS}
    return sorted(tests, key=lambda t: (cov["durations"].get(t, 60.0), t))


# ---- running ---------------------------------------------------------------------------------------------------


def _results() -> dict[str, dict]:
    path = STATE / "results.jsonl"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[r["key"]] = r
    return out


def _within(tests: list[str], dur: dict, budget: float) -> list[str]:
    """The fastest tests that fit in ``budget`` seconds of measured time (at least one)."""
    out, spent = [], 0.0
    for t in tests:
        if out and spent + dur.get(t, 60.0) > budget:
            break
        out.append(t)
        spent += dur.get(t, 60.0)
    return out


def run_one(
    scratch: Path,
    m: Mutant,
    cov: dict,
    budget: float,
    full_budget: float,
    final: bool = False,
    named: list[str] | None = None,
    commit: str = "",
) -> dict:
    """Run one mutant: ``named`` tests first (those written for an earlier survivor), then the covering tests."""
    source = (scratch / m.file).read_text(encoding="utf-8")
    text = apply(source, m)
    result = {"key": m.key, **asdict(m), "commit": commit}
    if text is None:
        return {**result, "status": "not-applicable"}
    tests = covering(cov, m)
    if not tests and not named:
        return {**result, "status": "survived", "phase": "no-coverage", "tests": 0, "seconds": 0.0}
    dur = cov["durations"]
    first, second = _within(tests, dur, budget), _within(tests, dur, full_budget)
    phases = [("fast", first)] + ([("wide", second)] if len(second) > len(first) else []) if tests else []
    if final and tests:  # every covering test, in one run
        phases = [("all", tests)]
    if named:
        phases = [("named", named)] + phases
    (scratch / m.file).write_text(text, encoding="utf-8")
    t0 = time.perf_counter()
    try:
        for phase, chosen in phases:
            limit = 90 + 4 * sum(dur.get(t, 60.0 if "::" in t else 600.0) for t in chosen)
            run = run_pytest(scratch, chosen, limit)
            if run.status != "passed":
                return {
                    **result,
                    "status": "killed",
                    "how": run.status,
                    "by": run.failed,
                    "phase": phase,
                    "tests": len(chosen),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
        return {
            **result,
            "status": "survived",
            "phase": phase,
            "tests": len(chosen),
            "covering": len(tests),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    finally:
        (scratch / m.file).write_text(source, encoding="utf-8")


def run_all(args) -> None:
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    cov = load_map()
    by_commit = defaultdict(list)  # a partial re-map records its commit per module
    for f in MODULES:
        if not args.only or any(f.endswith(o) for o in args.only):
            by_commit[cov.get("module_commits", {}).get(f, cov["commit"])].append(f)
    moved = [
        f
        for c, files in by_commit.items()
        for f in subprocess.run(
            ["git", "-C", str(REPO), "diff", "--name-only", c, "--", *files], capture_output=True, text=True
        ).stdout.split()
    ]
    if moved:  # the map is by line number: tests chosen for changed files may be the wrong ones
        print(f"warning: {len(moved)} files changed since the coverage map ({cov['commit'][:10]}): run `map` again")
    mutants = sample(args.n, args.seed)
    if args.only:
        mutants = [m for m in mutants if any(m.file.endswith(o) for o in args.only)]
    done = {} if args.rerun else _results()
    again = args.retry_survivors or args.final
    if again:  # earlier survivors only, also those outside today's sample (the sample moves with the code)
        current = {mu.key: mu for f in MODULES for mu in collect(f)}
        todo = [current[k] for k, r in done.items() if r["status"] == "survived" and k in current]
        todo = [mu for mu in todo if not args.only or any(mu.file.endswith(o) for o in args.only)]
        if not args.final:  # survivors argued equivalent are not retried
            notes = load_equivalent()
            todo = [mu for mu in todo if _is_equivalent(asdict(mu), notes) is None]
    else:
        todo = [m for m in mutants if m.key not in done]
    answers = load_survivors()
    commit = _head()
    print(f"{len(mutants)} mutants sampled, {len(todo)} to run with {args.jobs} job(s)", flush=True)
    STATE.mkdir(exist_ok=True)
    scratches: queue.Queue = queue.Queue()
    for _ in range(max(1, args.jobs)):
        scratches.put(make_scratch())
    named_all = sorted({n["test"] for n in answers if n.get("test")}) if again else []
    if named_all:  # a named test that fails without any mutant would count every mutant it answers as killed
        control = run_pytest(scratches.queue[0], named_all, 90 + 600 * len(named_all))
        if control.status != "passed":
            while not scratches.empty():
                shutil.rmtree(scratches.get(), ignore_errors=True)
            sys.exit(f"the survivors' tests fail on the unmutated code ({control.failed}):\n{control.tail}")
    lock, count, t_all = threading.Lock(), [0], time.perf_counter()
    import signal

    signal.signal(signal.SIGTERM, kill_active)
    signal.signal(signal.SIGINT, kill_active)

    def one(m: Mutant) -> None:
        scratch = scratches.get()
        try:
            note = _is_equivalent(asdict(m), answers) if again else None
            named = [note["test"]] if note and note.get("test") else None
            r = run_one(scratch, m, cov, args.budget, args.full_budget, args.final, named, commit)
        finally:
            scratches.put(scratch)
        with lock, (STATE / "results.jsonl").open("a") as out:
            out.write(json.dumps(r) + "\n")
            count[0] += 1
            print(
                f"[{count[0]}/{len(todo)}] {r['status']:9s} {m.file}:{m.line} {m.operator}: "
                f"{m.original[:50]!r} -> {m.replacement[:50]!r} ({r.get('seconds', 0)}s)",
                flush=True,
            )

    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(one, todo))
    finally:
        while not scratches.empty():
            shutil.rmtree(scratches.get(), ignore_errors=True)
    print(f"ran {len(todo)} mutants in {time.perf_counter() - t_all:.0f}s")


# ---- report ----------------------------------------------------------------------------------------------------


def _notes(name: str, table: str) -> list[dict]:
    path = HERE / name
    if not path.exists():
        return []
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(path.read_text(encoding="utf-8")).get(table, [])


def load_equivalent() -> list[dict]:
    """Survivors argued equivalent, with the reason (``equivalent.toml``)."""
    return _notes("equivalent.toml", "equivalent")


def load_survivors() -> list[dict]:
    """Survivors answered by a test written for them (``test``) or still open (``open``, why) (``survivors.toml``)."""
    return _notes("survivors.toml", "survivor")


def _is_equivalent(r: dict, notes: list[dict]) -> dict | None:
    """The note in ``notes`` that matches result or mutant ``r`` (file, line text, original, replacement, column)."""
    for n in notes:
        if (
            n["file"] == r["file"]
            and n["line"] == r["line_text"]
            and n.get("original", r["original"]) == r["original"]
            and n.get("replacement", r["replacement"]) == r["replacement"]
            and n.get("col", r["col"]) == r["col"]
        ):
            return n
    return None


def _md(s: str, width: int = 70) -> str:
    s = " ".join(s.split())
    s = s if len(s) <= width else s[: width - 1] + "…"
    return "`" + s.replace("`", "'").replace("|", "\\|") + "`"


def _presentation(tot: Counter, live: int) -> str:
    """The headline's note on equivalent mutants of kind ``presentation`` (outputs differ only in presentation no
    document specifies): how many, and the figure with them counted as live."""
    p = tot["presentation"]
    if not p:
        return ""
    return (
        f" ({p} of them differ only in unspecified presentation, kind `presentation` below; counted as live: "
        f"{tot['killed']} of {live + p} killed, {tot['killed'] / max(1, live + p):.1%})"
    )


def report(args) -> None:
    """Figures over every recorded mutant whose code is unchanged (the sample moves with the code: results of
    mutants whose line has changed since are stale and left out), survivors with their answers, into the docs."""
    mutants = sample(args.n, args.seed)
    results = _results()
    notes, answers = load_equivalent(), load_survivors()
    current = {mu.key for f in MODULES for mu in collect(f)}
    rows = [r for k, r in results.items() if k in current and r["status"] != "not-applicable"]
    stale = sum(1 for k in results if k not in current)
    per = defaultdict(Counter)
    survivors, equivalent = [], []
    for r in rows:
        c = per[r["file"]]
        c["mutants"] += 1
        if r["status"] == "killed":
            c["killed"] += 1
        elif (note := _is_equivalent(r, notes)) is not None:
            c["equivalent"] += 1
            c["presentation"] += note.get("kind") == "presentation"
            equivalent.append((r, note))
        else:
            answer = _is_equivalent(r, answers) or {}
            c["tested" if answer.get("test") else "open"] += 1
            survivors.append((r, answer))
    tot = sum(per.values(), Counter())
    live = tot["mutants"] - tot["equivalent"]
    commits = sorted({r.get("commit") or "not recorded" for r in rows})
    unrun = Counter(m.file for m in mutants if m.file not in per)
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    lines = [
        BEGIN,
        f"Report of {time.strftime('%Y-%m-%d', time.gmtime())}. "
        f"Recorded: {tot['mutants']} mutants (seeded samples, seed {args.seed}) over {len(per)} modules, run against "
        f"the suite at {', '.join(f'`{c}`' for c in commits)}; {stale} recorded mutants whose line has changed "
        f"since are left out. Test time: {seconds / 60:.0f} min (niced, on the 2-core development machine shared "
        "with other jobs).",
        "",
        f"**Killed {tot['killed']} of {live} non-equivalent mutants ({tot['killed'] / max(1, live):.1%})**; "
        f"{tot['equivalent']} equivalent{_presentation(tot, live)}; {tot['tested'] + tot['open']} survived: "
        f"{tot['tested']} of them have a "
        f"test written since (not yet re-run: `mutate.py run --retry-survivors` runs each against its test first), "
        f"{tot['open']} are open. If each of those tests kills its mutant: {tot['killed'] + tot['tested']} of "
        f"{live} ({(tot['killed'] + tot['tested']) / max(1, live):.1%}), not measured until the retry.",
        "",
    ]
    pending = Counter(m.file for m in mutants if m.file in per and m.key not in results)
    if pending:  # the sample moves with the code: modules run earlier have newly sampled mutants not yet run
        lines += [
            f"Today's sample (seed {args.seed}) also holds {sum(pending.values())} mutants of modules run earlier that "
            "have no result yet (`run` runs them): "
            + ", ".join(f"`{f.removeprefix('sfc_plugin/')}` ({n})" for f, n in sorted(pending.items()))
            + ".",
            "",
        ]
    if unrun:
        lines += [
            "Not yet run (their share of the current sample): "
            + ", ".join(f"`{f.removeprefix('sfc_plugin/')}` ({n})" for f, n in sorted(unrun.items()))
            + ".",
            "",
        ]
    lines += [
        "| module | mutants | killed | equivalent | survived: test since / open | killed / non-equivalent |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for f in sorted(per):
        c = per[f]
        lines.append(
            f"| `{f.removeprefix('sfc_plugin/')}` | {c['mutants']} | {c['killed']} | {c['equivalent']} | "
            f"{c['tested']} / {c['open']} | {c['killed'] / max(1, c['mutants'] - c['equivalent']):.0%} |"
        )
    lines += ["", "### Surviving mutants", ""]
    if survivors:
        lines += ["| where | operator | original | mutant | answer |", "|---|---|---|---|---|"]
        for r, answer in sorted(survivors, key=lambda x: (x[0]["file"], x[0]["line"])):
            what = f"test since: `{answer['test'].split('::')[-1]}`" if answer.get("test") else None
            what = what or ("open: " + " ".join(answer["open"].split()) if answer.get("open") else "open")
            lines.append(
                f"| `{r['file'].removeprefix('sfc_plugin/')}:{r['line']}` | {r['operator']} | {_md(r['original'], 40)} | "
                f"{_md(r['replacement'], 40)} | {what} |"
            )
    else:
        lines.append("None.")
    lines += ["", "### Equivalent mutants", ""]
    if equivalent:
        lines += ["| where | kind | original | mutant | why no test can tell |", "|---|---|---|---|---|"]
        for r, note in sorted(equivalent, key=lambda x: (x[0]["file"], x[0]["line"])):
            lines.append(
                f"| `{r['file'].removeprefix('sfc_plugin/')}:{r['line']}` | {note.get('kind', 'equivalent')} | "
                f"{_md(r['original'], 50)} | {_md(r['replacement'], 50)} | {' '.join(note['reason'].split())} |"
            )
    else:
        lines.append("None.")
    lines.append(END)
    block = "\n".join(lines)
    text = DOCS.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text += "\n" + block + "\n"
    DOCS.write_text(text, encoding="utf-8")
    print(block)


def list_mutants(args) -> None:
    mutants = sample(args.n, args.seed)
    cov = load_map() if (STATE / "map.json").exists() else None
    for m in mutants:
        n = len(covering(cov, m)) if cov else "?"
        print(f"{m.key} {m.file}:{m.line} {m.operator}: {m.original[:60]!r} -> {m.replacement[:60]!r} [{n} tests]")
    print(f"{len(mutants)} mutants; by module: {dict(Counter(m.file for m in mutants))}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["map", "list", "run", "report"])
    parser.add_argument("-n", type=int, default=300, help="mutants to sample (default 300)")
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--budget", type=float, default=45.0, help="seconds of measured test time in the fast phase")
    parser.add_argument(
        "--full-budget", type=float, default=60.0, help="seconds of measured test time for a fast-phase survivor"
    )
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once, each in its own scratch copy")
    parser.add_argument(
        "--only", nargs="*", help="run only mutants of these files (suffixes); with map --tests, re-map only these"
    )
    parser.add_argument(
        "--tests",
        nargs="*",
        help="map: run only these tests and replace the --only modules' lines in the existing map (a partial re-map)",
    )
    parser.add_argument("--rerun", action="store_true", help="ignore earlier results")
    parser.add_argument(
        "--retry-survivors",
        action="store_true",
        help="run only earlier survivors again, each against the test survivors.toml names first (after new tests)",
    )
    parser.add_argument("--final", action="store_true", help="run earlier survivors against every covering test")
    args = parser.parse_args(argv)
    os.environ["SFC_MUTATION_NICE"] = str(args.nice)
    {"map": build_map, "list": list_mutants, "run": run_all, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
