"""LogME against a dense evaluation of the evidence (log-det, solve) and a brute-force maximisation."""
from __future__ import annotations

import numpy as np
import pytest

from selection.transfer import logme, logme_evidence, logme_ped, logme_target


def _problem(n, D, seed, c=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    F = rng.normal(size=(n, D)) + 1.5 * rng.normal(size=(c, D))[labels]
    return F, labels


def _evidence_by_hand(F, y, alpha, beta):
    """The marginal likelihood N(y; 0, β⁻¹ I + α⁻¹ F Fᵀ) / n: a second, independent form of L(α, β)."""
    n = len(y)
    C = np.eye(n) / beta + F @ F.T / alpha
    _, logdet = np.linalg.slogdet(C)
    return (-0.5 * logdet - 0.5 * y @ np.linalg.solve(C, y) - n / 2 * np.log(2 * np.pi)) / n


@pytest.mark.parametrize("n,D", [(30, 4), (12, 20), (25, 25)])
def test_fixed_point_value_is_the_dense_evidence_at_its_alpha_beta(n, D):
    F, labels = _problem(n, D, seed=n + D)
    y = (labels == 1).astype(float)
    L, a, b = logme_target(F, y)
    assert L == pytest.approx(logme_evidence(F, y, a, b), rel=1e-6)  # dense solve of an ill-conditioned A when n < D
    assert L == pytest.approx(_evidence_by_hand(F, y, a, b), rel=1e-6)


@pytest.mark.parametrize("n,D", [(30, 4), (12, 20)])
def test_fixed_point_is_the_maximum_of_a_brute_force_grid(n, D):
    F, labels = _problem(n, D, seed=7 * n + D)
    y = (labels == 0).astype(float)
    L, a, b = logme_target(F, y)
    grid = np.exp(np.linspace(-8, 8, 81))
    best, (ga, gb) = max((_evidence_by_hand(F, y, x, z), (x, z)) for x in grid for z in grid)
    assert L >= best - 1e-9  # no grid point beats the fixed point
    # ... and a finer grid around the grid's best reaches it: the fixed point is the maximum, not a saddle
    fine = [(_evidence_by_hand(F, y, ga * s, gb * t)) for s in np.exp(np.linspace(-0.2, 0.2, 41))
            for t in np.exp(np.linspace(-0.2, 0.2, 41))]
    assert max(fine) == pytest.approx(L, abs=2e-4)


def test_logme_is_the_mean_over_one_hot_classes():
    F, labels = _problem(40, 6, seed=3, c=4)
    per = [logme_target(F, (labels == k).astype(float))[0] for k in range(4)]
    assert logme(F, labels) == pytest.approx(np.mean(per), rel=1e-12)


def test_features_that_separate_the_classes_score_higher():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    centres = rng.normal(size=(3, 8))
    noise = rng.normal(size=(60, 8))
    scores = [logme(noise + s * centres[labels], labels) for s in (0.0, 1.0, 3.0)]
    assert scores[0] < scores[1] < scores[2]


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="2-D"):
        logme(np.zeros(5), np.zeros(5, int))
    with pytest.raises(ValueError, match="shape"):
        logme(np.zeros((5, 2)), np.zeros(4, int))
    with pytest.raises(ValueError, match="two classes"):
        logme(np.random.default_rng(0).normal(size=(5, 2)), np.zeros(5, int))
    with pytest.raises(ValueError, match="NaN"):
        logme(np.full((5, 2), np.nan), np.arange(5) % 2)


def test_cupy_matches_numpy_when_a_gpu_is_there():
    from selection.backend import cuda_available

    if not cuda_available():
        pytest.skip("no CuPy GPU")
    import cupy

    F, labels = _problem(30, 6, seed=5)
    assert logme_ped(cupy.asarray(F), labels) == pytest.approx(logme_ped(F, labels), rel=1e-9)
