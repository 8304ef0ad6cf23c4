"""LogME-PED: LogME after a "potential energy decline" step on the features.

**What could and could not be checked.**  The ASVP paper (Wen, Pizarro & Williams, TMLR 2024, arXiv
2403.01101) compares old and fine-tuned features with "LogME-PED" and re-computes the features when
the difference exceeds 0.03.  Its text was not reachable while this was written, so the exact PED
definition it uses could not be read or checked, and no section of it is cited here.  As far as we
recall, PED comes from Li et al., "Exploring Model Transferability through the Lens of Potential Energy"
(ICCV 2023): features are treated as charged particles, classes repel each other, and a transferability
score (LogME) is measured after the features have moved along that force, so that features whose
classes are easy to pull apart score higher.  That attribution, too, is from memory and unverified.

**What is implemented (Loupe's own construction in that spirit, not a transcription of either paper):**
with class centres μ_k of the labelled features and the mean distance between centres d̄,
each point of class k moves once along the repulsion it feels from the other centres
(an inverse-distance field, like a charge in a plane):

    x_i ← x_i + η d̄² Σ_{k' ≠ k} (μ_k − μ_{k'}) / ‖μ_k − μ_{k'}‖²,

a displacement of η d̄ for two classes at the mean distance (η = ``step``, 0.1 by default), and
LogME-PED is :func:`selection.transfer.logme.logme` of the moved features.  The step is scale-free
(it scales with the features), moves each class as a whole (within-class spread unchanged), and
pushes classes whose centres are close hardest.  Because old and fine-tuned features go through the
same step, their difference is what the alignment rule reads; with ``step=0`` it is plain LogME.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_array_module
from .logme import logme


def ped_transform(F: Any, labels: Any, *, step: float = 0.1) -> Any:
    """Features moved by one repulsion step between class centres (see the module docstring).

    F : (n, D) float (NumPy or CuPy); labels : (n,) int.  Returns (n, D) float64.
    """
    if not (step >= 0):
        raise ValueError(f"step={step!r} must be >= 0")
    xp = get_array_module(F)
    F = xp.asarray(F, dtype=xp.float64)
    lab = np.asarray(labels.get() if hasattr(labels, "get") else labels)
    classes = np.unique(lab)
    if step == 0 or len(classes) < 2:
        return F.copy()
    mu = xp.stack([F[xp.asarray(lab == k)].mean(axis=0) for k in classes])  # (c, D)
    diff = mu[:, None, :] - mu[None, :, :]  # (c, c, D): μ_k − μ_k'
    dist2 = (diff ** 2).sum(axis=2)
    c = len(classes)
    off = ~np.eye(c, dtype=bool)
    off_x = xp.asarray(off)
    mean_d = float(xp.sqrt(dist2[off_x]).mean())
    if mean_d == 0:
        return F.copy()
    safe = xp.where(off_x, dist2, 1.0)
    safe = xp.where(safe > 0, safe, xp.inf)  # coincident centres exert no (undefined) force
    force = (diff / safe[:, :, None] * off_x[:, :, None]).sum(axis=1)  # (c, D)
    index = xp.asarray(np.searchsorted(classes, lab))
    return F + step * mean_d ** 2 * force[index]


def logme_ped(F: Any, labels: Any, *, step: float = 0.1, n_classes: int | None = None) -> float:
    """LogME of :func:`ped_transform` ed features; F : (n, D), labels : (n,) int."""
    return logme(ped_transform(F, labels, step=step), labels, n_classes=n_classes)
