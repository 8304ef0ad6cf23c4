"""Dense (c-1)d x (c-1)d Fisher matrices, for exact FIRAL and for tests on small problems.

Index (a, j) of theta (class a, feature j) is a * d + j, matching ``V.reshape(k * d)``.
"""
from __future__ import annotations

from ..backend import get_array_module
from .kron import row_chunks


def dense_fisher(X, Q, w=None):
    """sum_i w_i (diag(q_i) - q_i q_i^T) (x) x_i x_i^T as a (k d, k d) array.

    = blockdiag_a(X^T diag(w q_a) X) - Z^T diag(w) Z with Z_i = q_i (x) x_i.
    """
    xp = get_array_module(X)
    n, d = X.shape
    k = Q.shape[1]
    p = k * d
    out = xp.zeros((p, p), dtype=X.dtype)
    wq = Q if w is None else Q * w[:, None]
    for sl in row_chunks(n, p):
        Xc, Qc = X[sl], Q[sl]
        Z = (Qc[:, :, None] * Xc[:, None, :]).reshape(-1, p)
        Zw = Z if w is None else Z * w[sl][:, None]
        out -= Zw.T @ Z
        for a in range(k):
            out[a * d:(a + 1) * d, a * d:(a + 1) * d] += (Xc * wq[sl, a][:, None]).T @ Xc
    return 0.5 * (out + out.T)


def point_fisher(x, q):
    """H_i = (diag(q) - q q^T) (x) x x^T for one point (dense, for tests and ROUND updates)."""
    xp = get_array_module(x)
    G = xp.diag(q) - xp.outer(q, q)
    return xp.kron(G, xp.outer(x, x))


def dense_quad(X, Q, Ms):
    """<M, H_i> = tr(M H_i) for every row i and each symmetric M in ``Ms`` -> (len(Ms), n).

    tr(M (Gamma_i (x) x x^T)) = sum_a q_ia x^T M_aa x - (q_i (x) x_i)^T M (q_i (x) x_i).
    """
    xp = get_array_module(X)
    n, d = X.shape
    k = Q.shape[1]
    p = k * d
    out = xp.empty((len(Ms), n), dtype=X.dtype)
    diag_blocks = []
    for M in Ms:
        M4 = M.reshape(k, d, k, d)
        diag_blocks.append(xp.stack([M4[a, :, a, :] for a in range(k)]))  # (k, d, d)
    for sl in row_chunks(n, 2 * p):
        Xc, Qc = X[sl], Q[sl]
        Z = (Qc[:, :, None] * Xc[:, None, :]).reshape(-1, p)
        for m, M in enumerate(Ms):
            Db = diag_blocks[m]
            XD = (Xc @ Db.transpose(1, 0, 2).reshape(d, k * d)).reshape(-1, k, d)
            t1 = ((XD * Xc[:, None, :]).sum(-1) * Qc).sum(-1)
            t2 = ((Z @ M) * Z).sum(-1)
            out[m, sl] = t1 - t2
    return out
