"""Built-in strategies; importing this package registers them (each module uses ``@register``).

The public API (``get_strategy``, ``make_strategy``, ``strategy_schema``, ...) is re-exported by
``selection`` itself; it lives in ``base.py``.  ``auto`` comes last: it composes the others.
"""
from __future__ import annotations

from . import random_, uncertainty, stochastic, badge, coreset, cluster_margin, firal, typiclust, auto

__all__ = ["random_", "uncertainty", "stochastic", "badge", "coreset", "cluster_margin", "firal", "typiclust", "auto"]
