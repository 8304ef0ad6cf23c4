"""selection.plan: a round's batch from arrays (audit share + strategy picks), checked without Django."""
import numpy as np
import pytest

from selection import make_strategy
from selection.plan import audit_count, plan_batch
from selection.scores import margin_scores


def _pool(n=60, c=3, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    probs = rng.dirichlet(np.ones(c), size=n)
    return X, probs


def _plan(X, probs, *, b=10, rate=0.2, seed=1, strategy="margin"):
    """A plan with a small labeled set that has seen every class (so no cold start, no exploration)."""
    rng = np.random.default_rng(99)
    c = 3 if probs is None else probs.shape[1]
    X_lab = rng.normal(size=(3 * c, 5)).astype(np.float32)
    return plan_batch(strategy=make_strategy(strategy), X_pool=X, probs_pool=probs, X_labeled=X_lab,
                      probs_labeled=rng.dirichlet(np.ones(c), size=3 * c), y_labeled=np.arange(3 * c) % c,
                      batch_size=b, audit_rate=rate, rng=np.random.default_rng(seed))


def test_audit_count_is_stochastically_rounded_to_the_exact_expected_share():
    rng = np.random.default_rng(0)
    counts = np.array([audit_count(7, 0.1, rng) for _ in range(20000)])
    assert set(counts) <= {0, 1}
    assert abs(counts.mean() - 0.7) < 4 * np.sqrt(0.7 * 0.3 / len(counts))  # 4 standard errors
    assert audit_count(5, 1.0, rng) == 5 and audit_count(5, 0.0, rng) == 0 and audit_count(5, 7.0, rng) == 5


def test_a_plan_picks_distinct_pool_rows_and_the_strategy_ranks_the_rest():
    X, probs = _pool()
    plan = _plan(X, probs, b=12, rate=0.25)
    positions = [p.position for p in plan.picks]
    assert len(positions) == 12 == len(set(positions)) and all(0 <= p < len(X) for p in positions)
    audit = [p for p in plan.picks if p.is_audit]
    assert len(audit) == plan.n_audit and all(p.score is None for p in audit)
    # The strategy's picks are the lowest-margin rows among those the audit left it.
    active = [p.position for p in plan.picks if not p.is_audit]
    rest = np.setdiff1d(np.arange(len(X)), [p.position for p in audit])
    m = margin_scores(probs)
    want = rest[np.argsort(-m[rest], kind="stable")[:len(active)]]
    assert sorted(active) == sorted(want.tolist())
    assert [p.score for p in plan.picks if not p.is_audit] == pytest.approx([float(m[i]) for i in active])


def test_a_plan_is_reproducible_for_a_seed_and_audit_ranks_move_with_it():
    X, probs = _pool()
    a, b = _plan(X, probs, seed=5, rate=0.5), _plan(X, probs, seed=5, rate=0.5)
    assert a.picks == b.picks
    ranks = {tuple(i for i, p in enumerate(_plan(X, probs, seed=s, rate=0.5).picks) if p.is_audit)
             for s in range(8)}
    assert len(ranks) > 1  # the audit items do not sit at fixed ranks


def test_an_all_audit_batch_never_calls_the_strategy_and_a_small_pool_caps_the_batch():
    X, probs = _pool(n=6)
    plan = _plan(X, probs, b=10, rate=1.0, strategy="firal")  # nothing left for the (slow) strategy to pick
    assert len(plan.picks) == 6 and all(p.is_audit for p in plan.picks) and plan.info == {}
    assert _plan(None, None, b=4).picks == []


def test_overlap_marks_a_share_of_the_picks_for_several_annotators():
    X, probs = _pool(n=400)
    kw = dict(strategy=make_strategy("random"), X_pool=X, probs_pool=probs, X_labeled=None, probs_labeled=None,
              y_labeled=None, batch_size=300, audit_rate=0.1)
    plan = plan_batch(**kw, rng=np.random.default_rng(3), overlap_rate=0.25, overlap_k=3)
    shared = [p.overlap_k for p in plan.picks if p.overlap_k > 1]
    assert set(shared) == {3} and abs(len(shared) / 300 - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 300)
    plain = plan_batch(**kw, rng=np.random.default_rng(3), overlap_rate=0.25, overlap_k=1)
    assert {p.overlap_k for p in plain.picks} == {1}
    assert [p.position for p in plain.picks] == [p.position for p in plan.picks]  # overlap is drawn last


def test_poisson_audit_draw_includes_each_row_with_its_probability_and_records_it():
    X, probs = _pool(n=30)
    pi = np.linspace(0.0, 0.6, 30)
    rng_lab = np.random.default_rng(99)
    X_lab = rng_lab.normal(size=(9, 5)).astype(np.float32)
    hits = np.zeros(30)
    runs = 1500
    for seed in range(runs):
        plan = plan_batch(strategy=make_strategy("random"), X_pool=X, probs_pool=probs, X_labeled=X_lab,
                          probs_labeled=rng_lab.dirichlet(np.ones(3), size=9), y_labeled=np.arange(9) % 3,
                          batch_size=8, audit_rate=0.0, rng=np.random.default_rng(seed), audit_probabilities=pi)
        audit = [p for p in plan.picks if p.is_audit]
        assert plan.n_audit == len(audit)
        assert all(p.audit_probability == pytest.approx(pi[p.position]) for p in audit)
        assert len(plan.picks) == max(8, len(audit)) == len({p.position for p in plan.picks})
        hits[[p.position for p in audit]] += 1
    # every row's audit frequency within 4 standard errors of its probability (row 0: never)
    assert hits[0] == 0
    assert np.all(np.abs(hits / runs - pi) <= 4 * np.sqrt(pi * (1 - pi) / runs) + 1e-12)


def test_a_uniform_audit_draw_records_n_audit_over_the_pool():
    X, probs = _pool(n=60)
    plan = _plan(X, probs, b=10, rate=0.3)
    audit = [p for p in plan.picks if p.is_audit]
    assert audit and all(p.audit_probability == pytest.approx(plan.n_audit / 60) for p in audit)
    with pytest.raises(ValueError, match="audit_probabilities"):
        plan_batch(strategy=make_strategy("random"), X_pool=X, probs_pool=probs, X_labeled=None,
                   probs_labeled=None, y_labeled=None, batch_size=5, audit_rate=0.1,
                   rng=np.random.default_rng(0), audit_probabilities=np.ones(3))
