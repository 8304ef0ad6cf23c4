"""Preconditioned conjugate gradients for Sigma_z W = R with many right-hand sides.

Each right-hand side (a leading index of the (s, k, d) arrays) runs its own CG recurrence
(its own alpha, beta); they share the matrix products, so one iteration costs one batched
matrix-free product (one GEMM pair).  Columns that have converged drop out of the products.
The preconditioner is block Jacobi: the c-1 diagonal d x d blocks of Sigma_z, Cholesky-
factored ([AFIRAL] Sec. III-B).  Sigma_z's off-diagonal class blocks are -sum w q_a q_b x x^T;
Gamma_i = diag(q) - q q^T is diagonally dominant (sum_{b != a} q_a q_b <= q_a (1 - q_a)), so
the preconditioned spectrum stays in (0, 2) and CG converges in few iterations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..backend import get_array_module


@dataclass
class BlockJacobi:
    """Inverse of a block-diagonal SPD matrix given as blocks (k, d, d).

    The blocks are Cholesky-factored (D_a = L_a L_a^T) and D_a^-1 = L_a^-T L_a^-1 is kept
    explicitly, so applying it is one batched matrix product (BLAS-3 over the probes) on both
    NumPy and CuPy, which have no batched triangular solve.
    """

    Dinv: Any

    @classmethod
    def from_blocks(cls, D):
        xp = get_array_module(D)
        L = xp.linalg.cholesky(D)
        Linv = xp.linalg.inv(L)
        return cls(Linv.transpose(0, 2, 1) @ Linv)

    def __call__(self, R):
        # R (s, k, d): block a of each probe times D_a^-1 (symmetric).
        return (R.transpose(1, 0, 2) @ self.Dinv).transpose(1, 0, 2)


def _dot(u, v):
    return (u * v).sum(axis=(1, 2))


def pcg(matvec: Callable, B, precond: Callable | None = None, x0=None, *, rtol: float = 1e-3,
        maxiter: int = 100):
    """Solve A X_j = B_j for every j; A given by ``matvec`` on (s', k, d) stacks.

    Stops a column when ||B_j - A X_j|| <= rtol ||B_j||.  Returns (X, info) with info =
    {"iterations", "converged", "rel_residual", "matvecs"} (matvecs counts column products).
    """
    xp = get_array_module(B)
    s = B.shape[0]
    precond = precond or (lambda R: R)
    bnorm = xp.sqrt(_dot(B, B))
    bnorm = xp.where(bnorm > 0, bnorm, 1)
    if x0 is None:
        X = xp.zeros_like(B)
        R = B.copy()
    else:
        X = x0.copy()
        R = B - matvec(X)
    Z = precond(R)
    P = Z.copy()
    rz = _dot(R, Z)
    rel = xp.sqrt(_dot(R, R)) / bnorm
    active = rel > rtol
    it = 0
    matvecs = 0
    while it < maxiter and bool(active.any()):
        idx = xp.nonzero(active)[0]
        full = int(idx.shape[0]) == s
        Pa = P if full else P[idx]
        APa = matvec(Pa)
        matvecs += int(idx.shape[0])
        pAp = _dot(Pa, APa)
        alpha = rz[idx] / xp.where(pAp > 0, pAp, 1)
        if full:
            X += alpha[:, None, None] * P
            R -= alpha[:, None, None] * APa
        else:
            X[idx] += alpha[:, None, None] * Pa
            R[idx] -= alpha[:, None, None] * APa
        it += 1
        Ra = R if full else R[idx]
        rel_a = xp.sqrt(_dot(Ra, Ra)) / bnorm[idx]
        rel[idx] = rel_a
        Za = precond(Ra)
        rz_new = _dot(Ra, Za)
        beta = rz_new / xp.where(rz[idx] > 0, rz[idx], 1)
        if full:
            P = Za + beta[:, None, None] * P
            rz = rz_new
        else:
            P[idx] = Za + beta[:, None, None] * Pa
            rz[idx] = rz_new
        active[idx] = rel_a > rtol
    return X, {
        "iterations": it,
        "converged": not bool(active.any()),
        "rel_residual": float(rel.max()),
        "matvecs": matvecs,
    }
