"""``auto``: the strategy a new project gets (``selection.DEFAULT_STRATEGY``).

Budget-aware, after Hacohen, Dekel & Weinshall ("Active Learning on a Budget: Opposite
Strategies Suit High and Low Budgets", ICML 2022): with few labels per class a model's
uncertainty is not yet worth trusting and typical, representative points help most
(TypiClust); with more labels uncertainty-based selection wins.  So:

- while the labels per class (labels / declared classes) are below ``switch_per_class``, or
  there is no model yet: ``typiclust``;
- from then on: ``then`` (default margin), with its own defaults, which include the
  Good–Turing exploration share while some class has no label and leave out copies.

The switch point and the later strategy were chosen from the evaluation suite on two data sets
(scikit-learn digits and UCI pendigits; docs/strategies.md has the tables and the commands).
Each round's ``Selection.info["sub_strategy"]`` names the strategy that chose the batch.
"""
from __future__ import annotations

from ..params import Param
from .base import Selection, Strategy, make_strategy, register

LATER = ("firal", "badge", "margin", "cluster_margin", "power", "coreset")


@register
class Auto(Strategy):
    name = "auto"
    description = ("TypiClust while labels per class are few, then margin (budget-aware; "
                   "Hacohen et al. 2022).")
    params = (
        Param("switch_per_class", "float", 10.0, "Use TypiClust while labels / classes is below this, "
              "then the 'then' strategy.", min=0.0, max=1e6),
        Param("then", "str", "margin", "Strategy once labels per class reach switch_per_class (its "
              "default parameters).", choices=LATER),
    )
    needs_probs = False  # the sub-strategy checks what it needs
    uses_cold_start = False  # typiclust is the cold start
    distinct = False  # the sub-strategy leaves copies out itself

    def choose(self, n_labeled: int, n_classes: int | None, has_model: bool) -> str:
        """The sub-strategy for a round with ``n_labeled`` labels over ``n_classes`` declared classes."""
        if not has_model or not n_classes or n_labeled < self.params_["switch_per_class"] * n_classes:
            return "typiclust"
        return self.params_["then"]

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        n_lab = 0 if y_labeled is None else len(y_labeled)
        c = None if probs_pool is None else probs_pool.shape[1]
        sub = self.choose(n_lab, c, probs_pool is not None and n_lab > 0)
        sel = make_strategy(sub, {}).select(
            X_pool, probs_pool, X_labeled=X_labeled, probs_labeled=probs_labeled, y_labeled=y_labeled,
            batch_size=batch_size, random_state=rng, context=context)
        return Selection(sel.indices, sel.scores, {**sel.info, "sub_strategy": sub})
