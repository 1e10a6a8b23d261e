"""A user's Spark and IPyParallel engines on Kubernetes, as the Clusters core sees them.

KubeSpaceSpawner made each engine two Deployments in the user's namespace - a leader
(``spark-master``, ``ipcontroller``) behind a Service, and workers (``spark-worker``,
``ipengine``) - and gave the notebook pod a ServiceAccount whose Role may read and scale the
Deployments and pods of that namespace and nothing else. This is the notebook's side: the
same :class:`~clusterhub.engines.base.Engine` interface as the local engines, implemented by
reading those Deployments and patching their ``scale`` subresource with the pod's own
credentials (the in-cluster token and CA a kubelet mounts, plain HTTPS, no client library).

Task records need nothing new: Spark's come from the master's JSON and each driver's REST API
through the master Service, IPyParallel's from the controller through the connection file
mounted in the notebook pod - the same readers as for the local engines.

:func:`kube_space_from_env` finds the space from the environment KubeSpaceSpawner sets
(``CLUSTERHUB_NAMESPACE``, ``CLUSTERHUB_ENGINES``, ``CLUSTERHUB_LIMITS``).
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from clusterhub.profiles import SIZE_FIELDS
from clusterhub.spawner import kubeobjects as ko
from clusterhub.spawner.kubespace import LIMITS_ENV
from clusterhub.usererror import CONFLICT, UNAVAILABLE, UserError

from . import OPTIONAL_ENGINES, unknown_engine
from .base import Engine, EngineStatus

__all__ = [
    "InClusterApi",
    "KubeApiError",
    "KubeEngine",
    "KubeIPyParallelEngine",
    "KubeSpace",
    "KubeSparkEngine",
    "kube_engine",
    "kube_space_from_env",
]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
API_TIMEOUT = 10
MASTER_TIMEOUT = 3
# Why a container does not run that will not mend by waiting (kubelet waiting reasons).
_STUCK = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


class KubeApiError(UserError):
    """The Kubernetes API refused or did not answer: status 503, so a listing shows the engine
    as unavailable and carries on, and a single request answers with the reason.
    ``api_status`` is the API server's own status (404 for a missing Deployment), if any."""

    def __init__(self, message: str, api_status: int | None = None):
        super().__init__(message, status=UNAVAILABLE)
        self.api_status = api_status


class InClusterApi:
    """The Kubernetes API as a pod reaches it: ``https://$KUBERNETES_SERVICE_HOST:$PORT``,
    trusting the cluster CA and sending the ServiceAccount token the kubelet mounted."""

    def __init__(
        self,
        base_url: str,
        *,
        token_file: str = f"{SERVICE_ACCOUNT_DIR}/token",
        ca_file: str = f"{SERVICE_ACCOUNT_DIR}/ca.crt",
        timeout: float = API_TIMEOUT,
    ):
        self.base_url = base_url.rstrip("/")
        self.token_file = token_file
        self.ca_file = ca_file
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> InClusterApi:
        environ = os.environ if environ is None else environ
        host = environ.get("KUBERNETES_SERVICE_HOST", "")
        port = environ.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise KubeApiError(
                "this server does not run in a Kubernetes pod "
                "(KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set)"
            )
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return cls(f"https://{host}:{port}")

    def _ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                try:
                    self._context = ssl.create_default_context(cafile=self.ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise KubeApiError(
                        f"cannot read the cluster's CA certificate {self.ca_file}: {exc}; is "
                        "the ServiceAccount token mounted (automountServiceAccountToken)?"
                    ) from exc
            return self._context

    def _token(self) -> str:
        # Read on every request: the kubelet rotates projected tokens in place.
        try:
            with open(self.token_file) as f:
                return f.read().strip()
        except OSError as exc:
            raise KubeApiError(
                f"cannot read the ServiceAccount token {self.token_file}: {exc}; is it mounted "
                "(automountServiceAccountToken)?"
            ) from exc

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One API call; the decoded JSON answer, or :class:`KubeApiError` with the API
        server's own message (a ``Status`` body) on a refusal."""
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=self._ssl_context()
            ) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("message") or raw.decode(errors="replace")
            except ValueError:
                message = raw.decode(errors="replace")
            raise KubeApiError(
                f"the Kubernetes API refused {method} {path}: {exc.code} {message}".strip(),
                api_status=exc.code,
            ) from exc
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise KubeApiError(f"the Kubernetes API did not answer: {reason}") from exc


