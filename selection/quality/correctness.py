"""A model of "is the head right here?": the confidence f(x) the accuracy estimators correct.

Prediction-powered inference and active testing are unbiased whatever f is, but their interval
shrinks with E[(Y - f)^2] (PPI) or (E|Y - f|)^2 (active testing with the optimal proposal), Y the
0/1 correctness of the head.  The head's own max probability is a weak f: an L2-regularised
logistic head is under-confident, and its confidence says nothing about where it disagrees
with the labeled neighbours.  So f here is a small logistic model of P(correct | features) on

- logit of the head's max probability,
- logit of the share of the k nearest labeled items (distance-weighted) that carry the head's
  predicted class,

fitted on *out-of-fold* predictions of the labeled set (head and neighbours refitted without
each fold), i.e. without any audit label: f is fixed before the audit sample is drawn, which
keeps every estimator unbiased.  The one-feature case is Platt scaling (Platt 1999).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import stratified_folds


def fit_logistic(F, y, *, ridge: float = 1e-6, max_iter: int = 100) -> np.ndarray:
    """w : (d + 1,) maximising the logistic log-likelihood of y (n,) 0/1 on [F, 1] by Newton's method.

    A small ridge on every weight keeps separable data finite.
    """
    A = np.column_stack([np.asarray(F, dtype=np.float64).reshape(len(y), -1), np.ones(len(y))])
    y = np.asarray(y, dtype=np.float64)
    w = np.zeros(A.shape[1])
    for _ in range(max_iter):
        p = 1 / (1 + np.exp(-np.clip(A @ w, -40, 40)))
        g = A.T @ (p - y) + ridge * w
        H = (A * (p * (1 - p))[:, None]).T @ A + ridge * np.eye(A.shape[1])
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def predict_logistic(F, w) -> np.ndarray:
    F = np.asarray(F, dtype=np.float64).reshape(-1, len(w) - 1)
    return 1 / (1 + np.exp(-np.clip(F @ w[:-1] + w[-1], -40, 40)))


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def knn_proba(X_ref, y_ref, X, n_classes: int, *, k: int = 7, chunk: int = 4096, exclude=None) -> np.ndarray:
    """(n, c) distance-weighted k-nearest-neighbour class shares (sklearn's ``weights="distance"``).

    X_ref : (m, d) labeled items, y_ref : (m,); an exact match (distance 0) takes all the weight.
    exclude : (n,) int or None, a row of X_ref that query row i may not use (its own label, for a
    leave-one-out feature; -1 for none).
    """
    X_ref = np.asarray(X_ref, dtype=np.float64)
    y_ref = np.asarray(y_ref, dtype=np.int64)
    X = np.asarray(X, dtype=np.float64)
    k = min(k, len(X_ref) - (exclude is not None))
    out = np.zeros((len(X), n_classes))
    sq_ref = (X_ref * X_ref).sum(1)
    for s in range(0, len(X), chunk):
        B = X[s:s + chunk]
        d2 = np.maximum((B * B).sum(1)[:, None] - 2 * B @ X_ref.T + sq_ref[None, :], 0.0)
        if exclude is not None:
            ex = np.asarray(exclude, dtype=np.int64)[s:s + chunk]
            d2[np.flatnonzero(ex >= 0), ex[ex >= 0]] = np.inf
        nn = np.argpartition(d2, k - 1, axis=1)[:, :k]
        d = np.sqrt(np.take_along_axis(d2, nn, axis=1))
        zero = d <= 1e-12
        w = np.where(zero.any(1, keepdims=True), zero.astype(float), 1 / np.maximum(d, 1e-12))
        rows = np.repeat(np.arange(len(B)), k)
        np.add.at(out[s:s + chunk], (rows, y_ref[nn].ravel()), w.ravel())
    return out / out.sum(1, keepdims=True)


def correctness_features(P_head, P_knn) -> np.ndarray:
    """(n, 2) [logit max P_head, logit of the neighbours' share of the head's class]."""
    P_head = np.asarray(P_head, dtype=np.float64)
    yhat = P_head.argmax(1)
    share = np.asarray(P_knn)[np.arange(len(yhat)), yhat]
    return np.column_stack([logit(P_head.max(1)), logit(0.98 * share + 0.01)])


@dataclass
class CorrectnessModel:
    """f(x) = sigmoid(w . [features, 1]) over :func:`correctness_features`; fitted out of fold."""

    w: np.ndarray
    k: int = 7

    def predict(self, P_head, X, X_labeled, y_labeled) -> np.ndarray:
        """(n,) P(head right) for items X : (n, d) with head probabilities P_head : (n, c)."""
        P_knn = knn_proba(X_labeled, y_labeled, X, np.asarray(P_head).shape[1], k=self.k)
        return predict_logistic(correctness_features(P_head, P_knn), self.w)


def correctness_training_set(X, y, n_classes: int, fit_predict, *, n_folds: int = 5, k: int = 7,
                             random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """(F (n, 2), right (n,)) out of fold: each labeled item's features and whether the head was right.

    X : (n, d), y : (n,); ``fit_predict(X_train, y_train, X_test) -> (n_test, c)`` refits the head (as in
    :func:`~selection.quality.errors.out_of_fold_proba`).
    """
    X = np.asarray(X)
    y = np.asarray(y, dtype=np.int64)
    folds = stratified_folds(y, n_folds, random_state=random_state)
    F, Y = np.zeros((len(y), 2)), np.zeros(len(y))
    for f in range(n_folds):
        te = folds == f
        P = fit_predict(X[~te], y[~te], X[te])
        F[te] = correctness_features(P, knn_proba(X[~te], y[~te], X[te], n_classes, k=k))
        Y[te] = P.argmax(1) == y[te]
    return F, Y


def fit_correctness_model(X, y, n_classes: int, fit_predict, *, n_folds: int = 5, k: int = 7,
                          random_state=None) -> CorrectnessModel:
    """Fit :class:`CorrectnessModel` from the labeled set X : (n, d), y : (n,) out of fold
    (:func:`correctness_training_set`)."""
    F, Y = correctness_training_set(X, y, n_classes, fit_predict, n_folds=n_folds, k=k, random_state=random_state)
    # a light ridge: a few hundred out-of-fold points fit 3 weights
    return CorrectnessModel(fit_logistic(F, Y, ridge=1.0), k)
