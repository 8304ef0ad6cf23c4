"""Built-in strategies; importing this package registers them (each module uses ``@register``).

The public API (``get_strategy``, ``make_strategy``, ``strategy_schema``, ...) is re-exported by
``selection`` itself; it lives in ``base.py``.
"""
from __future__ import annotations

from . import badge, cluster_margin, coreset, firal, random_, stochastic, uncertainty

__all__ = ["badge", "cluster_margin", "coreset", "firal", "random_", "stochastic", "uncertainty"]
