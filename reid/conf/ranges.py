"""The valid range of a numeric option (:class:`Range`) and how a value is written as an override."""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field
from typing import Any, Union

# typing.Union[a, b] and a | b (PEP 604)
UNION_ORIGINS = (Union, types.UnionType)


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric option (each item, for a list): ``low``/``high`` bounds, ``also`` exceptions."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple[Any, ...] = ()

    def contains(self, value: float) -> bool:
        """Whether ``value`` is valid; NaN and infinities never are (``1e400`` reads as inf), even unbounded."""
        if value in self.also:
            return True
        if isinstance(value, float) and not math.isfinite(value):  # an int is finite (and may not fit a float)
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        """``[0, 1)``, ``>= 1``, ``> 0``... as in the error messages."""
        if self.low is not None and self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{opening}{_number(self.low)}, {_number(self.high)}{closing}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_number(self.low)}"
        else:
            text = f"{'<' if self.high_open else '<='} {_number(self.high if self.high is not None else math.inf)}"
        return text + "".join(f" or {override_text(a)}" for a in self.also)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def ranged(
    default: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    also: tuple[Any, ...] = (),
) -> Any:
    """A schema field with a default and a valid range (checked by :func:`validate_config`)."""
    metadata = {"range": Range(low, high, low_open, high_open, also)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


PROBABILITY: dict[str, Any] = {"low": 0.0, "high": 1.0}

POSITIVE: dict[str, Any] = {"low": 0.0, "low_open": True}

# what numpy, torch and Lightning take as a seed (an unsigned 32-bit integer)
SEED: dict[str, Any] = {"low": 0, "high": 2**32 - 1}


def override_text(example: Any) -> str:
    """A value in Hydra override syntax (``[384,192]``, ``null``, ``true``, ``{a:1}``)."""
    if example is None:
        return "null"
    if isinstance(example, bool):
        return str(example).lower()
    if isinstance(example, (list, tuple)):
        return "[" + ",".join(override_text(v) for v in example) + "]"
    if isinstance(example, dict):
        return "{" + ",".join(f"{k}:{override_text(v)}" for k, v in example.items()) + "}"
    return str(example)