class KubeSpace:
    """A user's space as seen from their notebook pod: its namespace, the optional engines
    the profile gave it, and the profile's maxima.

    Reads like a local space's ``space.json`` (:meth:`read_state`), which is all the core
    asks of a space; the engines are made by :func:`kube_engine`.
    """

    def __init__(
        self,
        namespace: str,
        engines: tuple[str, ...] = (),
        limits: Mapping[str, int] | None = None,
        *,
        api: InClusterApi | None = None,
        environ: Mapping[str, str] | None = None,
    ):
        self.namespace = namespace
        self.engines = tuple(e for e in OPTIONAL_ENGINES if e in engines)
        self.limits = dict(limits or {})
        self.environ = os.environ if environ is None else environ
        self._api = api
        self._lock = threading.Lock()

    @property
    def api(self) -> InClusterApi:
        with self._lock:
            if self._api is None:
                self._api = InClusterApi.from_environment(self.environ)
            return self._api

    def read_state(self) -> dict[str, Any]:
        # "deployed": the spawner created the Deployments before the notebook started; how
        # they are doing is each engine's status().
        return {
            "engines": {kind: "deployed" for kind in self.engines},
            "limits": dict(self.limits),
        }


def _parse_limits(text: str) -> dict[str, int]:
    """The spawner's JSON maxima; anything unreadable is left to the core's absolute bounds
    (the namespace's ResourceQuota still holds the line)."""
    try:
        raw = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        field: value
        for field, value in raw.items()
        if field in SIZE_FIELDS and isinstance(value, int) and not isinstance(value, bool)
    }


def kube_space_from_env(
    environ: Mapping[str, str] | None = None, api: InClusterApi | None = None
) -> KubeSpace | None:
    """The user's space when this process runs in a KubeSpaceSpawner notebook pod, else None.

    A local space (``CLUSTERHUB_SPACE``) wins, so a local notebook never talks to a cluster.
    ``api``: how to reach the API server (by default the pod's in-cluster credentials).
    """
    environ = os.environ if environ is None else environ
    namespace = environ.get("CLUSTERHUB_NAMESPACE", "")
    if not namespace or environ.get("CLUSTERHUB_SPACE"):
        return None
    engines = tuple(e.strip() for e in environ.get("CLUSTERHUB_ENGINES", "").split(","))
    limits = _parse_limits(environ.get(LIMITS_ENV, ""))
    return KubeSpace(namespace, engines, limits, api=api, environ=environ)


