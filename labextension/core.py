"""The one Python core behind the Clusters sidebar, its REST handlers and the notebook widget.

No Jupyter import here: the jupyter-server handlers, the ipywidget and a plain
script all call the same functions. A user's space holds their Dask Gateway
clusters (any number) and at most one cluster of each other engine (Spark,
IPyParallel), named :data:`LOCAL_CLUSTER_NAME`.

Everything a caller passes in is checked before anything changes; a refusal
is a :class:`~clusterhub.usererror.UserError` (with an HTTP-like ``status``) whose
message is safe to show; anything else that escapes is an internal error.

Calls block (a gateway round trip, a process start): async callers run them in
a thread. One :class:`Clusters` may serve several threads at once.

Module-level functions use a :class:`Clusters` made from the environment on
first use: ``CLUSTERHUB_SPACE`` (set by the spawner) finds the space, and
``DASK_GATEWAY__*`` the gateway.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from clusterhub.engines import ENGINES, OPTIONAL_ENGINES, local_engine
from clusterhub.engines.ipyparallel_records import IPyParallelRecords
from clusterhub.engines.kube import KubeSpace, kube_engine, kube_space_from_env
from clusterhub.engines.spark_records import SparkRecords
from clusterhub.space import LocalSpace, space_from_env
from clusterhub.usererror import CONFLICT, NOT_FOUND, UNAVAILABLE, UserError

from .dask_clusters import RECORDS_LIMIT, DaskClusters, GatewayLike
from .errors import adapt_bounds, cursor, profile_limits, worker_count
from .task_places import place_tasks, this_machine

__all__ = [
    "ENGINES",
    "LOCAL_CLUSTER_NAME",
    "Clusters",
    "UserError",
    "adapt",
    "default_clusters",
    "list_engines",
    "new_dask_cluster",
    "scale",
    "stop",
    "task_records",
]

LOCAL_CLUSTER_NAME = "default"


class Clusters:
    """List and change the clusters of one user's space, and read their task records.

    ``space``: the user's space; by default the one named by ``CLUSTERHUB_SPACE`` or, in a
    notebook pod on Kubernetes, its namespace (``CLUSTERHUB_NAMESPACE``).
    ``gateway``: a ``dask_gateway.Gateway`` or a function making one; by default
    ``Gateway()`` configured by ``DASK_GATEWAY__*``.
    ``engine_factory``: makes the Spark/IPyParallel engine of a space (by default the local
    or the Kubernetes implementation, whichever fits the space).
    """

    def __init__(
        self,
        space: LocalSpace | KubeSpace | None = None,
        gateway: GatewayLike | Callable[[], GatewayLike] | None = None,
        engine_factory: Callable[..., Any] | None = None,
    ):
        if space is None and engine_factory is None:
            space = kube_space_from_env()
        if engine_factory is None:
            engine_factory = kube_engine if isinstance(space, KubeSpace) else local_engine
        self._space = space
        self.dask = DaskClusters(gateway)
        self._engine_factory = engine_factory
        self._spark = SparkRecords()
        self._ipyparallel: IPyParallelRecords | None = None
        self._lock = threading.Lock()

    # -- the space ---------------------------------------------------------------------------
    @property
    def space(self) -> LocalSpace | None:
        return self._space if self._space is not None else space_from_env()

    def _state(self) -> dict[str, Any]:
        space = self.space
        return space.read_state() if space is not None else {}

    def limits(self) -> dict[str, int]:
        """The profile's maxima: ``workers`` (per cluster), ``worker_cores``,
        ``worker_memory_gib``."""
        return profile_limits(self._state())

    def local_engines(self) -> list[str]:
        """The Spark/IPyParallel engines the user's profile gave this space."""
        engines = self._state().get("engines") or {}
        return [kind for kind in OPTIONAL_ENGINES if kind in engines]

    def _engine(self, kind: str) -> Any:
        space = self.space
        present = self.local_engines()
        if space is None or kind not in present:
            has = ", ".join(["dask", *present])
            raise UserError(
                f"engine: this space has no {kind} engine, only {has}",
                field="engine",
                status=NOT_FOUND,
            )
        return self._engine_factory(kind, space)

    def _check_target(self, engine: Any, cluster: Any) -> str:
        if engine not in ENGINES:
            raise UserError(
                f"engine: unknown engine {engine!r}; choose one of {', '.join(ENGINES)}",
                field="engine",
                status=NOT_FOUND,
            )
        if not isinstance(cluster, str) or not cluster:
            raise UserError("cluster: must be a cluster name", field="cluster")
        if engine != "dask" and cluster != LOCAL_CLUSTER_NAME:
            raise UserError(
                f"cluster: a space has one {engine} cluster, named {LOCAL_CLUSTER_NAME!r}",
                field="cluster",
                status=NOT_FOUND,
            )
        return engine

    # -- listing -----------------------------------------------------------------------------
    def list_engines(self) -> list[dict[str, Any]]:
        """Every cluster of the space, Dask first. An engine that cannot be asked appears
        once with ``state: "unavailable"`` and an ``error``, so the others still show."""
        found: list[dict[str, Any]] = []
        if self.dask.configured():
            try:
                found.extend(self.dask.list())
            except UserError as exc:
                found.append(self._unavailable("dask", None, exc.message))
        for kind in self.local_engines():
            try:
                found.append(self._describe_local(kind))
            except (UserError, OSError) as exc:
                found.append(self._unavailable(kind, LOCAL_CLUSTER_NAME, str(exc)))
        return found

    @staticmethod
    def _unavailable(engine: str, name: str | None, error: str) -> dict[str, Any]:
        return {
            "engine": engine,
            "name": name,
            "state": "unavailable",
            "workers": 0,
            "cores": 0,
            "memory": 0,
            "dashboard": None,
            "error": error,
        }

    def _describe_local(self, kind: str) -> dict[str, Any]:
        engine = self._engine(kind)
        status = engine.status()
        entry = {
            "engine": kind,
            "name": LOCAL_CLUSTER_NAME,
            "state": status.state,
            "workers": status.workers,
            "cores": status.workers,
            "memory": None,  # IPyParallel engines have no memory bound
            "dashboard": status.dashboard or None,
            "requested_workers": status.details.get("requested_workers"),
        }
        launch = (self._state().get("engines") or {}).get(kind, "")
        if isinstance(launch, str) and launch.startswith("failed"):
            entry["error"] = launch
        if status.details.get("error"):
            entry["error"] = status.details["error"]
        if kind == "spark" and status.state in ("running", "starting"):
            alive = engine.alive_workers()
            entry["cores"] = sum(w.get("cores", 0) for w in alive)
            entry["memory"] = sum(w.get("memory", 0) for w in alive) * 2**20  # MiB
        return entry

    def describe(self, engine: str, cluster: str) -> dict[str, Any]:
        """One cluster, as in :meth:`list_engines`; 404 when it is not there."""
        self._check_target(engine, cluster)
        if engine == "dask":
            return self.dask.describe(self.dask.report(cluster))
        return self._describe_local(engine)

    # -- changes -----------------------------------------------------------------------------
    def scale(self, engine: str, cluster: str, n: Any) -> dict[str, Any]:
        """Run exactly ``n`` workers (0 .. the profile's ``workers`` limit)."""
        self._check_target(engine, cluster)
        workers = worker_count("workers", n, self.limits()["workers"])
        if engine == "dask":
            return self.dask.scale(cluster, workers)
        target = self._engine(engine)
        try:
            target.scale(workers)
        except UserError as exc:
            raise UserError(f"{engine}: {exc}", status=CONFLICT) from exc
        return self._describe_local(engine)

    def adapt(self, cluster: str, minimum: Any = 0, maximum: Any = None) -> dict[str, Any]:
        """Let a Dask cluster choose between ``minimum`` and ``maximum`` workers itself."""
        self._check_target("dask", cluster)
        bounds: dict[str, Any] = {"minimum": minimum}
        if maximum is not None:
            bounds["maximum"] = maximum
        low, high = adapt_bounds(bounds, self.limits()["workers"])
        return self.dask.adapt(cluster, low, high)

    def update(self, engine: str, cluster: str, change: Any) -> dict[str, Any]:
        """Apply a change as the REST API and the widget send it: ``{"workers": n}`` or,
        for Dask, ``{"adapt": {"minimum": a, "maximum": b}}``."""
        self._check_target(engine, cluster)
        if not isinstance(change, Mapping):
            raise UserError("body: must be a JSON object", field="body")
        if set(change) == {"workers"}:
            return self.scale(engine, cluster, change["workers"])
        if set(change) == {"adapt"}:
            if engine != "dask":
                raise UserError("adapt: only Dask clusters adapt", field="adapt")
            low, high = adapt_bounds(change["adapt"], self.limits()["workers"])
            return self.dask.adapt(cluster, low, high)
        raise UserError(
            'body: give either {"workers": n} or {"adapt": {"minimum": a, "maximum": b}}',
            field="workers",
        )

    def stop(self, engine: str, cluster: str) -> None:
        """Stop a Dask cluster, or the space's Spark or IPyParallel cluster."""
        self._check_target(engine, cluster)
        if engine == "dask":
            self.dask.stop(cluster)
            return
        target = self._engine(engine)
        with self._lock:
            if engine == "ipyparallel" and self._ipyparallel is not None:
                self._ipyparallel.close()
                self._ipyparallel = None
        target.stop()

    def new_dask_cluster(self, /, **options: Any) -> dict[str, Any]:
        """Create a Dask cluster with the gateway's ``options`` (e.g. ``worker_cores``,
        ``worker_memory``) and optionally ``workers``; returns it once it runs. (``self``
        is positional-only: a request body ``{"self": 1}`` is an unknown option like any
        other, not a clash of arguments.)"""
        return self.dask.new_cluster(options, self.limits())

    # -- task records ------------------------------------------------------------------------
    def task_records(self, engine: str, cluster: str, since: Any = None) -> dict[str, Any]:
        """Recent tasks of a cluster, each with the hostname that ran it.

        Returns ``{"records": [{engine, cluster, task, worker, hostname, started, finished,
        state}, ...], "counts": {hostname: tasks}, "workers": {worker: hostname},
        "place": "host" | "worker", "cursor": c}``; pass ``since=c`` next time for only the
        newer ones. Times are seconds since the epoch. A record's ``hostname`` is None while
        its worker has not told its hostname yet; ``workers`` then fills it in on a later
        poll. With ``place: "worker"`` the workers have no hostnames of their own (they share
        this machine's) and ``hostname`` names the worker instead (see task_places).
        """
        self._check_target(engine, cluster)
        since_value = cursor(since)
        if engine == "dask":
            answer = self.dask.task_records(cluster, since_value)
        elif engine == "spark":
            answer = self._spark_records(since_value)
        else:
            answer = self._ipyparallel_records(since_value)
        place_tasks(answer, this_machine())
        answer["counts"] = dict(
            Counter(r["hostname"] for r in answer["records"] if r["hostname"] is not None)
        )
        return answer

    def _spark_records(self, since: float | None) -> dict[str, Any]:
        status = self._engine("spark").status()
        if status.state not in ("running", "starting") or not status.dashboard:
            raise UserError(f"spark: the cluster is {status.state}", status=CONFLICT)
        try:
            return self._spark.collect(status.dashboard, LOCAL_CLUSTER_NAME, since, RECORDS_LIMIT)
        except (OSError, ValueError) as exc:
            raise UserError(f"spark: the master did not answer: {exc}", status=UNAVAILABLE) from exc

    def _ipyparallel_records(self, since: float | None) -> dict[str, Any]:
        status = self._engine("ipyparallel").status()
        if status.state not in ("running", "starting") or not status.address:
            raise UserError(f"ipyparallel: the cluster is {status.state}", status=CONFLICT)
        with self._lock:
            if self._ipyparallel is None or self._ipyparallel.connection_file != status.address:
                if self._ipyparallel is not None:
                    self._ipyparallel.close()
                self._ipyparallel = IPyParallelRecords(status.address)
            records = self._ipyparallel
        try:
            return records.collect(LOCAL_CLUSTER_NAME, since, RECORDS_LIMIT)
        except (OSError, TimeoutError) as exc:
            raise UserError(
                f"ipyparallel: the controller did not answer: {exc}", status=UNAVAILABLE
            ) from exc

    def close(self) -> None:
        """Let go of kept connections (clusters keep running)."""
        self.dask.close()
        with self._lock:
            if self._ipyparallel is not None:
                self._ipyparallel.close()
                self._ipyparallel = None


