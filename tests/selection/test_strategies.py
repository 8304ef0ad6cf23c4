"""Registry-wide properties of every built-in strategy (issue 3 item 3)."""
import json

import numpy as np
import pytest

from selection import SelectionContext, get_strategy, make_strategy, strategy_names, strategy_schema

#: The strategies swept below, spelled out: one dropped from the registry fails its tests here
#: instead of silently leaving the parameter list.
NAMES = ["random", "least_confidence", "margin", "entropy", "power", "softmax", "softrank",
         "badge", "coreset", "cluster_margin"]
#: Registered strategies whose properties are tested in their own files (test_firal_strategy.py,
#: test_typiclust_auto.py): too slow, or composed of the others.
TESTED_ELSEWHERE = {"firal", "firal_exact", "typiclust", "auto"}


def _problem(n=300, d=6, c=4, m=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    logits = rng.normal(size=(n, c)) * 2
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    XL = rng.normal(size=(m, d)).astype(np.float32)
    yL = np.arange(m) % c
    PL = np.full((m, c), 1.0 / c)
    return X, P, XL, PL, yL


def _select(name, b=25, seed=0, **kw):
    X, P, XL, PL, yL = _problem(**kw)
    return make_strategy(name, {}).select(X, P, X_labeled=XL, probs_labeled=PL, y_labeled=yL,
                                          batch_size=b, random_state=seed)


def test_every_built_in_strategy_is_tested_here_or_named_as_tested_elsewhere():
    built_in = {n for n in strategy_names() if get_strategy(n).__module__.startswith("selection.strategies.")}
    assert built_in == set(NAMES) | TESTED_ELSEWHERE


@pytest.mark.parametrize("name", NAMES)
def test_indices_unique_in_pool_and_reproducible(name):
    a = _select(name, seed=3)
    b = _select(name, seed=3)
    assert a.indices.dtype == np.int64 and a.indices.shape == (25,)
    assert len(np.unique(a.indices)) == 25
    assert a.indices.min() >= 0 and a.indices.max() < 300
    np.testing.assert_array_equal(a.indices, b.indices)
    if a.scores is not None:
        assert a.scores.shape == (25,)
    json.dumps(a.info)  # diagnostics must be JSON-able for Round.metrics


@pytest.mark.parametrize("name", NAMES)
def test_whole_pool_can_be_taken(name):
    sel = _select(name, b=40, n=40)
    assert sorted(sel.indices) == list(range(40))


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_json_and_defaults_validate(name):
    schema = strategy_schema(name)
    json.dumps(schema)
    for p in schema:
        assert {"name", "type", "default", "help", "min", "max", "choices", "nullable"} <= set(p)
        assert p["help"]
    make_strategy(name, {p["name"]: p["default"] for p in schema})


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_clear_errors(name):
    X, P, XL, PL, yL = _problem()
    s = make_strategy(name, {})
    kw = dict(X_labeled=XL, probs_labeled=PL, y_labeled=yL)
    with pytest.raises(ValueError, match="larger than the pool"):
        s.select(X, P, batch_size=301, **kw)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        s.select(Xn, P, batch_size=5, **kw)
    with pytest.raises(ValueError, match="probs_pool"):
        s.select(X, P[:10], batch_size=5, **kw)
    with pytest.raises(ValueError, match="unknown parameter"):
        make_strategy(name, {"no_such_param": 1})


@pytest.mark.parametrize("name", NAMES)
def test_cold_start_without_labels_or_model(name):
    X, P, *_ = _problem()
    s = make_strategy(name, {})
    sel = s.select(X, None, batch_size=10, random_state=0)
    assert len(np.unique(sel.indices)) == 10
    if s.uses_cold_start:
        assert sel.info["cold_start"] == "all"


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("random", "coreset")])
def test_unseen_classes_spend_half_the_batch_on_exploration(name):
    X, P, XL, PL, yL = _problem()
    yL = np.zeros_like(yL)  # only class 0 seen out of 4
    sel = make_strategy(name, {"unseen_rule": "fixed"}).select(X, P, X_labeled=XL, probs_labeled=PL, y_labeled=yL,
                                                               batch_size=10, random_state=0)
    assert sel.info["cold_start"] == "partial" and sel.info["n_seed"] == 5
    assert len(np.unique(sel.indices)) == 10


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy"])
def test_uncertainty_picks_top_b_with_scores(name):
    from selection.scores import get_score
    X, P, XL, PL, yL = _problem()
    sel = _select(name, b=25)
    s = get_score(name)(P)
    np.testing.assert_array_equal(np.sort(sel.indices), np.sort(np.argsort(-s, kind="stable")[:25]))
    np.testing.assert_allclose(sel.scores, s[sel.indices])
    assert np.all(np.diff(sel.scores) <= 0)


