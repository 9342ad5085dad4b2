"""Our discovery path against the paper's straightforward algorithm (``sfc_plugin.bench``), side by side.

    python benchmarks/bench_discover.py [--workload toy|pythia|gemma ...] [--d-sae N] [-o DIR]

The same as ``sfc bench``: one process, the same inputs; for nodes, edges and total it prints the time
of each implementation, their ratio, the peak memory of each and the maximum relative difference of
their effects. See ``sfc bench --help`` for every option.
"""

from __future__ import annotations

import sys
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

from sfc_plugin.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
