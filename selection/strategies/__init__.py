"""Built-in strategies; importing this package registers them.

Each module registers its classes with ``@register``.  Modules not written yet are
skipped so the registry works while strategies are added one by one.
"""
from __future__ import annotations

import importlib

from .base import (  # noqa: F401
    Selection,
    SelectionContext,
    Strategy,
    get_strategy,
    make_strategy,
    register,
    strategy_names,
    strategy_schema,
)

_BUILTIN = ("random_", "uncertainty", "stochastic", "badge", "coreset", "cluster_margin", "firal", "typiclust", "auto")

for _mod in _BUILTIN:
    try:
        importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as exc:  # only a module that does not exist yet is skipped
        if exc.name != f"{__name__}.{_mod}":
            raise
