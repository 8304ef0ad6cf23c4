"""LogisticHead against scikit-learn's LogisticRegression(C = 1 / l2) on digits: max |p - p_sklearn|.

    .venv/bin/python bench/head_vs_sklearn.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from selection.head import LogisticHead


def main() -> None:
    X, y = load_digits(return_X_y=True)
    print("| pixels | l2 | dtype | L-BFGS iterations | max abs prob. difference | head s | sklearn s |")
    print("|---|---|---|---|---|---|---|")
    for scale, label in ((16.0, "/16"), (1.0, "raw 0..16")):
        Xs = X / scale
        for l2 in (1.0, 10.0):
            t = time.perf_counter()
            ref = LogisticRegression(C=1 / l2, tol=1e-8, max_iter=1000, solver="newton-cg").fit(Xs, y)
            t_sk = time.perf_counter() - t
            for dt in ("float32", "float64"):
                t = time.perf_counter()
                h = LogisticHead(10, l2=l2, dtype=dt).fit(Xs.astype(np.float32), y)
                t_h = time.perf_counter() - t
                diff = np.abs(h.predict_proba(Xs) - ref.predict_proba(Xs)).max()
                print(f"| {label} | {l2:g} | {dt} | {h.n_iter_} | {diff:.1e} | {t_h:.2f} | {t_sk:.2f} |", flush=True)


if __name__ == "__main__":
    main()
