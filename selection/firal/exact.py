"""Exact FIRAL ([FIRAL] Alg. 1 RELAX + Alg. 2 ROUND) on dense (c-1)d x (c-1)d matrices.

For small problems and as the reference for Approx-FIRAL.  Always float64.  Refuses, with
:class:`ProblemTooLarge`, a problem whose dense working set exceeds ``memory_budget`` bytes.
"""
from __future__ import annotations

import time

from .dense import dense_fisher, dense_quad
from .kron import CHUNK_ELEMS
from .relax import mirror_descent
from .round import round_dense

N_DENSE = 10  # p x p float64 arrays alive at once (Sigma, its inverse, H_p, M, eigh workspace, ROUND)


class ProblemTooLarge(ValueError):
    """The dense computation would not fit in the memory budget."""


def exact_bytes_estimate(n: int, k: int, d: int) -> int:
    """Bytes of firal_exact's working set: N_DENSE dense p x p float64 matrices plus the
    row-chunked temporaries of the quadratic forms (Z (rows, p) and X M_aa (rows, k d))."""
    p = k * d
    chunk = max(256 * 2 * p, CHUNK_ELEMS) * 8 * 3
    return N_DENSE * p * p * 8 + chunk + n * (d + 2 * k + 8) * 8


class ExactOracle:
    """(f, g) of f(z) = tr(Sigma_z^-1 H_p) with dense matrices.

    g_i = -tr(Sigma^-1 H_p Sigma^-1 H_i) = -<M, H_i>,  M = Sigma^-1 H_p Sigma^-1 (symmetric).
    """

    def __init__(self, prob):
        self.prob = prob
        xp = prob.xp
        self.Hp = dense_fisher(prob.Xp, prob.Qp) / prob.n_pool
        self.eye = xp.eye(prob.p, dtype=prob.dtype)
        self.calls = 0

    def sigma(self, z):
        prob = self.prob
        return dense_fisher(prob.X, prob.Q, prob.weights(z)) + prob.lam * self.eye

    def objective(self, z) -> float:
        xp = self.prob.xp
        return float(xp.trace(xp.linalg.solve(self.sigma(z), self.Hp)))

    def __call__(self, z):
        xp = self.prob.xp
        self.calls += 1
        ev, E = xp.linalg.eigh(self.sigma(z))
        Sinv = (E / ev) @ E.T
        SH = Sinv @ self.Hp
        f = float(xp.trace(SH))
        M = SH @ Sinv
        M = 0.5 * (M + M.T)
        g = -dense_quad(self.prob.Xp, self.prob.Qp, [M])[0]
        return f, g


def exact_firal(prob, b: int, *, relax_iters: int = 50, step: float = 1.0,
                step_rule: str = "adaptive", relax_tol: float = 1e-5, eta: float | None = None,
                memory_budget: int = 2 << 30, progress=None):
    """Exact FIRAL (``prob`` in float64). Returns (pool indices, relaxed z, info)."""
    need = exact_bytes_estimate(prob.n_pool + prob.n_lab, prob.k, prob.d)
    if need > memory_budget:
        raise ProblemTooLarge(
            f"firal_exact needs about {need / 2**20:.0f} MiB for its dense "
            f"{prob.p}x{prob.p} matrices ((c-1)*d' = {prob.k}*{prob.d}), over the memory budget of "
            f"{memory_budget / 2**20:.0f} MiB (parameter memory_budget_mb); use the strategy 'firal' "
            "(Approx-FIRAL, matrix-free) for a problem this size")
    xp = prob.xp
    t0 = time.perf_counter()
    oracle = ExactOracle(prob)
    relax_progress = None if progress is None else (lambda f, m: progress(0.5 * f, m))
    z, rinfo = mirror_descent(oracle, prob.n_pool, b, xp=xp, dtype=prob.dtype, iters=relax_iters,
                              step=step, step_rule=step_rule, tol=relax_tol, progress=relax_progress)
    t1 = time.perf_counter()
    round_progress = None if progress is None else (lambda f, m: progress(0.5 + 0.5 * f, m))
    idx, oinfo = round_dense(prob, z, b, eta, progress=round_progress)
    t2 = time.perf_counter()
    info = {
        "relax_seconds": t1 - t0, "round_seconds": t2 - t1,
        "relax_objective": rinfo["objective"], "relax_history": rinfo["history"],
        "relax_oracle_calls": rinfo["oracle_calls"], "relax_rejected": rinfo["rejected"],
        "round_eta": oinfo["eta"], "round_gains": oinfo["gains"], "whitened_lambda_min": oinfo["whitened_lambda_min"],
        "memory_estimate_bytes": need,
    }
    return idx, z, info
