"""Reproduce every toy-world number and figure in the README (writes docs/, prints Markdown).

.venv/bin/python scripts/toy_results.py [--skip-shift | --only-shift]
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)

import sfc_plugin  # noqa: E402
from sfc_plugin import toy  # noqa: E402
from sfc_plugin.evaluation import write_report  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"


def nodes_for(points, target=0.8):
    ok = [p["n_nodes"] for p in points if p["faithfulness"] >= target]
    return min(ok) if ok else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-shift", action="store_true")
    parser.add_argument(
        "--only-shift", action="store_true", help="rerun SHIFT only; keep the rest of docs/toy_results.json"
    )
    args = parser.parse_args()
    model, saes = toy.load()
    out = {}
    rows = []
    if args.only_shift or args.skip_shift:  # keep the part not rerun
        out = json.loads((DOCS / "toy_results.json").read_text())
    for cond in () if args.only_shift else toy.CONDITIONS:
        train = sfc_plugin.load_dataset(f"toy/sva-{cond}", "train")[:40]
        test = sfc_plugin.load_dataset(f"toy/sva-{cond}", "test")[:40]
        t0 = time.perf_counter()
        circuit = sfc_plugin.discover(model, saes, train, node_threshold=0.02, edge_threshold=0.01, progress=False)
        t_disc = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = sfc_plugin.evaluate(model, saes, circuit, test, ablation="mean", progress=False)
        t_eval = time.perf_counter() - t0
        feats = sfc_plugin.evaluate(
            model, saes, circuit.prune(0.1), test, thresholds=[0.1], include_errors=False, progress=False
        )
        own = sfc_plugin.evaluate(model, saes, circuit.prune(0.1), test, thresholds=[0.1], progress=False)
        write_report(res, DOCS / f"faithfulness-{cond}", title=f"toy/sva-{cond}: mean ablation", overwrite=True)
        row = {
            "condition": cond,
            "nodes_at_0.1": own["circuit"]["n_nodes"],
            "faithfulness_at_0.1": own["circuit"]["faithfulness"],
            "faithfulness_se_at_0.1": own["circuit"]["faithfulness_se"],
            "completeness_at_0.1": own["circuit"]["completeness"],
            "features_only_faithfulness_at_0.1": feats["circuit"]["faithfulness"],
            "nodes_for_faithfulness_0.8": nodes_for(res["points"]),
            "discover_s": round(t_disc, 1),
            "curve_s": round(t_eval, 1),
            "n_points": len(res["points"]),
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    if not args.only_shift:
        out["evaluation"] = rows
        print("| condition | nodes (τ=0.1) | faithfulness | completeness | features only | nodes for F≥0.8 | points |")
        print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['condition']} | {r['nodes_at_0.1']} | {r['faithfulness_at_0.1']:.2f} ± {r['faithfulness_se_at_0.1']:.2f} | "
            f"{r['completeness_at_0.1']:.2f} | {r['features_only_faithfulness_at_0.1']:.2f} | "
            f"{r['nodes_for_faithfulness_0.8']} | {r['n_points']} |"
        )
    if not args.skip_shift:
        from sfc_plugin.shifting import format_table, public
        from sfc_plugin.shifting.side_effects import format_side_effects

        bios = {s: sfc_plugin.load_dataset("toy/bios", s) for s in ("train", "val", "test")}
        t0 = time.perf_counter()
        result = sfc_plugin.shift(model, saes, bios["train"], bios["test"], bios["val"], progress=False)
        out["shift"] = public(result)
        out["shift"]["seconds"] = round(time.perf_counter() - t0, 1)
        print(format_table(result))
        print(format_side_effects(result["side_effects"]))
        for row in ("shift", "shift_labelled"):
            ids = [f["id"] for f in result["features"] if (f if row == "shift" else f[row])["decision"] == "ablate"]
            print(f"{row} ablated {len(ids)}: {', '.join(ids)}")
        print(f"{out['shift']['seconds']} s")
    (DOCS / "toy_results.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
