"""``python bench/strategy_cpu_10k.py [NAMES]``: CPU seconds of one ``select`` per strategy at n = 10k,
d = 64, m = 520 labeled rows, one thread (docs/strategies.md, "Speed").

process_time() counts this process's CPU time; with every BLAS / OpenMP pool limited to one
thread that is the time on one core, whatever else the machine runs.  Cluster-Margin: the first
call clusters (cached), the second is the per-round step.  NAMES: comma-separated, with
parameter overrides as in ``python -m selection simulate --strategies`` (``firal:round_steps=0``).
"""
import os
import sys
import time

for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"
sys.path.insert(0, os.getcwd())
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
from selection import SelectionContext, make_strategy, strategy_names  # noqa: E402
from selection.bench import make_inputs  # noqa: E402
from selection.simulate import parse_strategies  # noqa: E402

specs = parse_strategies(sys.argv[1] if len(sys.argv) > 1 else
                         ",".join(n for n in strategy_names() if n != "firal_exact"))
print("| strategy | c | b | CPU s per round | first call (clustering) CPU s | wall s | unique |")
print("|---|---|---|---|---|---|---|")
for c in (10, 26):
    X, P, XL, y_lab = make_inputs(10_000, c, 64, 520)
    PL = np.full((len(XL), c), 1.0 / c)
    for b in (50, 520):
        for spec in specs:
            name = spec.name
            s = make_strategy(name, spec.params)
            ctx = SelectionContext(l2=1.0, embedding_version=f"bench-{c}")
            kw = dict(X_labeled=XL, probs_labeled=PL, y_labeled=y_lab, batch_size=b, random_state=0, context=ctx)
            first = ""
            if name == "cluster_margin":
                t0 = time.process_time()
                s.select(X, P, **kw)
                first = f"{time.process_time() - t0:.2f}"
            t0, w0 = time.process_time(), time.perf_counter()
            sel = s.select(X, P, **kw)
            cpu, wall = time.process_time() - t0, time.perf_counter() - w0
            unique = len(np.unique(sel.indices)) == b
            print(f"| {spec.label} | {c} | {b} | {cpu:.2f} | {first} | {wall:.1f} | {unique} |", flush=True)
