"""``python bench/auto_regime_cpu.py``: CPU seconds of one ``auto`` round in its test stage at n = 10k,
d = 64 and 512, one thread (docs/strategies.md, "auto: a test on the labeled set").

The labeled set has 9 labels per class (below ``switch_per_class`` = 10, at or above
``test_from_per_class`` = 4), so ``auto`` runs the typical-vs-atypical test (selection/regime.py)
and then TypiClust or its 'otherwise' strategy; the test alone is timed as well.
"""
import os
import sys
import time

for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"
sys.path.insert(0, os.getcwd())
import numpy as np  # noqa: E402

from selection import SelectionContext, make_strategy  # noqa: E402
from selection.bench import make_inputs  # noqa: E402
from selection.regime import typical_vs_atypical  # noqa: E402

X0, P0, XL0, y0 = make_inputs(2_000, 10, 64, 90)
typical_vs_atypical(XL0, y0, X0, 0)  # imports and first-call set-up are not timed
print("| d | c | labeled | b | test CPU s | auto round CPU s | chose | wall s |")
print("|---|---|---|---|---|---|---|---|")
for d, c in ((64, 10), (64, 26), (64, 100), (512, 26), (512, 100), (512, 250)):
    X, P, XL, y_lab = make_inputs(10_000, c, d, min(9 * c, 1000))
    PL = np.full((len(XL), c), 1.0 / c)
    t0 = time.process_time()
    typical_vs_atypical(XL, y_lab, X, 0)
    t_test = time.process_time() - t0
    for b in (50, 520):
        s = make_strategy("auto", {})
        kw = dict(X_labeled=XL, probs_labeled=PL, y_labeled=y_lab, batch_size=b, random_state=0,
                  context=SelectionContext(l2=1.0))
        t0, w0 = time.process_time(), time.perf_counter()
        sel = s.select(X, P, **kw)
        cpu, wall = time.process_time() - t0, time.perf_counter() - w0
        assert len(np.unique(sel.indices)) == b
        print(f"| {d} | {c} | {len(XL)} | {b} | {t_test:.2f} | {cpu:.2f} | {sel.info['sub_strategy']} | {wall:.1f} |",
              flush=True)
