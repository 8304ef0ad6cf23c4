"""Cluster-Margin: round-robin order, the HAC paths against exact HAC, caching, and the strategy end to end."""
import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.metrics import adjusted_rand_score

from selection import SelectionContext, make_strategy
from selection.clustering import (
    average_linkage_clusters,
    cell_distances,
    cell_moments,
    hac_exact,
    kmeans_coarsen,
    upgma_nn_chain,
)
from selection.strategies import cluster_margin as cm


def _mixture(n, d, c, spread, seed):
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(c, d)) * spread
    y = rng.integers(c, size=n)
    return (C[y] + rng.normal(size=(n, d))).astype(np.float32), y


# ----------------------------------------------------------------------------- round robin
def test_round_robin_visits_groups_smallest_first_one_per_pass():
    # candidates: group 7 has 3, group 2 has 1, group 5 has 2
    groups = np.array([7, 5, 7, 2, 5, 7])
    seen_first_of_7 = set()
    for seed in range(40):
        order = cm.round_robin_order(groups, np.random.default_rng(seed))
        assert sorted(order) == list(range(6))
        # pass 0: sizes 1, 2, 3; pass 1: sizes 2, 3; pass 2: size 3
        np.testing.assert_array_equal(groups[order], [2, 5, 7, 5, 7, 7])
        seen_first_of_7.add(int(order[2]))
    assert seen_first_of_7 == {0, 2, 5}  # the member drawn from a group is random


def test_round_robin_breaks_equal_size_ties_at_random():
    groups = np.array([0, 1, 2, 3])
    firsts = {int(groups[cm.round_robin_order(groups, np.random.default_rng(s))[0]]) for s in range(40)}
    assert firsts == {0, 1, 2, 3}


def test_strategy_takes_lowest_margins_and_spreads_over_clusters():
    # three far-apart clusters of 10 points; margins make the candidates 6 from cluster 0, 3 from 1, 1 from 2
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(10, 2)) + off for off in ([0, 0], [100, 0], [0, 100])])
    gap = np.full(30, 0.9)
    gap[[0, 1, 2, 3, 4, 5]] = 0.01  # cluster 0
    gap[[10, 11, 12]] = 0.02  # cluster 1
    gap[[20]] = 0.03  # cluster 2
    p1 = (1 + gap) / 2
    P = np.stack([p1, 1 - p1], axis=1)
    s = make_strategy("cluster_margin", {"eps": 50.0, "km_ratio": 2.5})
    for seed in range(5):
        sel = s.select(X, P, X_labeled=X[:2], y_labeled=np.array([0, 1]), batch_size=4, random_state=seed)
        # k_m = 10 candidates; pass 0 takes cluster 2 (1 cand), then 1 (3), then 0 (6); pass 1 starts with 1
        assert sel.indices[0] == 20
        assert sel.indices[1] in {10, 11, 12} and sel.indices[3] in {10, 11, 12}
        assert sel.indices[2] in {0, 1, 2, 3, 4, 5}
        assert sel.info["k_m"] == 10 and sel.info["candidate_clusters"] == 3
        np.testing.assert_allclose(sel.scores, 1 - gap[sel.indices])


# ----------------------------------------------------------------------------- HAC paths
def test_exact_path_matches_scipy_average_linkage():
    X, _ = _mixture(300, 4, 5, 4.0, 1)
    ref = fcluster(linkage(X.astype(np.float64), method="average"), t=5, criterion="maxclust")
    assert adjusted_rand_score(ref, hac_exact(X, n_clusters=5)) == 1.0


@pytest.mark.parametrize("cut", [{"n_clusters": 12}, {"eps": 3.0}])
def test_scalable_path_with_one_point_per_cell_is_exact_hac(cut):
    X, _ = _mixture(250, 5, 8, 3.0, 2)
    exact = hac_exact(X, **cut)
    approx, info = average_linkage_clusters(X, **cut, exact_max_n=10, n_coarse=10_000)
    assert info["path"] == "coarse" and info["n_cells"] == 250
    assert adjusted_rand_score(exact, approx) == 1.0


def test_weighted_upgma_equals_hac_on_replicated_points():
    # a cell of w identical points (spread 0) must behave like w copies in plain average linkage
    rng = np.random.default_rng(3)
    P = rng.normal(size=(12, 3))
    w = rng.integers(1, 5, size=12)
    D = np.sqrt(((P[:, None] - P[None]) ** 2).sum(-1))
    _, _, H = upgma_nn_chain(D.copy(), w.astype(float))
    Z = linkage(np.repeat(P, w, axis=0), method="average")
    ref = np.sort(Z[:, 2])[-(12 - 1):]  # merges of distinct points; the rest are at height 0
    np.testing.assert_allclose(np.sort(H), ref, rtol=1e-10)


