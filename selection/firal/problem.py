"""The FIRAL inputs gathered into one object.

Parametrisation ([FIRAL] Sec. 2): the softmax model has c classes; class c is the reference,
so the parameter is theta in R^{(c-1) d'} and a point's Fisher information is

    H_i = (diag(q_i) - q_i q_i^T) (x) x_i x_i^T,      q_i = first c-1 probabilities of x_i,

a ((c-1) d') x ((c-1) d') matrix (the full-c Fisher is singular: its rows sum to zero).

Intercept: Loupe's ``LogisticHead`` fits an intercept, so by default each embedding gets a
constant 1 appended (d' = d + 1) and the intercept is part of theta.  The head does not
penalise its intercept, but here lambda*I covers the intercept coordinate too: it keeps
Sigma_z positive definite even when no point says anything about a class offset, and it is
one coordinate of d' per class.  ``intercept=False`` uses the bare embedding (d' = d).

A vector v in R^{(c-1) d'} is stored as a (c-1, d') array (class-major), so that
(A (x) B) vec(V) = vec(A V B^T) with NumPy's row-major ``reshape``.

Rows are kept in one array, labeled rows first, so that Sigma_z = H_o + sum_i z_i H_i + lambda I
is one weighted sum over all rows (weight 1 for a labeled row, z_i for a pool row).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backend import get_array_module

DTYPES = ("float32", "float64")


@dataclass
class FisherProblem:
    """X : (m + n, d') features, labeled rows first; Q : (m + n, c-1) probabilities of classes
    1..c-1; qc : (m + n,) probability of the reference class c; m labeled, n pool rows."""

    X: Any
    Q: Any
    qc: Any
    n_lab: int
    lam: float
    comm: Any = field(default=None, repr=False)

    def __post_init__(self):
        # Row-sharded runs (selection.firal.mpi): this object holds one rank's rows (the labeled
        # rows on rank 0 only, then its block of pool rows); the global row order is the rank
        # order.  ``comm`` finishes every sum over rows; SelfComm makes it the identity.
        if self.comm is None:
            from .comm import SelfComm  # noqa: PLC0415

            self.comm = SelfComm()
        self.pool_offset, self.n_pool_total = self.comm.counts(self.n_pool)
        self.row_offset, self.n_rows_total = self.comm.counts(self.X.shape[0])

    @property
    def xp(self):
        return get_array_module(self.X)

    @property
    def dtype(self):
        return self.X.dtype

    @property
    def n_pool(self) -> int:
        return self.X.shape[0] - self.n_lab

    @property
    def k(self) -> int:
        return self.Q.shape[1]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def p(self) -> int:
        """Dimension of theta: (c-1) d'."""
        return self.k * self.d

    @property
    def Xp(self):  # noqa: N802 - the paper's notation
        return self.X[self.n_lab:]

    @property
    def Qp(self):  # noqa: N802 - the paper's notation
        return self.Q[self.n_lab:]

    @property
    def qcp(self):
        return self.qc[self.n_lab:]

    @property
    def Xo(self):  # noqa: N802 - the paper's notation
        return self.X[: self.n_lab]

    @property
    def Qo(self):  # noqa: N802 - the paper's notation
        return self.Q[: self.n_lab]

    def weights(self, z):
        """(m + n,) row weights of Sigma_z: 1 for labeled rows, z for pool rows."""
        xp = self.xp
        z = xp.asarray(z, dtype=self.dtype)
        return xp.concatenate([xp.ones(self.n_lab, dtype=self.dtype), z])


def make_problem(X_pool, probs_pool, X_labeled=None, probs_labeled=None, *, lam: float,
                 intercept: bool = True, dtype: str = "float64", comm=None) -> FisherProblem:
    """Build a :class:`FisherProblem` in the array namespace of ``X_pool``.

    X_pool : (n, d), probs_pool : (n, c) rows summing to 1, X_labeled : (m, d) or None,
    probs_labeled : (m, c) or None (the model's probabilities at the labeled points; with
    X_labeled but no probs_labeled the labeled Fisher H_o is left out).
    ``comm``: a :mod:`selection.firal.comm` communicator when the arguments are this rank's
    shard (X_pool its block of pool rows, the labeled rows on rank 0 only); None = one process.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {list(DTYPES)}")
    if not (isinstance(lam, (int, float)) and np.isfinite(lam) and lam > 0):
        raise ValueError(f"lam={lam!r} must be a finite number > 0 (the head's L2 strength)")
    xp = get_array_module(X_pool)
    dt = xp.dtype(dtype)
    c = probs_pool.shape[1]
    if c < 2:
        raise ValueError(f"probs_pool has c={c} classes; FIRAL needs at least 2")
    Xs, Ps = [], []
    if X_labeled is not None and probs_labeled is not None and len(X_labeled) > 0:
        Xs.append(xp.asarray(X_labeled, dtype=dt))
        Ps.append(xp.asarray(probs_labeled, dtype=dt))
    n_lab = Xs[0].shape[0] if Xs else 0
    Xs.append(xp.asarray(X_pool, dtype=dt))
    Ps.append(xp.asarray(probs_pool, dtype=dt))
    X = xp.concatenate(Xs) if len(Xs) > 1 else Xs[0]
    P = xp.concatenate(Ps) if len(Ps) > 1 else Ps[0]
    if intercept:
        X = xp.concatenate([X, xp.ones((X.shape[0], 1), dtype=dt)], axis=1)
    X = xp.ascontiguousarray(X)
    Q = xp.ascontiguousarray(P[:, : c - 1])
    qc = xp.ascontiguousarray(P[:, c - 1])
    return FisherProblem(X=X, Q=Q, qc=qc, n_lab=n_lab, lam=float(lam), comm=comm)
