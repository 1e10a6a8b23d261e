"""Keeping the platform's own processes (the hub, the gateway) running under `clusterhub up`.

A crash of one of them must not end every attendee's session: their servers, kernels and
clusters run in processes of their own, and a restarted hub or gateway re-attaches to them
from its database. So `clusterhub up` starts a process again when it exits unexpectedly,
after a short backoff, and gives up (stopping everything, as on SIGTERM) only when it keeps
failing: more than ``limit`` restarts within ``window`` seconds.
"""

from __future__ import annotations

import subprocess
import time
from collections import deque
from collections.abc import Callable

# Seconds to wait before the 1st, 2nd, ... restart within the window.
BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0)
RESTART_LIMIT = 5
RESTART_WINDOW = 300.0


class RestartPolicy:
    """When to start a process again after it exited, and when to give up."""

    def __init__(
        self,
        limit: int = RESTART_LIMIT,
        window: float = RESTART_WINDOW,
        backoff: tuple[float, ...] = BACKOFF,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limit = limit
        self.window = window
        self.backoff = backoff
        self.clock = clock
        self._restarts: deque[float] = deque()

    def delay_after_exit(self) -> float | None:
        """Seconds to wait before the next start; None: it failed too often, give up."""
        now = self.clock()
        while self._restarts and self._restarts[0] <= now - self.window:
            self._restarts.popleft()
        if len(self._restarts) >= self.limit:
            return None
        delay = self.backoff[min(len(self._restarts), len(self.backoff) - 1)]
        self._restarts.append(now + delay)
        return delay

    @property
    def recent_restarts(self) -> int:
        return len(self._restarts)


class Supervised:
    """One child process: started by ``start``, restarted by :meth:`check` when it exits.

    ``before_restart`` runs just before each restart (e.g. to clear what the dead process
    left that its successor would trip over).
    """

    def __init__(
        self,
        name: str,
        start: Callable[[], subprocess.Popen],
        policy: RestartPolicy | None = None,
        before_restart: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name = name
        self._start = start
        self.policy = policy or RestartPolicy(clock=clock)
        self.before_restart = before_restart
        self.clock = clock
        self.proc: subprocess.Popen | None = None
        self.restart_at: float | None = None
        self.last_exit: int | None = None

    def start(self) -> None:
        self.proc = self._start()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self, say: Callable[[str], None]) -> str | None:
        """Restart the process if it exited and its backoff has passed. Returns why to give
        up (it failed too often), or None."""
        if self.restart_at is not None:
            if self.clock() >= self.restart_at:
                self.restart_at = None
                if self.before_restart is not None:
                    self.before_restart()
                self.start()
            return None
        if self.proc is None or self.proc.poll() is None:
            return None
        self.last_exit = self.proc.returncode
        delay = self.policy.delay_after_exit()
        if delay is None:
            return (
                f"the {self.name} exited {self.policy.limit + 1} times within "
                f"{self.policy.window / 60:.0f} minutes (last exit status {self.last_exit})"
            )
        say(
            f"clusterhub: the {self.name} exited unexpectedly (exit status {self.last_exit}); "
            f"restarting it in {delay:.0f} s"
        )
        self.restart_at = self.clock() + delay
        return None
