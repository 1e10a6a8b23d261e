"""Task -> hostname records of an IPyParallel cluster: the hub's task database plus each
engine's hostname.

The controller's hub keeps a record of every task (in memory by default,
bounded at 1024 records) with the engine that ran it and its start and end
times; ``Client.db_query`` reads the ones received since the cursor (the hub's
own ``received`` clock, so the order is the hub's and nothing slips between
polls). Each engine is asked its hostname once, with a tiny task of its own;
an engine busy with a long task answers later, and its records carry no
hostname until then. Those hostname tasks are left out of the records.

Cost: per poll, one ``db_query`` round trip to the hub; per new engine, one
task. The client is made once and kept (a new one takes a few hundred ms).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any

CLIENT_TIMEOUT = 5
HOSTNAME_WAIT = 1.0
_KEYS = ["msg_id", "engine_uuid", "started", "completed", "received", "result_header"]


def _seconds(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


class IPyParallelRecords:
    """A kept client of one controller, and what its engines told about themselves."""

    def __init__(self, connection_file: str):
        self.connection_file = connection_file
        self._client: Any = None
        self._client_mtime: float | None = None
        self._hostnames: dict[str, str] = {}  # engine uuid -> hostname
        self._engine_ids: dict[str, int] = {}  # engine uuid -> engine id
        self._asked: dict[int, Any] = {}  # engine id -> AsyncResult of its hostname task
        self._own_tasks: set[str] = set()
        # One client, one socket set: zmq sockets must not be used by two threads at once.
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The kept client; a new one when the controller was restarted (new connection file)."""
        import ipyparallel

        mtime = os.path.getmtime(self.connection_file)
        if self._client is not None and mtime != self._client_mtime:
            self.close()
        if self._client is None:
            self._client = ipyparallel.Client(self.connection_file, timeout=CLIENT_TIMEOUT)
            self._client_mtime = mtime
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        self._hostnames.clear()
        self._engine_ids.clear()
        self._asked.clear()
        self._own_tasks.clear()
        if client is not None:
            client.close()

    def _learn_hostnames(self, client: Any, wait: float) -> None:
        for engine_id in client.ids:
            if engine_id not in self._asked:
                result = client[engine_id].apply_async(socket.gethostname)
                self._asked[engine_id] = result
                self._own_tasks.update(result.msg_ids)
        deadline = time.monotonic() + wait  # one wait per poll, shared by all engines
        for engine_id, result in list(self._asked.items()):
            if result is None:
                continue
            try:
                result.wait(max(0.0, deadline - time.monotonic()))
                if not result.ready():
                    continue
                hostname = result.get(0)
                uuid = result.metadata["engine_uuid"]
            except Exception:  # the engine died or failed: ask again if it comes back
                del self._asked[engine_id]
                continue
            self._hostnames[uuid] = hostname
            self._engine_ids[uuid] = engine_id
            self._asked[engine_id] = None  # answered; never asked again

    def collect(self, cluster: str, since: float | None, limit: int) -> dict[str, Any]:
        with self._lock:
            client = self.client()
            self._learn_hostnames(client, HOSTNAME_WAIT)
            # "$ne" first: the hub stops at the first failing test, and comparing a pending
            # task's None with a date would fail the whole query. "$gte", not "$gt": DictDB's
            # "$gt" is inverted in ipyparallel 9.2; the exact bound is applied here.
            query: dict[str, Any] = {"$ne": None}
            if since is not None:
                query["$gte"] = datetime.fromtimestamp(since, timezone.utc)
            found = client.db_query({"received": query}, keys=_KEYS)
            found = [
                r
                for r in found
                if r["msg_id"] not in self._own_tasks
                and r.get("completed")
                and (since is None or _seconds(r["received"]) > since)
            ]
            found.sort(key=lambda r: r["received"])
            cursor = _seconds(found[-1]["received"]) if found else since or 0.0
            records = []
            for record in found[-limit:]:
                uuid = record.get("engine_uuid")
                header = record.get("result_header") or {}
                records.append(
                    {
                        "engine": "ipyparallel",
                        "cluster": cluster,
                        "task": record["msg_id"],
                        "worker": self._worker_name(uuid),
                        "hostname": self._hostnames.get(uuid),
                        "started": _seconds(record.get("started")),
                        "finished": _seconds(record.get("completed")),
                        "state": "error" if header.get("status") == "error" else "done",
                    }
                )
            # Records of an engine that had not answered yet carry no hostname; this map lets
            # a caller fill them in on a later poll.
            workers = {self._worker_name(uuid): name for uuid, name in self._hostnames.items()}
            return {"records": records, "cursor": cursor, "workers": workers}

    def _worker_name(self, uuid: str | None) -> str | None:
        engine_id = self._engine_ids.get(uuid)
        return f"engine {engine_id}" if engine_id is not None else uuid
