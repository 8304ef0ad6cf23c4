"""Stochastic batch acquisition: empirical selection frequencies against the exact distributions."""
import itertools

import numpy as np
import pytest

from selection import make_strategy
from selection.scores import entropy_scores
from selection.strategies.stochastic import gumbel_top_k, log_weights

S = np.array([0.05, 0.1, 0.2, 0.3, 0.6])


def _exact_inclusion(w, k):
    """P(i in sample) for k successive weighted draws without replacement, by enumeration."""
    n = len(w)
    incl = np.zeros(n)
    for seq in itertools.permutations(range(n), k):
        p, left = 1.0, w.sum()
        for i in seq:
            p *= w[i] / left
            left -= w[i]
        incl[list(seq)] += p
    return incl


@pytest.mark.parametrize("kind,beta", [("power", 1.0), ("power", 3.0), ("softmax", 4.0), ("softrank", 1.0)])
@pytest.mark.parametrize("k", [1, 2])
def test_selection_frequencies_match_the_distribution(kind, beta, k):
    w = np.exp(log_weights(kind, S, beta))
    exact = _exact_inclusion(w / w.sum(), k)
    rng = np.random.default_rng(12345)
    trials = 4000
    counts = np.zeros(len(S))
    for _ in range(trials):
        counts[gumbel_top_k(np.log(w), k, rng)] += 1
    # inclusion counts: each is Binomial(trials, exact_i); all within 4.5 sd (fixed seed)
    sd = np.sqrt(trials * exact * (1 - exact))
    assert np.all(np.abs(counts - trials * exact) < 4.5 * sd + 1e-9), (counts / trials, exact)
    if k == 1:  # a full chi-square goodness of fit for the single draw (4 dof, 0.999 quantile 18.5)
        assert (((counts - trials * exact) ** 2) / (trials * exact)).sum() < 18.5


def test_weights_have_the_stated_closed_forms():
    np.testing.assert_allclose(np.exp(log_weights("power", S, 2.0)), S**2)
    np.testing.assert_allclose(np.exp(log_weights("softmax", S, 2.0)), np.exp(2 * S))
    # ranks of S descending: 0.6 -> 1, 0.3 -> 2, ...
    np.testing.assert_allclose(np.exp(log_weights("softrank", S, 1.0)), 1 / np.array([5, 4, 3, 2, 1]))


def test_zero_weight_items_come_last():
    s = np.array([0.0, 0.5, 0.0, 0.2, 0.0])
    lw = log_weights("power", s, 1.0)
    for seed in range(50):
        idx = gumbel_top_k(lw, 4, np.random.default_rng(seed))
        assert set(idx[:2]) == {1, 3} and len(set(idx)) == 4


def test_strategy_uses_chosen_score_and_large_beta_approaches_top_b():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(5), size=400)
    X = rng.normal(size=(400, 3))
    kw = dict(X_labeled=X[:5], y_labeled=np.arange(5), batch_size=20, random_state=1)
    sel = make_strategy("softmax", {"score": "entropy", "beta": 1e4}).select(X, P, **kw)
    top = np.argsort(-entropy_scores(P))[:20]
    assert set(sel.indices) == set(top)
    np.testing.assert_allclose(sel.scores, entropy_scores(P)[sel.indices])
    uniform = make_strategy("power", {"beta": 0.0}).select(X, P, **kw)
    assert len(set(uniform.indices) & set(top)) < 10


def test_bad_parameters():
    with pytest.raises(ValueError, match="beta"):
        make_strategy("power", {"beta": -1})
    with pytest.raises(ValueError, match="score"):
        make_strategy("softrank", {"score": "variance"})
