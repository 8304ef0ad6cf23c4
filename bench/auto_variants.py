"""Variants of ``auto`` that were measured for issue 13 and not kept (docs/strategies.md, "Variants tried").

``python bench/auto_variants.py [simulate options]`` registers them, then runs
``python -m selection simulate`` with the given options, e.g.::

    python bench/auto_variants.py --data pendigits --head sklearn --seeds 5 --jobs 2 \
        --strategies "random,auto,x_auto:then=x_divmargin;beta=2;pick=top;weighted=False"

- ``x_divmargin``: Zhdanov 2019 ("Diverse mini-batch Active Learning"): the top beta*b by margin,
  (margin-weighted) k-means into b clusters, one point per cluster (nearest the centre, or the
  most uncertain: ``pick=top``).  Diversity inside the uncertain batch, as in Cluster-Margin.
- ``x_powmargin``: power sampling of the margin score, p ~ score^beta (Kirsch et al. 2023).
- ``x_typmargin``: TypiClust proposes beta*b typical points of the least covered clusters and
  margin chooses b of them (a TypiClust + uncertainty hybrid).
- ``x_densmargin``: information density (Settles & Craven 2008): margin x typicality^gamma.
- ``x_probcover``: ProbCover (Yehuda et al. 2022): greedy max coverage of delta-balls, delta
  the largest radius whose balls stay within one k-means cluster (K = classes) for 95% of points.
- ``x_maxherding``: MaxHerding (Bae et al. 2024), greedy generalized coverage with a Gaussian kernel.
- ``x_auto``: ``low`` (TypiClust) below ``switch`` labels per class, then ``then``, given as
  ``name;key=value;key=value`` so that the scratch strategies above can follow it.
"""
import os
import sys
sys.path.insert(0, os.getcwd())
import numpy as np
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors
from selection.params import Param
from selection.typiclust import typiclust_select
from selection.strategies.base import Selection, Strategy, register, make_strategy
from selection.scores import margin_scores, top_b
from selection.strategies.stochastic import gumbel_top_k


def diverse_margin(X, probs, b, rng, beta, pick="nearest", weighted=True):
    """Zhdanov 2019: top beta*b by margin, (weighted) k-means into b clusters, one per cluster."""
    s = np.asarray(margin_scores(probs), dtype=np.float64)
    m = min(len(s), max(b, int(round(beta * b))))
    cand = top_b(s, m)
    if m == b:
        return cand
    Xc = np.asarray(X[cand], dtype=np.float64)
    km = KMeans(n_clusters=b, n_init=1, max_iter=100, random_state=int(rng.integers(2**31 - 1)))
    lab = km.fit_predict(Xc, sample_weight=s[cand] if weighted else None)
    out = []
    for k in range(b):
        mem = np.flatnonzero(lab == k)
        if len(mem) == 0:
            continue
        if pick == "nearest":
            dd = ((Xc[mem] - km.cluster_centers_[k]) ** 2).sum(1)
            out.append(cand[mem[dd.argmin()]])
        else:
            out.append(cand[mem[s[cand[mem]].argmax()]])
    out = list(dict.fromkeys(out))
    if len(out) < b:
        rest = [i for i in cand if i not in set(out)]
        out += rest[: b - len(out)]
    return np.asarray(out[:b], dtype=np.int64)


# MaxHerding (Bae, Haupt, Kuo, Lee, Hinton & Hu, "Generalized Coverage for More Robust Low-Budget
# Active Learning", ECCV 2024): greedy maximisation of the generalized coverage
#     C(S) = (1/|R|) sum_{x in R} max_{s in S} k(x, s),  k(x, s) = exp(-||x - s||^2 / (2 sigma^2)),
# over labeled + picks (a facility-location function: monotone submodular, greedy within 1 - 1/e).
# Ours: candidates a uniform subsample of <= 3000 pool rows (>= 4b), R a uniform subsample of
# <= 3000 rows of pool + labeled; gains updated only on the columns whose coverage a pick raised.
# Bandwidth (ours; the paper tunes sigma per feature space): the median over R of the distance to
# the q-th nearest other point of R, q = |R| / (|L| + b): one pick covers about the share of the
# data one label stands for at this budget (TypiClust's |L| + b clusters).
MAX_CAND = 3000
MAX_REF = 3000


