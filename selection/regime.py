"""Is this still the low-budget regime?  A test on the labeled set, after SelectAL.

Hacohen & Weinshall ("How to Select Which Active Learning Strategy is Best Suited for Your
Specific Problem and Budget", NeurIPS 2023, SelectAL) decide whether a budget is "low" (typical
examples help the learner most: TypiClust) or "high" (unusual examples help most: uncertainty
sampling) with an experiment on the examples already labeled: take away part of the labeled set
in the way each family would have chosen it, retrain, and see which loss hurts more.  Ours is a
small version of that test for a linear head:

1. The typicality of each labeled point: the inverse mean distance to its ``knn`` nearest
   neighbours among (a uniform sample of at most ``max_ref``) pool points (TypiClust's Eq. 4,
   over the whole pool rather than within a cluster).
2. ``reps`` times, split the labeled set into ``folds`` random folds; for each held-out fold,
   fit the head (multinomial logistic regression, C = 1 / l2, the head's objective) once on the
   more typical half of the other folds and once on the less typical half, and count correct
   predictions on the held-out fold.
3. The statistic is (correct with the typical half - correct with the atypical half) / predictions:
   > 0 says typical points teach this head more at this label count (the low-budget regime:
   TypiClust pays), <= 0 that unusual points teach as much or more (past it, or data without the
   cluster structure TypiClust relies on, e.g. heavily overlapping classes).

Both halves have the same size and are scored on the same held-out points, so the comparison is
paired; each fit sees about (folds - 1) / (2 folds) of the labels.  Cost guards (ours): at most
``max_labeled`` labels (a uniform sample), fewer repetitions above 300 labels, and above
``max_dims`` features the fits run on the labeled set's leading principal components.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .backend import to_numpy

KNN = 20
MAX_REF = 3000
FOLDS = 5
REPS = 6
MAX_LABELED = 1000
MAX_DIMS = 64


def pool_typicality(X_points: np.ndarray, X_ref: np.ndarray, knn: int = KNN) -> np.ndarray:
    """(m,) inverse mean distance of each row of ``X_points`` to its ``knn`` nearest rows of ``X_ref``."""
    A = np.asarray(X_points, dtype=np.float64)
    B = np.asarray(X_ref, dtype=np.float64)
    k = int(min(knn, B.shape[0]))
    D = np.maximum((A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T), 0.0)
    near = np.sqrt(np.partition(D, k - 1, axis=1)[:, :k])
    return 1.0 / (near.mean(axis=1) + 1e-12)


def _fit_predict(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, l2: float) -> np.ndarray:
    import warnings  # noqa: PLC0415

    from sklearn.exceptions import ConvergenceWarning  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    classes = np.unique(y)
    if len(classes) == 1:
        return np.full(len(X_test), classes[0])
    with warnings.catch_warnings():  # a proxy fit: on the suite's data sets it converges in < 50 iterations
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="The number of unique classes")  # many classes, few labels
        return LogisticRegression(C=1.0 / l2, max_iter=100).fit(X, y).predict(X_test)


def typical_vs_atypical(X_labeled: Any, y_labeled: Any, X_pool: Any, rng: Any = None, *, l2: float = 1.0,
                        folds: int = FOLDS, reps: int | None = None, knn: int = KNN, max_ref: int = MAX_REF,
                        max_labeled: int = MAX_LABELED, max_dims: int = MAX_DIMS) -> float:
    """The module's statistic: held-out accuracy with the typical half minus with the atypical half.

    Returns a number in [-1, 1]; 0 when there are too few labels to split (fewer than 2 * folds).
    Cost: ``reps`` (default 6, fewer above 300 labels: 1800 // labels) x ``folds`` x 2 fits of the
    head on at most ``max_labeled`` labeled points (a uniform sample of them above that), on their
    first ``max_dims`` principal components when there are more features (typicality uses all).
    """
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    XL = np.asarray(to_numpy(X_labeled), dtype=np.float64)
    yL = np.asarray(to_numpy(y_labeled))
    Xp = np.asarray(to_numpy(X_pool))
    if len(yL) > max_labeled:
        keep = rng.choice(len(yL), size=max_labeled, replace=False)
        XL, yL = XL[keep], yL[keep]
    m = len(yL)
    if m < 2 * folds or len(np.unique(yL)) < 2:
        return 0.0
    if reps is None:
        reps = int(np.clip(1800 // m, 1, REPS))
    ref = Xp if len(Xp) <= max_ref else Xp[rng.choice(len(Xp), size=max_ref, replace=False)]
    typ = pool_typicality(XL, ref, knn)
    if XL.shape[1] > max_dims:  # cost guard: the fits use the labeled set's leading principal components
        Xc = XL - XL.mean(axis=0)
        XL = Xc @ np.linalg.svd(Xc, full_matrices=False)[2][:max_dims].T
    diff = total = 0
    with threadpool_limits(limits=1):
        for _ in range(reps):
            perm = rng.permutation(m)
            for f in range(folds):
                test = perm[f::folds]
                train = np.setdiff1d(perm, test)
                order = train[np.argsort(typ[train], kind="stable")]  # least typical first
                half = len(order) // 2
                atyp, typical = order[:half], order[len(order) - half:]
                hit_t = _fit_predict(XL[typical], yL[typical], XL[test], l2) == yL[test]
                hit_a = _fit_predict(XL[atyp], yL[atyp], XL[test], l2) == yL[test]
                diff += int(hit_t.sum()) - int(hit_a.sum())
                total += len(test)
    return diff / total
