"""bench/app_accuracy.py stands in for the app's round step: its constants must stay the app's, and its
simulated annotators must be as reliable as asked."""
from __future__ import annotations

import numpy as np
import pytest

from annotate.services import quality_scores
from bench import app_accuracy


def test_the_bench_uses_the_apps_audit_floor_and_calibration_thresholds():
    assert app_accuracy.AUDIT_FLOOR == quality_scores.AUDIT_FLOOR
    assert app_accuracy.MIN_LABELS_FOR_SCORES == quality_scores.MIN_LABELS_FOR_SCORES
    assert app_accuracy.N_FOLDS == quality_scores.N_FOLDS


def test_simulated_annotators_are_right_as_often_as_asked_and_wrong_uniformly():
    rng = np.random.default_rng(0)
    c, n = 5, 60_000
    y = rng.integers(0, c, n)
    got = app_accuracy.annotator_labels(y, [0.97, 0.9, 0.8], c, np.random.default_rng(1))
    # one annotator drawn uniformly per item: mean accuracy 0.89 (binomial s.e. 0.0013)
    assert np.mean(got == y) == pytest.approx((0.97 + 0.9 + 0.8) / 3, abs=0.006)
    wrong = got != y
    offsets = (got[wrong] - y[wrong]) % c  # 1..c-1, each equally likely
    assert set(np.unique(offsets)) == {1, 2, 3, 4}
    share = np.bincount(offsets, minlength=c)[1:] / wrong.sum()
    assert np.allclose(share, 0.25, atol=0.02)
    assert np.array_equal(app_accuracy.annotator_labels(y, [1, 1, 1], c, np.random.default_rng(2)), y)


def test_a_run_is_reproducible_and_its_interval_rests_on_the_audit_labels():
    from selection.datasets import load_dataset

    ds = load_dataset("gmm:n=400,c=3,d=4,seed=3")
    kw = {"rate": 0.5, "accs": [0.97, 0.9, 0.8], "batch": 20, "checkpoints": [80]}
    a = app_accuracy.run_seed(ds, 0, **kw)
    assert a == app_accuracy.run_seed(ds, 0, **kw)
    (row,) = a
    assert row["labels"] >= 80 and row["audit_labels"] > 0
    assert 0 <= row["truth_count"] <= 1
    assert 0 < row["active_inference_count_hw"] < 0.5
