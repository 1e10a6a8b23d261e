"""Failed logins per name and per client address, in a sliding window.

Everyone in a workshop shares one code, so the code is the whole of the login: without a
limit a script tries hundreds per second. Once a name, or a client address, has too many
failures within the window, further attempts are refused (429) without looking at the code,
even the right one, until enough of those failures have left the window.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class TooManyFailures(Exception):
    """Refused: ``retry_after`` whole seconds until an attempt is looked at again."""

    def __init__(self, what: str, retry_after: int):
        self.what = what
        self.retry_after = retry_after
        super().__init__(f"Too many failed logins {what}. Try again in {_seconds(retry_after)}.")


def _seconds(n: int) -> str:
    return "1 second" if n == 1 else f"{n} seconds"


class LoginThrottle:
    def __init__(
        self,
        per_name: int,
        per_address: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.per_name = per_name
        self.per_address = per_address
        self.window = window
        self.clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._swept = clock()

    def _sweep(self, now: float) -> None:
        """Forget names and addresses whose failures all left the window: a guesser who
        tries a new name each time must not grow this without bound. At most once a
        window, so a sweep costs O(1) per attempt on average."""
        if now - self._swept < self.window:
            return
        self._swept = now
        for key in list(self._failures):
            self._recent(key, now)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def _wait(self, key: tuple[str, str], limit: int, now: float) -> int:
        """Seconds until ``key`` is below ``limit`` again; 0 if it is now."""
        times = self._recent(key, now)
        if limit <= 0 or len(times) < limit:
            return 0
        # The failure that must leave the window for the count to drop below the limit.
        oldest_that_counts = times[len(times) - limit]
        return max(1, math.ceil(oldest_that_counts + self.window - now))

    def check(self, name: str, address: str) -> None:
        """Raise TooManyFailures if an attempt for ``name`` from ``address`` is refused."""
        now = self.clock()
        self._sweep(now)
        for key, limit, what in (
            (("name", name), self.per_name, f"for {name}"),
            (("address", address), self.per_address, f"from {address}"),
        ):
            wait = self._wait(key, limit, now)
            if wait:
                raise TooManyFailures(what, wait)

    def failed(self, name: str, address: str) -> int:
        """Record a failed attempt; returns the name's failures now in the window."""
        now = self.clock()
        self._sweep(now)
        for key in (("name", name), ("address", address)):
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times
        return len(self._failures[("name", name)])
