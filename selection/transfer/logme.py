"""LogME: the log maximum evidence of a Bayesian linear model on features (You et al., ICML 2021).

For features ``F`` (n, D) and one real target ``y`` (n,), the model is ``y = F w + noise`` with prior
``w ~ N(0, α⁻¹ I)`` and noise ``N(0, β⁻¹)``.  The log evidence (the paper's Eq. 2) is

    L(α, β) = n/2 log β + D/2 log α − n/2 log 2π − β/2 ‖F m − y‖² − α/2 mᵀm − 1/2 log |A|,
    A = α I + β FᵀF,   m = β A⁻¹ Fᵀ y.

LogME maximises L over α, β > 0 by the paper's fixed-point iteration (its Algorithm 1): with the
eigenvalues σ_i² of FᵀF (from one SVD of F, shared by all targets),

    γ = Σ_i β σ_i² / (α + β σ_i²),   α ← γ / mᵀm,   β ← (n − γ) / ‖F m − y‖²,

and reports L / n.  For classification the targets are the one-hot columns of the labels and the
score is the mean over classes (the paper's Section 4).  Everything is expressed in the SVD basis
(``z = Uᵀy``), so each iteration costs O(min(n, D)) and the SVD O(n D min(n, D)) once.

Features are used as given (no centring or scaling), as in the paper.  Computation is in float64.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import get_array_module


def _check(F: Any, y: Any) -> tuple[Any, Any]:
    xp = get_array_module(F)
    F = xp.asarray(F, dtype=xp.float64)
    if F.ndim != 2 or F.shape[0] < 2 or F.shape[1] < 1:
        raise ValueError(f"F must be a 2-D (n, D) matrix with n >= 2 and D >= 1; got shape {tuple(F.shape)}")
    if not bool(xp.isfinite(F).all()):
        raise ValueError("F contains NaN or inf")
    y = xp.asarray(y)
    if y.shape != (F.shape[0],):
        raise ValueError(f"y must have shape ({F.shape[0]},) to match F; got {tuple(y.shape)}")
    return F, y


def logme_evidence(F: Any, y: Any, alpha: float, beta: float) -> float:
    """L(α, β) / n evaluated directly (dense: ``A``, its log-determinant and a solve).

    The reference the fixed-point :func:`logme_target` is tested against; O(D³), for small D only.
    F : (n, D) float, y : (n,) float.
    """
    F, y = _check(F, y)
    xp = get_array_module(F)
    y = y.astype(xp.float64)
    n, D = F.shape
    A = alpha * xp.eye(D) + beta * F.T @ F
    m = beta * xp.linalg.solve(A, F.T @ y)
    _, logdet = xp.linalg.slogdet(A)
    res = F @ m - y
    L = (n / 2 * math.log(beta) + D / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
         - beta / 2 * float(res @ res) - alpha / 2 * float(m @ m) - float(logdet) / 2)
    return L / n


def _fixed_point(s2: Any, z: Any, y_sq_out: float, n: int, D: int, *, tol: float, max_iter: int
                 ) -> tuple[float, float, float]:
    """(L/n, α, β) at the fixed point, in the SVD basis.

    s2 : (r,) the eigenvalues σ_i² of FᵀF on the SVD's r = min(n, D) axes (the other D − r are zero);
    z : (r,) Uᵀy; y_sq_out : ‖y‖² − ‖z‖², the part of y outside the column space of F.
    """
    xp = get_array_module(s2)
    alpha, beta = 1.0, 1.0
    r = s2.shape[0]
    for _ in range(max_iter):
        denom = alpha + beta * s2
        gamma = float((beta * s2 / denom).sum())
        m_sq = float(((beta * xp.sqrt(s2) * z / denom) ** 2).sum())
        res_sq = float(((alpha * z / denom) ** 2).sum()) + y_sq_out
        if m_sq <= 0 or res_sq <= 0:  # y = 0 or y exactly in span(F): the evidence is unbounded; stop here
            break
        new_alpha = gamma / m_sq
        new_beta = (n - gamma) / res_sq
        if new_alpha <= 0 or new_beta <= 0:
            break
        done = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if done:
            break
    denom = alpha + beta * s2
    m_sq = float(((beta * xp.sqrt(s2) * z / denom) ** 2).sum())
    res_sq = float(((alpha * z / denom) ** 2).sum()) + y_sq_out
    logdet = float(xp.log(denom).sum()) + (D - r) * math.log(alpha)
    L = (n / 2 * math.log(beta) + D / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
         - beta / 2 * res_sq - alpha / 2 * m_sq - logdet / 2)
    return L / n, alpha, beta


def _svd(F: Any) -> tuple[Any, Any]:
    xp = get_array_module(F)
    U, s, _ = xp.linalg.svd(F, full_matrices=False)
    return U, s * s


def logme_target(F: Any, y: Any, *, tol: float = 1e-8, max_iter: int = 200) -> tuple[float, float, float]:
    """(LogME, α, β) for one real target: max over α, β of L(α, β) / n by the fixed-point iteration.

    F : (n, D) float (NumPy or CuPy), y : (n,) float.
    """
    F, y = _check(F, y)
    xp = get_array_module(F)
    y = y.astype(xp.float64)
    U, s2 = _svd(F)
    z = U.T @ y
    return _fixed_point(s2, z, max(float(y @ y - z @ z), 0.0), F.shape[0], F.shape[1], tol=tol, max_iter=max_iter)


def logme(F: Any, labels: Any, *, n_classes: int | None = None, tol: float = 1e-8, max_iter: int = 200) -> float:
    """LogME of features ``F`` for class labels: the mean over classes of the per-class (one-hot) LogME.

    F : (n, D) float (NumPy or CuPy); labels : (n,) int in [0, n_classes).  Classes with no labelled
    point are left out of the mean (their one-hot target is all zeros and carries no information).
    Higher is better; values are comparable between feature sets on the same labels.
    """
    F, labels = _check(F, labels)
    xp = get_array_module(F)
    lab = np.asarray(labels.get() if hasattr(labels, "get") else labels)
    if lab.size and (not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0):
        raise ValueError("labels must be non-negative integers")
    c = int(n_classes if n_classes is not None else lab.max() + 1)
    present = [k for k in range(c) if (lab == k).any()]
    if len(present) < 2:
        raise ValueError(f"LogME needs labels of at least two classes; got {len(present)}")
    U, s2 = _svd(F)
    n, D = F.shape
    scores = []
    for k in present:
        y = xp.asarray((lab == k).astype(np.float64))
        z = U.T @ y
        L, _, _ = _fixed_point(s2, z, max(float(y @ y - z @ z), 0.0), n, D, tol=tol, max_iter=max_iter)
        scores.append(L)
    return float(np.mean(scores))
