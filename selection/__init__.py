"""Loupe's selection library: batch active learning on arrays.

Arrays in, indices out; no Django, Celery or CuPy at import time.  See DESIGN.md.
"""
from __future__ import annotations

from .params import Param, validate_params
from . import strategies  # noqa: F401 - registers the built-in strategies
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

#: the strategy and parameters a new project gets (Project model default, admin add form, loupe_demo)
DEFAULT_STRATEGY = "auto"
DEFAULT_PARAMS: dict = {}

__all__ = [
    "DEFAULT_STRATEGY", "DEFAULT_PARAMS",
    "Param", "validate_params", "Selection", "SelectionContext", "Strategy",
    "get_strategy", "make_strategy", "register", "strategy_names", "strategy_schema",
]
