"""Candidate sets (selection/candidates.py): LAC threshold against a brute-force search, the split-conformal
coverage guarantee on exchangeable data, top-k against a full sort, and the simulated annotator."""
import math

import numpy as np
import pytest

from selection.candidates import (
    confidence_gate,
    coverage_and_size,
    lac_threshold,
    set_sizes,
    top_k,
    true_class_probs,
)
from selection.candidates_sim import simulate_candidates, summary


def brute_force_threshold(p_true: np.ndarray, coverage: float) -> float:
    """The largest t such that at least ceil((n+1)*coverage) calibration items have p_true >= t
    (the split-conformal quantile written as a search over every candidate threshold)."""
    n = len(p_true)
    need = math.ceil((n + 1) * coverage)
    if need > n:
        return 0.0
    best = 0.0
    for t in sorted(set(p_true.tolist()) | {0.0}):
        if (p_true >= t).sum() >= need:
            best = max(best, t)
    return best


@pytest.mark.parametrize("n", [1, 5, 9, 10, 37, 200])
@pytest.mark.parametrize("coverage", [0.5, 0.8, 0.9, 0.95])
def test_lac_threshold_matches_a_brute_force_search(n, coverage):
    rng = np.random.default_rng(n * 100 + int(coverage * 100))
    p = rng.random(n)
    p[: n // 3] = np.round(p[: n // 3], 1)  # ties
    assert lac_threshold(p, coverage) == brute_force_threshold(p, coverage)


def test_too_few_labels_offer_every_class():
    assert lac_threshold(np.array([0.9, 0.8]), 0.9) == 0.0  # ceil(3 * 0.9) = 3 > 2
    assert lac_threshold(np.empty(0), 0.5) == 0.0
    with pytest.raises(ValueError, match="coverage"):
        lac_threshold(np.array([0.5]), 1.0)


def test_split_conformal_coverage_holds_on_exchangeable_data():
    """Marginal coverage over fresh calibration/test draws lies in [coverage, coverage + 1/(n+1)]."""
    rng = np.random.default_rng(0)
    c, n_cal, n_test, coverage = 12, 60, 400, 0.85
    covered = []
    for _ in range(300):
        # A miscalibrated model: its probabilities are a tempered version of the truth's.
        logits = rng.normal(size=(n_cal + n_test, c)) * 2.0
        truth = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        y = np.array([rng.choice(c, p=row) for row in truth])
        model = np.exp(logits * 0.5) / np.exp(logits * 0.5).sum(1, keepdims=True)
        t = lac_threshold(model[np.arange(n_cal), y[:n_cal]], coverage)
        idx, p = top_k(model[n_cal:], c)
        cov, _ = coverage_and_size(idx, set_sizes(p, t, min_size=0), y[n_cal:])
        covered.append(cov)
    mean = float(np.mean(covered))
    se = float(np.std(covered) / np.sqrt(len(covered)))
    assert coverage - 3 * se <= mean <= coverage + 1 / (n_cal + 1) + 3 * se, (mean, se)


def test_top_k_agrees_with_a_full_sort_and_keeps_the_true_class_probability():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(1000), size=30)
    idx, p = top_k(probs, 20)
    full = np.argsort(-probs, axis=1)[:, :20]
    np.testing.assert_array_equal(idx, full)
    np.testing.assert_allclose(p, np.take_along_axis(probs, full, axis=1))
    y = np.where(np.arange(30) % 2 == 0, full[:, 3], np.argsort(probs, axis=1)[:, 0])  # in / not in the top 20
    pt = true_class_probs(idx, p, y)
    np.testing.assert_allclose(pt[::2], probs[np.arange(0, 30, 2), y[::2]])
    assert (pt[1::2] == 0).all()


def test_set_sizes_never_empty_and_count_classes_above_the_threshold():
    p = np.array([[0.5, 0.3, 0.2], [0.34, 0.33, 0.33], [0.9, 0.05, 0.05]])
    np.testing.assert_array_equal(set_sizes(p, 0.3), [2, 3, 1])
    np.testing.assert_array_equal(set_sizes(p, 0.95), [1, 1, 1])  # empty LAC set -> the best guess
    idx = np.array([[0, 1, 2], [2, 0, 1], [1, 0, 2]])
    cov, size = coverage_and_size(idx, np.array([2, 1, 1]), np.array([1, 0, 1]))
    assert cov == pytest.approx(2 / 3) and size == pytest.approx(4 / 3)


def test_simulated_annotator_on_digits_gets_the_true_class_offered_with_small_sets():
    from selection.datasets import digits

    ds = digits()
    rows = simulate_candidates(ds.X, ds.y, ds.n_classes, coverage=0.9, start=40, batch=40, rounds=6, seed=0)
    s = summary(rows)
    assert s["rounds"] >= 4
    # The model improves round by round, so earlier (worse) predictions calibrate conservatively.
    assert s["coverage"] >= 0.85, rows
    assert s["mean_size"] < 5, rows  # far fewer than the 10 classes
    assert rows[-1].mean_size < rows[1].mean_size  # sets shrink as the head learns


def test_a_thousand_classes_calibrated_sets_cover_and_stay_small():
    """1,000 Gaussian classes scored by a noisy nearest-mean model (no training: fast); the LAC set from
    the stored top 20 on 2,000 calibration items covers held-out items as asked, with a few classes."""
    rng = np.random.default_rng(0)
    c, d, coverage = 1000, 16, 0.8
    mu = rng.normal(size=(c, d)) * 1.3  # close classes: the best guess is wrong 28% of the time
    y = rng.integers(0, c, size=4000)
    X = mu[y] + rng.normal(size=(len(y), d))
    mu_hat = mu + rng.normal(size=mu.shape) * 0.3  # an imperfect model
    logits = -0.5 * ((X[:, None, :] - mu_hat[None]) ** 2).sum(-1)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    idx, p = top_k(probs, 20)
    t = lac_threshold(true_class_probs(idx[:2000], p[:2000], y[:2000]), coverage)
    sizes = set_sizes(p[2000:], t)
    cov, size = coverage_and_size(idx[2000:], sizes, y[2000:])
    assert coverage - 0.03 <= cov <= coverage + 0.05, cov
    # the same sets counted on the full (n, 1000) probabilities, not the stored top 20
    full = np.maximum((probs[2000:] >= t).sum(axis=1), 1)
    assert size == pytest.approx(full.mean()), (size, full.mean())
    assert size > 1, size  # more than the best guess


def test_confidence_gate_matches_a_brute_force_search():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(0, 40))
        conf = np.round(rng.uniform(0.1, 1.0, n), 1)  # ties on purpose
        right = rng.uniform(size=n) < conf
        target, min_n = float(rng.uniform(0.3, 1.0)), int(rng.integers(1, 10))
        ok = [c for c in np.unique(conf) if (conf >= c).sum() >= min_n and right[conf >= c].mean() >= target]
        got = confidence_gate(conf, right, target, min_n=min_n)
        assert got == (min(ok) if ok else None)


def test_confidence_gate_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        confidence_gate(np.ones(3), np.ones(2, bool), 0.8, min_n=1)
    with pytest.raises(ValueError, match="target"):
        confidence_gate(np.ones(3), np.ones(3, bool), 1.5, min_n=1)
