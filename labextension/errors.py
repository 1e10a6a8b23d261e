"""The one exception the core raises on purpose, and the checks of what a user sends.

Everything a request carries (a worker count, adapt bounds, a cursor, cluster
options) is checked here before anything changes. A :class:`ClustersError`
says what is wrong in words safe to show the user, with an HTTP-like status so
that the REST handlers, the sidebar and the widget all report it the same way;
any other exception is an internal error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from clusterhub.profiles import SIZE_FIELDS

BAD_REQUEST = 400  # malformed: wrong type, missing field, outside any sensible bound
NOT_FOUND = 404  # no such engine or cluster in this space
CONFLICT = 409  # the engine or cluster is not in a state to do that (stopped, starting)
OVER_LIMIT = 422  # well-formed, but beyond what the user's profile allows
UNAVAILABLE = 503  # the gateway or an engine could not be reached

ABSOLUTE_MAX_WORKERS = SIZE_FIELDS["workers"][2]


class ClustersError(Exception):
    """A refused request. ``str(error)`` is safe to show; ``field`` names the culprit, if any."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field

    @property
    def message(self) -> str:
        return str(self)

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "field": self.field, "status": self.status}


def whole_number(field: str, value: Any, *, low: int, high: int, limit: int | None = None) -> int:
    """``value`` as an int in [low, high]; above ``limit`` (the profile's) is OVER_LIMIT.

    Strict on purpose: ``True``, ``"3"`` and ``3.0`` are refused, since a JSON body that
    carries them is a client bug, not a choice.
    """
    top = high if limit is None else min(limit, high)
    allowed = f"must be a whole number from {low} to {top}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClustersError(BAD_REQUEST, f"{field}: {allowed}, not {value!r}", field)
    if not low <= value <= high:
        raise ClustersError(BAD_REQUEST, f"{field}: {allowed}, not {value}", field)
    if limit is not None and value > limit:
        raise ClustersError(
            OVER_LIMIT,
            f"{field}: {value} is over your profile's limit of {limit}",
            field,
        )
    return value


def worker_count(field: str, value: Any, limit: int | None) -> int:
    return whole_number(field, value, low=0, high=ABSOLUTE_MAX_WORKERS, limit=limit)


def adapt_bounds(value: Any, limit: int | None) -> tuple[int, int]:
    """``{"minimum": a, "maximum": b}`` checked; a missing maximum is the profile's limit."""
    if not isinstance(value, Mapping):
        raise ClustersError(
            BAD_REQUEST, 'adapt: must be an object like {"minimum": 0, "maximum": 4}', "adapt"
        )
    unknown = sorted(set(value) - {"minimum", "maximum"})
    if unknown:
        raise ClustersError(
            BAD_REQUEST,
            f"adapt.{unknown[0]}: unknown field; allowed: minimum, maximum",
            f"adapt.{unknown[0]}",
        )
    minimum = worker_count("adapt.minimum", value.get("minimum", 0), limit)
    default_max = limit if limit is not None else ABSOLUTE_MAX_WORKERS
    maximum = worker_count("adapt.maximum", value.get("maximum", default_max), limit)
    if minimum > maximum:
        raise ClustersError(
            BAD_REQUEST,
            f"adapt.minimum: {minimum} is above adapt.maximum ({maximum})",
            "adapt.minimum",
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
        raise ClustersError(
            BAD_REQUEST, f"since: must be a cursor from an earlier answer, not {value!r}", "since"
        )
    if not math.isfinite(number) or number < 0:
        raise ClustersError(
            BAD_REQUEST, f"since: must be a number of at least 0, not {value!r}", "since"
        )
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
