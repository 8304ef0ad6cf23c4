"""``auto``: the strategy a new project gets (``selection.DEFAULT_STRATEGY``).

Budget-aware, after Hacohen, Dekel & Weinshall ("Active Learning on a Budget: Opposite
Strategies Suit High and Low Budgets", ICML 2022): with few labels per class a model's
uncertainty is not yet worth trusting and typical, representative points help most
(TypiClust); with more labels uncertainty-based selection wins.  Which regime a label count
belongs to depends on the data, so below the switch a test on the labeled set decides, after
SelectAL (Hacohen & Weinshall, NeurIPS 2023; :mod:`selection.regime`).  With r = labels /
declared classes:

- no model yet: ``typiclust``;
- r < ``test_from_per_class`` (4): ``typiclust`` (too few labels to test anything);
- ``test_from_per_class`` <= r < ``switch_per_class`` (10), ``regime="test"`` (default): the
  head is fitted on the more typical and on the less typical half of the labeled set and scored
  on held-out labels; ``typiclust`` if the typical half scores higher, else ``otherwise``
  (default BADGE: uncertainty and diversity, the strategy that was never below random on the
  low-signal 26-class mixture of docs/strategies.md); ``regime="labels"``: ``typiclust``;
- r >= ``switch_per_class``: a share s of the batch by ``typiclust`` and the rest by ``then``
  (default margin, with its own defaults: the Good–Turing exploration share while some class has
  no label, copies left out), s = clip(1/2 + (switch_per_class - r) / blend_per_class, 0, 1):
  a linear hand-over of width ``blend_per_class`` around ``switch_per_class`` (0, the default:
  a hard switch at it).
- ``cap_typiclust`` (off by default): TypiClust picks only up to ``switch_per_class`` labels per
  class, the rest of a larger batch by ``otherwise``.

The rule and its numbers were chosen with the evaluation suite on scikit-learn digits, UCI
pendigits and synthetic Gaussian mixtures (docs/strategies.md has the tables and commands).
Each round's ``Selection.info["sub_strategy"]`` names what chose the batch ("typiclust",
"badge", "margin" or "typiclust+margin"), and ``info["typical_minus_atypical"]`` holds the
test's statistic when it ran.
"""
from __future__ import annotations

import numpy as np

from ..params import Param
from .base import Selection, Strategy, make_strategy, register

LATER = ("margin", "firal", "badge", "cluster_margin", "power", "coreset")


@register
class Auto(Strategy):
    name = "auto"
    description = ("TypiClust while labels per class are few and a test on the labeled set says typical points "
                   "teach more (else BADGE), then margin (budget-aware; Hacohen et al. 2022, 2023).")
    params = (
        Param("switch_per_class", "float", 10.0, "Labels per class at which half of the batch is TypiClust "
              "and half the 'then' strategy.", min=0.0, max=1e6),
        Param("blend_per_class", "float", 0.0, "Width (in labels per class) of the hand-over from TypiClust "
              "to the 'then' strategy; 0 switches at once.", min=0.0, max=1e6),
        Param("then", "str", "margin", "Strategy for many labels per class (its default parameters).",
              choices=LATER),
        Param("regime", "str", "test", "'labels': TypiClust below switch_per_class whatever the data; 'test': "
              "below it, TypiClust only while a test on the labeled set says typical points teach the head "
              "more than unusual ones (after SelectAL, Hacohen & Weinshall 2023), else the 'otherwise' strategy.",
              choices=("labels", "test")),
        Param("otherwise", "str", "badge", "With regime='test': the strategy for a round where the test says "
              "unusual points teach as much as typical ones (below switch_per_class).", choices=LATER),
        Param("cap_typiclust", "bool", False, "TypiClust picks at most up to switch_per_class labels per class; "
              "the rest of a batch that goes past it is chosen by 'otherwise'."),
        Param("test_from_per_class", "float", 4.0, "With regime='test': labels per class from which the test "
              "decides; below it (too few labels to compare two halves) TypiClust.", min=0.0, max=1e6),
    )
    needs_probs = False  # the sub-strategies check what they need
    uses_cold_start = False  # typiclust is the cold start
    distinct = False  # the sub-strategies leave copies out themselves

    def typiclust_share(self, n_labeled: int, n_classes: int | None, has_model: bool) -> float:
        """Share of the batch for TypiClust with ``n_labeled`` labels over ``n_classes`` classes."""
        if not has_model or not n_classes:
            return 1.0
        r = n_labeled / n_classes
        tau, w = self.params_["switch_per_class"], self.params_["blend_per_class"]
        if w <= 0:
            return 1.0 if r < tau else 0.0
        return float(np.clip(0.5 + (tau - r) / w, 0.0, 1.0))

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        n_lab = 0 if y_labeled is None else len(y_labeled)
        c = None if probs_pool is None else probs_pool.shape[1]
        share = self.typiclust_share(n_lab, c, probs_pool is not None and n_lab > 0)
        extra: dict = {}
        then = self.params_["then"]
        from ..regime import MAX_LABELED, typical_vs_atypical  # noqa: PLC0415

        # the test sees at most MAX_LABELED labels: with more classes than that allows at
        # test_from_per_class each, it has too few per class, as below the threshold
        if (share > 0 and probs_pool is not None and n_lab > 0 and self.params_["regime"] == "test"
                and min(n_lab, MAX_LABELED) >= self.params_["test_from_per_class"] * probs_pool.shape[1]):

            l2 = 1.0 if context is None or context.l2 is None else float(context.l2)
            stat = typical_vs_atypical(X_labeled, y_labeled, X_pool, rng, l2=l2)
            extra = {"typical_minus_atypical": round(stat, 4)}
            if stat <= 0:
                share, then = 0.0, self.params_["otherwise"]
        n_typ = int(np.floor(share * batch_size + 0.5))
        if self.params_["cap_typiclust"] and c and probs_pool is not None and n_lab > 0:
            room = max(0, int(np.ceil(self.params_["switch_per_class"] * c)) - n_lab)
            if n_typ > room:
                n_typ, then = room, self.params_["otherwise"]
        kw = {"X_labeled": X_labeled, "probs_labeled": probs_labeled, "y_labeled": y_labeled,
              "random_state": rng, "context": context}
        if n_typ >= batch_size:
            sel = make_strategy("typiclust", {}).select(X_pool, None, batch_size=batch_size, **kw)
            return Selection(sel.indices, sel.scores, {**sel.info, **extra, "sub_strategy": "typiclust"})
        if n_typ <= 0:
            sel = make_strategy(then, {}).select(X_pool, probs_pool, batch_size=batch_size, **kw)
            return Selection(sel.indices, sel.scores, {**sel.info, **extra, "sub_strategy": then})
        typ = make_strategy("typiclust", {}).select(X_pool, None, batch_size=n_typ, **kw)
        rest = np.setdiff1d(np.arange(X_pool.shape[0]), typ.indices)
        from .base import _subset_context  # noqa: PLC0415

        sub = make_strategy(then, {}).select(
            X_pool[rest], probs_pool[rest], batch_size=batch_size - n_typ,
            **{**kw, "context": _subset_context(context, rest) if context is not None else None})
        idx = np.concatenate([typ.indices, rest[sub.indices]])
        scores = None if sub.scores is None else np.concatenate([np.full(n_typ, np.nan), sub.scores])
        return Selection(idx, scores, {**sub.info, "sub_strategy": f"typiclust+{then}", "n_typiclust": n_typ})