def test_cell_distance_estimates_mean_pairwise_distance():
    from scipy.spatial.distance import cdist
    X, _ = _mixture(3000, 16, 10, 3.0, 4)
    cells = kmeans_coarsen(X, 150, np.random.default_rng(0))
    counts, mu, s, d_eff = cell_moments(X, cells)
    D = cell_distances(mu, s, d_eff)
    D0 = cell_distances(mu, s, None)
    rng = np.random.default_rng(5)
    errs, errs0 = [], []
    for a, b in rng.integers(len(counts), size=(80, 2)):
        if a == b:
            continue
        exact = cdist(X[cells == a], X[cells == b]).mean()
        errs.append(D[a, b] / exact - 1)
        errs0.append(D0[a, b] / exact - 1)
    assert abs(np.mean(errs)) < 2e-3 and np.max(np.abs(errs)) < 0.05
    assert np.mean(errs0) > 0  # without the correction it is the Jensen upper bound
    assert abs(np.mean(errs)) < np.mean(errs0)


def test_scalable_hac_agrees_with_exact_hac():
    # reported ARIs (docs/bench-selection.md): the same eps cut on both paths
    X, _ = _mixture(3000, 16, 15, 3.0, 6)
    Z = linkage(X.astype(np.float64), method="average")
    eps = float(Z[-15, 2] + Z[-16, 2]) / 2  # a height with 15 clusters in the exact tree
    exact = hac_exact(X, eps=eps)
    approx, info = average_linkage_clusters(X, eps=eps, exact_max_n=100, n_coarse=300)
    ari = adjusted_rand_score(exact, approx)
    assert ari > 0.95, (ari, info)
    approx_k, _ = average_linkage_clusters(X, n_clusters=15, exact_max_n=100, n_coarse=300)
    assert adjusted_rand_score(hac_exact(X, n_clusters=15), approx_k) > 0.95


def test_bad_cut_arguments():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="exactly one"):
        average_linkage_clusters(X)
    with pytest.raises(ValueError, match="eps"):
        average_linkage_clusters(X, eps=-1.0)
    with pytest.raises(ValueError, match="km_ratio"):
        make_strategy("cluster_margin", {"km_ratio": 0.5})


# ----------------------------------------------------------------------------- caching
def test_clustering_is_computed_once_per_embedding_version_and_cached_on_disk(tmp_path, monkeypatch):
    X, _ = _mixture(400, 4, 6, 4.0, 7)
    P = np.random.default_rng(0).dirichlet(np.ones(3), size=400)
    cm._MEMO.clear()
    calls = []
    real = cm.average_linkage_clusters
    monkeypatch.setattr(cm, "average_linkage_clusters", lambda *a, **k: calls.append(1) or real(*a, **k))
    s = make_strategy("cluster_margin", {})
    labeled = np.arange(20)
    pool = np.arange(20, 400)

    def run(version, pool_rows):
        ctx = SelectionContext(X_all=X, pool_index=pool_rows, cache_dir=str(tmp_path), embedding_version=version)
        return s.select(X[pool_rows], P[pool_rows], X_labeled=X[labeled], y_labeled=labeled % 3, batch_size=10,
                        random_state=0, context=ctx)

    assert run("v1", pool).info["clustering"]["source"] == "computed"
    assert run("v1", pool[10:]).info["clustering"]["source"] == "memory"  # next round, smaller pool
    cm._MEMO.clear()
    assert run("v1", pool[20:]).info["clustering"]["source"] == "disk"
    assert len(calls) == 1
    assert run("v2", pool).info["clustering"]["source"] == "computed"  # new embeddings, new clustering
    assert len(calls) == 2 and len(list(tmp_path.glob("cluster_margin-*.npy"))) == 2


def test_pool_index_must_match():
    X, _ = _mixture(50, 3, 3, 4.0, 8)
    P = np.full((40, 3), 1 / 3)
    ctx = SelectionContext(X_all=X, pool_index=np.arange(39))
    with pytest.raises(ValueError, match="pool_index"):
        make_strategy("cluster_margin", {}).select(X[:40], P, X_labeled=X[40:43], y_labeled=np.arange(3),
                                                   batch_size=5, context=ctx)


def test_count_finer_than_the_cells_returns_the_cells():
    X, _ = _mixture(2000, 4, 5, 3.0, 9)
    lab, info = average_linkage_clusters(X, n_clusters=500, exact_max_n=100, n_coarse=100)
    assert info["resolution_capped"] and info["n_clusters_requested"] == 500
    assert info["n_clusters"] == info["n_cells"] == lab.max() + 1


def test_default_candidates_and_clusters_follow_pool_and_batch():
    from selection.strategies.cluster_margin import candidate_count, cluster_size

    assert candidate_count(None, 7700, 50) == 77  # a hundredth of the pool
    assert candidate_count(None, 10**6, 500) == 5000  # at most 10 b
    assert candidate_count(None, 1250, 50) == 63  # at least 1.25 b
    assert candidate_count(None, 40, 40) == 40 and candidate_count(10.0, 1250, 50) == 500
    assert cluster_size(None, 1258, 50) == 2.0 and cluster_size(None, 7694, 50) == 16.0
    assert cluster_size(None, 10**6, 50) == 32.0 and cluster_size(7.0, 10, 1) == 7.0
    # the audit share moves b a little: the cut (and the cached clustering) stays the same
    assert cluster_size(None, 7694, 45) == cluster_size(None, 7694, 50)