class KubeEngine(Engine):
    """An engine as its two Deployments: the leader (one replica, or none when stopped) and
    the workers (as many replicas as the user asked for)."""

    kind: str

    def __init__(self, space: KubeSpace, **_sizes: Any):
        # Sizes are the spawner's business (they are in the pod templates); accept and ignore.
        self.space = space
        leader, follower = ko.ENGINE_ROLES[self.kind]
        self.leader = ko.engine_mode(self.kind, leader)
        self.workers = ko.engine_mode(self.kind, follower)

    @property
    def label(self) -> str:
        return {"spark": "Spark", "ipyparallel": "IPyParallel"}[self.kind]

    def _path(self, name: str, sub: str = "") -> str:
        ns = urllib.parse.quote(self.space.namespace)
        return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}" + (f"/{sub}" if sub else "")

    def _deployment(self, name: str) -> dict[str, Any]:
        try:
            return self.space.api.request("GET", self._path(name))
        except KubeApiError as exc:
            if exc.api_status == 404:
                raise KubeApiError(
                    f"{self.label}: the Deployment {name} is missing from namespace "
                    f"{self.space.namespace}; restart your server to recreate it",
                    api_status=404,
                ) from exc
            raise

    def _scale_to(self, name: str, replicas: int) -> None:
        self.space.api.request(
            "PATCH",
            self._path(name, "scale"),
            {"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )

    # -- the Engine interface ----------------------------------------------------------------
    def prepare(self) -> None:
        """Nothing to do: the spawner created the Deployments, Services and connection
        Secret before the notebook started."""

    def start(self, workers: int) -> None:
        self._scale_to(self.leader, 1)
        self._scale_to(self.workers, workers)

    def scale(self, workers: int) -> None:
        leader = self._deployment(self.leader)
        if not leader["spec"].get("replicas"):
            raise UserError(
                f"{self.label} is stopped in this space; start it first", status=CONFLICT
            )
        self._scale_to(self.workers, workers)

    def stop(self) -> None:
        self._scale_to(self.workers, 0)
        self._scale_to(self.leader, 0)

    def status(self) -> EngineStatus:
        leader = self._deployment(self.leader)
        workers = self._deployment(self.workers)
        wanted = workers["spec"].get("replicas", 0)
        ready = (workers.get("status") or {}).get("readyReplicas", 0)
        details: dict[str, Any] = {
            "requested_workers": wanted,
            "namespace": self.space.namespace,
            "deployments": [self.leader, self.workers],
        }
        if not leader["spec"].get("replicas"):
            return EngineStatus(engine=self.kind, state="stopped", workers=ready, details=details)
        leader_ready = (leader.get("status") or {}).get("readyReplicas", 0) >= 1
        state = "running" if leader_ready and ready >= wanted else "starting"
        if state == "starting":
            # Only then is it worth a pods list: say what holds it back, if it is stuck.
            problems = self._problems(leader, workers)
            if problems:
                details["error"] = "; ".join(problems)
                if any(p.startswith(self.leader) for p in problems):
                    state = "failed"
        return EngineStatus(
            engine=self.kind,
            state=state,
            workers=ready,
            address=self.address(),
            dashboard=self.dashboard(),
            details=details,
        )

    def _problems(self, *deployments: dict[str, Any]) -> list[str]:
        """Why pods of the engine do not run, in the API's words: a ReplicaSet that may not
        create pods (the namespace's quota), containers stuck waiting."""
        found = []
        for deployment in deployments:
            for condition in (deployment.get("status") or {}).get("conditions") or []:
                if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
                    name = deployment["metadata"]["name"]
                    found.append(f"{name}: {condition.get('message') or condition.get('reason')}")
        selector = urllib.parse.quote(f"{ko.ENGINE_LABEL}={self.kind}")
        ns = urllib.parse.quote(self.space.namespace)
        pods = self.space.api.request(
            "GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}"
        )
        for pod in pods.get("items", []):
            role = pod["metadata"].get("labels", {}).get(ko.ROLE_LABEL, "")
            deployment = ko.engine_mode(self.kind, role) if role else pod["metadata"]["name"]
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (container.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in _STUCK:
                    message = waiting.get("message") or ""
                    found.append(
                        f"{deployment} pod {pod['metadata']['name']}: {waiting['reason']}"
                        + (f" ({message})" if message else "")
                    )
        return found

    def address(self) -> str:
        """Where a client connects."""
        raise NotImplementedError

    def dashboard(self) -> str:
        """The engine's web UI, if it has one."""
        return ""

    def client_env(self) -> dict[str, str]:
        env = ko.make_notebook_env(self.space.namespace, engines=[self.kind])
        env.pop("CLUSTERHUB_ENGINES")  # the space's list, not this engine's
        return env


class KubeSparkEngine(KubeEngine):
    kind = "spark"

    def address(self) -> str:
        return self.client_env()["SPARK_MASTER_URL"]

    def dashboard(self) -> str:
        host = f"{ko.engine_service_name('spark')}.{self.space.namespace}.svc"
        return f"http://{host}:{ko.SPARK_MASTER_UI_PORT}"

    def alive_workers(self) -> list[dict[str, Any]]:
        """Workers the master knows as ALIVE (with their cores and memory), from its JSON."""
        try:
            with urllib.request.urlopen(f"{self.dashboard()}/json/", timeout=MASTER_TIMEOUT) as r:
                data = json.load(r)
        except (OSError, ValueError):
            return []
        return [w for w in data.get("workers", []) if w.get("state") == "ALIVE"]


class KubeIPyParallelEngine(KubeEngine):
    kind = "ipyparallel"

    def address(self) -> str:
        """The client connection file the spawner mounted into the notebook pod."""
        default = self.client_env()["CLUSTERHUB_IPP_CLIENT_FILE"]
        return self.space.environ.get("CLUSTERHUB_IPP_CLIENT_FILE", default)


def kube_engine(kind: str, space: KubeSpace, **kwargs: Any) -> KubeEngine:
    """The Kubernetes implementation of engine ``kind`` for ``space``."""
    if kind == "spark":
        return KubeSparkEngine(space, **kwargs)
    if kind == "ipyparallel":
        return KubeIPyParallelEngine(space, **kwargs)
    raise unknown_engine(kind)
