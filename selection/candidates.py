"""Candidate sets for many-class labeling: the smallest set of classes that holds the true one with
a chosen probability, calibrated on the labels given so far.

The labeling page offers the model's top classes for an item as numbered candidates.  How many?
Split-conformal prediction with the LAC score (Sadinle, Lei & Wasserman, "Least ambiguous
set-valued classifiers with bounded error levels", JASA 2019; Angelopoulos & Bates, "A gentle
introduction to conformal prediction", 2021, section 1) answers it:

* calibration: for n labeled items take p_i = the probability the model (the one that was current
  when the item was served: a *prequential* prediction) gave to the class the annotator chose;
* with k = ceil((n + 1) * coverage), the threshold t is the k-th largest p_i;
* the set of a new item is {y : p(y) >= t}.

If calibration and new items are exchangeable, P(true class in set) >= coverage (and below
coverage + 1/(n + 1) without ties); among sets that threshold one score, this one has the smallest
expected size (Sadinle et al., Theorem 1).  With k > n (too few labels) t = 0: every class.

Loupe stores only each served item's top K classes (K ~ 20 even for 1,000 classes), so a true class
outside the stored top K has p_i counted as 0: a conservative score (a larger set), never a smaller
one.  All functions take and return NumPy arrays.
"""
from __future__ import annotations

import math

import numpy as np


def _check_coverage(coverage: float) -> float:
    coverage = float(coverage)
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage={coverage!r} must be in (0, 1)")
    return coverage


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable classes of each row, most probable first.

    probs : (n, c) float.  Returns (indices (n, k') int64, probabilities (n, k') float), k' = min(k, c).
    """
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D (n, c); got shape {probs.shape}")
    if k < 1:
        raise ValueError(f"k={k!r} must be >= 1")
    k = min(int(k), probs.shape[1])
    # argpartition is O(c) per row, which matters at c = 1,000; then sort only the k.
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, part, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return idx, np.take_along_axis(probs, idx, axis=1)


def true_class_probs(top_idx: np.ndarray, top_probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """p_i of the true class from stored top-K predictions; 0 where the true class is not in the top K.

    top_idx : (n, K) int, top_probs : (n, K) float, y : (n,) int.  Returns (n,) float64.
    """
    top_idx, top_probs, y = np.asarray(top_idx), np.asarray(top_probs, dtype=np.float64), np.asarray(y)
    if top_idx.shape != top_probs.shape or top_idx.ndim != 2 or y.shape != (top_idx.shape[0],):
        raise ValueError(f"shapes do not match: top_idx {top_idx.shape}, top_probs {top_probs.shape}, y {y.shape}")
    hit = top_idx == y[:, None]
    return np.where(hit, top_probs, 0.0).sum(axis=1)


def lac_threshold(p_true: np.ndarray, coverage: float) -> float:
    """The probability threshold t of split-conformal LAC sets ({y : p(y) >= t}) for ``coverage``.

    p_true : (n,) float, the calibration items' probabilities of their true class.
    Returns t in [0, 1]; 0.0 (every class) when n is too small for the coverage asked
    (ceil((n + 1) coverage) > n).
    """
    coverage = _check_coverage(coverage)
    p = np.asarray(p_true, dtype=np.float64).ravel()
    n = p.size
    k = math.ceil((n + 1) * coverage)
    if n == 0 or k > n:
        return 0.0
    # The k-th largest p_i (= 1 - the k-th smallest score s_i = 1 - p_i, without the rounding of 1 - (1 - p)).
    return float(np.partition(p, n - k)[n - k])


def set_sizes(top_probs: np.ndarray, threshold: float, *, min_size: int = 1) -> np.ndarray:
    """Size of each item's candidate set from its probabilities sorted in decreasing order.

    top_probs : (n, K) float, each row decreasing.  An empty LAC set (every p < t) is shown as its
    top ``min_size`` classes: the page always offers at least the model's best guess.
    Returns (n,) int64 in [min_size, K].
    """
    top_probs = np.asarray(top_probs, dtype=np.float64)
    if top_probs.ndim != 2:
        raise ValueError(f"top_probs must be 2-D (n, K); got shape {top_probs.shape}")
    sizes = (top_probs >= threshold).sum(axis=1)
    return np.clip(sizes, min(min_size, top_probs.shape[1]), top_probs.shape[1]).astype(np.int64)


def coverage_and_size(top_idx: np.ndarray, sizes: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(share of items whose true class is among the first ``sizes[i]`` of ``top_idx[i]``, mean size)."""
    top_idx, sizes, y = np.asarray(top_idx), np.asarray(sizes), np.asarray(y)
    if len(y) == 0:
        return float("nan"), float("nan")
    ranks = np.arange(top_idx.shape[1])[None, :]
    inside = (top_idx == y[:, None]) & (ranks < sizes[:, None])
    return float(inside.any(axis=1).mean()), float(sizes.mean())


__all__ = ["coverage_and_size", "lac_threshold", "set_sizes", "top_k", "true_class_probs"]


def confidence_gate(confidence: np.ndarray, correct: np.ndarray, target: float, *, min_n: int) -> float | None:
    """The lowest top-1 confidence from which the model's guess is right at least ``target`` of the time.

    confidence : (n,) float, each calibration item's top-1 probability (prequential);
    correct : (n,) bool, whether that top-1 class was the label given.
    Sorting the items by decreasing confidence, a cut-off c keeps the items with confidence >= c; the
    answer is the lowest c whose kept items number at least ``min_n`` and are right at least ``target``
    of the time (so guesses are shown on the items the model is sure of, even while its picks, chosen for
    being hard, are mostly wrong).  None when no cut-off qualifies.
    """
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=bool).ravel()
    if conf.shape != ok.shape:
        raise ValueError(f"confidence {conf.shape} and correct {ok.shape} must have the same length")
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be in [0, 1]; got {target}")
    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    # Only cut between distinct confidences: items tied with the cut-off are all kept.
    last_of_tie = np.r_[conf[1:] != conf[:-1], True]
    kept = np.arange(1, conf.size + 1)
    right = np.cumsum(ok)
    good = last_of_tie & (kept >= min_n) & (right >= target * kept)
    if not good.any():
        return None
    return float(conf[np.flatnonzero(good)[-1]])
