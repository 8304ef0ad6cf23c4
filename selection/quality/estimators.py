"""Accuracy estimates with honest intervals: the plain audit, prediction-powered inference, active testing.

Notation: a model with predictions yhat and a *confidence* f(x) in [0, 1] (its estimated
probability of being right: the max class probability, possibly recalibrated by
:func:`fit_confidence_calibration`).  Y_i = 1[yhat(x_i) = y_i] for the n labeled audit items.
Every function returns an :class:`AccuracyEstimate` with a two-sided (1 - alpha) interval.

- :func:`audit_accuracy`: the mean of Y over audit items drawn uniformly; Wilson score
  interval (Wilson 1927), which keeps its coverage near 0 and 1 where the Wald interval does not.
- :func:`ppi_accuracy`: prediction-powered inference for a mean (Angelopoulos, Bates, Fannjiang,
  Jordan & Zrnic, Science 2023, the "mean estimation" example), with the power tuning of PPI++
  (Angelopoulos, Duchi & Zrnic 2023, eq. (3)/(6)): theta = lambda * mean_pool(f) +
  mean_audit(Y - lambda * f), variance lambda^2 Var(f)/N + Var(Y - lambda f)/n.  Unbiased for
  every fixed lambda; the tuned lambda = Cov(Y, f) / ((1 + n/N) Var(f)) minimises the variance.
- :func:`difference_accuracy`: the same correction when each audit item was drawn from a finite
  pool whose exact mean confidence is known (the app: each round's pool under the model that
  served it).  The pool term is then exact, only the audit sample varies.
- :func:`active_testing_accuracy`: audit items drawn *with replacement* with known probabilities
  q (Kossen, Farquhar, Gal & Rainforth, ICML 2021, "Active Testing": sample where the loss is
  likely, importance-weight to stay unbiased).  The Hansen-Hurwitz estimator (1943) with f as a
  control variate: z_j = mean_pool(f) + (Y_j - f_j) / (N q_j); E[z_j] = accuracy on the pool
  exactly, and the z_j are i.i.d., so the interval is mean(z) +- z_{alpha/2} sd(z) / sqrt(n).
  :func:`active_testing_proposal` gives q proportional to sqrt(f (1 - f)) (the standard
  deviation of Y - f when f is calibrated, the variance-optimal proposal) mixed with uniform, so
  no weight exceeds 1 / floor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class AccuracyEstimate:
    """An accuracy estimate, its (1 - alpha) interval, and what it rests on."""

    estimator: str
    value: float
    low: float
    high: float
    n_labels: int
    n_pool: int | None = None
    alpha: float = 0.05

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high

    def as_dict(self) -> dict:
        return {**asdict(self), "half_width": self.half_width}


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1)")
    return NormalDist().inv_cdf(1 - alpha / 2)


def _vec(a, name: str, n: int | None = None) -> np.ndarray:
    v = np.asarray(a, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {v.shape}")
    if n is not None and len(v) != n:
        raise ValueError(f"{name} has {len(v)} entries; expected {n}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} holds NaN or inf")
    return v


def _correct(correct) -> np.ndarray:
    y = _vec(correct, "correct")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("correct must hold only 0/1 (or booleans)")
    return y


def _conf(f, name: str, n: int | None = None) -> np.ndarray:
    v = _vec(f, name, n)
    if ((v < 0) | (v > 1)).any():
        raise ValueError(f"{name} must lie in [0, 1]")
    return v


def _clip(est: str, value: float, hw: float, n: int, n_pool: int | None, alpha: float) -> AccuracyEstimate:
    # An accuracy lies in [0, 1]; clipping the interval to it never lowers coverage.
    return AccuracyEstimate(est, float(value), float(max(0.0, value - hw)), float(min(1.0, value + hw)),
                            n, n_pool, alpha)


def audit_accuracy(correct, *, alpha: float = 0.05) -> AccuracyEstimate:
    """Plain audit: correct (n,) 0/1 for items drawn uniformly; Wilson score interval."""
    y = _correct(correct)
    n, z = len(y), _z(alpha)
    if n == 0:
        return AccuracyEstimate("audit", float("nan"), 0.0, 1.0, 0, None, alpha)
    p = y.mean()
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    hw = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return AccuracyEstimate("audit", float(p), float(centre - hw), float(centre + hw), n, None, alpha)


def ppi_accuracy(correct, conf_labeled, conf_pool, *, alpha: float = 0.05,
                 power_tuning: bool = True) -> AccuracyEstimate:
    """PPI++ accuracy (module docstring).

    correct : (n,) 0/1 on audit items drawn i.i.d. from the population; conf_labeled : (n,)
    the model's confidence on them; conf_pool : (N,) its confidence on unlabeled items from the
    same population.  ``power_tuning=False`` is the original PPI (lambda = 1).
    """
    y = _correct(correct)
    n = len(y)
    f = _conf(conf_labeled, "conf_labeled", n)
    fp = _conf(conf_pool, "conf_pool")
    N, z = len(fp), _z(alpha)
    if n < 2 or N < 2:
        raise ValueError(f"ppi_accuracy needs at least 2 audit labels and 2 pool items; got n={n}, N={N}")
    lam = 1.0
    if power_tuning:
        vf = np.var(np.concatenate([f, fp]), ddof=1)
        cov = np.cov(y, f, ddof=1)[0, 1] if n > 1 else 0.0
        lam = float(np.clip(cov / ((1 + n / N) * vf), 0.0, 1.0)) if vf > 0 else 0.0
    value = lam * fp.mean() + np.mean(y - lam * f)
    var = lam * lam * np.var(fp, ddof=1) / N + np.var(y - lam * f, ddof=1) / n
    return _clip("ppi", value, z * np.sqrt(var), n, N, alpha)


def difference_accuracy(correct, conf_labeled, pool_mean, *, alpha: float = 0.05,
                        small_sample: bool = True) -> AccuracyEstimate:
    """Model-assisted (difference) estimate when audit item i was drawn uniformly from a finite pool.

    correct, conf_labeled : (n,); pool_mean : (n,) the exact mean confidence over the pool item i
    was drawn from, under the model whose prediction it checks.  Each z_i = pool_mean_i +
    Y_i - f_i is unbiased for that model's accuracy on that pool, so mean(z) estimates the same
    average as :func:`audit_accuracy` on the same items (the prequential estimand), with variance
    Var(Y - f) / n instead of Var(Y) / n.

    ``small_sample``: the residuals Y - f are skewed (rare, large negative ones for confident
    mistakes), so with few labels a sample that missed them has both a high estimate and a small
    variance, and the plain CLT interval under-covers (about 91% at n = 50 on digits,
    docs/quality.md).  As Agresti & Coull (1998) add two successes and two failures to a binomial
    sample, the variance is computed with four pseudo-residuals added, two of a right answer
    (1 - m) and two of a wrong one (-m) at the mean pool confidence m; the estimate is unchanged.
    """
    y = _correct(correct)
    n = len(y)
    f = _conf(conf_labeled, "conf_labeled", n)
    m = _conf(pool_mean, "pool_mean", n)
    if n < 2:
        raise ValueError(f"difference_accuracy needs at least 2 audit labels; got {n}")
    r = y - f
    value = float(np.mean(m + r))
    if small_sample:
        mb = float(m.mean())
        r = np.concatenate([r, [1 - mb, 1 - mb, -mb, -mb]])
    return _clip("ppi", value, _z(alpha) * np.std(r, ddof=1) / np.sqrt(n), n, None, alpha)


def active_testing_proposal(conf_pool, *, floor: float = 0.2) -> np.ndarray:
    """q : (N,) sampling probabilities, (1 - floor) * sqrt(f(1-f)) / sum + floor / N.

    ``floor`` in (0, 1] is the uniform share; it bounds every importance weight 1/(N q) by
    1/floor, which keeps the CLT interval honest at small n.
    """
    f = _conf(conf_pool, "conf_pool")
    if not 0 < floor <= 1:
        raise ValueError(f"floor={floor!r} must be in (0, 1]")
    N = len(f)
    if N == 0:
        raise ValueError("conf_pool is empty")
    s = np.sqrt(f * (1 - f))
    q = np.full(N, 1.0 / N) if s.sum() == 0 else (1 - floor) * s / s.sum() + floor / N
    return q / q.sum()


def active_testing_accuracy(correct, conf_labeled, q_labeled, *, pool_mean: float, n_pool: int,
                            alpha: float = 0.05) -> AccuracyEstimate:
    """Hansen-Hurwitz estimate with a control variate (module docstring).

    correct, conf_labeled, q_labeled : (n,) for the n draws (with replacement; a repeated item
    counts once per draw); q_labeled are the probabilities the draws were made with (from a
    proposal over the N = ``n_pool`` items); pool_mean : mean confidence over the pool.  Pass
    conf_labeled = 0 and pool_mean = 0 for the plain importance-weighted estimate.
    """
    y = _correct(correct)
    n = len(y)
    f = _conf(conf_labeled, "conf_labeled", n)
    q = _vec(q_labeled, "q_labeled", n)
    if ((q <= 0) | (q > 1)).any():
        raise ValueError("q_labeled must lie in (0, 1]")
    if n < 2:
        raise ValueError(f"active_testing_accuracy needs at least 2 draws; got {n}")
    zi = pool_mean + (y - f) / (n_pool * q)
    return _clip("active_testing", zi.mean(), _z(alpha) * np.std(zi, ddof=1) / np.sqrt(n), n, n_pool, alpha)


def fit_confidence_calibration(conf, correct, *, max_iter: int = 100) -> tuple[float, float]:
    """Platt scaling of confidences: (a, b) with P(correct) = sigmoid(a * logit(f) + b).

    conf, correct : (n,) out-of-fold confidences and whether the out-of-fold prediction was right
    (labels the estimate does not otherwise use, so f stays fixed before the audit sample is
    drawn and every estimator above stays unbiased).  Newton's method on the 2-parameter
    logistic log-likelihood with a tiny ridge (1e-6) so separable data still converge.
    """
    from .correctness import fit_logistic  # noqa: PLC0415

    s = _logit(_conf(conf, "conf"))
    y = _correct(correct)
    if len(y) != len(s):
        raise ValueError("conf and correct differ in length")
    w = fit_logistic(s[:, None], y, max_iter=max_iter)
    return float(w[0]), float(w[1])


def apply_confidence_calibration(conf, ab: tuple[float, float]) -> np.ndarray:
    """sigmoid(a * logit(f) + b) for f : (N,)."""
    a, b = ab
    return 1 / (1 + np.exp(-(a * _logit(np.asarray(conf, dtype=np.float64)) + b)))


def _logit(f: np.ndarray) -> np.ndarray:
    f = np.clip(f, 1e-6, 1 - 1e-6)
    return np.log(f / (1 - f))


# ----------------------------------------------------------------- active statistical inference
#
# Zrnic & Candes (2024), "Active Statistical Inference" (ICML), Sec. 3 (the mean, eq. (3)-(4)), with
# the power tuning of PPI++ (Angelopoulos, Duchi & Zrnic 2023).  Every pool item i is audited
# independently with a probability pi_i fixed before the draw (Poisson sampling, xi_i ~ Bernoulli(pi_i));
# pi_i is proportional to how unsure the model is about being right there, so the labels go where the
# residual Y - f is likely large.  For a finite pool of N items with confidences f_i,
#
#     theta_hat = (1/N) [ lam * sum_pool f_i + sum_audited (Y_i - lam f_i) / pi_i ]
#
# is the Horvitz-Thompson (1952) estimator of sum (Y_i - lam f_i) plus the exact pool sum of lam f:
# unbiased for the pool accuracy (1/N) sum Y_i for every fixed lam and every f.  Its variance over
# the draw is (1/N^2) sum_pool (1 - pi_i) (Y_i - lam f_i)^2 / pi_i (independent Bernoullis), estimated
# without bias by the audited items weighted once more by 1/pi_i.  An item drawn with pi_i = 1 adds
# its own Y exactly and no variance.  Rounds (strata) are independent given the past: their
# estimates combine with weights fixed before their draws, and the variances add (martingale CLT,
# Zrnic & Candes Sec. 5).


def inclusion_probabilities(score, n_expected: float, *, floor: float = 0.2) -> np.ndarray:
    """pi : (N,) audit probabilities in (0, 1] with sum(pi) = min(n_expected, N), pi_i increasing in score_i.

    score : (N,) >= 0, the estimated spread of Y - f (``sqrt(f (1 - f))`` for a calibrated f, which
    minimises the variance above for a given budget).  ``floor`` in (0, 1] is the uniform share: the
    unscaled pi is ``(1 - floor) * score / mean(score) + floor``, so every pi_i >= floor * n / N and
    no weight 1/pi exceeds N / (floor n).  Probabilities that would pass 1 are set to 1 and the
    rest rescaled until the budget is met exactly ("water-filling").
    """
    s = _vec(score, "score")
    if (s < 0).any():
        raise ValueError("score must be >= 0")
    if not 0 < floor <= 1:
        raise ValueError(f"floor={floor!r} must be in (0, 1]")
    N = len(s)
    if N == 0:
        raise ValueError("score is empty")
    if not n_expected > 0:
        raise ValueError(f"n_expected={n_expected!r} must be > 0")
    if n_expected >= N:
        return np.ones(N)
    base = np.full(N, 1.0) if s.sum() == 0 else (1 - floor) * s / s.mean() + floor
    # With the k largest capped at 1, the rest scale by c_k = (n - k) / (sum of the rest); the answer
    # is the smallest k for which the largest uncapped value c_k * base stays <= 1 (O(N log N)).
    order = np.argsort(-base, kind="stable")
    bs = base[order]
    rest = np.cumsum(bs[::-1])[::-1]  # rest[k] = sum of bs[k:]
    k_all = np.arange(N)
    c_all = (n_expected - k_all) / rest
    k = int(np.flatnonzero(c_all * bs <= 1 + 1e-12)[0])
    pi = np.empty(N)
    pi[order] = np.r_[np.ones(k), np.minimum(c_all[k] * bs[k:], 1.0)]
    return pi


@dataclass(frozen=True)
class StratumEstimate:
    """One round's (stratum's) Horvitz-Thompson estimate of its pool accuracy and its variance."""

    value: float
    variance: float
    n_labels: int
    n_pool: int


def active_inference_stratum(correct, conf_labeled, pi_labeled, *, pool_conf_sum: float, n_pool: int,
                             pool_expected_spread: float | None = None) -> StratumEstimate:
    """The estimate above (lam = 1) for one pool of ``n_pool`` items (comment "active statistical inference").

    correct, conf_labeled, pi_labeled : (n,) for the audited items (those the Bernoulli draws chose;
    any number, including 0); pool_conf_sum : sum of f over the whole pool (audited items included).
    Value (1/N) [sum_pool f + sum_audited (Y - f) / pi]; variance (1/N^2) sum_audited (1 - pi) (Y - f)^2 / pi^2.
    (PPI++'s power tuning, lam estimated from the same few audit labels, cost coverage here: the
    confidence f is already calibrated, so lam = 1.)

    ``pool_expected_spread`` = sum_pool (1 - pi) f (1 - f) / pi, known before the draw, is the
    variance times N^2 *if f is calibrated*; when given, the variance reported is the larger of the
    two.  Why: the audit sample's variance estimate is unbiased but skewed -- a rare confident
    mistake (f near 1, pi small) carries a huge weight, and a sample that missed them reports too
    small a variance exactly when its estimate is too high.  With most of a small pool audited
    this made the interval cover 90% (digits, 200 labels of 539; docs/quality.md); the floor
    restores it at a small cost in width.
    """
    y = _correct(correct)
    n = len(y)
    f = _conf(conf_labeled, "conf_labeled", n)
    pi = _vec(pi_labeled, "pi_labeled", n)
    if ((pi <= 0) | (pi > 1)).any():
        raise ValueError("pi_labeled must lie in (0, 1]")
    if n_pool < max(n, 1):
        raise ValueError(f"n_pool={n_pool} is smaller than the {n} audited items")
    r = y - f
    value = (float(pool_conf_sum) + float(np.sum(r / pi))) / n_pool
    variance = float(np.sum((1 - pi) * r * r / pi**2)) / n_pool**2
    if pool_expected_spread is not None:
        variance = max(variance, float(pool_expected_spread) / n_pool**2)
    return StratumEstimate(float(value), variance, n, int(n_pool))


def combine_strata(strata, weights, *, alpha: float = 0.05, name: str = "active_inference") -> AccuracyEstimate:
    """sum_g w_g theta_g / sum_g w_g with variance sum_g w_g^2 V_g / (sum_g w_g)^2, as an interval.

    strata : list of :class:`StratumEstimate`; weights : (G,) > 0 fixed before each stratum's draw
    (the app: the round's expected number of audit items, sum of its pi).  The estimand is the same
    weighted mean of the strata's pool accuracies.
    """
    w = _vec(weights, "weights", len(strata))
    if len(strata) == 0 or (w <= 0).any():
        raise ValueError("combine_strata needs at least one stratum and positive weights")
    w = w / w.sum()
    value = float(sum(wi * s.value for wi, s in zip(w, strata, strict=True)))
    var = float(sum(wi * wi * s.variance for wi, s in zip(w, strata, strict=True)))
    n = sum(s.n_labels for s in strata)
    return _clip(name, value, _z(alpha) * np.sqrt(var), n, None, alpha)


def adaptive_audit_rate(audit_rate: float, *, target_half_width: float | None,
                        last_half_width: float | None, maintenance_rate: float = 0.1) -> float:
    """The audit rate for the next round: ``audit_rate`` while the interval is wider than the target, else less.

    audit_rate : the project's rate in [0, 1]; target_half_width : the half-width to reach (None or <= 0:
    adaptation off, always ``audit_rate``); last_half_width : the half-width of the last accuracy
    estimate (None before there is one: full rate); maintenance_rate : the rate once the interval is at
    or under the target, capped at ``audit_rate``.  The rate goes back up as soon as the interval is wider
    than the target again (new strata from newer models can widen it).

    The rate depends only on labels collected before the round, so every audit probability is still
    fixed before its draw and the Horvitz-Thompson strata stay unbiased; :func:`combine_strata`'s
    weights (each round's expected audit count) are then predictable too, the condition of the
    martingale CLT the combination rests on (Zrnic & Candes 2024, Sec. 5).
    """
    for name, v in (("audit_rate", audit_rate), ("maintenance_rate", maintenance_rate)):
        if not 0.0 <= float(v) <= 1.0 or not np.isfinite(v):
            raise ValueError(f"{name}={v!r} must be in [0, 1]")
    if target_half_width is None or not target_half_width > 0:
        return float(audit_rate)
    if last_half_width is None or not np.isfinite(last_half_width) or last_half_width > target_half_width:
        return float(audit_rate)
    return float(min(audit_rate, maintenance_rate))