_default: Clusters | None = None
_default_lock = threading.Lock()


def default_clusters() -> Clusters:
    """The process's :class:`Clusters`, configured from the environment."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Clusters()
        return _default


def list_engines() -> list[dict[str, Any]]:
    """Every cluster of the current user's space (see :meth:`Clusters.list_engines`)."""
    return default_clusters().list_engines()


def scale(engine: str, cluster: str, n: Any) -> dict[str, Any]:
    """Scale a cluster to ``n`` workers (see :meth:`Clusters.scale`)."""
    return default_clusters().scale(engine, cluster, n)


def adapt(cluster: str, minimum: Any = 0, maximum: Any = None) -> dict[str, Any]:
    """Make a Dask cluster adaptive (see :meth:`Clusters.adapt`)."""
    return default_clusters().adapt(cluster, minimum, maximum)


def stop(engine: str, cluster: str) -> None:
    """Stop a cluster (see :meth:`Clusters.stop`)."""
    default_clusters().stop(engine, cluster)


def new_dask_cluster(**options: Any) -> dict[str, Any]:
    """Create a Dask cluster (see :meth:`Clusters.new_dask_cluster`)."""
    return default_clusters().new_dask_cluster(**options)


def task_records(engine: str, cluster: str, since: Any = None) -> dict[str, Any]:
    """Recent task -> hostname records of a cluster (see :meth:`Clusters.task_records`)."""
    return default_clusters().task_records(engine, cluster, since)
