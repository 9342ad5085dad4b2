"""Apply each known plausible bug alone to a scratch copy, run the tests that should see it, report caught/survived.

The bugs are the six that once passed the whole suite and the weak kills of issue 26, written as text patches
on today's code. A patch that no longer applies (the code moved) is reported as such: update it here.

    .venv/bin/python scripts/mutation/known_bugs.py            # every bug, its own test files
    .venv/bin/python scripts/mutation/known_bugs.py --full     # every bug against the whole suite (slow)
    .venv/bin/python scripts/mutation/known_bugs.py ablation-clean-mean dot-title-unescaped

Runs niced (SFC_MUTATION_NICE, default 10) in a temporary copy; the working tree is never modified.
Exit status 0 when every bug is caught and the unpatched copy passes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import REPO, make_scratch, run_pytest  # noqa: E402

BEGIN, END = "<!-- known-bugs:begin -->", "<!-- known-bugs:end -->"


@dataclass
class Bug:
    name: str
    what: str
    file: str
    patches: list[tuple[str, str]]  # (old, new): each ``old`` must occur exactly once
    tests: list[str]


BUGS = [
    Bug(
        "ablation-clean-mean",
        "mean/resample ablation values from the clean prompts instead of the patch prompts",
        "sfc_plugin/ablations.py",
        [("return batch.patch if batch.patch is not None else batch.clean", "return batch.clean")],
        ["tests/test_hand_references.py", "tests/test_evaluation.py"],
    ),
    Bug(
        "mean-ablation-clean",
        "mean ablation alone takes the clean prompts",
        "sfc_plugin/ablations.py",
        [("acts = activations(model, subs, _source_tokens(part))", "acts = activations(model, subs, part.clean)")],
        ["tests/test_hand_references.py", "tests/test_evaluation.py"],
    ),
    Bug(
        "resample-ablation-clean",
        "resample ablation alone takes the clean prompts",
        "sfc_plugin/ablations.py",
        [("_source_tokens(batch)[partner", "batch.clean[partner")],
        ["tests/test_hand_references.py", "tests/test_evaluation.py"],
    ),
    Bug(
        "probe-pool-over-padding",
        "SHIFT probe pooling averages over padding too",
        "sfc_plugin/shifting/probe.py",
        [("return (act * valid).sum(1) / valid.sum(1)", "return act.mean(1)")],
        ["tests/test_hand_references.py", "tests/test_shift.py"],
    ),
    Bug(
        "dot-title-unescaped",
        "the DOT graph title written without escaping",
        "sfc_plugin/export/dot.py",
        [("label=text(_title(circuit, note)),", "label='\"' + _title(circuit, note) + '\"',")],
        ["tests/test_hostile_names.py", "tests/test_export.py"],
    ),
    Bug(
        "dot-title-quoted-not-text",
        "the DOT graph title quoted but its '&' left for Graphviz to read as an entity",
        "sfc_plugin/export/dot.py",
        [("label=text(_title(circuit, note)),", "label=quote(_title(circuit, note)),")],
        ["tests/test_hostile_names.py", "tests/test_export.py"],
    ),
    Bug(
        "evaluate-threshold-inclusive",
        "evaluate keeps nodes with |effect| >= threshold",
        "sfc_plugin/evaluation.py",
        [("kf, ke = f > t, e > t", "kf, ke = f >= t, e >= t")],
        ["tests/test_thresholds.py", "tests/test_evaluation.py"],
    ),
    Bug(
        "evaluate-count-inclusive",
        "evaluate counts nodes with |effect| >= threshold",
        "sfc_plugin/evaluation.py",
        [("int((f > t).sum() + (e > t).sum())", "int((f >= t).sum() + (e >= t).sum())")],
        ["tests/test_thresholds.py", "tests/test_evaluation.py"],
    ),
    Bug(
        "select-threshold-inclusive",
        "discover's node selection keeps |effect| >= threshold (both branches)",
        "sfc_plugin/attribution/engine.py",
        [
            ("feat = (fe.abs() > threshold).nonzero().flatten()", "feat = (fe.abs() >= threshold).nonzero().flatten()"),
            ("abs(float(ee)) > threshold", "abs(float(ee)) >= threshold"),
            ("pos, feat = (fe.abs() > threshold)", "pos, feat = (fe.abs() >= threshold)"),
            ("(ee.abs() > threshold)", "(ee.abs() >= threshold)"),
        ],
        ["tests/test_thresholds.py", "tests/test_attribution.py"],
    ),
    Bug(
        "select-threshold-inclusive-sum",
        "discover's node selection keeps |effect| >= threshold (aggregation sum only)",
        "sfc_plugin/attribution/engine.py",
        [
            ("feat = (fe.abs() > threshold).nonzero().flatten()", "feat = (fe.abs() >= threshold).nonzero().flatten()"),
            ("abs(float(ee)) > threshold", "abs(float(ee)) >= threshold"),
        ],
        ["tests/test_thresholds.py", "tests/test_attribution.py"],
    ),
    Bug(
        "select-threshold-inclusive-none",
        "discover's node selection keeps |effect| >= threshold (aggregation none only)",
        "sfc_plugin/attribution/engine.py",
        [
            ("pos, feat = (fe.abs() > threshold)", "pos, feat = (fe.abs() >= threshold)"),
            ("(ee.abs() > threshold)", "(ee.abs() >= threshold)"),
        ],
        ["tests/test_thresholds.py", "tests/test_attribution.py"],
    ),
    Bug(
        "prune-threshold-inclusive",
        "Circuit.prune keeps nodes with |effect| >= threshold",
        "sfc_plugin/circuit.py",
        [('n.kind == "metric" or abs(n.effect) > nt', 'n.kind == "metric" or abs(n.effect) >= nt')],
        ["tests/test_thresholds.py", "tests/test_api.py"],
    ),
    Bug(
        "ig-right-riemann-sum",
        "integrated gradients on alpha = (k+1)/N (a right Riemann sum) [weak kill before]",
        "sfc_plugin/attribution/methods.py",
        [("[k / ctx.steps for k in range(ctx.steps)]", "[(k + 1) / ctx.steps for k in range(ctx.steps)]")],
        ["tests/test_hand_references.py"],
    ),
    Bug(
        "shift-edit-without-sigma",
        "a SHIFT edit that skips a layer-normalising SAE's sigma (the SAE's own unscaled features) [weak kill before]",
        "sfc_plugin/shifting/encoding.py",  # edits encode their features here (encode_some) since 88d3cd0
        [
            (
                "        return sub.encode(read)[..., feats]",
                "        return sub.sae.encode(read)[..., feats]",
            )
        ],
        ["tests/test_hand_references.py"],
    ),
    Bug(
        "write-atomic-replaces-devices",
        "write_atomic replaces device files and FIFOs instead of writing into them [test wrote the real /dev/null]",
        "sfc_plugin/files.py",
        [("return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)", "return False")],
        ["tests/test_files.py"],
    ),
]


def apply(scratch: Path, bug: Bug, original: str) -> bool:
    """Write the patched file; False when a patch no longer applies (its text is gone or ambiguous)."""
    text = original
    for old, new in bug.patches:
        if text.count(old) != 1:
            return False
        text = text.replace(old, new)
    (scratch / bug.file).write_text(text, encoding="utf-8")
    return True


def no_system_devices(scratch: Path, tests: list[str]) -> None:
    """Refuse to run a write_atomic bug against tests that write system device files (as root, a broken
    write_atomic would replace them)."""
    for t in tests:
        for path in (scratch / t.split("::")[0]).glob("**/*.py") if (scratch / t).is_dir() else [scratch / t]:
            if '"/dev/' in path.read_text(encoding="utf-8"):
                sys.exit(f"{path.relative_to(scratch)} writes under /dev: refusing to run file-writing bugs against it")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="bugs to run (default: all)")
    parser.add_argument("--full", action="store_true", help="run the whole suite for every bug")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per pytest run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument("--write-docs", action="store_true", help="put the table into docs/testing.md")
    args = parser.parse_args(argv)
    bugs = [b for b in BUGS if not args.names or b.name in args.names]
    if not bugs:
        parser.error(f"unknown bug names {args.names} (known: {', '.join(b.name for b in BUGS)})")
    scratch = make_scratch("sfc-known-bugs-")
    rows, ok = [], True
    try:
        suites = sorted({t for b in bugs for t in (["tests"] if args.full else b.tests)})
        no_system_devices(scratch, suites)
        control = run_pytest(scratch, suites, args.timeout)
        print(f"control (unpatched): {control.status} in {control.seconds:.0f}s", flush=True)
        if control.status != "passed":
            print(control.tail)
            return 1
        for bug in bugs:
            original = (scratch / bug.file).read_text(encoding="utf-8")
            if not apply(scratch, bug, original):
                rows.append((bug, "PATCH DOES NOT APPLY", 0.0, None))
                ok = False
                continue
            t0 = time.perf_counter()
            try:
                run = run_pytest(scratch, ["tests"] if args.full else bug.tests, args.timeout)
            finally:
                (scratch / bug.file).write_text(original, encoding="utf-8")
            verdict = "caught" if run.status in ("failed", "error", "timeout") else "SURVIVED"
            ok &= verdict == "caught"
            rows.append((bug, f"{verdict} ({run.status})", time.perf_counter() - t0, run.failed))
            print(f"{bug.name}: {rows[-1][1]} in {rows[-1][2]:.0f}s  {run.failed or ''}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"scratch copy kept at {scratch}")
    table = ["| bug | file | result | first failing test |", "|---|---|---|---|"]
    for bug, verdict, _, failed in rows:
        what = bug.what.replace("|", "\\|")
        table.append(f"| `{bug.name}`: {what} | `{bug.file}` | {verdict} | `{failed or '-'}` |")
    print("\n" + "\n".join(table))
    caught = sum(1 for r in rows if r[1].startswith("caught"))
    print(f"{caught} of {len(rows)} known bugs caught")
    if args.write_docs:
        write_docs(table, control.seconds, sum(r[2] for r in rows), args.full, f"{caught} of {len(rows)}")
    return 0 if ok else 1


def write_docs(table: list[str], control_s: float, bugs_s: float, full: bool, caught: str) -> None:
    import subprocess

    docs = REPO / "docs" / "testing.md"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    head = (
        f"Last run on {day} at commit `{commit.stdout.strip()}`"
        f" ({'whole suite' if full else 'each bug against its own test files'}): **{caught} caught**;"
        f" control {control_s:.0f} s, the bugs {bugs_s:.0f} s, niced on the shared 2-core machine."
    )
    block = "\n".join([BEGIN, head, "", *table, END])
    text = docs.read_text(encoding="utf-8")
    text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    docs.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
