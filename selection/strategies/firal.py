"""FIRAL (``firal_exact``) and Approx-FIRAL (``firal``) as registered strategies.

Both minimise the Fisher information ratio tr(Sigma_S^-1 H_p) of the chosen batch S: RELAX
(mirror descent on a continuous relaxation z) then ROUND (FTRL with the l1/2 regulariser).
``firal_exact`` forms the dense (c-1)d x (c-1)d matrices (small problems, float64, refuses past
``memory_budget_mb``); ``firal`` is matrix-free (Kronecker products, Hutchinson, PCG,
block-diagonal ROUND) and runs on NumPy or CuPy.  See :mod:`selection.firal`.

No exploration share by default (``unseen_share=0``): FIRAL's objective, the Fisher ratio
against the whole pool's H_p, spreads the batch over the pool by itself, and in the evaluation
suite the share only cost it accuracy (docs/strategies.md).

lambda: the ``lam`` parameter when set, else ``SelectionContext.l2`` (the head's L2 strength:
the head minimises sum CE + (l2/2)||W||^2, whose Hessian is sum_i H_i + l2 I), else 1.0 (the
head's default).  Device: the ``device`` parameter when set, else ``SelectionContext.device``.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import backend
from ..firal.approx import approx_firal
from ..firal.exact import exact_firal
from ..firal.hutchinson import ESTIMATORS
from ..firal.problem import make_problem
from ..firal.relax import STEP_RULES
from ..params import Param
from .base import Selection, Strategy, register

_COMMON = (
    Param("lam", "float", None, "lambda of Sigma_z = H_o + sum z_i H_i + lambda I; empty = the head's "
          "L2 strength from the round (SelectionContext.l2), or 1.0 without one.",
          min=1e-8, max=1e8, nullable=True),
    Param("intercept", "bool", True, "Append a constant 1 feature (the head fits an intercept)."),
    Param("round_eta", "float", None, "ROUND's FTRL learning rate eta; empty = sqrt((c-1) d') "
          "(see selection.firal.round.default_eta).", min=1e-6, max=1e6, nullable=True),
    Param("device", "str", None, "cpu, cuda or auto; empty = the worker's SELECTION_DEVICE "
          "(SelectionContext.device).", choices=("cpu", "cuda", "auto"), nullable=True),
)


def _lam(params, context) -> tuple[float, str]:
    if params["lam"] is not None:
        return float(params["lam"]), "param"
    if context is not None and context.l2 is not None:
        return float(context.l2), "context.l2"
    return 1.0, "default"


def _problem(params, context, X_pool, probs_pool, X_labeled, probs_labeled, dtype):
    device = params["device"] or (context.device if context is not None else "cpu") or "cpu"
    dev = backend.resolve_device(device)
    lam, lam_source = _lam(params, context)
    if X_labeled is not None and len(X_labeled) > 0 and probs_labeled is None:
        # H_o needs the model's probabilities at the labeled points ([FIRAL] Sec. 2); without
        # them the labeled set cannot enter Sigma_z, which changes the selection: say so
        warnings.warn(f"FIRAL got X_labeled ({len(X_labeled)} rows) without probs_labeled: the labeled "
                      "Fisher H_o is left out of Sigma_z; pass probs_labeled (the head's probabilities "
                      "at the labeled points) to select as the paper does", stacklevel=4)
    def move(a):
        return None if a is None else backend.asarray(a, dev)

    prob = make_problem(move(X_pool), move(probs_pool), move(X_labeled), move(probs_labeled),
                        lam=lam, intercept=params["intercept"], dtype=dtype)
    return prob, {"lam": lam, "lam_source": lam_source, "device": dev, "dtype": dtype,
                  "n_labeled_in_fisher": prob.n_lab, "p": prob.p}


def _progress(context):
    return None if context is None else context.progress


@register
class FiralExact(Strategy):
    name = "firal_exact"
    description = ("Exact FIRAL (Chen & Biros 2023): dense Fisher matrices, for small problems "
                   "(refuses past memory_budget_mb; use 'firal' then).")
    unseen_share_default = 0.0  # its objective covers the pool already (docs/strategies.md)
    params = _COMMON + (
        Param("relax_iters", "int", 50, "Maximum RELAX (mirror descent) iterations.", min=1, max=10000),
        Param("relax_tol", "float", 1e-5, "Stop RELAX when a step lowers f by less than this (relative).",
              min=0.0, max=1.0),
        Param("step_rule", "str", "adaptive", "Mirror-descent step rule (selection.firal.relax).",
              choices=STEP_RULES),
        Param("step_size", "float", 1.0, "Mirror-descent step eta (normalised by max |g| unless "
              "step_rule='constant').", min=1e-6, max=1e6),
        Param("memory_budget_mb", "int", 2048, "Refuse problems whose dense working set exceeds this.",
              min=1, max=10**7),
    )

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        p = self.params_
        prob, info = _problem(p, context, X_pool, probs_pool, X_labeled, probs_labeled, "float64")
        idx, _z, run = exact_firal(
            prob, batch_size, relax_iters=p["relax_iters"], step=p["step_size"],
            step_rule=p["step_rule"], relax_tol=p["relax_tol"], eta=p["round_eta"],
            memory_budget=p["memory_budget_mb"] << 20, progress=_progress(context))
        return Selection(idx, np.asarray(_gains(run, idx)), {**info, **_clean(run)})


@register
class Firal(Strategy):
    name = "firal"
    description = ("Approx-FIRAL (Chen, Wen & Biros 2024): matrix-free FIRAL with Hutchinson "
                   "estimates, block-Jacobi PCG and a block-diagonal ROUND; NumPy or CuPy.")
    unseen_share_default = 0.0  # its objective covers the pool already (docs/strategies.md)
    params = _COMMON + (
        Param("probes", "int", 10, "Hutchinson probes s per RELAX iteration.", min=1, max=1024),
        Param("probe_resample", "bool", True, "Draw fresh probes every RELAX iteration (unbiased "
              "steps; noise averages out) instead of holding them fixed (a biased surrogate)."),
        Param("estimator", "str", "factored", "Hutchinson form: 'factored' (s solves, trace over "
              "the pool's factor of H_p) or 'two-sided' (the paper's, 2s solves).", choices=ESTIMATORS),
        Param("cg_rtol", "float", 1e-2, "PCG relative residual tolerance.", min=1e-10, max=0.5),
        Param("cg_maxiter", "int", 100, "PCG iteration cap per solve.", min=1, max=100000),
        Param("relax_iters", "int", 20, "RELAX (mirror descent) iterations.", min=1, max=10000),
        Param("relax_tol", "float", 0.0, "Stop RELAX when a step lowers the estimated f by less "
              "than this (relative); 0 = run all iterations.", min=0.0, max=1.0),
        Param("step_rule", "str", "normalized", "Mirror-descent step rule (selection.firal.relax); "
              "'adaptive' needs probe_resample=false.", choices=STEP_RULES),
        Param("step_size", "float", 2.0, "Mirror-descent step eta (normalised by max |g| unless "
              "step_rule='constant').", min=1e-6, max=1e6),
        Param("round_candidates", "int", 2000, "ROUND scores the max(this, 10b) pool points with "
              "the largest relaxed weight z (RELAX leaves z concentrated); 0 = the whole pool.",
              min=0, max=10**9),
        Param("round_mass", "float", 0.95, "ROUND scores only the fewest of those candidates that hold "
              "this share of the relaxed weight (at least 2b); 1 = all of them.", min=0.01, max=1.0),
        Param("round_steps", "int", 128, "ROUND takes at most this many steps, each choosing its "
              "ceil(b / round_steps) best points (large batches); 0 = one point per step.", min=0, max=10**9),
        Param("dtype", "str", "float32", "Floating point type of the computation.",
              choices=("float32", "float64")),
        Param("pool_sample", "int", 0, "Select from a uniform random sample of this many pool points "
              "(0 = the whole pool): RELAX, ROUND and H_p (then the sample's mean Fisher, an unbiased "
              "estimate of the pool's) see only the sample, so the cost stops growing with the pool; "
              "for pools of millions on CPU.", min=0, max=10**9),
    )

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params_
        if p["probe_resample"] and p["step_rule"] == "adaptive":
            raise ValueError("parameter 'step_rule'='adaptive' needs probe_resample=false (it "
                             "compares objective estimates made with the same probes)")

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        p = self.params_
        m = p["pool_sample"]
        if m and len(X_pool) > max(m, batch_size):
            # A uniform sample: sum_i H_i / m over it is an unbiased estimate of the pool's H_p, and
            # the batch is chosen among the sampled points (docs/million-items.md).
            sub = np.sort(rng.choice(len(X_pool), size=m, replace=False))
            sel = self._select_all(X_pool[sub], probs_pool[sub], X_labeled, probs_labeled, batch_size, rng,
                                   context)
            return Selection(sub[sel.indices], sel.scores,
                             {**sel.info, "pool_sample": m, "pool_size": int(len(X_pool))})
        return self._select_all(X_pool, probs_pool, X_labeled, probs_labeled, batch_size, rng, context)

    def _select_all(self, X_pool, probs_pool, X_labeled, probs_labeled, batch_size, rng, context):
        p = self.params_
        if context is not None and context.ranks > 1:
            return self._select_mpi(X_pool, probs_pool, X_labeled, probs_labeled, batch_size, rng,
                                    context)
        prob, info = _problem(p, context, X_pool, probs_pool, X_labeled, probs_labeled, p["dtype"])
        idx, _z, run = approx_firal(
            prob, batch_size, probes=p["probes"], estimator=p["estimator"],
            resample=p["probe_resample"], cg_rtol=p["cg_rtol"], cg_maxiter=p["cg_maxiter"],
            relax_iters=p["relax_iters"], step=p["step_size"], step_rule=p["step_rule"],
            relax_tol=p["relax_tol"], eta=p["round_eta"], round_candidates=p["round_candidates"],
            round_mass=p["round_mass"], round_steps=p["round_steps"], rng=rng, progress=_progress(context))
        return Selection(idx, np.asarray(_gains(run, idx)), {**info, **_clean(run)})


    def _select_mpi(self, X_pool, probs_pool, X_labeled, probs_labeled, batch_size, rng, context):
        """The same algorithm split over ``context.ranks`` MPI ranks (selection.firal.mpi)."""
        from ..firal.mpi import run_firal_mpi  # noqa: PLC0415

        p = self.params_
        lam, lam_source = _lam(p, context)
        device = p["device"] or context.device or "cpu"
        seed = int(rng.integers(2**31 - 1))
        idx, run = run_firal_mpi(X_pool, probs_pool, X_labeled, probs_labeled, lam=lam,
                                 b=batch_size, ranks=context.ranks, params={**p, "lam": lam},
                                 seed=seed, device=device, timeout=context.ranks_timeout)
        gains = run.pop("round_gains", [np.nan] * len(idx))
        return Selection(idx, np.asarray(gains, dtype=np.float64),
                         {"lam": lam, "lam_source": lam_source, "mpi_seed": seed, **_clean(run)})


def _gains(run, idx):
    return run.pop("round_gains", [np.nan] * len(idx))


def _clean(run):
    return {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in run.items()}