def _sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(len(A), len(B)) squared Euclidean distances, float32, clipped at 0."""
    a = (A * A).sum(1)
    b = (B * B).sum(1)
    return np.maximum(a[:, None] + b[None, :] - 2.0 * (A @ B.T), 0.0).astype(np.float32)


def bandwidth(R: np.ndarray, n_points: int) -> float:
    """sigma for ``n_points`` picks over the reference rows ``R`` (module docstring)."""
    m = R.shape[0]
    if m < 2:
        return 1.0
    q = int(np.clip(round(m / max(n_points, 1)), 1, m - 1))
    D = _sqdist(R, R)
    np.fill_diagonal(D, np.inf)
    dq = np.sqrt(np.partition(D, q - 1, axis=1)[:, q - 1])
    s = float(np.median(dq))
    return s if s > 0 else float(np.sqrt(D[np.isfinite(D)].mean()) or 1.0)


def maxherding_select(X_pool, k, X_labeled=None, rng=None, *,
                      max_cand: int = MAX_CAND, max_ref: int = MAX_REF,
                      sigma=None):
    """Choose ``k`` rows of ``X_pool`` (n, d) by greedy generalized coverage (module docstring).

    Returns ((k,) int64 unique pool indices in pick order, (k,) float64 coverage gain of each pick).
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    Xp = np.asarray(X_pool, dtype=np.float32)
    n = Xp.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, {n}] (the pool size)")
    XL = (np.empty((0, Xp.shape[1]), np.float32) if X_labeled is None or len(X_labeled) == 0
          else np.asarray(X_labeled, dtype=np.float32))
    m = XL.shape[0]
    n_cand = min(n, max(max_cand, 4 * k))
    cand = np.arange(n) if n_cand == n else np.sort(rng.choice(n, size=n_cand, replace=False))
    ref_rows = rng.choice(n + m, size=min(n + m, max_ref), replace=False)
    X_all_ref = np.concatenate([XL, Xp])[ref_rows] if m else Xp[ref_rows]
    s = bandwidth(X_all_ref, m + k) if sigma is None else float(sigma)
    g = np.float32(-0.5 / (s * s))
    K = np.exp(_sqdist(Xp[cand], X_all_ref) * g)  # (C, R)
    cur = np.zeros(K.shape[1], dtype=np.float32)
    for s0 in range(0, m, 1024):
        cur = np.maximum(cur, np.exp(_sqdist(XL[s0:s0 + 1024], X_all_ref) * g).max(axis=0))
    gain = np.maximum(K - cur, 0.0).sum(axis=1, dtype=np.float64)
    chosen = np.empty(k, dtype=np.int64)
    gains = np.empty(k)
    for t in range(k):
        j = int(gain.argmax())
        chosen[t], gains[t] = cand[j], gain[j] / K.shape[1]
        new = np.maximum(cur, K[j])
        aff = np.flatnonzero(new > cur)
        if aff.size:
            Ka = K[:, aff]
            gain -= (np.maximum(Ka - cur[aff], 0.0) - np.maximum(Ka - new[aff], 0.0)).sum(axis=1, dtype=np.float64)
            cur = new
        gain[j] = -np.inf
    return chosen, gains


@register
class XDivMargin(Strategy):
    name = "x_divmargin"
    description = "issue 13 variant (bench/auto_variants.py)"
    params = (Param("beta", "float", 10.0, "", min=1, max=100),
              Param("pick", "str", "nearest", "", choices=("nearest", "top")),
              Param("weighted", "bool", True, ""))

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        p = self.params_
        idx = diverse_margin(X_pool, probs_pool, batch_size, rng, p["beta"], p["pick"], p["weighted"])
        return Selection(idx, None, {})


@register
class XPowMargin(Strategy):
    name = "x_powmargin"
    description = "issue 13 variant (bench/auto_variants.py)"
    params = (Param("beta", "float", 4.0, "", min=0, max=1000),)

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        s = np.asarray(margin_scores(probs_pool), dtype=np.float64)
        with np.errstate(divide="ignore"):
            lw = self.params_["beta"] * np.log(np.maximum(s, 0))
        return Selection(gumbel_top_k(lw, batch_size, rng), None, {})


@register
class XAuto(Strategy):
    """``auto`` with a free 'then' spec 'name;k=v;k=v'."""
    name = "x_auto"
    description = "issue 13 variant (bench/auto_variants.py)"
    params = (Param("switch", "float", 10.0, "", min=0, max=1e6),
              Param("then", "str", "margin", ""),
              Param("low", "str", "typiclust", ""))
    needs_probs = False
    uses_cold_start = False
    distinct = False

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        n_lab = 0 if y_labeled is None else len(y_labeled)
        kw = {"X_labeled": X_labeled, "probs_labeled": probs_labeled, "y_labeled": y_labeled,
              "random_state": rng, "context": context}
        use_typ = probs_pool is None or n_lab == 0 or n_lab / probs_pool.shape[1] < self.params_["switch"]
        if use_typ:
            low = self.params_["low"]
            sel = make_strategy(low, {}).select(X_pool, probs_pool, batch_size=batch_size, **kw)
            return Selection(sel.indices, sel.scores, {"sub_strategy": low})
        parts = self.params_["then"].split(";")
        params = dict(kv.split("=") for kv in parts[1:])
        sel = make_strategy(parts[0], params).select(X_pool, probs_pool, batch_size=batch_size, **kw)
        return Selection(sel.indices, sel.scores, {"sub_strategy": parts[0]})


