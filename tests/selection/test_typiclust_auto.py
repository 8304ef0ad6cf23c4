"""TypiClust (typicality over k-means clusters), the Good–Turing exploration share, the copy guard and ``auto``."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from selection import DEFAULT_PARAMS, DEFAULT_STRATEGY, make_strategy, strategy_names
from selection.strategies.guards import distinct_rows, good_turing_missing_mass, unseen_share
from selection.typiclust import typicality, typiclust_select


def _blobs(sizes=(60, 35, 15), d=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[: len(sizes)] * 50
    X = np.concatenate([c + rng.normal(size=(s, d)) for c, s in zip(centres, sizes)]).astype(np.float32)
    return X, np.repeat(np.arange(len(sizes)), sizes)


def _typicality_reference(X, k):
    D = cdist(X, X)
    np.fill_diagonal(D, np.inf)
    k = min(k, len(X) - 1)  # a small cluster: all its other points
    return 1.0 / np.sort(D, axis=1)[:, :k].mean(axis=1)


def test_typicality_is_the_inverse_mean_knn_distance():
    X = np.random.default_rng(1).normal(size=(40, 3))
    np.testing.assert_allclose(typicality(X, 5), _typicality_reference(X, 5), rtol=1e-10)
    np.testing.assert_allclose(typicality(X[:3], 20), _typicality_reference(X[:3], 20), rtol=1e-10)


def test_picks_the_most_typical_point_of_each_blob_largest_first():
    X, y = _blobs()
    idx, typ = typiclust_select(X, 3, rng=0)
    assert y[idx].tolist() == [0, 1, 2]  # largest uncovered cluster first
    for i, k in zip(idx, range(3)):
        rows = np.flatnonzero(y == k)
        ref = _typicality_reference(X[rows], 20)
        assert i == rows[ref.argmax()]
    np.testing.assert_allclose(typ, [_typicality_reference(X[y == k], 20).max() for k in range(3)])


def test_covered_clusters_come_last():
    X, y = _blobs()
    idx, _ = typiclust_select(X[y != 0], 2, X_labeled=X[y == 0][:1], rng=0)
    assert sorted(y[y != 0][idx].tolist()) == [1, 2]  # the labeled blob is covered, the others are not


@pytest.mark.parametrize("seed", range(3))
def test_typiclust_strategy_unique_reproducible_with_and_without_labels(seed):
    X, y = _blobs((80, 50, 30, 5), seed=seed)
    s = make_strategy("typiclust", {})
    a = s.select(X, None, batch_size=12, random_state=seed)
    b = s.select(X, None, batch_size=12, random_state=seed)
    assert len(np.unique(a.indices)) == 12 and a.indices.tolist() == b.indices.tolist()
    c = s.select(X[10:], None, X_labeled=X[:10], y_labeled=y[:10], batch_size=20, random_state=seed)
    assert len(np.unique(c.indices)) == 20 and c.indices.max() < len(X) - 10


def test_typiclust_is_a_cold_start_choice():
    X, y = _blobs()
    sel = make_strategy("margin", {"cold_start": "typiclust"}).select(X, None, batch_size=3, random_state=0)
    assert sel.info["cold_start"] == "all" and sorted(y[sel.indices].tolist()) == [0, 1, 2]


def test_good_turing_missing_mass_and_share():
    assert good_turing_missing_mass([0, 0, 1, 2, 2, 3]) == pytest.approx(2 / 6)  # classes 1 and 3 seen once
    assert unseen_share("good_turing", 0.5, [0, 0, 1, 2, 2, 3], 5) == pytest.approx(2 / 6)
    assert unseen_share("good_turing", 0.2, [0, 1], 5) == 0.2  # capped
    assert unseen_share("good_turing", 0.5, [0, 0, 1, 1], 5) == 0.0  # no singletons: no evidence of more
    assert unseen_share("good_turing", 0.5, [0, 1, 2], 3) == 0.0  # every class seen
    assert unseen_share("fixed", 0.5, [0, 0, 1, 1], 5) == 0.5


def test_margin_spends_the_good_turing_share_of_the_batch():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    P = rng.dirichlet(np.ones(6), size=200)
    yL = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3])  # one singleton of 10 labels: M0 = 0.1
    sel = make_strategy("margin", {}).select(X, P, X_labeled=rng.normal(size=(10, 5)), y_labeled=yL,
                                             batch_size=20, random_state=0)
    assert sel.info["n_seed"] == 2


def test_distinct_rows_against_brute_force():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 3, size=(25, 4)).astype(np.float32)  # few distinct values: many equal rows
    X = base[rng.integers(0, 25, size=300)]
    keep = distinct_rows(X)
    first = {}
    for i, row in enumerate(map(bytes, X)):
        first.setdefault(row, i)
    np.testing.assert_array_equal(keep, sorted(first.values()))
    assert distinct_rows(np.arange(12.0).reshape(6, 2)) is None


@pytest.mark.parametrize("name", [n for n in strategy_names() if n not in ("random", "firal_exact")])
def test_no_strategy_spends_two_picks_on_identical_rows(name):
    rng = np.random.default_rng(5)
    base = rng.normal(size=(40, 6)).astype(np.float32)
    key = rng.integers(0, 40, size=400)
    X = base[key]
    Z = rng.normal(size=(40, 4)) * 3
    P = (np.exp(Z) / np.exp(Z).sum(1, keepdims=True))[key]
    XL, yL = rng.normal(size=(40, 6)).astype(np.float32), np.arange(40) % 4  # 10 per class: auto's later stage
    sel = make_strategy(name, {}).select(X, P, X_labeled=XL, probs_labeled=np.full((40, 4), 0.25), y_labeled=yL,
                                         batch_size=15, random_state=0)
    assert len(set(key[sel.indices].tolist())) == 15


def test_auto_is_the_default_and_switches_by_labels_per_class():
    assert DEFAULT_STRATEGY == "auto" and DEFAULT_PARAMS == {}
    d = make_strategy(DEFAULT_STRATEGY, DEFAULT_PARAMS)
    assert (d.params_["regime"], d.params_["otherwise"], d.params_["then"]) == ("test", "badge", "margin")
    assert not d.params_["cap_typiclust"]
    X, y = _blobs((100, 100, 100))
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(3), size=270)
    kw = dict(batch_size=10, random_state=0)
    for s in (d, make_strategy("auto", {"regime": "labels"})):
        thr = s.params_["switch_per_class"]
        few, many = int(thr * 3) - 1, int(thr * 3)
        if s.params_["regime"] == "test":
            few = int(s.params_["test_from_per_class"] * 3) - 1  # below the test: TypiClust, no test
        cold = s.select(X, None, **kw)
        assert cold.info["sub_strategy"] == "typiclust"
        low = s.select(X[30:], P[:270], X_labeled=X[:few], probs_labeled=P[:few], y_labeled=y[:few], **kw)
        assert low.info["sub_strategy"] == "typiclust" and "typical_minus_atypical" not in low.info
        high = s.select(X[30:], P[:270], X_labeled=X[:many], probs_labeled=P[:many], y_labeled=y[:many], **kw)
        assert high.info["sub_strategy"] == s.params_["then"]
        ref = make_strategy(s.params_["then"], {}).select(X[30:], P[:270], X_labeled=X[:many],
                                                           probs_labeled=P[:many], y_labeled=y[:many], **kw)
        assert high.indices.tolist() == ref.indices.tolist()


def test_auto_caps_typiclust_at_the_switch_when_asked():
    s = make_strategy("auto", {"cap_typiclust": True})
    X, y = _blobs((100, 100, 100))
    P = np.random.default_rng(1).dirichlet(np.ones(3), size=294)
    lab = np.arange(0, 300, 50)  # 2 per class: TypiClust up to 30 labels, the rest by 'otherwise'
    pool = np.setdiff1d(np.arange(300), lab)
    sel = s.select(X[pool], P, X_labeled=X[lab], probs_labeled=P[:6], y_labeled=y[lab], batch_size=40,
                   random_state=0)
    assert sel.info["sub_strategy"] == "typiclust+badge" and sel.info["n_typiclust"] == 24
    assert len(np.unique(sel.indices)) == 40


def test_auto_hands_over_gradually_with_a_blend():
    s = make_strategy("auto", {"switch_per_class": 10, "blend_per_class": 10, "regime": "labels"})
    assert [s.typiclust_share(n, 3, True) for n in (0, 15, 30, 45, 60)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert s.typiclust_share(90, 3, False) == 1.0  # no model yet
    X, y = _blobs((100, 100, 100))
    P = np.random.default_rng(1).dirichlet(np.ones(3), size=270)
    sel = s.select(X[30:], P, X_labeled=X[:30], probs_labeled=P[:30], y_labeled=y[:30], batch_size=10,
                   random_state=0)
    assert sel.info["sub_strategy"] == "typiclust+margin" and sel.info["n_typiclust"] == 5
    assert len(np.unique(sel.indices)) == 10 and np.isnan(sel.scores[:5]).all()


def test_firal_takes_no_exploration_share_by_default():
    from selection import get_strategy

    for name in ("firal", "firal_exact"):
        share = {p.name: p.default for p in get_strategy(name).schema()}["unseen_share"]
        assert share == 0.0
    assert {p.name: p.default for p in get_strategy("margin").schema()}["unseen_share"] == 0.5
    rng = np.random.default_rng(0)
    X, P = rng.normal(size=(60, 3)), rng.dirichlet(np.ones(4), size=60)
    for rule in ("fixed", "good_turing"):  # share 0 means no exploration under either rule
        sel = make_strategy("margin", {"unseen_share": 0, "unseen_rule": rule}).select(
            X, P, X_labeled=X[:2] + 9, y_labeled=np.array([0, 1]), batch_size=6, random_state=0)
        assert "cold_start" not in sel.info


def _prototypes_and_noise(seed=0, c=4, d=6):
    """Typical points teach: tight class blobs (the dense part) plus a sparse halo of randomly labeled points."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * 6
    y_core = rng.integers(0, c, size=200)
    core = centres[y_core] + rng.normal(size=(200, d)) * 0.5
    halo = rng.normal(size=(200, d)) * 12
    X = np.concatenate([core, halo]).astype(np.float32)
    return X, np.concatenate([y_core, rng.integers(0, c, size=200)])


