"""Suspected label errors: confident learning on out-of-fold probabilities, and learnability.

- :func:`out_of_fold_proba`: each labeled item's class probabilities from a head that did not
  see it (stratified K folds), the input confident learning asks for.
- :func:`confident_learning` (Northcutt, Jiang & Chuang, JAIR 2021, "Confident Learning",
  Sec. 3.1): per-class threshold t_j = mean of p_j over the items labeled j (the model's
  self-confidence on class j); item i with given label y is counted in the confident joint at
  (y, j*) where j* = argmax over classes with p_j >= t_j; it is a suspected error when j* != y
  ("prune by confident joint off-diagonals", the simplest of the paper's rules).
- :func:`learnability` (Mindermann et al. 2022 / Evans et al. 2023, "Bad Students Make Great
  Teachers", Sec. 3: learnability = loss of the current model - loss of a reference model).
  A point whose label is wrong has a high loss under *both* a model that did not see it
  (reference: the out-of-fold head) and one that trained on it (the learner: an L2-regularised
  head cannot fit a lone wrong label), so its learnability is near zero while both losses are
  high; a hard but correct point the learner has fitted has a low learner loss.  We score
  noise by min(loss_learner, loss_reference) = loss_reference - max(0, -learnability).
- :func:`label_error_scores` combines the two: confident-learning flags rank first, within each
  group the noise score orders.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _probs(P, y=None) -> tuple[np.ndarray, np.ndarray | None]:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] < 2:
        raise ValueError(f"probabilities must be (n, c) with c >= 2; got shape {P.shape}")
    if y is None:
        return P, None
    y = np.asarray(y, dtype=np.int64)
    if y.shape != (P.shape[0],):
        raise ValueError(f"y must have shape ({P.shape[0]},); got {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= P.shape[1]):
        raise ValueError(f"y must hold classes in [0, {P.shape[1]})")
    return P, y


def cross_entropy(P, y) -> np.ndarray:
    """(n,) -log P[i, y_i], with probabilities floored at 1e-12."""
    P, y = _probs(P, y)
    return -np.log(np.clip(P[np.arange(len(y)), y], 1e-12, None))


def confident_learning(P, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(is_issue (n,) bool, suggested (n,) int, thresholds (c,)) from out-of-fold P : (n, c) and labels y : (n,).

    ``suggested`` is j* (the confident class), or y itself where no class clears its threshold.
    Classes with no given label get threshold +inf (nothing can be confidently counted in them).
    """
    P, y = _probs(P, y)
    c = P.shape[1]
    sums = np.zeros(c)
    np.add.at(sums, y, P[np.arange(len(y)), y])
    cnt = np.bincount(y, minlength=c)
    t = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.inf)
    above = P >= t[None, :]
    masked = np.where(above, P, -np.inf)
    jstar = np.argmax(masked, axis=1)
    none = ~above.any(1)
    jstar[none] = y[none]
    return jstar != y, jstar, t


def learnability(loss_learner, loss_reference) -> np.ndarray:
    """(n,) loss under the current model minus loss under the reference model (Evans et al. 2023)."""
    a, b = np.asarray(loss_learner, dtype=np.float64), np.asarray(loss_reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"loss arrays differ in shape: {a.shape} vs {b.shape}")
    return a - b


def label_error_scores(P_oof, y, P_fit=None) -> np.ndarray:
    """(n,) suspected-error score, higher = more likely wrong (module docstring).

    P_oof : (n, c) out-of-fold probabilities (the reference); P_fit : (n, c) probabilities of the
    head trained on all labels (the learner), or None to rank by the out-of-fold loss alone.
    Scores of confident-learning issues are shifted above every other score.
    """
    P_oof, y = _probs(P_oof, y)
    ref = cross_entropy(P_oof, y)
    if P_fit is None:
        noise = ref
    else:
        P_fit, _ = _probs(P_fit, y)
        if P_fit.shape != P_oof.shape:
            raise ValueError(f"P_fit shape {P_fit.shape} differs from P_oof {P_oof.shape}")
        lrn = learnability(cross_entropy(P_fit, y), ref)
        noise = ref - np.maximum(0.0, -lrn)
    issue, _, _ = confident_learning(P_oof, y)
    # noise >= 0, so adding more than its maximum puts every flagged item first
    return noise + issue * (noise.max(initial=0.0) + 1.0)


def stratified_folds(y, n_folds: int, *, random_state=None) -> np.ndarray:
    """(n,) fold index per item, each class spread evenly over the folds (shuffled)."""
    y = np.asarray(y, dtype=np.int64)
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds!r} must be >= 2")
    rng = np.random.default_rng(random_state)
    folds = np.empty(len(y), dtype=np.int64)
    start = 0
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        folds[idx] = (start + np.arange(len(idx))) % n_folds
        start += len(idx)
    return folds


def out_of_fold_proba(X, y, n_classes: int, *, n_folds: int = 5, random_state=None,
                      fit_predict: Callable | None = None, l2: float = 1.0) -> np.ndarray:
    """(n, c) out-of-fold class probabilities of labeled items X : (n, d), y : (n,).

    ``fit_predict(X_train, y_train, X_test) -> (n_test, c)`` defaults to the app's
    :class:`~selection.head.LogisticHead` with the given ``l2`` on CPU.
    """
    X = np.asarray(X)
    y = np.asarray(y, dtype=np.int64)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
    if len(y) < n_folds:
        raise ValueError(f"{len(y)} labeled items are fewer than n_folds={n_folds}")
    if fit_predict is None:
        from ..head import LogisticHead  # noqa: PLC0415

        def fit_predict(Xa, ya, Xb):
            return LogisticHead(n_classes, l2=l2).fit(Xa, ya).predict_proba(Xb)

    folds = stratified_folds(y, n_folds, random_state=random_state)
    P = np.zeros((len(y), n_classes))
    for k in range(n_folds):
        te = folds == k
        P[te] = fit_predict(X[~te], y[~te], X[te])
    return P
