"""k-means++ and k-center greedy against dense references and their defining properties."""
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from selection.seeding import kcenter_greedy, kmeans_pp, min_sq_dist_to_set


def test_min_sq_dist_matches_cdist_across_chunks(monkeypatch):
    import selection.seeding as sd
    monkeypatch.setattr(sd, "_CHUNK_ELEMS", 50)  # several row chunks and column chunks
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(37, 4)), rng.normal(size=(120, 4))
    np.testing.assert_allclose(min_sq_dist_to_set(X, Y), (cdist(X, Y) ** 2).min(1), atol=1e-10)


def test_kcenter_greedy_matches_dense_reference():
    rng = np.random.default_rng(1)
    X, L = rng.normal(size=(200, 5)), rng.normal(size=(10, 5))
    got = kcenter_greedy(X, 15, X_labeled=L, rng=0)
    # dense reference: farthest point from (labeled + chosen), one at a time
    D = cdist(X, np.vstack([L])).min(1)
    ref = []
    for _ in range(15):
        j = int(np.argmax(D))
        ref.append(j)
        D = np.minimum(D, cdist(X, X[j:j + 1])[:, 0])
    np.testing.assert_array_equal(got, ref)


def test_kcenter_covers_well_separated_clusters():
    rng = np.random.default_rng(2)
    centers = rng.normal(scale=100, size=(8, 3))
    X = np.repeat(centers, 50, axis=0) + rng.normal(size=(400, 3))
    idx = kcenter_greedy(X, 8, rng=3)
    assert len(set(idx // 50)) == 8


def test_kmeans_pp_hits_every_far_cluster_and_is_reproducible():
    rng = np.random.default_rng(3)
    centers = rng.normal(scale=1000, size=(6, 4))
    X = np.repeat(centers, 100, axis=0) + rng.normal(size=(600, 4))
    a = kmeans_pp(X.astype(np.float32), 6, rng=7)
    assert len(set(a // 100)) == 6  # D^2 sampling almost surely leaves no far cluster empty
    np.testing.assert_array_equal(a, kmeans_pp(X.astype(np.float32), 6, rng=7))
    assert len(np.unique(kmeans_pp(X, 50, rng=1))) == 50


def test_kmeans_pp_second_pick_follows_d2_distribution():
    # three points at distances^2 1, 4 and 25 from the forced first centre: frequencies ~ 1:4:25
    X = np.array([[0.0], [1.0], [-2.0], [5.0]])
    rng = np.random.default_rng(0)
    counts = np.zeros(4)
    for _ in range(3000):
        counts[kmeans_pp(X, 2, rng=rng, first=0)[1]] += 1
    p = np.array([0, 1, 4, 25]) / 30
    # chi-square goodness of fit, 2 dof: 13.8 is the 0.999 quantile
    chi2 = (((counts[1:] - 3000 * p[1:]) ** 2) / (3000 * p[1:])).sum()
    assert counts[0] == 0 and chi2 < 13.8


def test_duplicates_do_not_break_seeding():
    X = np.zeros((10, 3))
    for f in (lambda: kmeans_pp(X, 10, rng=0), lambda: kcenter_greedy(X, 10, rng=0)):
        idx = f()
        assert sorted(idx) == list(range(10))


def test_bad_k_raises():
    with pytest.raises(ValueError, match="k=11"):
        kmeans_pp(np.zeros((10, 2)), 11)
    with pytest.raises(ValueError, match="k=0"):
        kcenter_greedy(np.zeros((10, 2)), 0)
