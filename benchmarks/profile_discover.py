"""Where discovery spends its time: cProfile of our path on a bench workload, top items by own time.

    python benchmarks/profile_discover.py [--workload pythia] [--d-sae 32768] [--n-pairs 20] [--top 15]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import time
import warnings

warnings.filterwarnings("ignore")

from sfc_plugin import bench  # noqa: E402
from sfc_plugin.attribution.methods import ig  # noqa: E402
from sfc_plugin.discovery import _select, attribute  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="pythia", choices=bench.WORKLOADS)
    p.add_argument("--d-sae", type=int, default=None)
    p.add_argument("--n-pairs", type=int, default=None)
    p.add_argument("--n-tokens", type=int, default=10)
    p.add_argument("--n-nodes", type=int, default=200)
    p.add_argument("--max-memory", default=None)
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args()
    if a.workload == "toy":
        w = bench.toy_workload(a.n_pairs or 100)
    elif a.workload == "pythia":
        w = bench.pythia_workload(d_sae=a.d_sae or 32768, n_pairs=a.n_pairs or 20, n_tokens=a.n_tokens)
    else:
        w = bench.gemma_workload(d_sae=a.d_sae or 16384, n_pairs=a.n_pairs or 8, n_tokens=a.n_tokens)
    from sfc_plugin.budget import MemoryBudget

    budget = MemoryBudget.resolve(a.max_memory, w.model)
    nodes = None
    if w.node_threshold is None:
        res = attribute(w.model, w.subs, w.batch, w.metric, ig, node_threshold=float("inf"), edges=False, budget=budget)
        nodes = _select(w.subs, res.features, res.errors, bench._top_threshold(res, a.n_nodes), "sum")
    prof = cProfile.Profile()
    c0, t0 = time.process_time(), time.perf_counter()
    prof.enable()
    res = attribute(w.model, w.subs, w.batch, w.metric, ig, node_threshold=w.node_threshold or 0.0, nodes=nodes,
                    budget=budget)
    prof.disable()
    print(f"{w.description}: wall {time.perf_counter() - t0:.1f}s, cpu {time.process_time() - c0:.1f}s, "
          f"phases {', '.join(f'{k} {v:.1f}s' for k, v in res.timings.items())}, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    pstats.Stats(prof).sort_stats("tottime").print_stats(a.top)


if __name__ == "__main__":
    main()
