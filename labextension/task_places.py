"""Where a task ran, as the hostnames view names it: its host, or else its worker.

Workers on Kubernetes (a pod each) or in a UTS namespace of their own have hostnames of
their own, and the view shows tasks landing on hosts. Workers that share this machine's
hostname with the notebook (one machine without per-worker hostnames) would all count as
one host: one bar, whatever the scaling. Then each task is placed on its worker instead,
and the answer says so (``place: "worker"``), so the view labels them as workers.
"""

from __future__ import annotations

import socket
from typing import Any

# Names a task's host may have that all mean "this machine" (Spark reports the address
# its executors bind to).
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def this_machine() -> frozenset[str]:
    return LOOPBACK_NAMES | {socket.gethostname()}


def worker_label(worker: str) -> str:
    """A worker's name for the view: a Dask worker's address without its scheme
    (``tcp://127.0.0.1:41235`` -> ``127.0.0.1:41235``); ``engine 3``, ``executor 1`` as
    they come."""
    return worker.split("://", 1)[-1]


def place_tasks(answer: dict[str, Any], machine: frozenset[str]) -> dict[str, Any]:
    """Set ``answer["place"]`` and, for "worker", each record's ``hostname`` (and the
    ``workers`` map) to its worker's label. ``machine``: the names of this machine."""
    known = {r["hostname"] for r in answer["records"] if r["hostname"]}
    known |= {h for h in (answer.get("workers") or {}).values() if h}
    if not known or known - machine:
        answer["place"] = "host"
        return answer
    answer["place"] = "worker"
    for record in answer["records"]:
        if record["worker"]:
            record["hostname"] = worker_label(record["worker"])
    answer["workers"] = {w: worker_label(w) for w in answer.get("workers") or {}}
    return answer
