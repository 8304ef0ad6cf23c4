"""Average-linkage (UPGMA) hierarchical clustering, exact and at scale, for Cluster-Margin.

Cluster-Margin (Citovsky et al., NeurIPS 2021, Sec. 3) clusters the pool once with
average-linkage HAC under Euclidean distance and cuts the tree at distance eps.  The
average-linkage distance of two clusters is the mean Euclidean distance over all pairs of
their points; eps is a threshold on that quantity.

Exact path (n <= ``exact_max_n``): fastcluster's ``linkage(method="average")`` on the
points, cut with SciPy's ``fcluster``.  It needs the condensed distance matrix, about
8 n^2 bytes measured here (n = 20k: 3.2 GB, 47 s on this 2-core machine), so it stops
being usable somewhere around 30-40k points.

Scalable path (n > ``exact_max_n``), memory O(n d + K^2):

1. Coarsen the points into K cells (default 4096) with a two-level k-means ("k-means
   tree"): sqrt(K) top-level centres by Lloyd's algorithm on a subsample, then within each
   top-level group a number of cells proportional to its size, again by Lloyd on a
   subsample, and one assignment pass.  Each point costs O(d (sqrt K + K / sqrt K)) instead
   of O(d K) for a flat assignment (1M x 64: about 8 GMAC instead of 260).  Cell means and
   mean squared deviations s_k are then computed exactly from the assignment.
2. Estimate the average-linkage distance of every pair of cells A, B.  The mean *squared*
   distance over their point pairs is exact from the cell moments:

       E|a - b|^2 = |mu_A - mu_B|^2 + s_A + s_B                                  (1)

   The mean Euclidean distance is E|a - b| <= sqrt(E|a - b|^2) (Jensen); the gap is the
   spread of |a - b| across pairs.  We use the second-order (delta-method) expansion

       E|a - b| ~ sqrt(m2) * (1 - Var|a - b|^2 / (8 m2^2)),   m2 = (1),
       Var|a - b|^2 ~ (2 (s_A + s_B)^2 + 4 |mu_A - mu_B|^2 (s_A + s_B)) / d_eff,
       so  E|a - b| ~ sqrt(m2) * (1 - t (2 - t) / (4 d_eff)),  t = (s_A + s_B) / m2,

   which is exact to that order for isotropic Gaussian cells in d_eff dimensions; d_eff =
   tr(S)^2 / tr(S^2) of the pooled within-cell covariance S (the participation ratio).  For
   well-separated cells the correction vanishes and the distance is |mu_A - mu_B|; a point
   is a cell with s = 0, where (1) is the exact pairwise distance.  So the cell distance is
   the same quantity eps thresholds on the exact path, and with one point per cell the
   scalable path *is* the exact one.  (The centroid distance |mu_A - mu_B| alone would
   ignore the spread and merge everything at smaller heights than exact HAC does.)
3. Run size-weighted average linkage over the cells: the Lance-Williams update
   D(A u B, C) = (n_A D(A, C) + n_B D(B, C)) / (n_A + n_B) with n the *point* counts, which
   keeps D equal to the mean over point pairs.  Implemented with the nearest-neighbour
   chain algorithm (average linkage is reducible) on a dense K x K matrix: O(K^2) time and
   memory, a NumPy row operation per step.
4. Cut the cell dendrogram at eps (or at a cluster count) and give each point its cell's
   cluster.

What the approximation cannot do: split a cell.  Clusters smaller than a cell (about n / K
points) are out of reach: a cut by count asking for more than K clusters returns the K cells
(``info["resolution_capped"]``), and a small eps returns cells rather than splitting them.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

_ASSIGN_CHUNK = 8192


def _validate_cut(eps: float | None, n_clusters: int | None, n: int) -> None:
    if (eps is None) == (n_clusters is None):
        raise ValueError("give exactly one of eps (a distance) or n_clusters (a count) to cut the tree")
    if eps is not None and not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps={eps!r} must be a finite distance > 0")
    if n_clusters is not None and not (1 <= n_clusters <= n):
        raise ValueError(f"n_clusters={n_clusters!r} must be in [1, {n}]")


# --------------------------------------------------------------------- exact path
def hac_exact(X: np.ndarray, *, eps: float | None = None, n_clusters: int | None = None) -> np.ndarray:
    """Exact average-linkage HAC (Euclidean) of ``X`` (n, d), cut at ``eps`` or into ``n_clusters``.

    Returns (n,) int64 cluster labels in ``[0, n_found)``.
    """
    import fastcluster  # noqa: PLC0415
    from scipy.cluster.hierarchy import fcluster  # noqa: PLC0415

    n = X.shape[0]
    _validate_cut(eps, n_clusters, n)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    Z = fastcluster.linkage(np.asarray(X, dtype=np.float64), method="average", metric="euclidean")
    if eps is not None:
        lab = fcluster(Z, t=eps, criterion="distance")
    else:
        lab = fcluster(Z, t=n_clusters, criterion="maxclust")
    return _compact(lab)


def _compact(lab: np.ndarray) -> np.ndarray:
    return np.unique(lab, return_inverse=True)[1].astype(np.int64)


# --------------------------------------------------------------------- coarsening
def _assign(X: np.ndarray, C: np.ndarray, chunk: int = _ASSIGN_CHUNK) -> np.ndarray:
    """Nearest centre of each row (squared Euclidean), in row chunks: (n,) int64."""
    cc = (C * C).sum(axis=1)
    out = np.empty(X.shape[0], dtype=np.int64)
    for s in range(0, X.shape[0], chunk):
        # |x|^2 is the same for every centre, so argmin of |c|^2 - 2 x.c suffices
        out[s:s + chunk] = (cc - 2.0 * (X[s:s + chunk] @ C.T)).argmin(axis=1)
    return out


def _lloyd(X: np.ndarray, k: int, rng: np.random.Generator, iters: int = 8) -> np.ndarray:
    """k centres by Lloyd's algorithm from k random rows of ``X`` (density-proportional cells)."""
    k = min(k, X.shape[0])
    C = X[rng.choice(X.shape[0], size=k, replace=False)].astype(np.float64)
    for _ in range(iters):
        lab = _assign(X, C.astype(X.dtype))
        counts = np.bincount(lab, minlength=k)
        sums = np.zeros_like(C)
        _sum_rows(X, lab, sums)
        nonempty = counts > 0
        C[nonempty] = sums[nonempty] / counts[nonempty, None]
        # an empty cell restarts at a random point (it is dropped later if it stays empty)
        if (~nonempty).any():
            C[~nonempty] = X[rng.choice(X.shape[0], size=int((~nonempty).sum()))]
    return C


