"""Regenerate the toy-world circuit figures of the README and the docs with the commands the docs print.

    .venv/bin/python scripts/docs_figures.py [--skip-labels]

Writes docs/toy-rc-circuit.png/.svg (the faithful circuit: the smallest on the held-out curve with faithfulness
≥ 0.8), docs/toy-rc-circuit-labels.png (the |effect| > 0.4 sketch with auto labels), docs/toy-rc-positions.png
(per position, faithfulness ≥ 0.8) and docs/viewer-toy-rc.png (the viewer's first screen; needs chromium).
Prints each circuit's held-out faithfulness as the figure titles state it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def sfc(*args) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sfc_plugin.cli", *map(str, args)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        sys.exit(f"sfc {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done.stdout


def faithfulness(path: Path) -> str:
    ev = json.loads(path.read_text())["evaluation"]
    return f"{ev['n_nodes']} nodes, faithfulness {ev['faithfulness']} ± {ev['faithfulness_se']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-labels", action="store_true", help="no dashboards (they take a minute)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sfc-out"
        print(sfc("discover", "-q", "-o", out))
        for fmt in ("png", "svg"):
            print(
                sfc(
                    "export",
                    out / "circuit.json",
                    "--target-faithfulness",
                    "0.8",
                    "--max-edges",
                    "200",
                    "-o",
                    DOCS / f"toy-rc-circuit.{fmt}",
                )
            )
        sfc("export", out / "circuit.json", "--target-faithfulness", "0.8", "-o", Path(tmp) / "faithful.json")
        print("toy-rc-circuit:", faithfulness(Path(tmp) / "faithful.json"))
        if not args.skip_labels:
            sfc("dashboards", out / "circuit.json", "-q", "-o", out / "dashboards")  # next to the circuit
            print(
                sfc(
                    "export",
                    out / "circuit.json",
                    "--labels",
                    "auto",
                    "--node-threshold",
                    "0.4",
                    "--edge-threshold",
                    "0.1",
                    "-o",
                    DOCS / "toy-rc-circuit-labels.png",
                )
            )
            sfc("export", out / "circuit.json", "--node-threshold", "0.4", "-o", Path(tmp) / "sketch.json")
            print("toy-rc-circuit-labels:", faithfulness(Path(tmp) / "sketch.json"))
        pos = Path(tmp) / "positions"
        print(sfc("discover", "-q", "--aggregation", "none", "-o", pos))
        print(sfc("export", pos / "circuit.json", "--target-faithfulness", "0.8", "-o", DOCS / "toy-rc-positions.png"))
        sfc("view", out / "circuit.json", "--no-dashboards", "-q", "-o", Path(tmp) / "site")
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "viewer_screenshot.py"),
                Path(tmp) / "site",
                DOCS / "viewer-toy-rc.png",
                "--no-card",
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
