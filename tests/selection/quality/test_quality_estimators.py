"""Accuracy estimators against closed forms and by their coverage on known populations."""
import numpy as np
import pytest
from scipy.stats import binomtest

from selection import quality


def test_audit_interval_is_wilson_and_matches_scipy():
    correct = np.r_[np.ones(37), np.zeros(13)]
    est = quality.audit_accuracy(correct)
    ci = binomtest(37, 50).proportion_ci(confidence_level=0.95, method="wilson")
    assert est.value == pytest.approx(37 / 50)
    assert (est.low, est.high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert est.n_labels == 50 and est.estimator == "audit"


def test_ppi_without_tuning_is_the_closed_form():
    rng = np.random.default_rng(0)
    y = rng.random(40) < 0.8
    f, fp = rng.random(40), rng.random(500)
    est = quality.ppi_accuracy(y, f, fp, power_tuning=False)
    theta = fp.mean() + np.mean(y - f)
    se = np.sqrt(fp.var(ddof=1) / 500 + np.var(y - f, ddof=1) / 40)
    assert est.value == pytest.approx(theta)
    assert est.half_width == pytest.approx(1.959963984540054 * se, rel=1e-9)


def test_ppi_tuning_never_widens_much_and_ignores_useless_confidences():
    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.7).astype(float)
    noise_f = rng.random(200)  # unrelated to y: lambda should go to ~0, back to the audit width
    est = quality.ppi_accuracy(y, noise_f, rng.random(5000))
    plain = np.sqrt(y.var(ddof=1) / 200) * 1.96
    assert est.half_width < 1.1 * plain


def _population(rng, N=4000):
    """Calibrated confidences: Y ~ Bernoulli(f) exactly, so f is the best control variate."""
    sure = rng.random(N) < 0.8  # most items easy and confidently right, a fifth doubtful
    f = np.where(sure, rng.uniform(0.97, 1.0, N), rng.uniform(0.3, 0.9, N))
    return f, (rng.random(N) < f).astype(float)


@pytest.mark.parametrize("estimator", ["audit", "ppi", "difference", "active_testing"])
def test_intervals_cover_the_population_accuracy(estimator):
    rng = np.random.default_rng(2)
    f, Y = _population(rng)
    truth, N, n, hits, widths = Y.mean(), len(Y), 150, 0, []
    q = quality.active_testing_proposal(f, floor=0.2)
    runs = 400
    for _ in range(runs):
        if estimator == "active_testing":
            i = rng.choice(N, size=n, p=q)
            est = quality.active_testing_accuracy(Y[i], f[i], q[i], pool_mean=f.mean(), n_pool=N)
        else:
            i = rng.choice(N, size=n)
            if estimator == "audit":
                est = quality.audit_accuracy(Y[i])
            elif estimator == "ppi":
                est = quality.ppi_accuracy(Y[i], f[i], f)
            else:
                est = quality.difference_accuracy(Y[i], f[i], np.full(n, f.mean()), small_sample=False)
        hits += est.covers(truth)
        widths.append(est.half_width)
    # 95% nominal: with 400 runs, fewer than 360 hits (90%) would be a real miss
    assert hits >= 0.9 * runs
    if estimator != "audit":
        assert np.mean(widths) < 0.9 * 1.96 * np.sqrt(truth * (1 - truth) / n)


def test_active_testing_is_unbiased_exactly():
    # E[z] over the proposal equals the population mean: sum_i q_i (m + r_i/(N q_i)) = m + mean(r)
    rng = np.random.default_rng(3)
    f, Y = _population(rng, N=300)
    q = quality.active_testing_proposal(f, floor=0.3)
    z = f.mean() + (Y - f) / (len(Y) * q)
    assert np.sum(q * z) == pytest.approx(Y.mean(), abs=1e-12)
    assert q.min() >= 0.3 / len(Y) - 1e-15 and q.sum() == pytest.approx(1.0)


def test_platt_calibration_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)
    conf = rng.uniform(0.2, 0.99, 300)
    correct = (rng.random(300) < conf ** 2).astype(float)
    a, b = quality.fit_confidence_calibration(conf, correct)
    s = np.log(conf / (1 - conf))
    ref = LogisticRegression(C=1e8, tol=1e-12, max_iter=10_000).fit(s[:, None], correct)
    assert a == pytest.approx(ref.coef_[0, 0], rel=1e-4)
    assert b == pytest.approx(ref.intercept_[0], abs=1e-4)
    np.testing.assert_allclose(quality.apply_confidence_calibration(conf, (a, b)),
                               ref.predict_proba(s[:, None])[:, 1], atol=1e-6)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="0/1"):
        quality.audit_accuracy([0, 2])
    with pytest.raises(ValueError, match="conf_labeled"):
        quality.ppi_accuracy([0, 1], [0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="floor"):
        quality.active_testing_proposal([0.5], floor=0)
    assert quality.audit_accuracy([]).n_labels == 0


def test_small_sample_adjustment_keeps_the_estimate_and_restores_coverage_at_small_n():
    rng = np.random.default_rng(5)
    N = 3000
    # rare confident mistakes: the skewed residuals that make the plain interval under-cover
    f = np.where(rng.random(N) < 0.9, 0.97, 0.6)
    Y = (rng.random(N) < f).astype(float)
    truth, n, runs = Y.mean(), 30, 1000
    hits = {True: 0, False: 0}
    for _ in range(runs):
        i = rng.integers(0, N, n)
        for adj in (True, False):
            est = quality.difference_accuracy(Y[i], f[i], np.full(n, f.mean()), small_sample=adj)
            hits[adj] += est.covers(truth)
        assert est.value == pytest.approx(quality.difference_accuracy(Y[i], f[i], np.full(n, f.mean())).value)
    assert hits[False] < 0.93 * runs  # the problem is real here
    assert hits[True] >= 0.94 * runs
