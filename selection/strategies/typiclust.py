"""TypiClust as a strategy (Hacohen et al. 2022; :mod:`selection.typiclust`): the low-budget choice.

It needs no model, so it runs from the first round on and explores by construction (no
cold-start or unseen-class share).  ``scores`` are the typicality of the chosen points.
"""
from __future__ import annotations

from ..params import Param
from ..typiclust import KNN, MAX_CLUSTERS, MIN_CLUSTER_SIZE, typiclust_select
from .base import Selection, Strategy, register


@register
class TypiClust(Strategy):
    name = "typiclust"
    description = ("Most typical point of the largest uncovered k-means clusters (Hacohen et al. 2022); "
                   "strong while labels are few per class.")
    params = (
        Param("max_clusters", "int", MAX_CLUSTERS, "Cap on k-means clusters K = labeled + batch (the paper's 500).",
              min=1, max=100_000),
        Param("knn", "int", KNN, "Neighbours in the typicality estimate (the paper's 20).", min=1, max=1000),
        Param("min_cluster_size", "int", MIN_CLUSTER_SIZE, "Clusters smaller than this are used only when no "
              "larger one has unlabeled points (the paper's 5).", min=1, max=10_000),
    )
    needs_probs = False
    uses_cold_start = False  # needs no model: its first batch is TypiClust as well

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        p = self.params_
        idx, typ = typiclust_select(X_pool, batch_size, X_labeled, rng, max_clusters=p["max_clusters"],
                                    knn=p["knn"], min_cluster_size=p["min_cluster_size"])
        return Selection(idx, typ, {})
