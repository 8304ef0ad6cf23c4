"""Approx-FIRAL ([AFIRAL] Alg. 1-2): RELAX with Hutchinson + PCG + Kronecker matrix-free
products, ROUND on block diagonals.  Never forms a (c-1)d x (c-1)d matrix: storage is the
inputs, O(s (c-1) d) probe vectors and O((c-1) d^2) blocks (plus row-chunked temporaries).
Works on NumPy or CuPy arrays (the namespace of ``prob.X``).
"""
from __future__ import annotations

import time

import numpy as np

from ..backend import to_numpy
from .hutchinson import ESTIMATORS, factored_probes, two_sided_probes
from .kron import block_diag, point_quad, sigma_matvec
from .pcg import BlockJacobi, pcg
from .relax import mirror_descent
from .round import round_blockdiag


class ApproxOracle:
    """Hutchinson estimates of (f, g): probes drawn once (``resample=False``) or per call.

    Each call: block-Jacobi preconditioner from the diagonal blocks of Sigma_z (see
    :meth:`precond_blocks`), one batched PCG solve (warm-started from the previous call's
    solution when the probes are fixed: z moves little between mirror-descent steps), then
    the per-point gradient estimate (O(n s c d)).
    """

    def __init__(self, prob, *, probes: int, rng, estimator: str = "factored",
                 cg_rtol: float = 1e-3, cg_maxiter: int = 100, resample: bool = False,
                 precond_rows: int = 0):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator={estimator!r} is not one of {list(ESTIMATORS)}")
        self.prob, self.s, self.estimator = prob, probes, estimator
        self.cg_rtol, self.cg_maxiter = cg_rtol, cg_maxiter
        self.rng, self.resample = rng, resample
        self._draw()
        self.W = None
        self.precond_rows = precond_rows
        self.pre_rng = np.random.default_rng(rng.integers(2**63)) if precond_rows else None
        self.trace_h = (prob.X * prob.X).sum(axis=1) * (prob.Q * (1 - prob.Q)).sum(axis=1)
        self.cg_iterations: list[int] = []
        self.cg_matvecs = 0
        self.cg_unconverged = 0

    def _draw(self):
        if self.estimator == "factored":
            self.rhs = factored_probes(self.prob, self.s, self.rng)
            self.fvec = self.rhs
        else:
            V, HV = two_sided_probes(self.prob, self.s, self.rng)
            self.rhs = self.prob.xp.concatenate([V, HV])
            self.fvec = HV

    def precond_blocks(self, w):
        """Diagonal blocks of sum_i w_i H_i for the block-Jacobi preconditioner.

        Exact (O(n c d^2)) up to ``precond_rows`` rows; beyond, an unbiased importance sample
        of ``precond_rows`` rows drawn with probability proportional to w_i tr(H_i)
        (= w_i |x_i|^2 sum_a q_ia (1 - q_ia)), reweighted by 1 / (m p_i): the blocks then cost
        O(m c d^2) whatever n is.  Only the preconditioner is sampled, so CG still solves with
        the exact Sigma_z; a 1/sqrt(m) error in the blocks only costs CG iterations.

        On a row shard the importances are gathered (n numbers), every rank draws the same
        global sample and keeps its own rows, and the blocks are allreduced.
        """
        prob = self.prob
        xp = prob.xp
        comm = prob.comm
        n = prob.n_rows_total
        m = self.precond_rows
        if not m or n <= m or self.pre_rng is None:
            return comm.allreduce(block_diag(prob.X, prob.Q, w))
        imp = np.asarray(comm.allgather(np.asarray(to_numpy(w * self.trace_h))), dtype=np.float64)
        pr = imp / imp.sum()
        idx = np.sort(self.pre_rng.choice(n, size=m, replace=True, p=pr))
        lo = prob.row_offset
        idx = idx[(idx >= lo) & (idx < lo + w.shape[0])]
        scale = xp.asarray(1.0 / (m * pr[idx]), dtype=prob.dtype)
        ii = xp.asarray(idx - lo)
        return comm.allreduce(block_diag(prob.X[ii], prob.Q[ii], w[ii] * scale))

    def solve(self, z):
        prob = self.prob
        xp = prob.xp
        w = prob.weights(z)
        D = self.precond_blocks(w)
        D += prob.lam * xp.eye(prob.d, dtype=prob.dtype)
        W, info = pcg(lambda V: sigma_matvec(prob, w, V), self.rhs, BlockJacobi.from_blocks(D),
                      x0=self.W, rtol=self.cg_rtol, maxiter=self.cg_maxiter)
        self.cg_iterations.append(info["iterations"])
        self.cg_matvecs += info["matvecs"]
        self.cg_unconverged += 0 if info["converged"] else 1
        return W

    def __call__(self, z):
        prob = self.prob
        if self.resample and self.W is not None:
            self._draw()
            self.W = None
        W = self.solve(z)
        self.W = W
        s = self.s
        if self.estimator == "factored":
            f = float((self.rhs * W).sum()) / s
            g = -point_quad(prob.Xp, prob.Qp, W)
        else:
            Wv, Y = W[:s], W[s:]
            f = float((self.fvec * Wv).sum()) / s
            g = -point_quad(prob.Xp, prob.Qp, Y, Wv)
        return f, g


