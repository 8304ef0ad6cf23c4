"""BADGE (Ash, Zhang, Krishnamurthy, Langford & Agarwal, "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds", ICLR 2020), for the logistic head.

Gradient embedding (their Sec. 3): the gradient of the cross-entropy loss with respect to the
last layer's parameters, at the model's own prediction yhat_i = argmax_k p_ik as the label:

    g_i = (p_i - e_{yhat_i}) (x) x_i         (c * d entries)

By default only the weights' gradient is used, as in the authors' reference code (its
embedding has ``embDim * nLab`` entries: the penultimate features times p - e_yhat, no bias
column), so that results are comparable with it and with the libraries that follow it.
``bias_feature=True`` appends the intercept's gradient (x~_i = [x_i, 1]); with unit-norm
embeddings that constant carries as much weight as all the features together.

and the batch is a k-means++ seeding over the g_i (their Algorithm 1; the first centre is the
largest gradient, as in the authors' code).  The n x c*d' matrix is never formed: with
a_i = p_i - e_{yhat_i}, the squared distance of two Kronecker products factorises as

    ||a (x) x - b (x) y||^2 = |a|^2 |x|^2 + |b|^2 |y|^2 - 2 (a . b)(x . y)

so each seeding step costs O(n (c + d)) instead of O(n c d).  ``scores`` are the gradient
norms |a_i| |x~_i| of the chosen items.
"""
from __future__ import annotations


from ..backend import get_array_module
from ..params import Param
from ..seeding import d2_seeding
from .base import Selection, Strategy, register


def badge_factors(X, probs, bias: bool = True):
    """The two Kronecker factors of the gradient embedding: A (n, c) = p - onehot(argmax p), Xb (n, d')."""
    xp = get_array_module(X)
    n = X.shape[0]
    # float32 embeddings keep float32 factors: the per-step products are memory-bound, and
    # float32 rounding (~1e-7 |g|^2) does not matter for D^2 sampling; float64 stays float64.
    dt = xp.float32 if X.dtype == xp.float32 else xp.float64
    A = xp.asarray(probs, dtype=xp.float64).copy()
    A[xp.arange(n), A.argmax(axis=1)] -= 1.0
    A = A.astype(dt, copy=False)
    Xb = xp.asarray(X, dtype=dt)
    if bias:
        Xb = xp.concatenate([Xb, xp.ones((n, 1), dtype=dt)], axis=1)
    return A, Xb


def badge_embedding(X, probs, bias: bool = True):
    """Dense gradient embedding (n, c * d'), row i = kron(a_i, x~_i).  For tests and small n only."""
    A, Xb = badge_factors(X, probs, bias)
    return (A[:, :, None] * Xb[:, None, :]).reshape(A.shape[0], -1)


@register
class Badge(Strategy):
    name = "badge"
    description = "k-means++ seeding over last-layer gradient embeddings (Ash et al. 2020)."
    params = (
        Param("bias_feature", "bool", False,
              "Include the head's intercept in the gradient embedding (x extended by a constant 1). "
              "Off by default, as in the BADGE authors' code (weights only)."),
    )

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        xp = get_array_module(X_pool)
        A, Xb = badge_factors(X_pool, probs_pool, self.params_["bias_feature"])
        na = (A * A).sum(axis=1, dtype=xp.float64)
        nx = (Xb * Xb).sum(axis=1, dtype=xp.float64)
        sq = na * nx  # |g_i|^2, float64

        def sq_dist_to(j: int):
            d = (A @ A[j]).astype(xp.float64)
            d *= Xb @ Xb[j]
            d *= -2.0
            d += sq
            d += sq[j]
            return xp.maximum(d, 0.0, out=d)

        first = int(sq.argmax())
        idx = d2_seeding(X_pool.shape[0], batch_size, sq_dist_to, rng, xp=xp, first=first)
        return Selection(idx, xp.sqrt(sq[idx]), {"bias_feature": self.params_["bias_feature"]})