def _mixed_core_pure_rim(seed=0, c=4, d=6):
    """Unusual points teach: a dense core whose labels are random, and class k spread out along axis k."""
    rng = np.random.default_rng(seed)
    core = rng.normal(size=(300, d)) * 0.5
    y_rim = rng.integers(0, c, size=300)
    rim = np.eye(d)[y_rim] * rng.uniform(4, 12, size=(300, 1)) + rng.normal(size=(300, d))
    X = np.concatenate([core, rim]).astype(np.float32)
    return X, np.concatenate([rng.integers(0, c, size=300), y_rim])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_regime_test_says_which_half_teaches_the_head_more(seed):
    from selection.regime import pool_typicality, typical_vs_atypical

    for make, sign in ((_prototypes_and_noise, 1), (_mixed_core_pure_rim, -1)):
        X, y = make(seed)
        lab = np.random.default_rng(seed + 10).choice(len(X), size=60, replace=False)
        pool = np.setdiff1d(np.arange(len(X)), lab)
        stat = typical_vs_atypical(X[lab], y[lab], X[pool], seed)
        assert sign * stat > 0.1, (make.__name__, stat)
    # the typicality is the inverse mean distance to the k nearest reference rows
    A, B = X[:5], X[5:50]
    np.testing.assert_allclose(pool_typicality(A, B, 7), 1 / np.sort(cdist(A, B), axis=1)[:, :7].mean(1), rtol=1e-9)
    assert typical_vs_atypical(X[:6], y[:6], X[6:], 0) == 0.0  # too few labels to split: no evidence