def approx_firal(prob, b: int, *, probes: int = 10, estimator: str = "factored",
                 resample: bool = True, cg_rtol: float = 1e-2, cg_maxiter: int = 100,
                 relax_iters: int = 20, step: float = 2.0, step_rule: str = "normalized",
                 relax_tol: float = 0.0, eta: float | None = None, round_candidates: int = 2000,
                 round_mass: float = 1.0, round_steps: int = 0, precond_rows: int = 4096,
                 rng=None, progress=None):
    """Approx-FIRAL. Returns (pool indices, relaxed z, info).

    ``resample=True`` (default) draws fresh probes at every RELAX iteration: each gradient is
    then an unbiased estimate and, since mirror descent accumulates gradients in log z, the
    probe noise averages out over the iterations (the iterates of the second half are
    averaged, too).  With probes held fixed instead, RELAX minimises the fixed-probe surrogate
    exactly (warm-started CG, monotone with the ``adaptive`` rule) but keeps that surrogate's
    bias: on a 2000-point, c=10, d=16 problem the relaxed objective came out 7-8% above the
    exact optimum with s=10 fixed probes, 2.6-3% with s=30 fixed, and about 2% with s=10
    resampled (docs/bench-firal.md).

    ``round_candidates`` (0 = the whole pool): ROUND scores only the max(round_candidates, 10b)
    points with the largest relaxed weight, which makes ROUND's cost independent of n.  How
    concentrated z is depends on the data (10k points, c=10, b=50: the top 10b points held
    67-68% of the mass and the top 2000 89-90% with the benchmark's data, 99.99% in the top
    10b with more confident probabilities), but the batch FIR was identical with 2000
    candidates and with the whole pool, and 0.1% higher with 10b (docs/bench-firal.md).
    ``round_mass`` < 1 narrows that further to the fewest top-z points holding this share of
    sum z (at least 2b): ROUND's cost is b steps times the candidates, so with large batches it
    dominates (c = 26, b = 520, n = 10k: 12 of 15 CPU seconds with 10b = 5200 candidates);
    ``round_steps`` > 0 caps ROUND at that many steps: each step then takes its
    ceil(b / round_steps) best points (one eigendecomposition of the blocks per step, which is
    ROUND's fixed cost per step). docs/strategies.md compares the batch FIR and the suite's
    accuracy with and without both.
    """
    if resample and step_rule == "adaptive":
        raise ValueError("step_rule='adaptive' compares objective estimates between iterations, "
                         "which needs fixed probes: use probe_resample=False or step_rule "
                         "'normalized'/'constant'")
    rng = np.random.default_rng(rng)
    xp = prob.xp
    t0 = time.perf_counter()
    oracle = ApproxOracle(prob, probes=probes, rng=rng, estimator=estimator, cg_rtol=cg_rtol,
                          cg_maxiter=cg_maxiter, resample=resample, precond_rows=precond_rows)
    relax_progress = None if progress is None else (lambda f, m: progress(0.6 * f, m))
    z, rinfo = mirror_descent(oracle, prob.n_pool, b, xp=xp, dtype=prob.dtype, iters=relax_iters,
                              step=step, step_rule=step_rule, tol=relax_tol, average=resample,
                              progress=relax_progress, comm=prob.comm)
    comm_relax = prob.comm.seconds
    t1 = time.perf_counter()
    round_progress = None if progress is None else (lambda f, m: progress(0.6 + 0.4 * f, m))
    idx, oinfo = round_blockdiag(prob, z, b, eta, progress=round_progress,
                                 candidates=max(round_candidates, 10 * b) if round_candidates else 0,
                                 mass=round_mass,
                                 per_step=-(-b // round_steps) if round_steps else 1)
    t2 = time.perf_counter()
    its = oracle.cg_iterations
    info = {
        "relax_seconds": t1 - t0, "round_seconds": t2 - t1,
        "relax_objective_estimate": rinfo["objective"], "relax_history": rinfo["history"],
        "relax_oracle_calls": rinfo["oracle_calls"], "relax_rejected": rinfo["rejected"],
        "cg_iterations": its, "cg_iterations_total": int(sum(its)),
        "cg_matvecs": oracle.cg_matvecs, "cg_unconverged_solves": oracle.cg_unconverged,
        "round_eta": oinfo["eta"], "round_gains": oinfo["gains"],
        "round_candidates": oinfo["candidates"], "round_steps": oinfo["steps"],
        "comm_relax_seconds": comm_relax, "comm_round_seconds": prob.comm.seconds - comm_relax,
        "ranks": prob.comm.size,
    }
    return idx, z, info
