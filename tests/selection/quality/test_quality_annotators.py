"""Dawid-Skene: E-step against brute force, EM monotone, recovers annotators, beats majority vote."""
import itertools

import numpy as np
import pytest

from selection.quality import MISSING, dawid_skene, majority_vote
from selection.quality.annotators import dawid_skene_posterior


def _simulate(rng, n, accs, c, overlap_missing=0.0):
    truth = rng.integers(0, c, n)
    L = np.empty((n, len(accs)), dtype=np.int64)
    for a, acc in enumerate(accs):
        wrong = (truth + rng.integers(1, c, n)) % c
        L[:, a] = np.where(rng.random(n) < acc, truth, wrong)
    L[rng.random(L.shape) < overlap_missing] = MISSING
    return truth, L


def test_posterior_matches_brute_force_bayes():
    rng = np.random.default_rng(0)
    c, m = 3, 2
    theta = rng.dirichlet(np.ones(c), size=(m, c))
    prior = rng.dirichlet(np.ones(c))
    L = np.array(list(itertools.product(range(c), [MISSING, *range(c)])))
    T, ll = dawid_skene_posterior(L, theta, prior)
    for i, row in enumerate(L):
        joint = np.array([prior[t] * np.prod([theta[a, t, row[a]] for a in range(m) if row[a] != MISSING])
                          for t in range(c)])
        np.testing.assert_allclose(T[i], joint / joint.sum(), rtol=1e-12)
        assert ll[i] == pytest.approx(np.log(joint.sum()))


def test_em_never_lowers_the_likelihood_and_recovers_accuracies():
    rng = np.random.default_rng(1)
    accs = [0.95, 0.8, 0.6, 0.5]
    _, L = _simulate(rng, 3000, accs, 4)
    res = dawid_skene(L, 4, smoothing=0.0)
    assert np.all(np.diff(res.history) >= -1e-8)
    np.testing.assert_allclose(res.accuracy, accs, atol=0.03)
    assert res.posterior.shape == (3000, 4)
    np.testing.assert_allclose(res.posterior.sum(1), 1.0)


def test_dawid_skene_beats_majority_vote_with_unequal_annotators():
    rng = np.random.default_rng(2)
    wins = 0
    for _ in range(5):
        truth, L = _simulate(rng, 600, [0.9, 0.6, 0.55, 0.5, 0.45], 5)
        ds = dawid_skene(L, 5).labels
        mv = majority_vote(L, 5, random_state=0)
        wins += np.mean(ds == truth) > np.mean(mv == truth) + 0.02
    assert wins == 5


def test_items_without_labels_get_the_prior_and_no_label():
    L = np.array([[0, 0], [1, 1], [MISSING, MISSING], [0, 1]])
    res = dawid_skene(L, 2)
    assert res.labels[2] == MISSING
    np.testing.assert_allclose(res.posterior[2], res.prior)
    assert majority_vote(L, 2)[2] == MISSING
