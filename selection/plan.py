"""One round's batch, planned from arrays: the audit share and the strategy's picks, in serving order.

Pure (arrays in, a plan out: no database, no Django), so the plan is tested directly; the app's
round service loads the data, trains the head, calls :func:`plan_batch` and writes the plan.

The audit share (DESIGN.md, "audit"): ``audit_rate`` of the batch is drawn uniformly from the
pool, with stochastic rounding so the expected share is exact even for small batches, and the
audit items are put at random ranks among the strategy's picks, so a position gives nothing away.
Only the rest of the pool is offered to the strategy.

With ``audit_probabilities`` (n,) the audit draw is instead Poisson sampling: pool row i is an
audit item independently with probability pi_i (active statistical inference, Zrnic & Candes 2024;
``selection.quality.inclusion_probabilities`` makes pi proportional to how unsure the model is),
and each audit pick carries its pi so the accuracy estimate can weight it.  The number of audit
items is then random (its mean is sum(pi)); they take batch slots first, and a draw larger than
the batch makes the batch larger rather than drop any (dropping would change the probabilities).

Overlap: with ``overlap_k > 1``, each pick is independently, with probability ``overlap_rate``,
served to ``overlap_k`` different annotators (their agreement measures label quality).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .strategies.base import SelectionContext, Strategy


@dataclass(frozen=True)
class Pick:
    position: int  # row in the pool arrays
    score: float | None  # the strategy's score; None for an audit item (or a strategy without scores)
    is_audit: bool
    overlap_k: int = 1  # how many different annotators label it
    audit_probability: float | None = None  # an audit pick: the probability the draw chose it with


@dataclass
class BatchPlan:
    picks: list[Pick] = field(default_factory=list)  # in serving (rank) order
    n_audit: int = 0
    info: dict[str, Any] = field(default_factory=dict)  # the strategy's info, JSON-able values only


def audit_count(b: int, rate: float, rng: np.random.Generator) -> int:
    """How many of a batch of ``b`` are audit items: ``b * rate`` rounded stochastically (E = b * rate)."""
    exact = b * min(max(rate, 0.0), 1.0)
    n = math.floor(exact)
    if rng.random() < exact - n:
        n += 1
    return min(n, b)


def plan_batch(*, strategy: Strategy, X_pool: Any, probs_pool: Any, X_labeled: Any, probs_labeled: Any,
               y_labeled: Any, batch_size: int, audit_rate: float, rng: np.random.Generator,
               context: SelectionContext | None = None, overlap_rate: float = 0.0, overlap_k: int = 1,
               audit_probabilities: Any = None) -> BatchPlan:
    """The next batch over a pool of ``n`` rows: min(batch_size, n) picks, audit items among them.

    X_pool : (n, d) float32 or None (an empty pool); probs_pool : (n, c) or None (no model yet).
    X_labeled, probs_labeled, y_labeled : the labeled set, as ``Strategy.select`` takes it.
    ``context.pool_index`` (if given) holds the ``X_all`` row of every pool row; the strategy gets
    the rows of the part of the pool it is offered.  ``rng`` is consumed in a fixed order (audit
    count, audit draw, strategy, audit ranks, overlap), so a seed reproduces the plan.
    ``audit_probabilities`` : (n,) in [0, 1] or None (module docstring); when given, ``audit_rate``
    is not used (the caller scaled pi to it).
    """
    n_pool = 0 if X_pool is None else len(X_pool)
    b = min(int(batch_size), n_pool)
    if b <= 0:
        return BatchPlan()
    if audit_probabilities is not None:
        pi = np.asarray(audit_probabilities, dtype=np.float64)
        if pi.shape != (n_pool,) or not np.all((pi >= 0) & (pi <= 1)):
            raise ValueError(f"audit_probabilities must be ({n_pool},) in [0, 1]; got shape {pi.shape}")
        audit_pos = np.flatnonzero(rng.random(n_pool) < pi)
        n_audit = len(audit_pos)
        b = max(b, n_audit)
        prob_of = {int(p): float(pi[p]) for p in audit_pos}
    else:
        n_audit = audit_count(b, audit_rate, rng)
        audit_pos = rng.choice(n_pool, size=n_audit, replace=False) if n_audit else np.empty(0, np.int64)
        prob_of = {int(p): n_audit / n_pool for p in audit_pos}  # uniform: n_audit of the pool
    rest = np.setdiff1d(np.arange(n_pool), audit_pos)
    active: list[Pick] = []
    info: dict[str, Any] = {}
    if b - n_audit > 0:
        ctx = context or SelectionContext()
        if ctx.pool_index is not None:
            ctx = dataclasses.replace(ctx, pool_index=np.asarray(ctx.pool_index)[rest])
        sel = strategy.select(
            X_pool[rest],
            None if probs_pool is None else probs_pool[rest],
            X_labeled=X_labeled,
            probs_labeled=probs_labeled,
            y_labeled=y_labeled,
            batch_size=b - n_audit,
            random_state=rng,
            context=ctx,
        )
        scores = sel.scores if sel.scores is not None else np.full(len(sel.indices), np.nan)
        active = [Pick(int(rest[i]), _finite_or_none(s), False) for i, s in zip(sel.indices, scores)]
        info = {k: v for k, v in sel.info.items() if isinstance(v, (int, float, str, bool))}
    slots = {int(s) for s in rng.choice(b, size=n_audit, replace=False)} if n_audit else set()
    audit_iter, active_iter = iter(audit_pos), iter(active)
    picks = []
    for r in range(b):
        if r in slots:
            pos = int(next(audit_iter))
            picks.append(Pick(pos, None, True, audit_probability=prob_of[pos]))
        else:
            picks.append(next(active_iter))
    if overlap_k > 1:
        shared = rng.random(b) < float(overlap_rate)
        picks = [dataclasses.replace(p, overlap_k=int(overlap_k)) if s else p for p, s in zip(picks, shared)]
    return BatchPlan(picks=picks, n_audit=int(n_audit), info=info)


def _finite_or_none(s: Any) -> float | None:
    v = float(s)
    return v if math.isfinite(v) else None
