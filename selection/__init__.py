"""Loupe's selection library: batch active learning on arrays.

Arrays in, indices out; no Django, Celery or CuPy at import time.  See DESIGN.md.
"""
from __future__ import annotations

from .params import Param, validate_params
from .strategies.base import (
    Selection,
    SelectionContext,
    Strategy,
    get_strategy,
    make_strategy,
    register,
    strategy_names,
    strategy_schema,
)

__all__ = [
    "Param", "validate_params", "Selection", "SelectionContext", "Strategy",
    "get_strategy", "make_strategy", "register", "strategy_names", "strategy_schema",
]
