"""LogME-PED: LogME after PED's "potential energy decline" motion of the features.

PED is from Li, Hu, Ge, Shan & Duan, "Exploring Model Transferability through the Lens of Potential
Energy" (ICCV 2023, arXiv 2308.15074).  Its abstract: the classes of the downstream task are treated
as interacting bodies, a repulsion force between them models the fine-tuning dynamics, the
representations are moved along it so that the potential energy declines, and an existing score
(LogME here) is then measured on the moved features.  Only the abstract and the opening of the
introduction of the paper's text could be read, so no equation of the paper is cited here; the
definition below is the one in the authors' official implementation (github.com/lixiaotong97/PED,
``metrics.py``: ``One_Step_PED`` / ``PED_Score``, run by ``evaluate_metric_cpu.py``), re-derived and
written independently.  docs/feature-alignment.md says which details had to be chosen.

**One step.**  Features are first standardised per dimension with the mean m and standard deviation
s of a *reference* set (floored at ``std_floor``; the authors use the same model's features of
ImageNet's validation set, "Appendix B pre-processing" in their code; Loupe uses the scored
features themselves unless a reference is given).  In that space, for each class k with n_k points:
centre μ_k and "radius" R_k = sqrt(Σ_d Var_d(class k)) (population variance, so
R_k² = mean ‖z − μ_k‖²).  For each pair of classes {k, l}, with d_kl = ‖μ_k − μ_l‖,

    overlap  o_kl = max(n_σ (R_k + R_l) − d_kl, 0)            (the two balls' overlap: the force)
    shift    s_kl = min(½ t² · C · o_kl, o_kl)                  (distance moved under it in time t)

and every point of class k moves by Δ_k = Σ_{l≠k} s_kl (μ_k − μ_l) / d_kl; class l moves by the
mirror image, so an overlapping pair separates by 2 s_kl and classes that do not overlap do not
push.  Then the points are mapped back (z·s + m).

**Steps.**  The step is repeated (the centres and radii recomputed each time) up to ``max_steps``
(6) times; the motion M = Σ_k Σ_d |Δ_kd| of the first step is the yardstick, and a step whose motion
is at most ``exit_ratio`` (0.5) of it is not applied and ends the motion.  Defaults as the
authors' script runs PED: t = ``time_step`` 0.1, n_σ = ``n_sigma`` 0.6 (their script names 0.3
and 0.6 as the two candidates), C = ``constant`` 1, ``std_floor`` 1e-3.

**LogME-PED** is :func:`selection.transfer.logme.logme` of the moved features (the authors' ``type
= 'LOGME'``).  Coincident class centres (d_kl = 0) have no direction and exert no push (the authors'
code divides by zero there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backend import get_array_module
from .logme import logme


@dataclass
class PedResult:
    """Moved features (n, D) float64 and how the motion went."""

    features: Any
    steps: int  # steps applied (0 when nothing overlaps)
    motions: list[float] = field(default_factory=list)  # M of every step computed, applied or not


def _class_displacement(Z: Any, index: Any, c: int, *, time_step: float, n_sigma: float,
                        constant: float) -> Any:
    """Δ (c, D): each class's displacement for one step, in the standardised space."""
    xp = get_array_module(Z)
    counts = xp.bincount(index, minlength=c).astype(xp.float64)
    onehot = xp.zeros((c, Z.shape[0]))
    onehot[index, xp.arange(Z.shape[0])] = 1.0
    mu = (onehot @ Z) / counts[:, None]  # (c, D)
    sq = (onehot @ (Z * Z)) / counts[:, None] - mu * mu  # per-dimension population variance
    radius = xp.sqrt(xp.maximum(sq, 0.0).sum(axis=1))  # (c,)
    g = mu @ mu.T
    nrm = xp.diag(g)
    dist = xp.sqrt(xp.maximum(nrm[:, None] + nrm[None, :] - 2 * g, 0.0))  # (c, c)
    overlap = xp.maximum(n_sigma * (radius[:, None] + radius[None, :]) - dist, 0.0)
    shift = xp.minimum(0.5 * time_step ** 2 * constant * overlap, overlap)
    xp.fill_diagonal(shift, 0.0)
    # w_kl = s_kl / d_kl (0 where the centres coincide), Δ_k = Σ_l w_kl (μ_k − μ_l) = (Σ_l w_kl) μ_k − (W μ)_k
    w = xp.where(dist > 0, shift / xp.where(dist > 0, dist, 1.0), 0.0)
    return w.sum(axis=1)[:, None] * mu - w @ mu


def ped_motion(F: Any, labels: Any, *, reference: Any = None, time_step: float = 0.1, n_sigma: float = 0.6,
               constant: float = 1.0, exit_ratio: float = 0.5, max_steps: int = 6,
               std_floor: float = 1e-3) -> PedResult:
    """PED's motion of the features (module docstring).  F : (n, D) NumPy or CuPy; labels : (n,) ints.

    ``reference`` (m, D): the set whose per-dimension mean and std standardise the features
    (default: ``F`` itself).
    """
    for name, v in (("time_step", time_step), ("n_sigma", n_sigma), ("constant", constant),
                    ("std_floor", std_floor)):
        if not (v > 0):
            raise ValueError(f"{name}={v!r} must be > 0")
    if not (0 <= exit_ratio < 1):
        raise ValueError(f"exit_ratio={exit_ratio!r} must be in [0, 1)")
    if max_steps < 0:
        raise ValueError(f"max_steps={max_steps!r} must be >= 0")
    xp = get_array_module(F)
    F = xp.asarray(F, dtype=xp.float64)
    if F.ndim != 2:
        raise ValueError(f"F must be a 2-D (n, D) matrix; got shape {tuple(F.shape)}")
    lab = np.asarray(labels.get() if hasattr(labels, "get") else labels)
    if lab.shape != (F.shape[0],):
        raise ValueError(f"labels must have shape ({F.shape[0]},) to match F; got {lab.shape}")
    classes, inv = np.unique(lab, return_inverse=True)
    R = F if reference is None else xp.asarray(reference, dtype=xp.float64)
    if R.ndim != 2 or R.shape[1] != F.shape[1] or R.shape[0] < 1:
        raise ValueError(f"reference must be (m, {F.shape[1]}); got shape {tuple(R.shape)}")
    m, s = R.mean(axis=0), xp.maximum(R.std(axis=0), std_floor)
    Z = (F - m) / s
    index = xp.asarray(inv)
    steps, motions, first = 0, [], 0.0
    if len(classes) >= 2:
        for k in range(max_steps):
            delta = _class_displacement(Z, index, len(classes), time_step=time_step, n_sigma=n_sigma,
                                        constant=constant)
            motion = float(xp.abs(delta).sum())
            motions.append(motion)
            if k == 0:
                first = motion
            if first == 0 or motion / first <= exit_ratio:
                break  # nothing overlaps, or the motion has died down: this step is not applied
            Z = Z + delta[index]
            steps += 1
    return PedResult(features=Z * s + m, steps=steps, motions=motions)


def ped_transform(F: Any, labels: Any, **kw: Any) -> Any:
    """The moved features (n, D) float64 of :func:`ped_motion`."""
    return ped_motion(F, labels, **kw).features


def logme_ped(F: Any, labels: Any, *, n_classes: int | None = None, **kw: Any) -> float:
    """LogME of :func:`ped_transform` ed features; F : (n, D), labels : (n,) int; ``kw``: PED's settings."""
    return logme(ped_transform(F, labels, **kw), labels, n_classes=n_classes)
