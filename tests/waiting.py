"""Waiting for something to become true, the one way every test waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


def wait_for(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.2,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll ``check`` until it returns something true, and return that; fail naming ``what``
    after ``timeout`` seconds. Exceptions of the ``retry_on`` types count as "not yet" (a
    service still starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result: Any = check()
        except retry_on as exc:
            result = exc
        else:
            if result:
                return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {result!r})")
        time.sleep(interval)


async def wait_for_async(
    check: Callable[[], Awaitable[Any]],
    timeout: float = 10,
    what: str = "condition",
    interval: float = 0.05,
) -> Any:
    """Await ``check`` until it returns something true, and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {result!r})")
        await asyncio.sleep(interval)
