"""The user's Dask Gateway clusters: list, create, scale, adapt, stop, and their task records.

The gateway is reached with ``dask_gateway.Gateway()``, which in a notebook
server (or kernel) takes its address, proxy address and JupyterHub auth from
``DASK_GATEWAY__*`` in the environment, as set by the spawner. Tests pass a
``Gateway`` (or a factory) of their own.

Worker counts, cores and memory come from the scheduler itself, through one
``distributed.Client`` per running cluster, kept while the cluster lives; the
same client registers the task-records plugin (once: it is idempotent) and
reads it. Clients do not keep a cluster from its idle timeout: the gateway
judges idleness by task transitions only.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from clusterhub import admission
from clusterhub.usererror import (
    CONFLICT,
    NOT_FOUND,
    OVER_LIMIT,
    UNAVAILABLE,
    UserError,
)

from .errors import worker_count

log = logging.getLogger(__name__)

RECORDS_LIMIT = 1000
CLUSTER_START_TIMEOUT = 60
CLIENT_TIMEOUT = 10
# The cluster options of clusterhub's gateway (gateway/options.py) and the profile limit of each.
OPTION_LIMITS = {"worker_cores": "worker_cores", "worker_memory": "worker_memory_gib"}

# dask_gateway.Gateway. It, distributed and the plugin module are imported on first use:
# the extension loads with every jupyter server, and distributed alone takes ~0.5 s to import.
GatewayLike = Any


class DaskClusters:
    """The Dask side of the core, around one Gateway client."""

    engine = "dask"

    def __init__(self, gateway: GatewayLike | Callable[[], GatewayLike] | None = None):
        self._gateway_source = gateway
        self._gateway: GatewayLike | None = None
        self._owns_gateway = False  # made here (not passed in): closed here
        self._clients: dict[str, Any] = {}  # cluster name -> distributed.Client
        self._armed: set[str] = set()  # clusters whose scheduler has our plugin
        self._lock = threading.RLock()

    # -- the gateway -------------------------------------------------------------------------
    def configured(self) -> bool:
        if self._gateway_source is not None or self._gateway is not None:
            return True
        import dask.config

        return bool(dask.config.get("gateway.address", None))

    def gateway(self) -> GatewayLike:
        with self._lock:
            if self._gateway is None:
                source = self._gateway_source
                if source is None:
                    if not self.configured():
                        raise UserError(
                            "Dask Gateway is not configured for this server "
                            "(DASK_GATEWAY__ADDRESS is not set)",
                            status=UNAVAILABLE,
                        )
                    from dask_gateway import Gateway

                    self._gateway = Gateway()
                    self._owns_gateway = True
                elif callable(source) and not hasattr(source, "list_clusters"):
                    self._gateway = source()
                    self._owns_gateway = True
                else:
                    self._gateway = source
            return self._gateway

    def _call(self, what: str, func: Callable, *args: Any, **kwargs: Any) -> Any:
        """A gateway call with its errors turned into UserError where they are the user's."""
        from dask_gateway.client import GatewayClusterError, GatewayServerError

        try:
            return func(*args, **kwargs)
        except UserError:
            raise
        except ValueError as exc:  # the gateway answered 404 or 422
            text = str(exc)
            status = NOT_FOUND if "not found" in text.lower() else OVER_LIMIT
            raise UserError(f"{what}: {text}", status=status) from exc
        except GatewayClusterError as exc:  # 409: e.g. the cluster is not running
            raise UserError(f"{what}: {exc}", status=CONFLICT) from exc
        except (GatewayServerError, OSError, TimeoutError) as exc:
            raise UserError(f"{what}: the Dask Gateway failed: {exc}", status=UNAVAILABLE) from exc

    # -- listing -----------------------------------------------------------------------------
    def reports(self) -> dict[str, Any]:
        """The user's active (pending or running) clusters by name."""
        gateway = self.gateway()
        reports = self._call("list", gateway.list_clusters)
        found = {report.name: report for report in reports}
        self._forget(set(self._clients) - set(found))
        return found

    def report(self, name: str) -> Any:
        report = self.reports().get(name)
        if report is None:
            raise UserError(f"cluster: no running Dask cluster named {name!r}", status=NOT_FOUND)
        return report

    def list(self) -> list[dict[str, Any]]:
        entries = [self.describe(report) for report in self.reports().values()]
        if any(e["state"] == "pending" or e["state"] == "running" for e in entries):
            self._add_waiting(entries)
        return entries

    @staticmethod
    def _add_waiting(entries: list[dict[str, Any]]) -> None:
        """On a busy machine a scheduler or worker start waits for its turn (see
        clusterhub.admission): say where it is in the queue, on the cluster it is for."""
        try:
            summary = admission.queue_of(os.environ.get("JUPYTERHUB_USER", ""))
        except (OSError, ValueError):
            return  # the queue is an aid: without it the listing is still right
        for entry in entries:
            kinds = ("scheduler",) if entry["state"] == "pending" else ("worker",)
            note = admission.waiting_note(summary, kinds)
            if note:
                entry["waiting"] = note

    def describe(self, report: Any) -> dict[str, Any]:
        state = report.status.name.lower()
        entry: dict[str, Any] = {
            "engine": self.engine,
            "name": report.name,
            "state": state,
            "workers": 0,
            "cores": 0,
            "memory": 0,
            "dashboard": report.dashboard_link,
            "options": dict(report.options or {}),
            "started": report.start_time.timestamp() if report.start_time else None,
        }
        if state == "running":
            try:
                client = self.client(report)
                workers = client.scheduler_info(n_workers=-1).get("workers", {})
            except UserError as exc:
                entry["error"] = exc.message
            except (OSError, TimeoutError) as exc:  # the scheduler went away just now
                self._forget({report.name})
                entry["error"] = f"scheduler unreachable: {exc}"
            else:
                entry["workers"] = len(workers)
                entry["cores"] = sum(w.get("nthreads", 0) for w in workers.values())
                entry["memory"] = sum(w.get("memory_limit", 0) or 0 for w in workers.values())
        return entry

    # -- connections to schedulers -----------------------------------------------------------
    def client(self, report: Any) -> Any:
        """The cached client of a running cluster; arms the task-records plugin on first use."""
        with self._lock:
            client = self._clients.get(report.name)
            if client is not None and client.status in ("closing", "closed"):
                self._forget({report.name})
                client = None
            if client is None:
                if report.scheduler_address is None or report.security is None:
                    raise UserError(f"cluster {report.name!r} is not running", status=CONFLICT)
                from distributed import Client

                try:
                    client = Client(
                        report.scheduler_address,
                        security=report.security,
                        set_as_default=False,
                        timeout=CLIENT_TIMEOUT,
                        loop=self.gateway().loop,
                    )
                except (OSError, TimeoutError) as exc:
                    raise UserError(
                        f"cluster {report.name!r}: scheduler unreachable: {exc}", status=UNAVAILABLE
                    ) from exc
                self._clients[report.name] = client
            if report.name not in self._armed:
                from clusterhub.engines.dask_records import TaskRecordsPlugin

                # Recording starts here unless the scheduler preloaded the plugin already.
                try:
                    client.register_plugin(TaskRecordsPlugin())
                except (OSError, TimeoutError) as exc:
                    self._forget({report.name})
                    raise UserError(
                        f"cluster {report.name!r}: scheduler unreachable: {exc}", status=UNAVAILABLE
                    ) from exc
                self._armed.add(report.name)
            return client

    def _forget(self, names: set[str]) -> None:
        with self._lock:
            for name in names:
                self._armed.discard(name)
                client = self._clients.pop(name, None)
                if client is not None:
                    try:
                        client.close(timeout=2)
                    except Exception:  # a scheduler that is already gone
                        log.debug("closing the client of %s failed", name, exc_info=True)

    def close(self) -> None:
        self._forget(set(self._clients))
        with self._lock:
            gateway, self._gateway = self._gateway, None
        # Only close what we opened ourselves; an injected gateway belongs to the caller.
        if gateway is not None and self._owns_gateway:
            close_gateway(gateway)

    # -- changes -----------------------------------------------------------------------------
    def new_cluster(self, options: dict[str, Any], limits: dict[str, int]) -> dict[str, Any]:
        """Submit a cluster with ``options`` (plus ``workers``), wait until it runs."""
        options = dict(options)
        workers = options.pop("workers", None)
        if workers is not None:
            workers = worker_count("workers", workers, limits["workers"])
        gateway = self.gateway()
        allowed = self._call("options", gateway.cluster_options)
        for key, value in options.items():
            if key not in allowed:
                choices = ", ".join(sorted(allowed)) or "none"
                raise UserError(f"{key}: unknown cluster option; allowed: {choices}", field=key)
            self._check_option(key, value, limits)
            try:
                allowed[key] = value
            except (TypeError, ValueError) as exc:
                raise UserError(f"{key}: {exc}", field=key) from exc
        name = self._call("new cluster", gateway.submit, cluster_options=allowed)
        try:
            self._call("new cluster", self._wait_running, gateway, name)
            if workers:
                self._call("scale", gateway.scale_cluster, name, workers)
        except BaseException:
            # A half-made cluster is not left behind for the user to find.
            try:
                gateway.stop_cluster(name)
            except Exception:
                log.warning("could not stop the half-made cluster %s", name, exc_info=True)
            raise
        return self.describe(self.report(name))

    def _wait_running(self, gateway: GatewayLike, name: str) -> None:
        from dask_gateway.client import ClusterStatus

        deadline = time.monotonic() + CLUSTER_START_TIMEOUT
        while True:
            # wait=True: the gateway answers when the state changes (or after a while).
            status = gateway.get_cluster(name, wait=True).status
            if status is ClusterStatus.RUNNING:
                return
            if status not in (ClusterStatus.PENDING,) or time.monotonic() > deadline:
                raise UserError(f"cluster {name!r} did not start ({status.name})", status=CONFLICT)

    @staticmethod
    def _check_option(key: str, value: Any, limits: dict[str, int]) -> None:
        limit_field = OPTION_LIMITS.get(key)
        if limit_field is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: must be a number, not {value!r}", field=key)
        if not math.isfinite(value) or value <= 0:
            raise UserError(f"{key}: must be above 0, not {value!r}", field=key)
        if value > limits[limit_field]:
            raise UserError(
                f"{key}: {value} is over your profile's limit of {limits[limit_field]}",
                field=key,
                status=OVER_LIMIT,
            )

    def scale(self, name: str, workers: int) -> dict[str, Any]:
        report = self.report(name)
        self._call("scale", self.gateway().scale_cluster, name, workers)
        return self.describe(report)

    def adapt(self, name: str, minimum: int, maximum: int) -> dict[str, Any]:
        report = self.report(name)
        self._call("adapt", self.gateway().adapt_cluster, name, minimum=minimum, maximum=maximum)
        return self.describe(report)

    def stop(self, name: str) -> None:
        self.report(name)
        self._forget({name})
        self._call("stop", self.gateway().stop_cluster, name)

    # -- task records ------------------------------------------------------------------------
    def task_records(self, name: str, since: float | None) -> dict[str, Any]:
        from clusterhub.engines.dask_records import collect_records

        client = self.client(self.report(name))
        since_sequence = int(since) if since is not None else 0
        try:
            answer = client.run_on_scheduler(
                collect_records, since=since_sequence, limit=RECORDS_LIMIT
            )
        except (OSError, TimeoutError) as exc:
            raise UserError(f"cluster {name!r}: scheduler unreachable", status=UNAVAILABLE) from exc
        if answer is None:  # the scheduler restarted without our plugin
            self._armed.discard(name)
            self.client(self.report(name))
            answer = {"records": [], "cursor": 0, "missed": 0, "hostnames": {}}
        records = [
            {
                "engine": self.engine,
                "cluster": name,
                "task": r["task"],
                "worker": r["worker"],
                "hostname": r["hostname"],
                "started": r["started"],
                "finished": r["finished"],
                "state": r["state"],
            }
            for r in answer["records"]
        ]
        return {
            "records": records,
            "cursor": answer["cursor"],
            "missed": answer["missed"],
            "workers": answer.get("hostnames", {}),
        }


def close_gateway(gateway: GatewayLike) -> None:
    """Close a Gateway client for good.

    dask-gateway 2026.3 closes it again from ``__del__``, which fails once its loop has
    stopped (distributed 2026 refuses to touch a stopped loop); without its loop runner,
    ``__del__`` leaves it alone.
    """
    gateway.close()
    gateway.__dict__.pop("_loop_runner", None)