def test_random_is_uniform_over_the_pool():
    counts = np.zeros(20)
    s = make_strategy("random", {})
    X = np.zeros((20, 2))
    for seed in range(2000):
        counts[s.select(X, None, batch_size=5, random_state=seed).indices] += 1
    # each item chosen with probability 1/4 per draw: chi-square with 19 dof, 0.999 quantile 43.8
    chi2 = ((counts - 500) ** 2 / 500).sum()
    assert chi2 < 43.8


def test_context_is_accepted(tmp_path):
    X, P, XL, PL, yL = _problem()
    ctx = SelectionContext(X_all=X, pool_index=np.arange(300), cache_dir=str(tmp_path), embedding_version="v1", l2=1.0)
    for name in NAMES:
        sel = make_strategy(name, {}).select(X, P, X_labeled=XL, probs_labeled=PL, y_labeled=yL,
                                             batch_size=10, random_state=0, context=ctx)
        assert len(np.unique(sel.indices)) == 10


@pytest.mark.parametrize("name", ["margin", "badge", "cluster_margin", "power"])
def test_unseen_share_sets_the_exploration_and_zero_runs_the_bare_strategy(name):
    X, P, XL, PL, yL = _problem()
    yL = np.zeros_like(yL)  # only class 0 seen out of 4
    kw = dict(X_labeled=XL, probs_labeled=PL, y_labeled=yL, batch_size=10, random_state=3)
    sel = make_strategy(name, {"unseen_share": 0.2, "unseen_rule": "fixed"}).select(X, P, **kw)
    assert sel.info["cold_start"] == "partial" and sel.info["n_seed"] == 2
    bare = make_strategy(name, {"unseen_share": 0.0}).select(X, P, **kw)
    assert "cold_start" not in bare.info
    # with all classes seen the strategy gives the same batch for the same seed
    full = make_strategy(name, {}).select(X, P, **{**kw, "y_labeled": np.arange(len(yL)) % 4})
    np.testing.assert_array_equal(bare.indices, full.indices)


@pytest.mark.parametrize("name", ["badge", "margin", "cluster_margin"])
def test_exploration_share_and_strategy_share_never_pick_copies_of_each_other(name):
    # duplicate images: 30 distinct rows, 40 copies each, only 2 of 5 classes seen
    rng = np.random.default_rng(4)
    base = rng.normal(size=(30, 16)).astype(np.float32) * 5 + 3
    key = rng.permutation(np.repeat(np.arange(30), 40))
    X = base[key]
    Z = rng.normal(size=(30, 5)) * 2
    P = (np.exp(Z) / np.exp(Z).sum(1, keepdims=True))[key]
    for seed in range(5):
        sel = make_strategy(name, {}).select(X, P, X_labeled=base[:2] + 0.5, y_labeled=np.array([0, 1]),
                                             batch_size=12, random_state=seed)
        seeded = key[sel.indices[:sel.info["n_seed"]]]
        rest = key[sel.indices[sel.info["n_seed"]:]]
        assert not set(seeded) & set(rest)
        assert len(set(key[sel.indices])) == 12  # no two picks on the same embedding at all
    # a pool of copies of one row still yields a batch
    sel = make_strategy(name, {}).select(np.repeat(base[:1], 8, axis=0), np.repeat(P[:1], 8, axis=0),
                                         X_labeled=base[1:3], y_labeled=np.array([0, 1]), batch_size=5,
                                         random_state=0)
    assert len(np.unique(sel.indices)) == 5
