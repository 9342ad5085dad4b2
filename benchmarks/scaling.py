"""How our discovery path's time grows with examples, positions and d_sae (Pythia-70M-shaped model).

    python benchmarks/scaling.py [--steps 10] [--n-nodes 50]

Builds the model once and prints process CPU seconds of the nodes and edges phases for each setting
(CPU seconds, not wall clock, so other jobs on the machine matter less).
"""

from __future__ import annotations

import argparse
import time
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402

from sfc_plugin import bench  # noqa: E402
from sfc_plugin.attribution.methods import ig  # noqa: E402
from sfc_plugin.discovery import _select, attribute  # noqa: E402


def run(w, subs, batch, steps, n_nodes):
    res = attribute(w.model, subs, batch, w.metric, ig, steps=steps, node_threshold=float("inf"), edges=False)
    nodes = _select(subs, res.features, res.errors, bench._top_threshold(res, n_nodes), "sum")
    cpu = {}
    t = [0.0]

    def on_phase(name):
        now = time.process_time()
        if cpu or t[0]:
            cpu[on_phase.last] = now - t[0]
        on_phase.last, t[0] = name, now

    on_phase.last = None
    attribute(w.model, subs, batch, w.metric, ig, steps=steps, nodes=nodes, on_phase=on_phase)
    cpu[on_phase.last] = time.process_time() - t[0]
    return cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--n-nodes", type=int, default=50)
    p.add_argument("--base-pairs", type=int, default=2)
    p.add_argument("--base-tokens", type=int, default=8)
    p.add_argument("--base-d-sae", type=int, default=4096)
    a = p.parse_args()
    n0, t0, f0 = a.base_pairs, a.base_tokens, a.base_d_sae
    w = bench.pythia_workload(d_sae=f0, n_pairs=4 * n0, n_tokens=4 * t0)
    print(f"{'vary':<9} {'pairs':>5} {'tokens':>6} {'d_sae':>6} {'nodes cpu s':>11} {'edges cpu s':>11}")
    settings = [("examples", n0 * k, t0, f0) for k in (1, 2, 4)] + [("positions", n0, t0 * k, f0) for k in (2, 4)]
    settings += [("d_sae", n0, t0, f0 * k) for k in (2, 4, 8)]
    subs_by_f = {f0: w.subs}
    for what, n, t, f in settings:
        if f not in subs_by_f:
            subs_by_f.clear()
            subs_by_f[f] = bench._calibrated_subs(w.model, [s.hook for s in w.subs], f, 50, 0, t)
        batch = bench._random_pairs(w.model, n, t, 0)
        cpu = run(w, subs_by_f[f], batch, a.steps, a.n_nodes)
        print(f"{what:<9} {n:>5} {t:>6} {f:>6} {cpu['nodes']:>11.1f} {cpu['edges']:>11.1f}", flush=True)
        torch.manual_seed(0)


if __name__ == "__main__":
    main()