def _sum_rows(X: np.ndarray, lab: np.ndarray, out: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """out[k] += sum of the rows of X with label k, in float64 (sparse indicator products, in row chunks)."""
    from scipy.sparse import csr_matrix  # noqa: PLC0415

    K = out.shape[0]
    for s in range(0, X.shape[0], chunk):
        lb = lab[s:s + chunk]
        M = csr_matrix((np.ones(len(lb)), (lb, np.arange(len(lb)))), shape=(K, len(lb)))
        out += M @ X[s:s + chunk].astype(np.float64)
    return out


def kmeans_coarsen(X: np.ndarray, n_cells: int, rng: np.random.Generator, *, sample_per_cell: int = 40) -> np.ndarray:
    """Two-level k-means coarsening of ``X`` (n, d) into about ``n_cells`` cells; (n,) int64 cell ids.

    See the module docstring, step 1.  Cell ids are compact (no empty cells).
    """
    n = X.shape[0]
    if n_cells >= n:
        return np.arange(n, dtype=np.int64)
    k1 = max(1, int(round(math.sqrt(n_cells))))
    sub = X[rng.choice(n, size=min(n, sample_per_cell * k1), replace=False)]
    top = _assign(X, _lloyd(sub, k1, rng).astype(X.dtype))
    order = np.argsort(top, kind="stable")
    bounds = np.searchsorted(top[order], np.arange(k1 + 1))
    sizes = np.diff(bounds)
    # cells per group proportional to its size, at least one for a non-empty group
    alloc = np.where(sizes > 0, np.maximum(1, np.round(n_cells * sizes / n)), 0).astype(np.int64)
    labels = np.empty(n, dtype=np.int64)
    offset = 0
    for g in range(k1):
        rows = order[bounds[g]:bounds[g + 1]]
        if len(rows) == 0:
            continue
        Xg = X[rows]
        kg = int(min(alloc[g], len(rows)))
        if kg == 1:
            labels[rows] = offset
        else:
            sub = Xg if len(rows) <= sample_per_cell * kg else Xg[rng.choice(len(rows), size=sample_per_cell * kg,
                                                                            replace=False)]
            labels[rows] = offset + _assign(Xg, _lloyd(sub, kg, rng).astype(X.dtype))
        offset += kg
    return _compact(labels)


def cell_moments(X: np.ndarray, cells: np.ndarray, chunk: int = 65536):
    """Per-cell counts (K,), exact means (K, d) float64, mean squared deviations s (K,), and
    d_eff = tr(S)^2 / tr(S^2) of the pooled within-cell covariance S.  One pass in row chunks."""
    from scipy.sparse import csr_matrix  # noqa: PLC0415

    K = int(cells.max()) + 1
    d = X.shape[1]
    counts = np.bincount(cells, minlength=K).astype(np.float64)
    sums = np.zeros((K, d))
    sumsq = np.zeros(K)
    XtX = np.zeros((d, d))
    for s in range(0, X.shape[0], chunk):
        Xc = X[s:s + chunk].astype(np.float64)
        lb = cells[s:s + chunk]
        sums += csr_matrix((np.ones(len(lb)), (lb, np.arange(len(lb)))), shape=(K, len(lb))) @ Xc
        sumsq += np.bincount(lb, weights=np.einsum("ij,ij->i", Xc, Xc), minlength=K)
        XtX += Xc.T @ Xc
    mu = sums / counts[:, None]
    # float64 moments: the cancellation in E|x|^2 - |mu|^2 is far below the spreads of interest
    spread = np.maximum(sumsq / counts - (mu * mu).sum(axis=1), 0.0)
    S = XtX - (mu * counts[:, None]).T @ mu
    trS = float(np.trace(S))
    d_eff = float(trS**2 / (S * S).sum()) if trS > 0 else float(d)
    return counts, mu, spread, d_eff


def cell_distances(mu: np.ndarray, s: np.ndarray, d_eff: float | None) -> np.ndarray:
    """Estimated mean Euclidean distance between the points of every pair of cells (K, K); see step 2.

    With t = (s_A + s_B) / m2 the variance term of the expansion simplifies to
    Var / (8 m2^2) = t (2 - t) / (4 d_eff), at most 1 / (4 d_eff).  ``d_eff=None`` gives the
    uncorrected sqrt(m2) (an upper bound by Jensen).  Computed in place: about 2 K x K buffers.
    """
    sq = (mu * mu).sum(axis=1)
    D = mu @ mu.T
    D *= -2.0
    D += sq[:, None]
    D += sq[None, :]
    np.maximum(D, 0.0, out=D)  # |mu_A - mu_B|^2
    T = np.add.outer(s, s)  # s_A + s_B
    D += T  # m2
    if d_eff is not None:
        np.divide(T, D, out=T, where=D > 0)  # t in [0, 1] (0 where m2 = 0: identical points)
        T[D <= 0] = 0.0
        T *= T - 2.0  # -t (2 - t)
        T *= 1.0 / (4.0 * d_eff)
        T += 1.0
        np.sqrt(D, out=D)
        D *= T
    else:
        np.sqrt(D, out=D)
    return D


# --------------------------------------------------------------------- weighted UPGMA
def upgma_nn_chain(D: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Size-weighted average linkage over K items with dissimilarities ``D`` (K, K) (overwritten).

    Nearest-neighbour chain algorithm (average linkage is reducible, so the merges it finds
    are those of the greedy algorithm).  Returns merges as arrays ``(a, b, height)`` of
    length K - 1 in execution order; ``a``/``b`` are the rows representing the two clusters
    (a merged cluster lives on in row ``a``; row ``b`` is retired).
    """
    K = D.shape[0]
    np.fill_diagonal(D, np.inf)
    size = np.asarray(weights, dtype=np.float64).copy()
    A = np.empty(K - 1, dtype=np.int64)
    B = np.empty(K - 1, dtype=np.int64)
    H = np.empty(K - 1, dtype=np.float64)
    active = np.ones(K, dtype=bool)
    chain: list[int] = []
    m = 0
    next_start = 0
    while m < K - 1:
        if not chain:
            while not active[next_start]:
                next_start += 1
            chain.append(next_start)
        a = chain[-1]
        row = D[a]
        b = int(row.argmin())
        if len(chain) > 1 and row[chain[-2]] <= row[b]:
            b = chain[-2]  # prefer the previous chain element on ties, so the chain terminates
        if len(chain) > 1 and b == chain[-2]:
            chain.pop()
            chain.pop()
            A[m], B[m], H[m] = a, b, row[b]
            m += 1
            # Lance-Williams for average linkage, weighted by point counts; the merged cluster keeps row a
            new = (size[a] * D[a] + size[b] * D[b]) / (size[a] + size[b])
            new[a] = np.inf
            D[a] = new
            D[:, a] = new
            D[b] = np.inf
            D[:, b] = np.inf
            size[a] += size[b]
            active[b] = False
        else:
            chain.append(b)
    return A, B, H


def cut_merges(K: int, A, B, H, *, eps: float | None = None, n_clusters: int | None = None) -> np.ndarray:
    """Flat clusters of K items from a merge list: merges with height <= eps, or the K - n_clusters lowest.

    Returns (K,) int64 compact labels.  Average linkage is monotone, so the merges at or below
    a height form a union-closed set and connected components of those merge edges are the
    clusters of the cut (ties are taken in execution order, which respects the tree).
    """
    from scipy.sparse import coo_matrix  # noqa: PLC0415
    from scipy.sparse.csgraph import connected_components  # noqa: PLC0415

    if eps is not None:
        keep = H <= eps
    else:
        assert n_clusters is not None  # callers validate the cut (_validate_cut)
        order = np.lexsort((np.arange(len(H)), H))
        keep = np.zeros(len(H), dtype=bool)
        keep[order[:K - n_clusters]] = True
    g = coo_matrix((np.ones(int(keep.sum())), (A[keep], B[keep])), shape=(K, K))
    _, lab = connected_components(g, directed=False)
    return _compact(lab)


# --------------------------------------------------------------------- front door
def average_linkage_clusters(
    X: Any,
    *,
    eps: float | None = None,
    n_clusters: int | None = None,
    exact_max_n: int = 10_000,
    n_coarse: int = 4096,
    spread_correction: bool = True,
    random_state: int | None = 0,
    progress=None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Average-linkage clusters of ``X`` (n, d): exact below ``exact_max_n`` rows, coarsened above.

    Returns (labels (n,) int64, info dict with the path, cluster count and timings).
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, d); got shape {X.shape}")
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    n = X.shape[0]
    _validate_cut(eps, n_clusters, n)
    from .seeding import single_threaded_blas  # noqa: PLC0415

    with single_threaded_blas():
        return _clusters(X, eps, n_clusters, exact_max_n, n_coarse, spread_correction, random_state, progress)


def _clusters(X, eps, n_clusters, exact_max_n, n_coarse, spread_correction, random_state, progress):
    n = X.shape[0]
    t0 = time.perf_counter()
    info: dict[str, Any] = {"n": n}
    if n <= exact_max_n:
        lab = hac_exact(X, eps=eps, n_clusters=n_clusters)
        info.update(path="exact")
    else:
        rng = np.random.default_rng(random_state)
        if progress:
            progress(0.0, f"coarsening {n} points into ~{n_coarse} cells")
        cells = kmeans_coarsen(X, n_coarse, rng)
        t1 = time.perf_counter()
        counts, mu, s, d_eff = cell_moments(X, cells)
        K = len(counts)
        if progress:
            progress(0.5, f"average linkage over {K} cells")
        if n_clusters is not None and n_clusters > K:
            # finer than the cells can resolve: the cells themselves are the finest clustering on offer
            info.update(n_clusters_requested=n_clusters, resolution_capped=True)
            n_clusters = K
        D = cell_distances(mu, s, d_eff if spread_correction else None)
        A, B, H = upgma_nn_chain(D, counts)
        del D
        lab = cut_merges(K, A, B, H, eps=eps, n_clusters=n_clusters)[cells]
        info.update(path="coarse", n_cells=K, d_eff=round(d_eff, 2), coarsen_seconds=round(t1 - t0, 3),
                    cell_points_median=float(np.median(counts)))
    info.update(n_clusters=int(lab.max()) + 1, seconds=round(time.perf_counter() - t0, 3))
    return lab, info
