"""Confident learning and the label-error ranking."""
import numpy as np
import pytest

from selection.quality import (
    confident_learning,
    label_error_scores,
    learnability,
    out_of_fold_proba,
)
from selection.quality.errors import stratified_folds


def test_confident_learning_thresholds_and_flags_by_hand():
    P = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.95, 0.05]])
    y = np.array([0, 0, 1, 1, 1])
    issue, jstar, t = confident_learning(P, y)
    # t_0 = mean(0.9, 0.7) = 0.8; t_1 = mean(0.8, 0.4, 0.05) = 0.41(6)
    np.testing.assert_allclose(t, [0.8, (0.8 + 0.4 + 0.05) / 3])
    # item 3: p_1 = 0.4 < t_1, p_0 = 0.6 < t_0 -> nothing confident, keep; item 4: p_0 = .95 >= .8 -> class 0
    np.testing.assert_array_equal(issue, [False, False, False, False, True])
    assert jstar[4] == 0 and jstar[3] == 1


def test_learnability_is_the_loss_difference_and_flagged_items_rank_first():
    assert learnability([2.0, 0.5], [1.0, 1.5]).tolist() == [1.0, -1.0]
    P = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.95, 0.05]])
    y = np.array([0, 0, 1, 1, 1])
    s = label_error_scores(P, y)
    assert np.argmax(s) == 4
    assert s[3] > s[0]  # unflagged, ordered by out-of-fold loss
    # an item the learner fits easily (low learner loss) is less suspicious than one it cannot fit
    P_fit = P.copy()
    P_fit[3] = [0.1, 0.9]
    assert label_error_scores(P, y, P_fit)[3] < s[3]


def test_stratified_folds_spread_every_class():
    y = np.repeat(np.arange(3), [10, 7, 5])
    f = stratified_folds(y, 5, random_state=0)
    for k in range(3):
        counts = np.bincount(f[y == k], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_ranking_finds_flipped_labels_on_digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(y), 600, replace=False)
    X, y = (X[idx] / 16).astype(np.float32), y[idx]
    noisy = y.copy()
    flip = rng.random(600) < 0.1
    noisy[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    P = out_of_fold_proba(X, noisy, 10, n_folds=5, random_state=0)
    top = np.argsort(-label_error_scores(P, noisy))[:30]
    assert flip[top].mean() >= 0.6
    # a random ranking would give about 0.1
    assert flip.mean() == pytest.approx(0.1, abs=0.03)
