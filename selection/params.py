"""Parameter schemas for strategies and extractors.

A strategy declares its parameters as a tuple of :class:`Param`.  The schema is the
single source for defaults, validation and coercion (here: :meth:`Param.validate` for values
from code or JSON, :meth:`Param.parse` for what a person typed into a form) and the generated
admin form (in the app, from :func:`Param.as_dict`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # "int" | "float" | "str" | "bool"
    default: Any
    help: str
    min: float | None = None  # inclusive
    max: float | None = None  # inclusive
    choices: tuple[Any, ...] | None = None
    nullable: bool = False  # None is an allowed value (meaning documented in help)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"Param {self.name}: type={self.type!r} is not one of {sorted(_TYPES)}")

    def validate(self, value: Any) -> Any:
        """Coerce and check ``value``; raise ``ValueError`` naming the parameter, value and what is allowed."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"parameter {self.name!r} may not be empty ({self.help})")
        kind = self.type
        try:
            if kind == "bool":
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low not in {"true", "false", "1", "0", "yes", "no", "on", "off"}:
                        raise ValueError
                    value = low in {"true", "1", "yes", "on"}
                elif not isinstance(value, (bool, int)):
                    raise ValueError
                value = bool(value)
            elif kind == "int":
                if isinstance(value, bool):
                    raise ValueError
                if isinstance(value, float):
                    if not value.is_integer():
                        raise ValueError
                value = int(value)
            elif kind == "float":
                if isinstance(value, bool):
                    raise ValueError
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError
            else:
                value = str(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"parameter {self.name!r}={value!r} is not a valid {kind}"
                + (" (finite)" if kind == "float" else "")
            ) from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"parameter {self.name!r}={value!r} is not one of {list(self.choices)}")
        if self.min is not None and value < self.min:
            raise ValueError(f"parameter {self.name!r}={value!r} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ValueError(f"parameter {self.name!r}={value!r} is above the maximum {self.max}")
        return value

    def parse(self, value: Any) -> Any:
        """:meth:`validate` for a value typed into a form, where an empty field (None or "") means
        ``False`` for a bool (an unticked box), ``None`` where the parameter is nullable and ``""`` for a
        string; an empty number is an error naming the allowed range."""
        if value is None or value == "":
            if self.type == "bool":
                return False
            if self.nullable:
                return None
            if self.type == "str":
                return self.validate("")  # allowed unless the choices leave "" out
            raise ValueError(f"parameter {self.name!r} may not be empty ({self.range_text()})")
        return self.validate(value)

    def range_text(self) -> str:
        """What the parameter allows, for help texts and errors ("range [0, 1]; default 0.5")."""
        lo = "-∞" if self.min is None else f"{self.min:g}"
        hi = "∞" if self.max is None else f"{self.max:g}"
        bits = []
        if self.min is not None or self.max is not None:
            bits.append(f"range [{lo}, {hi}]")
        if self.choices is not None:
            bits.append("one of " + ", ".join(map(str, self.choices)))
        bits.append(f"default {self.default!r}")
        if self.nullable:
            bits.append("may be left empty")
        return "; ".join(bits)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able description used by the admin form generator."""
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "help": self.help,
            "min": self.min,
            "max": self.max,
            "choices": list(self.choices) if self.choices is not None else None,
            "nullable": self.nullable,
        }


def validate_params(schema: tuple[Param, ...], values: dict[str, Any] | None) -> dict[str, Any]:
    """Fill defaults and validate ``values`` against ``schema``; unknown names are an error."""
    values = dict(values or {})
    known = {p.name for p in schema}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; allowed: {sorted(known)}")
    out: dict[str, Any] = {}
    for p in schema:
        out[p.name] = p.validate(values[p.name]) if p.name in values else p.default
    return out
