"""The checks of what a user sends to the Clusters API.

Everything a request carries (a worker count, adapt bounds, a cursor, cluster options) is
checked here before anything changes; a refusal is a :class:`~clusterhub.usererror.UserError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from clusterhub.profiles import SIZE_FIELDS
from clusterhub.usererror import UserError, whole_number

ABSOLUTE_MAX_WORKERS = SIZE_FIELDS["workers"][2]


def worker_count(field: str, value: Any, limit: int | None) -> int:
    return whole_number(field, value, low=0, high=ABSOLUTE_MAX_WORKERS, limit=limit)


def adapt_bounds(value: Any, limit: int | None) -> tuple[int, int]:
    """``{"minimum": a, "maximum": b}`` checked; a missing maximum is the profile's limit."""
    if not isinstance(value, Mapping):
        raise UserError('adapt: must be an object like {"minimum": 0, "maximum": 4}', field="adapt")
    unknown = sorted(set(value) - {"minimum", "maximum"})
    if unknown:
        raise UserError(
            f"adapt.{unknown[0]}: unknown field; allowed: minimum, maximum",
            field=f"adapt.{unknown[0]}",
        )
    minimum = worker_count("adapt.minimum", value.get("minimum", 0), limit)
    default_max = limit if limit is not None else ABSOLUTE_MAX_WORKERS
    maximum = worker_count("adapt.maximum", value.get("maximum", default_max), limit)
    if minimum > maximum:
        raise UserError(
            f"adapt.minimum: {minimum} is above adapt.maximum ({maximum})", field="adapt.minimum"
        )
    return minimum, maximum


def cursor(value: Any) -> float | None:
    """The ``since`` of a task-records request: a ``cursor`` from an earlier answer, or None."""
    if value is None or value == "":
        return None
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise UserError(
            f"since: must be a cursor from an earlier answer, not {value!r}", field="since"
        )
    if not math.isfinite(number) or number < 0:
        raise UserError(f"since: must be a number of at least 0, not {value!r}", field="since")
    return float(number)


def profile_limits(state: Mapping[str, Any]) -> dict[str, int]:
    """The profile's maxima from ``space.json``; the absolute bounds where none were written."""
    limits = state.get("limits") if isinstance(state, Mapping) else None
    limits = limits if isinstance(limits, Mapping) else {}
    result = {}
    for field, (_label, _low, high) in SIZE_FIELDS.items():
        value = limits.get(field)
        result[field] = value if isinstance(value, int) and not isinstance(value, bool) else high
    return result
