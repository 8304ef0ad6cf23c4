"""A simulated annotator for candidate sets: how often the offered set holds the true class, how big it is.

``python -m selection candidates --data digits --coverage 0.9`` runs the loop the labeling page
runs, with an oracle in place of the person:

1. start with ``start`` labels drawn at random;
2. each round: fit the head on the labels so far, predict the next ``batch`` items (drawn at random:
   the page serves the queue in rank order, and the audit share is random), keep each item's top K;
3. offer each item the LAC set of :mod:`selection.candidates` calibrated on every earlier round's
   *prequential* predictions (each earlier item scored by the model that was current when it was
   served, exactly what the round's write step stores);
4. the annotator gives the true label; record whether it was in the offered set and the set's size;
   the item joins the labels and the calibration history.

Rounds before ``min_calibration`` items are in the history show the top ``shown`` classes (no
guarantee yet) and are reported apart.  Output: a table per round and the totals.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from .candidates import coverage_and_size, lac_threshold, set_sizes, top_k, true_class_probs


@dataclass
class CandidateRound:
    labeled: int
    calibration: int
    threshold: float
    coverage: float  # share of this round's items whose true class was offered
    mean_size: float
    top1: float  # share whose true class was the model's first guess
    calibrated: bool


def simulate_candidates(X: np.ndarray, y: np.ndarray, n_classes: int, *, coverage: float = 0.9, start: int = 50,
                        batch: int = 50, rounds: int = 10, k: int = 20, shown: int = 9,
                        min_calibration: int = 20, l2: float = 1.0, seed: int = 0) -> list[CandidateRound]:
    """The loop of the module docstring.  X : (n, d) float32, y : (n,) int64 in [0, n_classes)."""
    from .head import LogisticHead  # noqa: PLC0415 - torch only when simulating

    X, y = np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    labeled = list(order[:start])
    cursor = start
    hist_p: list[np.ndarray] = []
    out: list[CandidateRound] = []
    state = None
    for _ in range(rounds):
        if cursor + batch > len(y):
            break
        head = LogisticHead(n_classes, l2=l2, random_state=seed)
        head.fit(X[labeled], y[labeled], warm_start=state)
        state = head.get_state()
        served = order[cursor:cursor + batch]
        cursor += batch
        idx, p = top_k(head.predict_proba(X[served]), k)
        calib = np.concatenate(hist_p) if hist_p else np.empty(0)
        calibrated = calib.size >= min_calibration
        if calibrated:
            t = lac_threshold(calib, coverage)
            sizes = np.minimum(set_sizes(p, t), shown)
        else:
            t = float("nan")
            sizes = np.full(len(served), min(shown, idx.shape[1]), dtype=np.int64)
        cov, size = coverage_and_size(idx, sizes, y[served])
        out.append(CandidateRound(len(labeled), int(calib.size), t, cov, size,
                                  float((idx[:, 0] == y[served]).mean()), calibrated))
        hist_p.append(true_class_probs(idx, p, y[served]))
        labeled.extend(served)
    return out


def summary(rows: list[CandidateRound]) -> dict[str, float]:
    """Item-weighted coverage and mean size over the calibrated rounds (every round has the same batch)."""
    cal = [r for r in rows if r.calibrated]
    if not cal:
        return {"rounds": 0, "coverage": float("nan"), "mean_size": float("nan")}
    return {"rounds": len(cal), "coverage": float(np.mean([r.coverage for r in cal])),
            "mean_size": float(np.mean([r.mean_size for r in cal]))}


def main(argv: list[str] | None = None) -> int:
    from .datasets import load_dataset  # noqa: PLC0415

    ap = argparse.ArgumentParser(prog="python -m selection candidates", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="digits", help="digits | gmm:n=..,c=..,d=.. | npy:EMB.npy,LABELS.npy")
    ap.add_argument("--coverage", type=float, default=0.9)
    ap.add_argument("--start", type=int, default=50)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--k", type=int, default=20, help="classes stored per served item")
    ap.add_argument("--shown", type=int, default=9, help="most candidates the page shows")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--l2", type=float, default=1.0)
    args = ap.parse_args(argv)
    ds = load_dataset(args.data)
    print(f"{ds.name}: n={len(ds.y)}, c={ds.n_classes}, target coverage {args.coverage}")
    print(f"{'seed':>4} {'labels':>6} {'calib':>5} {'thresh':>7} {'covered':>7} {'size':>5} {'top1':>5}")
    totals = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        rows = simulate_candidates(ds.X, ds.y, ds.n_classes, coverage=args.coverage, start=args.start,
                                   batch=args.batch, rounds=args.rounds, k=args.k, shown=args.shown,
                                   l2=args.l2, seed=seed)
        for r in rows:
            mark = "" if r.calibrated else "  (not calibrated yet: top shown)"
            print(f"{seed:>4} {r.labeled:>6} {r.calibration:>5} {r.threshold:>7.3f} {r.coverage:>7.3f} "
                  f"{r.mean_size:>5.2f} {r.top1:>5.3f}{mark}")
        totals.append(summary(rows))
    cov = [s["coverage"] for s in totals]
    size = [s["mean_size"] for s in totals]
    print(f"calibrated rounds, mean over {args.seeds} seed(s): coverage {np.mean(cov):.3f} (sd {np.std(cov):.3f}), "
          f"mean set size {np.mean(size):.2f} (sd {np.std(size):.2f}); {time.perf_counter() - t0:.1f} s")
    return 0


__all__ = ["CandidateRound", "simulate_candidates", "summary"]