@register
class XTypMargin(Strategy):
    """TypiClust proposes beta*b typical points of the least covered clusters; margin picks b of them."""
    name = "x_typmargin"
    description = "issue 13 variant (bench/auto_variants.py)"
    params = (Param("beta", "float", 2.0, "", min=1, max=100),)
    needs_probs = False
    uses_cold_start = False

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        m = min(X_pool.shape[0], max(batch_size, int(round(self.params_["beta"] * batch_size))))
        if probs_pool is None or m == batch_size:
            return Selection(typiclust_select(X_pool, batch_size, X_labeled, rng)[0], None, {})
        cand, _ = typiclust_select(X_pool, m, X_labeled, rng)
        s = np.asarray(margin_scores(probs_pool[cand]), dtype=np.float64)
        return Selection(cand[top_b(s, batch_size)], None, {})


@register
class XDensMargin(Strategy):
    """Information density (Settles & Craven 2008): margin score x typicality^gamma."""
    name = "x_densmargin"
    description = "issue 13 variant (bench/auto_variants.py)"
    params = (Param("gamma", "float", 1.0, "", min=0, max=100),)

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        X = np.asarray(X_pool, dtype=np.float64)
        k = min(20, len(X) - 1)
        dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
        typ = 1.0 / (dist[:, 1:].mean(1) + 1e-12)
        typ /= typ.max()
        s = np.asarray(margin_scores(probs_pool), dtype=np.float64) * typ ** self.params_["gamma"]
        return Selection(top_b(s, batch_size), None, {})


def probcover_delta(X, n_classes, rng, purity=0.95):
    """ProbCover's ball radius (Yehuda et al. 2022): the largest delta whose balls are pure
    (one k-means cluster, K = classes) for at least ``purity`` of the points."""
    lab = KMeans(n_clusters=n_classes, n_init=1, random_state=int(rng.integers(2**31 - 1))).fit_predict(X)
    sq = (X * X).sum(1)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0))
    other = np.where(lab[:, None] != lab[None, :], D, np.inf).min(1)  # nearest point of another cluster
    cands = np.quantile(D[np.triu_indices(len(X), 1)][:200000], np.linspace(0.001, 0.2, 60))
    best = cands[0]
    for dl in cands:
        if (other > dl).mean() >= purity:
            best = dl
    return best, D


@register
class XProbCover(Strategy):
    """ProbCover (Yehuda, Dekel, Hacohen & Weinshall 2022): greedy max coverage of delta-balls."""
    name = "x_probcover"
    description = "issue 13 variant (bench/auto_variants.py)"
    params = ()
    needs_probs = False
    uses_cold_start = False

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        Xp = np.asarray(X_pool, dtype=np.float64)
        XL = np.empty((0, Xp.shape[1])) if X_labeled is None else np.asarray(X_labeled, dtype=np.float64)
        X = np.concatenate([XL, Xp])
        m = len(XL)
        c = 10 if probs_pool is None else probs_pool.shape[1]
        delta, D = probcover_delta(X, c, rng)
        A = D < delta
        covered = A[:m].any(0) if m else np.zeros(len(X), dtype=bool)
        out = []
        for _ in range(batch_size):
            gain = (A[m:] & ~covered[None, :]).sum(1).astype(float)
            gain[out] = -1
            if gain.max() <= 0:
                gain = rng.random(len(Xp))
                gain[out] = -1
            i = int(gain.argmax())
            out.append(i)
            covered |= A[m + i]
        return Selection(np.asarray(out, dtype=np.int64), None, {})


@register
class XMaxHerding(Strategy):
    """MaxHerding (Bae et al. 2024): greedy generalized coverage, Gaussian kernel (selection/maxherding.py)."""
    name = "x_maxherding"
    description = "issue 13 variant (bench/auto_variants.py)"
    params = (Param("sigma_scale", "float", 1.0, "", min=0, max=100),)
    needs_probs = False
    uses_cold_start = False

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        sig = None
        if self.params_["sigma_scale"] != 1.0:
            Xp = np.asarray(X_pool, dtype=np.float32)
            R = Xp[rng.choice(len(Xp), min(len(Xp), MAX_REF), replace=False)]
            m = 0 if X_labeled is None else len(X_labeled)
            sig = bandwidth(R, m + batch_size) * self.params_["sigma_scale"]
        idx, g = maxherding_select(X_pool, batch_size, X_labeled, rng, sigma=sig)
        return Selection(idx, g, {})


if __name__ == "__main__":
    from selection.simulate import main
    sys.exit(main(sys.argv[1:]))
