"""The interface every engine implementation provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field


@dataclass
class EngineStatus:
    engine: str
    state: str  # "running", "starting", "stopped" or "failed"
    workers: int
    address: str = ""
    dashboard: str = ""
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Engine(ABC):
    """A user's engine: a coordinator (Spark master, IPyParallel controller) plus N workers.

    Methods are synchronous and may block for a few seconds while processes start;
    async callers run them in a thread.
    """

    kind: str

    @abstractmethod
    def prepare(self) -> None:
        """Choose addresses and write client configuration, so client_env() is complete
        before any process runs (the notebook starts while engines are still starting)."""

    @abstractmethod
    def start(self, workers: int) -> None:
        """Start the coordinator and ``workers`` workers. Starting a running engine is a no-op."""

    @abstractmethod
    def scale(self, workers: int) -> None:
        """Run exactly ``workers`` workers."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the coordinator and every worker."""

    @abstractmethod
    def status(self) -> EngineStatus:
        """Where the engine stands now."""

    @abstractmethod
    def client_env(self) -> dict[str, str]:
        """Environment for a notebook so that a kernel connects with no arguments."""


class SerialisedEngine(Engine):
    """An engine whose changes take turns, across processes (see ``procs.exclusive``):
    subclasses implement ``_start``, ``_scale`` and ``_stop`` and name their ``_lock`` file."""

    _lock: str

    def start(self, workers: int) -> None:
        from .. import procs

        with procs.exclusive(self._lock):
            self._start(workers)

    def scale(self, workers: int) -> None:
        from .. import procs

        with procs.exclusive(self._lock):
            self._scale(workers)

    def stop(self) -> None:
        from .. import procs

        with procs.exclusive(self._lock):
            self._stop()

    @abstractmethod
    def _start(self, workers: int) -> None: ...

    @abstractmethod
    def _scale(self, workers: int) -> None: ...

    @abstractmethod
    def _stop(self) -> None: ...
