"""Matrix-free products with Kronecker-structured Fisher matrices ([AFIRAL] Sec. III-A).

With H_i = Gamma_i (x) x_i x_i^T, Gamma_i = diag(q_i) - q_i q_i^T and v stored as V (k, d),

    H_i v  =  vec( Gamma_i (V x_i) x_i^T ),      Gamma_i u = q_i * (u - <q_i, u>),

so sum_i w_i H_i V over all rows is three steps, each O(n k d) and shaped as GEMMs:
U = X V^T (project), R_i = w_i Gamma_i U_i (per-point class mixing), R^T X (back-project).
A batch of s vectors (s, k, d) is one GEMM with s*k columns.  Rows are processed in chunks
so the working memory stays bounded whatever n is (peak memory linear in n only through
the inputs themselves).
"""
from __future__ import annotations

from ..backend import get_array_module

# Elements of the largest per-chunk temporary: 1 MiB of float32, so a chunk's passes (projection,
# class mixing, back-projection) stay in a core's L2 cache.  Measured at n = 100k, c = 10, d = 64, one
# BLAS thread: a Fisher product 57 -> 42 ms CPU, the Hutchinson right-hand sides 98 -> 48 ms, against
# 16 MiB chunks (1 << 22), which streamed every pass through memory; two ranks on two cores then
# also compete less for memory bandwidth (docs/firal-mpi.md).
CHUNK_ELEMS = 1 << 18


def row_chunks(n: int, width: int):
    """Slices of ``range(n)`` so that a (rows, width) temporary has <= CHUNK_ELEMS elements."""
    rows = max(256, CHUNK_ELEMS // max(1, width))
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


def gamma_apply(Q, U, out=None, scale=None):
    """Gamma_i u for each row: Q (n, k), U (n, s, k) -> (n, s, k); ``out=U`` works in place.

    ``scale`` (n,) multiplies row i by scale_i (fused into the last pass).
    """
    xp = get_array_module(Q, U)
    qu = xp.einsum("nsk,nk->ns", U, Q)           # <q_i, u> without an (n, s, k) temporary
    out = xp.subtract(U, qu[:, :, None], out=out)
    out *= (Q if scale is None else Q * scale[:, None])[:, None, :]
    return out


def fisher_matvec(X, Q, w, V, *, out=None):
    """sum_i w_i (Gamma_i (x) x_i x_i^T) applied to each of V (s, k, d) -> (s, k, d).

    X : (n, d), Q : (n, k), w : (n,) or None (all ones).
    """
    xp = get_array_module(X, V)
    s, k, d = V.shape
    Vm = V.reshape(s * k, d)
    acc = xp.zeros((s * k, d), dtype=V.dtype) if out is None else out.reshape(s * k, d)
    if out is not None:
        acc[...] = 0
    for sl in row_chunks(X.shape[0], s * k):
        Xc = X[sl]
        U = (Xc @ Vm.T).reshape(-1, s, k)          # U_i = V x_i for every probe
        R = gamma_apply(Q[sl], U, out=U, scale=None if w is None else w[sl])  # class mixing
        acc += R.reshape(-1, s * k).T @ Xc           # back-projection
    return acc.reshape(s, k, d)


def sigma_matvec(prob, w_all, V):
    """Sigma_z V = (H_o + sum_i z_i H_i + lambda I) V with w_all = prob.weights(z).

    On a row shard the local sum is finished with one allreduce (of s k d numbers).
    """
    out = prob.comm.allreduce(fisher_matvec(prob.X, prob.Q, w_all, V))
    out += prob.lam * V
    return out


def hp_matvec(prob, V):
    """H_p V with H_p = mean over the pool of H_i."""
    xp = prob.xp
    w = xp.full(prob.n_pool, 1.0 / prob.n_pool_total, dtype=prob.dtype)
    return prob.comm.allreduce(fisher_matvec(prob.Xp, prob.Qp, w, V))


def block_diag(X, Q, w=None):
    """Diagonal blocks of sum_i w_i H_i: (k, d, d), block a = sum_i w_i q_ia (1 - q_ia) x_i x_i^T.

    These are the d x d blocks of the block-Jacobi preconditioner ([AFIRAL] Sec. III-B)
    and of ROUND's block-diagonal approximation.  O(n k d^2) as one GEMM per row chunk.
    """
    xp = get_array_module(X)
    n, d = X.shape
    k = Q.shape[1]
    G = Q * (1 - Q)
    if w is not None:
        G = G * w[:, None]
    out = xp.zeros((k * d, d), dtype=X.dtype)
    for sl in row_chunks(n, k * d):
        Xc = X[sl]
        WX = (G[sl][:, :, None] * Xc[:, None, :]).reshape(-1, k * d)
        out += WX.T @ Xc
    out = out.reshape(k, d, d)
    return 0.5 * (out + out.transpose(0, 2, 1))


def point_quad(X, Q, A, B=None):
    """(n,) mean over probes j of (A_j x_i)^T Gamma_i (B_j x_i); B=None means B=A.

    A, B : (s, k, d).  With A = Sigma^-1 V and B = Sigma^-1 H_p V this is the Hutchinson
    estimate of tr(Sigma^-1 H_p Sigma^-1 H_i) for every point i at O(n s k d) ([AFIRAL]
    Sec. III-C): each H_i is Gamma_i (rank <= k) times the rank-one x_i x_i^T.
    """
    xp = get_array_module(X, A)
    s, k, d = A.shape
    out = xp.empty(X.shape[0], dtype=A.dtype)
    Am = A.reshape(s * k, d)
    Bm = None if B is None else B.reshape(s * k, d)
    for sl in row_chunks(X.shape[0], 2 * s * k):
        Xc = X[sl]
        UA = (Xc @ Am.T).reshape(-1, s, k)
        UB = UA if Bm is None else (Xc @ Bm.T).reshape(-1, s, k)
        GB = gamma_apply(Q[sl], UB)
        out[sl] = (UA * GB).sum(axis=(1, 2)) / s
    return out
