"""Agreement of Cluster-Margin's scalable HAC (k-means cells + weighted average linkage) with exact HAC.

For Gaussian mixtures small enough for exact average linkage (fastcluster), cut both trees at the
same eps (the exact tree's height that gives k clusters) and by the count k, and report the
adjusted Rand index, the number of clusters the scalable path finds at that eps, and the same
with the spread correction switched off (cell distance sqrt(|mu_a - mu_b|^2 + s_a + s_b)).
Also the relative error of the estimated mean distance between cell pairs (exact: all pairs).

    .venv/bin/python bench/cluster_ari.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.spatial.distance import cdist  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from selection.clustering import (  # noqa: E402
    average_linkage_clusters,
    cell_distances,
    cell_moments,
    hac_exact,
    kmeans_coarsen,
)
from selection.datasets import gaussian_mixture  # noqa: E402


def main() -> None:
    import fastcluster

    print("| n | d | classes | cells | k (exact) | eps | ARI eps-cut | k found | ARI eps-cut, no spread corr. | k found |"
          " ARI count-cut | ARI count-cut, no corr. |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, d, c, cells, k in [(4000, 2, 20, 400, 20), (4000, 8, 20, 400, 20), (4000, 16, 15, 400, 15),
                              (4000, 64, 20, 400, 20), (4000, 64, 20, 400, 50), (8000, 64, 50, 800, 50),
                              (8000, 32, 10, 400, 10)]:
        ds = gaussian_mixture(n, c, d, spread=3.0, seed=1)
        X = ds.X
        Z = fastcluster.linkage(X.astype(np.float64), method="average")
        eps = float(Z[-k, 2] + Z[-k - 1, 2]) / 2
        exact = hac_exact(X, eps=eps)
        row = [n, d, c, cells, int(exact.max()) + 1, f"{eps:.3f}"]
        for corr in (True, False):
            lab, info = average_linkage_clusters(X, eps=eps, exact_max_n=1, n_coarse=cells, spread_correction=corr)
            row += [f"{adjusted_rand_score(exact, lab):.3f}", info["n_clusters"]]
        exact_k = hac_exact(X, n_clusters=k)
        for corr in (True, False):
            lab, _ = average_linkage_clusters(X, n_clusters=k, exact_max_n=1, n_coarse=cells, spread_correction=corr)
            row.append(f"{adjusted_rand_score(exact_k, lab):.3f}")
        print("| " + " | ".join(map(str, row)) + " |", flush=True)

    print("\nRelative error of the estimated mean distance between two cells (600 random cell pairs):\n")
    print("| d | with spread correction: mean | max abs | without (sqrt of mean squared): mean | max abs |")
    print("|---|---|---|---|---|")
    for d in (2, 8, 64):
        ds = gaussian_mixture(4000, 20, d, spread=3.0, seed=1)
        X = ds.X.astype(np.float64)
        cells = kmeans_coarsen(X, 400, np.random.default_rng(0))
        counts, mu, s, d_eff = cell_moments(X, cells)
        members = [np.flatnonzero(cells == j) for j in range(len(counts))]
        pairs = np.random.default_rng(1).integers(len(counts), size=(600, 2))
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        exact = np.array([cdist(X[members[a]], X[members[b]]).mean() for a, b in pairs])
        row = [d]
        for de in (d_eff, None):
            est = cell_distances(mu, s, de)[pairs[:, 0], pairs[:, 1]]
            rel = est / exact - 1
            row += [f"{rel.mean():+.4f}", f"{np.abs(rel).max():.4f}"]
        print("| " + " | ".join(map(str, row)) + " |", flush=True)


if __name__ == "__main__":
    t = time.time()
    main()
    print(f"\n({time.time() - t:.0f} s)")
