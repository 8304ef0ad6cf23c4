"""RELAX: entropic mirror descent on {z >= 0, sum z = b} ([FIRAL] Alg. 1; [AFIRAL] Alg. 1).

    z_{t+1} = b * z_t exp(-eta_t g_t) / sum_i z_t,i exp(-eta_t g_t,i),

minimising f(z) = tr(Sigma_z^-1 H_p), g_i = df/dz_i = -tr(Sigma_z^-1 H_p Sigma_z^-1 H_i) <= 0,
from z_0 = (b/n) 1.  The oracle (exact dense, or Hutchinson + PCG) supplies (f, g).

Step rules (eta_t):
  ``normalized``: eta_t = eta / max_i |g_t,i|, so the largest multiplicative change per step
                  is e^eta whatever the scale of the Fisher matrices;
  ``adaptive`` (default): the same, but a step that increases f is rejected and eta halved
                  (an accepted step lets eta grow by 25%, up to 4x its start);
  ``constant``:   eta_t = eta (the textbook rule; needs eta matched to the scale of g).
Stops after ``iters`` oracle calls or when an accepted step lowers f by less than ``tol``
relative.
"""
from __future__ import annotations

import math
from typing import Callable

STEP_RULES = ("adaptive", "normalized", "constant")


def mirror_descent(oracle: Callable, n: int, b: int, *, xp, dtype, iters: int = 30,
                   step: float = 1.0, step_rule: str = "adaptive", tol: float = 1e-4,
                   average: bool = False, progress: Callable | None = None, comm=None):
    """Return (z, info); z is an (n,) array of the oracle's namespace summing to b.

    ``comm`` (selection.firal.comm): z and g are this rank's block of a row-sharded pool of
    ``comm``-summed size; the normalisations (max |g|, the shift, sum z) are then global.

    ``average``: return the mean of the iterates of the second half of the run instead of the
    last one (iterate averaging for stochastic gradients; the feasible set is convex, so the
    mean is feasible).
    """
    if step_rule not in STEP_RULES:
        raise ValueError(f"step_rule={step_rule!r} is not one of {list(STEP_RULES)}")
    if comm is None:
        from .comm import SelfComm  # noqa: PLC0415

        comm = SelfComm()
    z = xp.full(n, b / comm.counts(n)[1], dtype=dtype)
    f, g = oracle(z)
    history = [float(f)]
    eta = float(step)
    calls, accepted, rejected = 1, 0, 0
    z_sum, n_avg = None, 0
    while calls < iters:
        if step_rule == "constant":
            eta_t = eta
        else:
            scale = comm.max(_amax(xp.abs(g)))
            if not math.isfinite(scale) or scale <= 0:
                break  # flat objective: nothing left to move
            eta_t = eta / scale
        e = -eta_t * g
        e -= comm.max(_amax(e))
        z_new = z * xp.exp(e)
        z_new *= b / comm.sum(z_new.sum())
        f_new, g_new = oracle(z_new)
        calls += 1
        if step_rule == "adaptive" and not f_new <= f:
            rejected += 1
            eta *= 0.5
            if eta < 1e-3 * step:
                break
            continue
        accepted += 1
        rel = (f - f_new) / abs(f) if f != 0 else 0.0
        z, f, g = z_new, f_new, g_new
        history.append(float(f))
        if average and calls > iters // 2:
            z_sum = z.copy() if z_sum is None else z_sum + z
            n_avg += 1
        if progress is not None:
            progress(calls / iters, f"RELAX {calls}/{iters}: f={float(f):.5g}")
        if step_rule == "adaptive":
            eta = min(eta * 1.25, 4 * step)
        if 0 <= rel < tol:
            break
    if z_sum is not None:
        z = z_sum / n_avg
    return z, {"objective": float(f), "averaged_iterates": n_avg, "history": history, "oracle_calls": calls,
               "accepted": accepted, "rejected": rejected}



def _amax(a) -> float:
    """max of a (possibly empty: a rank with no rows) array as a float."""
    return float(a.max()) if a.shape[0] else -math.inf
