"""Task -> hostname records of a Dask cluster, kept by a plugin inside its scheduler.

The scheduler already learns, for every finished task, which worker ran it and
when (the ``startstops`` of the task-finished message); the plugin keeps the
last :data:`DEFAULT_CAPACITY` of those in a ring buffer. Hostnames are asked
from each worker once, when it joins, by the scheduler itself: a record then
costs one tuple append on the scheduler's hot path and nothing on the workers.

This module imports nothing but the standard library and ``distributed``,
because the scheduler unpickles the plugin by reference: it must be importable
wherever the scheduler runs (the cluster image is the notebook image). It can
also be preloaded (``dask scheduler --preload clusterhub.engines.dask_records``)
so that recording starts with the first task instead of with the first look
from the sidebar.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol import pickle
from distributed.protocol.serialize import Serialized, deserialize

PLUGIN_NAME = "clusterhub-task-records"
DEFAULT_CAPACITY = 10_000
# Workers that left are remembered this long (in workers) so old records keep their hostname.
HOSTNAME_MEMORY = 10_000
_FINISHED = ("memory", "erred")


class TaskRecordsPlugin(SchedulerPlugin):
    """Remembers which worker ran each recent task, and each worker's hostname."""

    name = PLUGIN_NAME
    # Registering it again (another browser tab, the widget) keeps the one already recording.
    idempotent = True

    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        self.capacity = capacity

    async def start(self, scheduler: Any) -> None:
        # State is made here, not in __init__: the instance travels pickled to the scheduler.
        self.scheduler = scheduler
        # (sequence number, key, worker address, startstops, final state)
        self.records: deque = deque(maxlen=self.capacity)
        self.sequence = 0
        self.hostnames: dict[str, str] = {}
        self._asking: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        for address in list(scheduler.workers):
            self._ask_hostname(address)

    # -- the scheduler's hooks ---------------------------------------------------------------
    def transition(self, key, start, finish, *args, **kwargs) -> None:
        # Runs for every transition of every task: keep it to a comparison and an append.
        if start == "processing" and finish in _FINISHED:
            self.sequence += 1
            self.records.append(
                (self.sequence, key, kwargs.get("worker"), kwargs.get("startstops"), finish)
            )

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self._ask_hostname(worker)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- hostnames ---------------------------------------------------------------------------
    def _ask_hostname(self, address: str) -> None:
        if address in self.hostnames or address in self._asking:
            return
        self._asking.add(address)
        # In the background: awaiting here would hold up the worker's registration.
        task = asyncio.ensure_future(self._hostname_of(address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hostname_of(self, address: str) -> None:
        try:
            answers = await self.scheduler.broadcast(
                msg={"op": "run", "function": pickle.dumps(socket.gethostname)},
                workers=[address],
                on_error="ignore",
            )
            answer = answers.get(address)
            if isinstance(answer, dict) and answer.get("status") == "OK":
                hostname = answer.get("result")
                if isinstance(hostname, Serialized):
                    hostname = deserialize(hostname.header, hostname.frames)
                if isinstance(hostname, str):
                    if len(self.hostnames) >= HOSTNAME_MEMORY:
                        self.hostnames.pop(next(iter(self.hostnames)))
                    self.hostnames[address] = hostname
        finally:
            self._asking.discard(address)

    # -- reading -----------------------------------------------------------------------------
    def collect(self, since: int = 0, limit: int = 1000) -> dict[str, Any]:
        """Records with a sequence number above ``since`` (the newest ``limit`` of them)."""
        for address in list(self.scheduler.workers):
            self._ask_hostname(address)  # a worker whose first answer was lost
        wanted = [r for r in list(self.records) if r[0] > since]
        oldest = self.records[0][0] if self.records else self.sequence + 1
        records = []
        for sequence, key, worker, startstops, state in wanted[-limit:] if limit else []:
            started, finished = _compute_span(startstops)
            records.append(
                {
                    "sequence": sequence,
                    "task": _key_text(key),
                    "worker": worker,
                    "hostname": self.hostnames.get(worker),
                    "started": started,
                    "finished": finished,
                    "state": "error" if state == "erred" else "done",
                }
            )
        return {
            "records": records,
            "cursor": self.sequence,
            # Records between ``since`` and the oldest one still held were overwritten.
            "missed": max(0, oldest - since - 1) if since < self.sequence else 0,
            "hostnames": dict(self.hostnames),
        }


def _compute_span(startstops: Any) -> tuple[float | None, float | None]:
    if not startstops:
        return None, None
    compute = [s for s in startstops if s.get("action") == "compute"] or list(startstops)
    return min(s["start"] for s in compute), max(s["stop"] for s in compute)


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else str(key)


def collect_records(dask_scheduler: Any, since: int = 0, limit: int = 1000) -> dict | None:
    """Run on the scheduler (``Client.run_on_scheduler``): the plugin's records, or None."""
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is None or not hasattr(plugin, "records"):
        return None
    return plugin.collect(since=since, limit=limit)


def dask_setup(scheduler: Any) -> None:
    """Preload hook: record from the scheduler's first task on."""
    if PLUGIN_NAME not in scheduler.plugins:
        scheduler.add_plugin(TaskRecordsPlugin(), name=PLUGIN_NAME, idempotent=True)
