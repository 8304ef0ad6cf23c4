"""Rademacher (Hutchinson) estimates of f(z) = tr(Sigma_z^-1 H_p) and its gradient.

Two estimators share the solver ([AFIRAL] Sec. III-C uses Hutchinson probes with CG):

``two-sided`` (the paper's form): Rademacher V (s, k, d) in parameter space,
    W = Sigma^-1 V,  Y = Sigma^-1 H_p V          (2s solves)
    f ~ mean_j <H_p v_j, w_j>,   g_i ~ -mean_j (Y_j x_i)^T Gamma_i (W_j x_i),
  unbiased because E[v v^T] = I and tr(H_p Sigma^-1 H_i Sigma^-1) = tr(Sigma^-1 H_p Sigma^-1 H_i).

``factored`` (default): H_p = F F^T with F = n^-1/2 [L_i (x) x_i]_i and L_i L_i^T = Gamma_i, so
    tr(Sigma^-1 H_p) = tr(F^T Sigma^-1 F)
  is a trace over the pool's n(c-1) coordinates; Hutchinson with Rademacher xi there gives the
  right-hand sides r_j = F xi_j (one O(n k d) product each), W = Sigma^-1 R  (s solves) and
    f ~ mean_j <r_j, w_j>,   g_i ~ -mean_j (W_j x_i)^T Gamma_i (W_j x_i).
  Half the solves; every gradient estimate is <= 0 like the true gradient; and with the probes
  held fixed over RELAX, f-hat is itself a convex function of z whose exact gradient is g-hat,
  so mirror descent with step control decreases it monotonically.

L_i = diag(u) (I - beta u u^T), u = sqrt(q_i), beta = 1 / (1 + sqrt(q_ic)) satisfies
L_i L_i^T = diag(u)(I - u u^T)diag(u) = Gamma_i because (I - beta u u^T)^2 = I - u u^T when
|u|^2 = 1 - q_ic.
"""
from __future__ import annotations

from ..backend import get_array_module
from .kron import hp_matvec, row_chunks

ESTIMATORS = ("factored", "two-sided")


def rademacher(rng, shape, dtype, xp):
    """+-1 entries from the NumPy Generator ``rng``.

    The random bytes are drawn on the host (so CPU and GPU runs see the same probes) and only
    the packed bits (1/32 of the float32 array) travel to the device, where they are unpacked.
    """
    import numpy as np  # noqa: PLC0415

    size = int(np.prod(shape))
    packed = xp.asarray(rng.integers(0, 256, size=(size + 7) // 8, dtype=np.uint8))
    a = xp.unpackbits(packed)[:size].astype(dtype).reshape(shape)
    a *= 2
    a -= 1
    return a


def gamma_sqrt_apply(Q, qc, Xi):
    """L_i xi for each row: Q (n, k), qc (n,), Xi (n, s, k) -> (n, s, k) with L_i L_i^T = Gamma_i."""
    xp = get_array_module(Q)
    u = xp.sqrt(xp.maximum(Q, 0))
    beta = 1.0 / (1.0 + xp.sqrt(xp.maximum(qc, 0)))
    c = xp.einsum("nsk,nk->ns", Xi, u) * beta[:, None]          # beta <u, xi>
    out = Xi - c[:, :, None] * u[:, None, :]
    out *= u[:, None, :]
    return out


def rademacher_rows(rng, rows: int, lo: int, hi: int, width: int, dtype, xp):
    """Rows [lo, hi) of a (rows, width) +-1 array drawn as :func:`rademacher` draws it.

    Every rank draws the bytes of the whole block (so the generator advances alike on all
    ranks and a row gets the same signs whichever rank owns it) but unpacks only its rows.
    """
    import numpy as np  # noqa: PLC0415

    packed = rng.integers(0, 256, size=(rows * width + 7) // 8, dtype=np.uint8)
    if lo == 0 and hi == rows:
        return rademacher_from(packed, (rows, width), dtype, xp)
    b0, b1 = lo * width, hi * width
    part = packed[b0 // 8: (b1 + 7) // 8]
    bits = np.unpackbits(part)[b0 % 8: b0 % 8 + (b1 - b0)]
    a = xp.asarray(bits).astype(dtype).reshape(hi - lo, width)
    a *= 2
    a -= 1
    return a


def rademacher_from(packed, shape, dtype, xp):
    import numpy as np  # noqa: PLC0415

    size = int(np.prod(shape))
    a = xp.unpackbits(xp.asarray(packed))[:size].astype(dtype).reshape(shape)
    a *= 2
    a -= 1
    return a


def factored_probes(prob, s: int, rng):
    """R (s, k, d): r_j = F xi_j with Rademacher xi_j in R^{n (c-1)}; E[r r^T] = H_p.

    On a row shard the chunks are the global pool's (``prob.pool_offset``, ``n_pool_total``),
    so the signs of a row do not depend on how the pool is split, and R is allreduced.
    """
    xp = prob.xp
    k, d = prob.k, prob.d
    n, off, n_loc = prob.n_pool_total, prob.pool_offset, prob.n_pool
    R = xp.zeros((s * k, d), dtype=prob.dtype)
    Xp, Qp, qcp = prob.Xp, prob.Qp, prob.qcp
    for sl in row_chunks(n, s * k):
        rows = sl.stop - sl.start
        lo, hi = max(sl.start, off), min(sl.stop, off + n_loc)
        if hi <= lo:
            rng.integers(0, 256, size=(rows * s * k + 7) // 8, dtype="uint8")  # keep in step
            continue
        Xi = rademacher_rows(rng, rows, lo - sl.start, hi - sl.start, s * k, prob.dtype, xp)
        Xi = Xi.reshape(hi - lo, s, k)
        ls = slice(lo - off, hi - off)
        LXi = gamma_sqrt_apply(Qp[ls], qcp[ls], Xi)          # (rows, s, k)
        R += LXi.reshape(hi - lo, s * k).T @ Xp[ls]
    R = prob.comm.allreduce(R)
    R *= 1.0 / float(n) ** 0.5
    return R.reshape(s, k, d)


def two_sided_probes(prob, s: int, rng):
    """(V, H_p V), V (s, k, d) Rademacher in parameter space."""
    V = rademacher(rng, (s, prob.k, prob.d), prob.dtype, prob.xp)
    return V, hp_matvec(prob, V)
