"""Stochastic batch acquisition (Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal,
"Stochastic Batch Acquisition: A Simple Baseline for Deep Active Learning", TMLR 2023).

Instead of the top-b by an uncertainty score s, draw b items without replacement with
probability proportional to

- ``power``:    s_i ** beta
- ``softmax``:  exp(beta * s_i)
- ``softrank``: rank_i ** (-beta)      (rank 1 = highest score)

Sampling without replacement by these weights is done with the Gumbel-top-k trick (the
paper's own implementation device): the b largest of ``log w_i + G_i`` with G_i i.i.d.
standard Gumbel are a draw of b successive weighted samples without replacement
(Plackett-Luce; Kool, van Hoof & Welling 2019).  One O(n) pass, no Python loop.

Items with zero weight (score 0 under ``power``) come only after every positive-weight
item, in uniformly random order among themselves.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..params import Param
from ..scores import SCORES, get_score
from .base import Selection, Strategy, register

SCORE = Param("score", "str", "entropy", "Uncertainty score the weights are built from (larger = more informative).",
              choices=tuple(sorted(SCORES)))
BETA = Param("beta", "float", 1.0, "Temperature beta: 0 is uniform sampling, large beta approaches top-b.",
             min=0.0, max=1e4)


def gumbel_top_k(log_w, k: int, rng: np.random.Generator):
    """Indices of k draws without replacement with probabilities proportional to exp(log_w).

    log_w : (n,) float, -inf for zero weight.  Returns (k,) int64 in draw order.
    """
    xp = get_array_module(log_w)
    log_w = xp.asarray(log_w, dtype=xp.float64)
    n = log_w.shape[0]
    u = rng.random(n)
    g = -np.log(-np.log(np.maximum(u, np.finfo(np.float64).tiny)))  # standard Gumbel, host RNG
    g = xp.asarray(g)
    finite = xp.isfinite(log_w)
    if bool(finite.all()):
        keys = log_w + g
    else:
        # zero-weight items rank below all others: max Gumbel from a float64 uniform is < 37,
        # the min about -6.6, so an offset of 50 below the smallest finite log-weight suffices
        low = float(log_w[finite].min()) if bool(finite.any()) else 0.0
        keys = xp.where(finite, log_w, low - 50.0) + g
    if k >= n:
        cand = xp.arange(n)
    else:
        cand = xp.argpartition(-keys, k - 1)[:k]
    return cand[xp.argsort(-keys[cand])].astype(xp.int64)


def log_weights(kind: str, s, beta: float):
    """log of the sampling weights of :mod:`stochastic` for scores ``s`` (n,)."""
    xp = get_array_module(s)
    s = xp.asarray(s, dtype=xp.float64)
    if kind == "power":
        with np.errstate(divide="ignore"):
            return beta * xp.log(xp.maximum(s, 0.0)) if beta > 0 else xp.zeros_like(s)
    if kind == "softmax":
        return beta * s
    if kind == "softrank":
        order = xp.argsort(-s, kind="stable")
        rank = xp.empty(s.shape[0], dtype=xp.float64)
        rank[order] = xp.arange(1, s.shape[0] + 1, dtype=xp.float64)
        return -beta * xp.log(rank)
    raise ValueError(f"kind={kind!r} is not one of ['power', 'softmax', 'softrank']")


class _Stochastic(Strategy):
    params = (SCORE, BETA)
    kind = ""

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        s = get_score(self.params_["score"])(probs_pool)
        idx = gumbel_top_k(log_weights(self.kind, s, self.params_["beta"]), batch_size, rng)
        return Selection(idx, s[idx], {"score": self.params_["score"], "beta": self.params_["beta"]})


@register
class PowerSampling(_Stochastic):
    name = "power"
    kind = "power"
    description = "Sample b without replacement with probability proportional to score^beta (Kirsch et al. 2023)."


@register
class SoftmaxSampling(_Stochastic):
    name = "softmax"
    kind = "softmax"
    description = ("Sample b without replacement with probability proportional to exp(beta * score) "
                   "(Kirsch et al. 2023).")


@register
class SoftrankSampling(_Stochastic):
    name = "softrank"
    kind = "softrank"
    description = "Sample b without replacement with probability proportional to rank^-beta (Kirsch et al. 2023)."
