"""Agreement of Cluster-Margin's scalable HAC (k-means cells + weighted average linkage) with exact HAC.

Small data sets, where exact average linkage (fastcluster) runs, are clustered both ways:
cut at the same eps (midway between the exact tree's heights that give k and k+1 clusters)
and cut by the count k.  Reported: adjusted Rand index (ARI) against the exact partition,
the clusters found at that eps, the largest cluster's share (exact / scalable), and the ARI
with the spread correction switched off (cell distance sqrt(|mu_a - mu_b|^2 + s_a + s_b)).
Then the relative error of the estimated mean distance between cell pairs (exact: all pairs).

    .venv/bin/python bench/cluster_ari.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.spatial.distance import cdist
from sklearn.metrics import adjusted_rand_score

from selection.clustering import (
    average_linkage_clusters,
    cell_distances,
    cell_moments,
    hac_exact,
    kmeans_coarsen,
)
from selection.datasets import digits, gaussian_mixture


def main() -> None:
    import fastcluster  # noqa: PLC0415 - optional, only this benchmark needs it

    data = {
        "gmm separated (n=4000, d=64, 20 classes, spread 8)": gaussian_mixture(4000, 20, 64, spread=8.0, seed=1).X,
        "gmm separated (n=4000, d=16, 20 classes, spread 8)": gaussian_mixture(4000, 20, 16, spread=8.0, seed=1).X,
        "gmm overlapping (n=4000, d=64, 20 classes, spread 3)": gaussian_mixture(4000, 20, 64, spread=3.0, seed=1).X,
        "digits (n=1797, d=64)": digits().X,
    }
    print("| data | k | cells (points/cell) | ARI eps-cut | k found at eps | largest cluster exact / scalable |"
          " ARI count-cut | ARI eps-cut, no spread corr. |")
    print("|---|---|---|---|---|---|---|---|")
    for name, X in data.items():
        n = len(X)
        Z = fastcluster.linkage(X.astype(np.float64), method="average")
        for k in (20, 60) if n > 2000 else (10, 30, 90):
            eps = float(Z[-k, 2] + Z[-k - 1, 2]) / 2
            exact = hac_exact(X, eps=eps)
            exact_k = hac_exact(X, n_clusters=k)
            for per_cell in (10, 4):
                cells = n // per_cell
                lab, info = average_linkage_clusters(X, eps=eps, exact_max_n=1, n_coarse=cells)
                lab0, _ = average_linkage_clusters(X, eps=eps, exact_max_n=1, n_coarse=cells, spread_correction=False)
                labk, _ = average_linkage_clusters(X, n_clusters=k, exact_max_n=1, n_coarse=cells)
                share = f"{np.bincount(exact).max() / n:.2f} / {np.bincount(lab).max() / n:.2f}"
                print(f"| {name} | {int(exact.max()) + 1} | {info['n_cells']} ({per_cell}) | "
                      f"{adjusted_rand_score(exact, lab):.3f} | {info['n_clusters']} | {share} | "
                      f"{adjusted_rand_score(exact_k, labk):.3f} | {adjusted_rand_score(exact, lab0):.3f} |",
                      flush=True)

    print("\nRelative error of the estimated mean distance between two cells (gmm n=4000, 20 classes, spread 3,"
          " 400 cells, 600 random cell pairs):\n")
    print("| d | with spread correction: mean | max abs | without (sqrt of mean squared): mean | max abs |")
    print("|---|---|---|---|---|")
    for d in (2, 8, 64):
        X = gaussian_mixture(4000, 20, d, spread=3.0, seed=1).X.astype(np.float64)
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