def test_auto_with_the_regime_test_keeps_typiclust_only_where_typical_points_teach():
    s = make_strategy("auto", {"regime": "test", "otherwise": "badge"})
    for make, expect in ((_prototypes_and_noise, "typiclust"), (_mixed_core_pure_rim, "badge")):
        X, y = make(0)
        P = np.random.default_rng(0).dirichlet(np.ones(4), size=len(X))
        lab = np.random.default_rng(3).choice(len(X), size=24, replace=False)  # 6 per class: test, below the switch
        pool = np.setdiff1d(np.arange(len(X)), lab)
        kw = dict(X_labeled=X[lab], probs_labeled=P[lab], y_labeled=y[lab], batch_size=8, random_state=0)
        sel = s.select(X[pool], P[pool], **kw)
        assert sel.info["sub_strategy"] == expect
        assert (sel.info["typical_minus_atypical"] > 0) == (expect == "typiclust")
        assert len(np.unique(sel.indices)) == 8
        few = lab[:12]  # 3 per class: below test_from_per_class, TypiClust without a test
        sel = s.select(X[pool], P[pool], X_labeled=X[few], probs_labeled=P[few], y_labeled=y[few], batch_size=8,
                       random_state=0)
        assert sel.info["sub_strategy"] == "typiclust" and "typical_minus_atypical" not in sel.info
    # more classes than the test's label cap allows at 4 per class: no test, TypiClust as below the threshold
    rng = np.random.default_rng(4)
    c = 260
    XL, yL = rng.normal(size=(4 * c, 4)).astype(np.float32), np.arange(4 * c) % c
    Xp, Pp = rng.normal(size=(300, 4)).astype(np.float32), rng.dirichlet(np.ones(c), size=300)
    sel = s.select(Xp, Pp, X_labeled=XL, probs_labeled=None, y_labeled=yL, batch_size=8, random_state=0)
    assert sel.info["sub_strategy"] == "typiclust" and "typical_minus_atypical" not in sel.info
    many = np.arange(40)  # 10 per class: the 'then' strategy without a test
    sel = s.select(X[40:], P[40:], X_labeled=X[many], probs_labeled=P[many], y_labeled=y[many], batch_size=8,
                   random_state=0)
    assert sel.info["sub_strategy"] == s.params_["then"] and "typical_minus_atypical" not in sel.info


def test_the_regime_test_fits_on_principal_components_above_max_dims():
    from selection.regime import typical_vs_atypical

    X, y = _prototypes_and_noise(0)
    lab = np.random.default_rng(10).choice(len(X), size=60, replace=False)
    pool = np.setdiff1d(np.arange(len(X)), lab)
    # 6 informative features padded with 200 zero columns: the leading components hold all the signal
    pad = lambda A: np.concatenate([A, np.zeros((len(A), 200), np.float32)], axis=1)  # noqa: E731
    full = typical_vs_atypical(X[lab], y[lab], X[pool], 0)
    assert typical_vs_atypical(pad(X[lab]), y[lab], pad(X[pool]), 0, max_dims=6) == pytest.approx(full, abs=0.05)
    assert typical_vs_atypical(pad(X[lab]), y[lab], pad(X[pool]), 0, max_dims=6) > 0.1
