"""The correctness model behind the accuracy estimates, and the quality simulation CLI."""
import csv

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from selection.quality.correctness import (
    fit_correctness_model,
    fit_logistic,
    knn_proba,
    predict_logistic,
)


def test_knn_proba_matches_sklearn_distance_weighting():
    rng = np.random.default_rng(0)
    Xr, yr = rng.normal(size=(80, 5)), rng.integers(0, 4, 80)
    X = rng.normal(size=(30, 5))
    ref = KNeighborsClassifier(7, weights="distance").fit(Xr, yr).predict_proba(X)
    np.testing.assert_allclose(knn_proba(Xr, yr, X, 4, k=7, chunk=7), ref, atol=1e-10)
    # a query equal to a labeled point takes that point's class
    assert knn_proba(Xr, yr, Xr[:3], 4)[np.arange(3), yr[:3]] == pytest.approx(1.0)


def test_fit_logistic_matches_sklearn_unpenalised():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    F = rng.normal(size=(400, 2))
    y = (rng.random(400) < 1 / (1 + np.exp(-(1.5 * F[:, 0] - F[:, 1] + 0.3)))).astype(float)
    w = fit_logistic(F, y)
    ref = LogisticRegression(C=1e8, tol=1e-12, max_iter=10_000).fit(F, y)
    np.testing.assert_allclose(w, np.r_[ref.coef_[0], ref.intercept_], atol=1e-4)
    np.testing.assert_allclose(predict_logistic(F, w), ref.predict_proba(F)[:, 1], atol=1e-5)


def test_correctness_model_separates_right_from_wrong_predictions():
    from selection.head import LogisticHead

    rng = np.random.default_rng(2)
    centres = rng.normal(size=(4, 6)) * 1.5
    y = rng.integers(0, 4, 600)
    X = (centres[y] + rng.normal(size=(600, 6))).astype(np.float32)
    tr, te = np.arange(200), np.arange(200, 600)

    def fit_predict(Xa, ya, Xb):
        return LogisticHead(4, l2=1.0).fit(Xa, ya).predict_proba(Xb)

    cm = fit_correctness_model(X[tr], y[tr], 4, fit_predict, random_state=0)
    P = fit_predict(X[tr], y[tr], X[te])
    f = cm.predict(P, X[te], X[tr], y[tr])
    right = P.argmax(1) == y[te]
    assert f[right].mean() > f[~right].mean() + 0.2
    # roughly calibrated: mean predicted correctness within 0.06 of the real accuracy
    assert abs(f.mean() - right.mean()) < 0.06


def test_simulate_cli_reports_estimates_errors_and_consensus(tmp_path, capsys):
    from selection.simulate import main

    rc = main(["--data", "gmm:n=900,c=4,d=8,spread=3,seed=1", "--label-noise", "0.1", "--annotators", "0.9,0.6,0.5",
               "--overlap", "0.5", "--seeds", "2", "--train-labels", "60", "--audit-sizes", "40",
               "--error-labels", "200", "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    for word in ("active_testing", "cl+learnability", "dawid_skene", "majority_vote"):
        assert word in out
    with open(tmp_path / "quality.csv") as fh:
        rows = list(csv.DictReader(fh))
    est = [r for r in rows if r["experiment"] == "estimate"]
    assert len(est) == 2 * 5  # 2 seeds x 5 estimators x 1 audit size
    assert "active_inference (the app's estimator) coverage" in out
    assert all(float(r["low"]) <= float(r["value"]) <= float(r["high"]) for r in est)
    with pytest.raises(SystemExit, match="annotators"):
        main(["--annotators", "0.9", "--out", str(tmp_path)])


def test_knn_exclude_is_the_same_as_dropping_that_labeled_row():
    rng = np.random.default_rng(7)
    Xr, yr = rng.normal(size=(40, 3)), rng.integers(0, 3, 40)
    X = Xr[:5] + 1e-3  # each query's nearest labeled point is its own row
    got = knn_proba(Xr, yr, X, 3, k=5, chunk=2, exclude=np.arange(5))
    for i in range(5):
        keep = np.arange(40) != i
        np.testing.assert_allclose(got[i], knn_proba(Xr[keep], yr[keep], X[i:i + 1], 3, k=5)[0], atol=1e-12)
