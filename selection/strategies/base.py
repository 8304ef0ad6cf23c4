"""Strategy base class, the result type and the registry.

Every strategy has the same call shape (DESIGN.md, "selection/ API")::

    make_strategy("margin", {}).select(
        X_pool, probs_pool,
        X_labeled=..., probs_labeled=..., y_labeled=...,
        batch_size=b, random_state=seed, context=None,
    ) -> Selection(indices, scores, info)

``indices`` are unique positions into the pool arrays (``0 <= i < n_pool``), returned as a
host ``int64`` array; the caller maps them back to its items.  The pool holds only
unlabeled items, so a selection never contains a labeled one.

Copies: every strategy but ``random`` runs on one row per distinct embedding, leaving out
pool rows identical to a pool row with a lower index (:mod:`.guards`), so no batch spends two
picks on the same embedding.

Cold start: when nothing is labeled yet, or ``probs_pool`` is ``None`` (no model yet), the
batch is a diversity seed over the pool embeddings (``cold_start`` parameter: k-means++
by default, k-center greedy, TypiClust, or random).  When some classes have not been seen yet
(fewer distinct labels than ``probs_pool.shape[1]``), part of the batch is spent on the seed,
placed away from the labeled points (k-center greedy from the labeled set, or TypiClust's
uncovered clusters), to find the missing classes, and the rest on the strategy.  How much:
``unseen_rule="good_turing"`` (default) spends the Good–Turing estimate of the missing class
mass, at most ``unseen_share``; ``"fixed"`` spends ``unseen_share`` (rounded up) every round.
``unseen_share=0`` runs the strategy alone, exactly as its paper defines it.  ``random`` ignores both;
strategies that never look at probabilities (``needs_probs = False``, e.g. ``coreset``) only
use the seed when nothing is labeled, since they explore by construction.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar

import numpy as np

from ..backend import get_array_module, to_numpy
from ..params import Param, validate_params
from .checks import _check_output, check_inputs
from .guards import distinct_rows, unseen_share

COLD_START = Param(
    "cold_start",
    "str",
    "kmeans++",
    "How to pick a batch before the model can say anything (no labels yet), and the share "
    "used to look for unseen classes: k-means++ seeding, k-center greedy, TypiClust (typical points "
    "of uncovered clusters, Hacohen et al. 2022) or uniform random.",
    choices=("kmeans++", "kcenter", "typiclust", "random"),
)

UNSEEN_SHARE = Param(
    "unseen_share",
    "float",
    0.5,
    "Most of each batch spent on diversity seeding (far from the labeled points) while some "
    "classes have no label yet; 0 runs the strategy alone, as its paper defines it.",
    min=0.0,
    max=1.0,
)

UNSEEN_RULE = Param(
    "unseen_rule",
    "str",
    "good_turing",
    "How much of the batch to spend on unseen classes while some have no label: 'good_turing' "
    "spends the estimated missing class mass (classes seen once / labels), at most unseen_share; "
    "'fixed' always spends unseen_share.",
    choices=("good_turing", "fixed"),
)


@dataclass
class Selection:
    """What a strategy returns.

    indices : (b,) int64, unique positions into the pool, in selection order.
    scores  : (b,) float64 or None, the strategy's score of each chosen item (larger = wanted more).
    info    : diagnostics (timings, iteration counts) for round metrics; JSON-able values only.
    """

    indices: np.ndarray
    scores: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class SelectionContext:
    """Optional extras the app passes; a bare library call needs none of them.

    X_all      : (N, d) every item's embedding (for strategies that precompute over the whole
                 set once, e.g. Cluster-Margin's clustering, cached per ``embedding_version``).
    pool_index : (n_pool,) int64, the row of ``X_all`` for each pool row (None with ``X_all``
                 given: the pool is ``X_all`` itself).
    cache_dir  : a folder where a strategy may keep per-embedding-version caches.
    embedding_version : a string that changes whenever the embeddings change.
    l2         : the head's L2 strength (lambda in FIRAL's Fisher matrices).
    device     : "cpu" | "cuda" | "auto" for strategies that run array code.
    progress   : callback(fraction in [0, 1], message) for long work.
    ranks      : MPI ranks for strategies that can split over them (``firal``: > 1 runs
                 ``mpirun -n ranks python -m selection firal-mpi``, selection.firal.mpi).
    ranks_timeout : seconds before that MPI job is stopped (a failed round, not a hung one).
    """

    X_all: Any = None
    pool_index: Any = None
    cache_dir: str | None = None
    embedding_version: str | None = None
    l2: float | None = None
    device: str = "cpu"
    progress: Callable[[float, str], None] | None = None
    ranks: int = 1
    ranks_timeout: float = 3600.0


_REGISTRY: dict[str, type["Strategy"]] = {}


def register(cls: type["Strategy"]) -> type["Strategy"]:
    """Class decorator adding a strategy to the registry under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not name or not isinstance(name, str):
        raise TypeError(f"{cls.__name__} has no string 'name'")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"strategy name {name!r} is registered twice")
    _REGISTRY[name] = cls
    return cls


