"""ROUND: follow-the-regularised-leader with the l1/2 regulariser ([FIRAL] Alg. 2, after [AZ17]).

Given the relaxed z*, let Sigma* = H_o + sum_i z*_i H_i + lambda I and whiten by it:
H~_i = W H_i W^T with W Sigma* W^T = I, and C = W (H_o + lambda I) W^T.  Pick b points one at a
time; the loss played at step t is F_t = H~_{i_t} + C / b, so that after b steps
sum_t F_t = W Sigma_S W^T with Sigma_S = H_o + lambda I + sum_{i in S} H_i (the matrix whose
smallest eigenvalue the regret bound controls, and tr(Sigma_S^-1 H_p) <= f(z*) / lambda_min).
At step t ([AZ17] Thm. 3.2 / Lemma for the l1/2 regulariser w(A) = -2 tr A^{1/2}):

    A_t = (nu_t I + eta sum_{s<t} F_s)^{-2},   nu_t such that tr A_t = 1,
    i_t = argmax_{i not chosen}  <A_t, F_i> / (1 + 2 eta <A_t^{1/2}, F_i>),  F_i = H~_i + C/b.

Two implementations:
``round_dense``: the whitened matrices are dense (p x p, p = (c-1) d) - exact FIRAL.
``round_blockdiag`` ([AFIRAL] Sec. III-D): Sigma* and every H_i are replaced by their c-1
diagonal d x d blocks, so W, the accumulated sum and A_t are block diagonal.  The sum gets a
rank-one update per block per step (block a of H~_i is q_ia (1 - q_ia) (W_a x_i)(W_a x_i)^T);
nu_t couples the blocks through tr A_t = 1, so each step takes one batched eigendecomposition
of the c-1 accumulated d x d blocks (O(c d^3), which gives nu_t and both A_t and A_t^{1/2}) and
scores every pool point with one GEMM X [R_1 ... R_k] (R_a = W_a^T V_a, O(n c d^2)):
<A_t, H~_i> = sum_a q_ia(1-q_ia) sum_j f(mu_aj) (x_i^T R_a)_j^2.  A Sherman-Morrison update of
(nu I + B_a)^-1 would not help: nu_t shifts every eigenvalue each step, a full-rank change.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module, to_numpy
from .dense import dense_fisher, dense_quad, point_fisher
from .kron import block_diag, row_chunks


def solve_nu(mu) -> float:
    """nu > -min(mu) with sum_j (nu + mu_j)^-2 = 1 (host float64).

    Newton on psi(nu) = (sum (nu + mu)^-2)^(-1/2), which is increasing and concave (a power
    mean of nu + mu with exponent -2), so Newton from a point with psi < 1 rises
    monotonically to the root.
    """
    mu = np.asarray(to_numpy(mu), dtype=np.float64).ravel()
    nu = -float(mu.min()) + 0.5  # the smallest term alone is 4 > 1, so psi < 1 here
    for _ in range(200):
        t = nu + mu
        phi = float(np.sum(t ** -2.0))
        psi = phi ** -0.5
        dpsi = phi ** -1.5 * float(np.sum(t ** -3.0))
        step = (1.0 - psi) / dpsi
        nu += step
        if abs(1.0 - psi) < 1e-12 or abs(step) < 1e-14 * max(1.0, abs(nu)):
            break
    return nu


def default_eta(p: int) -> float:
    """eta = sqrt(p): at the end of ROUND eta * sum F_t ~ eta I (the whitened Sigma_S), and nu
    starts at sqrt(p); eta ~ sqrt(p) keeps both terms of nu I + eta sum F comparable so A_t
    reacts to the points already picked (eta << sqrt(p) degenerates to a trace ranking)."""
    return math.sqrt(p)


def _sym_inv_sqrt(S):
    xp = get_array_module(S)
    ev, E = xp.linalg.eigh(S)
    return (E * ev ** -0.5) @ E.T


def round_dense(prob, z, b: int, eta: float | None = None, *, progress=None):
    """Exact FIRAL ROUND on dense p x p matrices. Returns (indices into the pool, info)."""
    xp = prob.xp
    p = prob.p
    eta = default_eta(p) if eta is None else float(eta)
    eye = xp.eye(p, dtype=prob.dtype)
    Sig = dense_fisher(prob.X, prob.Q, prob.weights(z)) + prob.lam * eye
    S = _sym_inv_sqrt(Sig)                                    # W = Sigma*^-1/2
    Ho = prob.lam * eye
    if prob.n_lab:
        Ho = Ho + dense_fisher(prob.Xo, prob.Qo)
    C = S @ Ho @ S
    B = xp.zeros((p, p), dtype=prob.dtype)
    n = prob.n_pool
    taken = np.zeros(n, dtype=bool)
    chosen, gains = [], []
    for t in range(b):
        mu, V = xp.linalg.eigh(B)
        nu = solve_nu(mu)
        t_mu = xp.asarray(nu + to_numpy(mu), dtype=prob.dtype)
        A = (V * t_mu ** -2) @ V.T
        Ah = (V * t_mu ** -1) @ V.T
        s1, s2 = dense_quad(prob.Xp, prob.Qp, [S @ A @ S, S @ Ah @ S])
        num = s1 + float((A * C).sum()) / b
        den = 1 + 2 * eta * (s2 + float((Ah * C).sum()) / b)
        ratio = to_numpy(num / den).astype(np.float64)
        ratio[taken] = -np.inf
        i = int(np.argmax(ratio))
        chosen.append(i)
        gains.append(float(ratio[i]))
        taken[i] = True
        Hi = point_fisher(prob.Xp[i], prob.Qp[i])
        B += eta * (S @ Hi @ S + C / b)
        B = 0.5 * (B + B.T)
        if progress is not None:
            progress((t + 1) / b, f"ROUND {t + 1}/{b}")
    lam_min = float(xp.linalg.eigvalsh(B)[0]) / eta
    return np.asarray(chosen, dtype=np.int64), {"eta": eta, "gains": gains,
                                                 "whitened_lambda_min": lam_min}


def mass_candidates(z, b: int, mass: float, cap: int) -> int:
    """How many of the largest relaxed weights ROUND scores: the fewest holding ``mass`` of sum z,
    at least 2b (ROUND needs room to choose), at most ``cap`` (0 = no cap) and the pool size.

    RELAX leaves z concentrated (sum z = b over n points), so the points outside the top share
    carry almost no weight in Sigma*, and ROUND, which plays against the relaxed solution,
    rarely picks them; leaving them out makes each of the b ROUND steps cost O(candidates c d^2)
    instead of O(n c d^2).
    """
    zh = np.sort(np.asarray(to_numpy(z), dtype=np.float64).ravel())[::-1]
    n = len(zh)
    hi = n if not cap else min(n, cap)
    if mass >= 1.0 or n == 0:
        return hi
    cm = np.cumsum(np.maximum(zh, 0.0))
    k = int(np.searchsorted(cm, mass * cm[-1])) + 1 if cm[-1] > 0 else n
    return int(min(hi, max(k, 2 * b, b)))


def round_blockdiag(prob, z, b: int, eta: float | None = None, *, progress=None,
                    return_state: bool = False, candidates: int = 0, mass: float = 1.0,
                    per_step: int = 1):
    """Approx-FIRAL ROUND on the c-1 diagonal d x d blocks. Returns (pool indices, info).

    ``candidates`` > 0 scores only the ``candidates`` pool points with the largest relaxed
    weight z*_i (at least b of them) instead of the whole pool; ``mass`` < 1 scores only the
    fewest top-z points that hold that share of sum z (at least 2b, at most ``candidates``;
    :func:`mass_candidates`).
    ``per_step`` > 1 takes the step's ``per_step`` best points with one eigendecomposition (then
    updates B by each): b / per_step steps instead of b, for large batches.
    ``return_state`` adds info["state"] = (Linv, B): the whitening blocks and the accumulated
    blocks eta * sum_t F_t after the last step (for tests).
    """
    xp = prob.xp
    comm = prob.comm
    k, d, n = prob.k, prob.d, prob.n_pool
    eta = default_eta(prob.p) if eta is None else float(eta)
    eye = xp.eye(d, dtype=prob.dtype)
    D = comm.allreduce(block_diag(prob.X, prob.Q, prob.weights(z))) + prob.lam * eye  # Sigma*
    Linv = xp.linalg.inv(xp.linalg.cholesky(D))                       # W_a = L_a^-1
    Ho = prob.lam * xp.broadcast_to(eye, (k, d, d))
    if comm.size > 1:
        Ho = Ho + comm.allreduce(block_diag(prob.Xo, prob.Qo))        # labeled rows: rank 0
    elif prob.n_lab:
        Ho = Ho + block_diag(prob.Xo, prob.Qo)
    C = Linv @ Ho @ Linv.transpose(0, 2, 1)                            # whitened H_o + lam I
    G = prob.Qp * (1 - prob.Qp)                                        # (n, k) block weights
    Xp = prob.Xp
    off, n_tot = prob.pool_offset, prob.n_pool_total
    gidx = np.arange(off, off + n)                  # global pool index of each scored row
    if (candidates and candidates < n_tot) or mass < 1.0:
        zh = np.asarray(comm.allgather(z), dtype=np.float64)
        if mass < 1.0:
            candidates = mass_candidates(zh, b, mass, candidates)
        candidates = max(candidates, b)
        cand = np.sort(np.argpartition(-zh, candidates - 1)[:candidates]) if candidates < n_tot \
            else np.arange(n_tot)
        gidx = cand[(cand >= off) & (cand < off + n)]
        ci = xp.asarray(gidx - off)
        G, Xp, n = G[ci], Xp[ci], len(gidx)
    n_scored = comm.counts(n)[1]
    B = xp.zeros((k, d, d), dtype=prob.dtype)
    taken = np.zeros(n, dtype=bool)
    chosen: list[int] = []
    gains: list[float] = []
    scores = xp.empty(n, dtype=prob.dtype)
    t = 0
    while len(chosen) < b:
        mu, V = xp.linalg.eigh(B)                                      # (k, d), (k, d, d)
        nu = solve_nu(mu)
        t_mu = nu + mu
        F = xp.stack([t_mu ** -2, t_mu ** -1], axis=-1)                # (k, d, 2): A and A^1/2
        CV = ((V * (C @ V)).sum(axis=1))                               # diag(V_a^T C_a V_a)
        cA = float((F[..., 0] * CV).sum()) / b
        cAh = float((F[..., 1] * CV).sum()) / b
        R = (Linv.transpose(0, 2, 1) @ V)                              # (k, d, d)
        Rm = R.transpose(1, 0, 2).reshape(d, k * d)
        for sl in row_chunks(n, k * d):
            P = (Xp[sl] @ Rm).reshape(-1, k, d)                        # x_i^T R_a
            P *= P
            Sq = (P.transpose(1, 0, 2) @ F)                            # (k, rows, 2)
            num = (G[sl] * Sq[..., 0].T).sum(axis=1) + cA
            den = 1 + 2 * eta * ((G[sl] * Sq[..., 1].T).sum(axis=1) + cAh)
            scores[sl] = num / den
        ratio = to_numpy(scores).astype(np.float64)
        ratio[taken] = -np.inf
        picks = []
        for _ in range(min(per_step, b - len(chosen))):  # the step's best points, one B update each
            i = int(np.argmax(ratio)) if n else -1
            if comm.size == 1:
                gain, gi = float(ratio[i]), int(gidx[i])
                xi, gi_w = Xp[i], G[i]
                taken[i] = True
                ratio[i] = -np.inf
            else:   # every rank offers its best point and its row; all take the same winner
                offer = (to_numpy(Xp[i]), to_numpy(G[i])) if n else None
                gain, gi, (xi, gi_w) = comm.argmax_with(float(ratio[i]) if n else -math.inf,
                                                         int(gidx[i]) if n else n_tot, offer)
                if n and int(gidx[i]) == gi:
                    taken[i] = True
                    ratio[i] = -np.inf
            chosen.append(gi)
            gains.append(gain)
            picks.append((xi, gi_w))
        for xi, gi_w in picks:
            u = Linv @ xp.asarray(xi)                                  # (k, d): W_a x_i
            B += eta * (xp.asarray(gi_w)[:, None, None] * (u[:, :, None] * u[:, None, :]) + C / b)
        t += 1
        if progress is not None:
            progress(len(chosen) / b, f"ROUND {len(chosen)}/{b}")
    info = {"eta": eta, "gains": gains, "candidates": n_scored, "steps": t}
    if return_state:
        info["state"] = (Linv, B)
    return np.asarray(chosen, dtype=np.int64), info
