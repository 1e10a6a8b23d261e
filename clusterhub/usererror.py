"""The one error a user may see, and the checks of the values users send.

A :class:`UserError` says what is wrong in words safe to show the user who caused it: the
message names the field and what is allowed, ``field`` names the field for a form or a
client, and ``status`` is HTTP-like. Every face (the Clusters REST API, so the sidebar and
the widget; the spawn form; the gateway's options; the command line) renders it in one place
of its own, the same way. Any other exception is an internal error: logged, never shown.

One validator per kind of value: :func:`whole_number` and :func:`number`. Typed input (a JSON
body, a YAML profile) must carry numbers; text input (a form field, a command-line flag) is
read as a number first, when the caller says so.
"""

from __future__ import annotations

import math
from typing import Any

BAD_REQUEST = 400  # malformed: wrong type, missing field, outside any sensible bound
NOT_FOUND = 404  # no such engine or cluster in this space
CONFLICT = 409  # not in a state to do that (stopped, starting; no running server)
OVER_LIMIT = 422  # well-formed, but beyond what the user's profile allows
UNAVAILABLE = 503  # a service the request needs (the gateway, an engine, an API) did not answer


class UserError(ValueError):
    """A refused request. ``str(error)`` is safe to show; ``field`` names the culprit, if any."""

    def __init__(self, message: str, *, field: str | None = None, status: int = BAD_REQUEST):
        super().__init__(message)
        self.field = field
        self.status = status

    @property
    def message(self) -> str:
        return str(self)

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "field": self.field, "status": self.status}


def whole_number(
    field: str,
    value: Any,
    *,
    low: int,
    high: int,
    limit: int | None = None,
    text: bool = False,
) -> int:
    """``value`` as an int in [low, high]; above ``limit`` (the profile's) is OVER_LIMIT.

    ``True``, ``3.0`` and (unless ``text``) ``"3"`` are refused: typed input that carries them
    is a client's bug, not a choice. With ``text``, a string of digits is read first.
    """
    top = high if limit is None else min(limit, high)
    allowed = f"must be a whole number from {low} to {top}"
    number = value
    if text and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value.strip())
    if isinstance(number, bool) or not isinstance(number, int):
        raise UserError(f"{field}: {allowed}, not {value!r}", field=field)
    if not low <= number <= high:
        raise UserError(f"{field}: {allowed}, not {number}", field=field)
    if limit is not None and number > limit:
        raise UserError(
            f"{field}: {number} is over your profile's limit of {limit}",
            field=field,
            status=OVER_LIMIT,
        )
    return number


def number(field: str, value: Any, *, low: float, high: float) -> float:
    """``value`` (an int or a float, not a bool) as a float in [low, high]."""
    allowed = f"must be a number from {low:g} to {high:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise UserError(f"{field}: {allowed}, not {value!r}", field=field)
    if not low <= value <= high:
        raise UserError(f"{field}: {allowed}, not {value!r}", field=field)
    return float(value)