def _load_builtin() -> None:
    # Importing the package registers the built-in strategies.
    import importlib  # noqa: PLC0415

    importlib.import_module("selection.strategies")


def strategy_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_strategy(name: str) -> type["Strategy"]:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; available: {sorted(_REGISTRY)}") from None


def make_strategy(name: str, params: dict[str, Any] | None = None) -> "Strategy":
    return get_strategy(name)(**(params or {}))


def strategy_schema(name: str) -> list[dict[str, Any]]:
    """JSON-able parameter schema of a strategy (for generated forms)."""
    return [p.as_dict() for p in get_strategy(name).schema()]


class Strategy:
    """Base class.  Subclasses set ``name``, ``description``, ``params`` and implement ``_select``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    needs_probs: ClassVar[bool] = True  # False for strategies that never look at probabilities
    uses_cold_start: ClassVar[bool] = True
    distinct: ClassVar[bool] = True  # never two picks on identical embeddings (guards.distinct_rows)
    unseen_share_default: ClassVar[float | None] = None  # a strategy's own default for unseen_share

    def __init__(self, **params: Any) -> None:
        self.params_ = validate_params(self.schema(), params)

    @classmethod
    def schema(cls) -> tuple[Param, ...]:
        if not cls.uses_cold_start:
            return cls.params
        if not cls.needs_probs:
            return cls.params + (COLD_START,)
        share = UNSEEN_SHARE
        if cls.unseen_share_default is not None:
            share = replace(UNSEEN_SHARE, default=cls.unseen_share_default)
        return cls.params + (COLD_START, share, UNSEEN_RULE)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params_.items())
        return f"{type(self).__name__}({args})"

    # ----------------------------------------------------------------- public call
    def select(
        self,
        X_pool: Any,
        probs_pool: Any = None,
        *,
        X_labeled: Any = None,
        probs_labeled: Any = None,
        y_labeled: Any = None,
        batch_size: int,
        random_state: int | np.random.Generator | None = None,
        context: SelectionContext | None = None,
    ) -> Selection:
        t0 = time.perf_counter()
        X_pool, probs_pool, X_labeled, probs_labeled, y_labeled = check_inputs(
            X_pool, probs_pool, X_labeled, probs_labeled, y_labeled, batch_size,
            needs_probs=False,  # cold start may legitimately come without probabilities
        )
        context = context or SelectionContext()
        rng = np.random.default_rng(random_state)
        keep = distinct_rows(X_pool) if self.distinct else None
        if keep is not None and len(keep) >= batch_size:
            # the strategy sees one row per distinct embedding (the lowest-index copy)
            sub = self._run(X_pool[keep], None if probs_pool is None else probs_pool[keep], X_labeled, probs_labeled,
                            y_labeled, batch_size, rng, _subset_context(context, keep))
            sub.indices = keep[sub.indices]
            sub.info["copies_left_out"] = int(X_pool.shape[0] - len(keep))
            sel = sub
        else:
            sel = self._run(X_pool, probs_pool, X_labeled, probs_labeled, y_labeled, batch_size, rng, context)
        _check_output(sel.indices, len(X_pool), batch_size, self.name)
        sel.info.setdefault("seconds", time.perf_counter() - t0)
        return sel

    def _run(self, X_pool, probs_pool, X_labeled, probs_labeled, y_labeled, batch_size, rng, context) -> Selection:
        n_classes = None if probs_pool is None else probs_pool.shape[1]
        n_seen = 0 if y_labeled is None else len(np.unique(to_numpy(y_labeled)))
        n_lab = 0 if y_labeled is None else len(y_labeled)

        cold_all = self.uses_cold_start and (n_lab == 0 or (probs_pool is None and self.needs_probs))
        if probs_pool is None and self.needs_probs and not self.uses_cold_start:
            raise ValueError(f"strategy {self.name!r} needs probs_pool (class probabilities of the pool)")
        if cold_all:
            idx = self._seed(X_pool, None, batch_size, rng)
            sel = Selection(idx, None, {"cold_start": "all"})
        elif (self.uses_cold_start and self.needs_probs and n_classes is not None and n_seen < n_classes
              and (n_seed := self._n_explore(y_labeled, n_classes, batch_size)) > 0):
            seed_idx = self._seed(X_pool, X_labeled, n_seed, rng)
            # exact copies of a seed row are left out too: the strategy part does not see the
            # seed, and a copy of an item already queued (duplicate images) is worth nothing
            keep = ~_copies_of(X_pool, seed_idx)
            if int(keep.sum()) < batch_size - n_seed:  # (almost) nothing but copies: allow them
                keep = np.ones(len(X_pool), dtype=bool)
                keep[seed_idx] = False
            rest = np.flatnonzero(keep)
            sel_rest = self._select(
                X_pool[rest], probs_pool[rest], X_labeled=X_labeled, probs_labeled=probs_labeled,
                y_labeled=y_labeled, batch_size=batch_size - n_seed, rng=rng,
                context=_subset_context(context, rest),
            ) if batch_size > n_seed else Selection(np.empty(0, np.int64))
            idx = np.concatenate([seed_idx, rest[to_numpy(sel_rest.indices)]])
            scores = None
            if sel_rest.scores is not None:
                scores = np.concatenate([np.full(n_seed, np.nan), to_numpy(sel_rest.scores)])
            sel = Selection(idx, scores, {**sel_rest.info, "cold_start": "partial", "n_seed": n_seed})
        else:
            sel = self._select(
                X_pool, probs_pool, X_labeled=X_labeled, probs_labeled=probs_labeled,
                y_labeled=y_labeled, batch_size=batch_size, rng=rng, context=context,
            )
        sel.indices = np.asarray(to_numpy(sel.indices), dtype=np.int64)
        if sel.scores is not None:
            sel.scores = np.asarray(to_numpy(sel.scores), dtype=np.float64)
        return sel

    def _n_explore(self, y_labeled, n_classes: int, batch_size: int) -> int:
        """Picks spent on unseen classes this round (guards.unseen_share; rounded, at most the batch)."""
        p = self.params_
        share = unseen_share(p["unseen_rule"], p["unseen_share"], y_labeled, n_classes)
        if share <= 0:
            return 0
        if p["unseen_rule"] == "fixed":  # the earlier rule: at least one pick while a class is missing
            return min(batch_size, max(1, math.ceil(share * batch_size - 1e-9)))
        return min(batch_size, int(math.floor(share * batch_size + 0.5)))

    # ----------------------------------------------------------------- hooks
    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng,
                context) -> Selection:
        raise NotImplementedError

    def _seed(self, X_pool, X_labeled, k: int, rng: np.random.Generator) -> np.ndarray:
        """Diversity seed of ``k`` pool rows (cold start); see the module docstring."""
        from ..seeding import kcenter_greedy, kmeans_pp  # noqa: PLC0415

        how = self.params_.get("cold_start", "kmeans++")
        if how == "typiclust":
            from ..typiclust import typiclust_select  # noqa: PLC0415

            return typiclust_select(X_pool, k, X_labeled, rng)[0]
        if how == "random":
            return rng.choice(len(X_pool), size=k, replace=False)
        if how == "kcenter" or (X_labeled is not None and len(X_labeled) > 0):
            return kcenter_greedy(X_pool, k, X_labeled=X_labeled, rng=rng)
        return kmeans_pp(X_pool, k, rng=rng)


def _copies_of(X: Any, rows: np.ndarray) -> np.ndarray:
    """(n,) host bool: rows of ``X`` byte-for-byte equal to one of ``X[rows]`` (``rows`` included).

    One matrix-vector product gives every row a fingerprint; only rows whose fingerprint is
    within rounding of a chosen row's are compared exactly, so the cost is O(n d).
    """
    xp = get_array_module(X)
    n = X.shape[0]
    out = np.zeros(n, dtype=bool)
    out[rows] = True
    if len(rows) == 0 or n == len(rows):
        return out
    r = xp.asarray(np.random.default_rng(12345).normal(size=X.shape[1]))
    step = 1 << 15  # float64 copies of row chunks only (a 1M x 768 float32 pool stays as it is)
    f = np.concatenate([to_numpy(xp.asarray(X[s:s + step], dtype=xp.float64) @ r) for s in range(0, n, step)])
    fs = np.sort(f[rows])
    pos = np.clip(np.searchsorted(fs, f), 1, len(fs) - 1) if len(fs) > 1 else np.zeros(n, dtype=np.int64)
    near = np.minimum(np.abs(f - fs[pos]), np.abs(f - fs[np.maximum(pos - 1, 0)]))
    cand = np.flatnonzero((near <= 1e-9 * (np.abs(f) + 1.0)) & ~out)
    if len(cand):
        order = np.argsort(f[rows], kind="stable")
        S = to_numpy(X[xp.asarray(np.asarray(rows)[order])])
        Xc = to_numpy(X[xp.asarray(cand)])
        for k, i in enumerate(cand):  # few: only fingerprint collisions
            j = np.searchsorted(fs, f[i])
            lo, hi = max(0, j - 2), min(len(fs), j + 2)
            out[i] = bool((S[lo:hi] == Xc[k]).all(axis=1).any())
    return out


def _subset_context(ctx: SelectionContext, rows: np.ndarray) -> SelectionContext:
    if ctx.pool_index is None:
        # X_all without pool_index means the pool is X_all itself, row for row
        return SelectionContext(**{**ctx.__dict__, "pool_index": None if ctx.X_all is None else rows})
    return SelectionContext(**{**ctx.__dict__, "pool_index": np.asarray(to_numpy(ctx.pool_index))[rows]})


# --------------------------------------------------------------------- validation
