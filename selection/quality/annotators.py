"""Consensus labels and annotator reliability: majority vote and Dawid-Skene.

Input as in :mod:`selection.quality.agreement`: ``labels : (n_items, n_annotators)`` ints, -1 where
an annotator did not label an item.

Dawid & Skene (1979), "Maximum likelihood estimation of observer error-rates using the EM
algorithm": each item has a true class t with prior pi; annotator a, shown an item of class t,
answers l with probability theta[a, t, l].  EM alternates

- E-step: T[i, t] proportional to pi_t * prod over annotators a who labeled i of theta[a, t, L[i, a]]
  (computed in logs);
- M-step: pi_t = mean_i T[i, t]; theta[a, t, l] = (sum_i T[i, t] [L[i, a] = l] + s) /
  (sum_i T[i, t] [a labeled i] + c s), with a small Dirichlet smoothing s so an unseen
  (t, l) pair does not get probability 0 (a MAP step instead of ML; s = 0 gives plain ML).

It starts from the majority-vote soft counts (the paper's own initialisation) and stops when the
log-likelihood gains less than ``tol``; EM never lowers the (penalised) likelihood.  An annotator's
accuracy is sum_t pi_t theta[a, t, t]: the probability of a correct answer on a random item.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .agreement import MISSING, check_label_matrix, item_counts


def majority_vote(labels, n_classes: int, *, random_state=None) -> np.ndarray:
    """(n_items,) the most frequent label per item, ties broken at random; -1 for unlabeled items."""
    counts = item_counts(labels, n_classes)
    rng = np.random.default_rng(random_state)
    noise = rng.random(counts.shape) * 0.5  # < 1: breaks ties only
    out = np.argmax(counts + noise, axis=1)
    out[counts.sum(1) == 0] = MISSING
    return out


@dataclass
class DawidSkeneResult:
    """posterior : (n, c); labels : (n,) argmax (-1 for unlabeled items); confusion : (m, c, c);
    prior : (c,); accuracy : (m,); log_likelihood of the data under the fit; n_iter."""

    posterior: np.ndarray
    labels: np.ndarray
    confusion: np.ndarray
    prior: np.ndarray
    accuracy: np.ndarray
    log_likelihood: float
    n_iter: int
    history: list[float]


def dawid_skene_posterior(labels, confusion, prior) -> tuple[np.ndarray, np.ndarray]:
    """E-step: (posterior (n, c), per-item log marginal likelihood (n,)) for given parameters."""
    L = np.asarray(labels, dtype=np.int64)
    theta = np.asarray(confusion, dtype=np.float64)
    m = theta.shape[0]
    logt = np.log(np.clip(theta, 1e-300, None))
    logp = np.tile(np.log(np.clip(np.asarray(prior, dtype=np.float64), 1e-300, None)), (L.shape[0], 1))
    for a in range(m):
        seen = L[:, a] != MISSING
        # log theta[a, t, L[i, a]] for every t: column L[i, a] of annotator a's matrix
        logp[seen] += logt[a][:, L[seen, a]].T
    mx = logp.max(1, keepdims=True)
    ll = mx[:, 0] + np.log(np.exp(logp - mx).sum(1))
    return np.exp(logp - ll[:, None]), ll


def dawid_skene(labels, n_classes: int, *, max_iter: int = 200, tol: float = 1e-7,
                smoothing: float = 0.01) -> DawidSkeneResult:
    """Fit Dawid-Skene by EM (module docstring)."""
    L = check_label_matrix(labels, n_classes)
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r} must be >= 1")
    if smoothing < 0:
        raise ValueError(f"smoothing={smoothing!r} must be >= 0")
    n, m = L.shape
    c = n_classes
    counts = item_counts(L, c).astype(np.float64)
    has = counts.sum(1) > 0
    T = np.full((n, c), 1.0 / c)
    T[has] = counts[has] / counts[has].sum(1, keepdims=True)
    onehot = np.zeros((m, n, c))
    rows, cols = np.nonzero(L != MISSING)
    onehot[cols, rows, L[rows, cols]] = 1.0
    history: list[float] = []
    prior = np.full(c, 1.0 / c)
    theta = np.full((m, c, c), 1.0 / c)
    it = 0
    for it in range(1, max_iter + 1):
        # M-step
        prior = (T[has].sum(0) + smoothing) / (has.sum() + c * smoothing)
        num = np.einsum("it,ail->atl", T, onehot) + smoothing
        theta = num / num.sum(2, keepdims=True)
        # E-step
        T_new, ll = dawid_skene_posterior(L, theta, prior)
        T_new[~has] = prior
        T = T_new
        history.append(float(ll[has].sum()))
        if it > 1 and history[-1] - history[-2] < tol:
            break
    lab = np.argmax(T, axis=1)
    lab[~has] = MISSING
    acc = np.einsum("t,att->a", prior, theta)
    return DawidSkeneResult(T, lab, theta, prior, acc, history[-1], it, history)
