"""A small, honest, in-memory Kubernetes API server for tests.

It speaks the real wire protocol (JSON over HTTP, bearer token) so that unmodified clients
(kubernetes_asyncio, KubeSpawner, kubectl with ``--kubeconfig``) can talk to it, and it answers
the way a real kube-apiserver would: server-filled metadata, ``Status`` error bodies with the
real reasons and messages, resourceVersion semantics, watches, cascading deletion. Where it
cannot behave like a real cluster it fails loudly instead of pretending.

The pure parts live in modules of their own beside this one: ``resources`` (the kinds),
``errors`` (Status bodies, name and label checks), ``selectors``, ``patches``, ``defaults``
(what create fills in), ``admission`` (LimitRange and ResourceQuota) and ``rbac``. The server
is this module's :class:`KubeEmulator` (lifecycle, introspection), made of one part per
concern: ``store`` (the objects, their create/update/patch/delete and the history watches
read), ``routes`` (HTTP, authentication, RBAC, list and watch), ``subresources`` (scale,
binding, pods/log and pods/exec) and ``controllers`` (the built-in controllers), with what
they share in ``apiparts``.

Emulated
--------
* Discovery: ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>``, ``/apis/<group>/<version>``,
  ``/version``, ``/healthz``, ``/livez``, ``/readyz``.
* Kinds: core/v1 namespaces, nodes, pods (+status, log, binding), services (+status), secrets,
  configmaps, serviceaccounts, persistentvolumeclaims (+status), resourcequotas (+status),
  limitranges, events; apps/v1 deployments and replicasets (+status, scale);
  networking.k8s.io/v1 networkpolicies; rbac.authorization.k8s.io/v1 roles, rolebindings,
  clusterroles, clusterrolebindings.
* Verbs: create (201; uid, resourceVersion, creationTimestamp, namespace, generateName,
  defaults such as pod restartPolicy/terminationGracePeriodSeconds, service clusterIP,
  secret stringData -> data), get, list (labelSelector with =, ==, !=, in, notin, exists,
  !exists; fieldSelector with the field labels the real server supports per kind, others
  rejected with 400; resourceVersion/resourceVersionMatch; limit/continue), update (PUT; 409 on a
  stale resourceVersion; status ignored on the main resource of kinds with a status
  subresource; pod spec immutability; deployment selector immutability), patch (merge,
  strategic merge with the common patch merge keys and ``$patch`` directives, JSON patch),
  delete (DeleteOptions in body or query: gracePeriodSeconds, propagationPolicy
  Background/Foreground/Orphan, preconditions), deletecollection, cluster-wide list/watch of
  namespaced kinds.
* Watch: ``?watch=1|true`` streams ``{"type": ..., "object": ...}`` lines; no or ``0``
  resourceVersion (or ``sendInitialEvents``, then ended by the initial-events-end BOOKMARK)
  sends the current state as ADDED first; a given resourceVersion replays
  history after it, or sends an ERROR event with a 410 ``Expired`` Status when it is older than
  the retained history (see :meth:`KubeEmulator.compact`); ``timeoutSeconds`` closes the
  stream; selectors apply, and an object that stops/starts matching is sent as DELETED/ADDED.
* Graceful pod deletion: DELETE on a scheduled pod sets deletionTimestamp; the kubelet kills the
  processes and removes the pod with a zero-grace DELETE (as the real kubelet does). Finalizers
  hold deletion until they are removed.
* Namespace lifecycle: ``kubernetes.io/metadata.name`` label, ``default`` ServiceAccount created
  shortly after the namespace, DELETE -> Terminating -> all content deleted (pods through the
  kubelet) -> namespace removed; creating content in a terminating namespace is 403;
  ``default``, ``kube-system`` and ``kube-public`` may not be deleted.
* Controllers: Deployment (one ReplicaSet per pod-template hash, old ones scaled to 0, status
  and conditions), ReplicaSet (``<rs>-<5 chars>`` pods with controller ownerReferences, surplus
  pods deleted not-ready-first), garbage collector (ownerReferences with background,
  foreground and orphan propagation; owners of kinds it does not know are left alone).
* Authentication and RBAC (see :mod:`tests.kube.rbac`): the harness's admin token is in
  ``system:masters``; ``serviceaccounts/token`` (TokenRequest) issues each ServiceAccount a
  token of its own, and every request with it is authorised from the stored Roles,
  ClusterRoles and bindings (subresources included); writing a Role or binding that grants
  more than the writer holds is refused unless they hold ``escalate``/``bind``.
* Admission (see :mod:`tests.kube.admission`): LimitRange defaults and bounds per container,
  then ResourceQuota for pods, Services and claims (usage, "exceeded quota", a tracked
  resource a pod leaves out); a new quota refuses what it covers ("status unknown for
  quota") until the quota controller counts it (``quota_sync_delay``), and recounts as
  objects come and go. The ReplicaSet controller retries pods admission refused, with a
  FailedCreate event. Quantities come back in canonical form.
* pods/log is proxied to the kubelet's HTTP endpoint, which the kubelet registers in its Node
  object (``status.daemonEndpoints``), as the real API server does; so is pods/exec without
  stdin or tty, answered over a WebSocket (``v4.channel.k8s.io``: stdout on channel 1, stderr
  on 2, the Status with the exit code on 3) and authorised as ``create`` on ``pods/exec``,
  as from Kubernetes 1.31.

Not emulated
------------
* Admission plugins other than NamespaceLifecycle, LimitRanger and ResourceQuota (no
  PodSecurity, no webhooks); quota scopes and priority classes.
* Server-side apply (``application/apply-patch+yaml`` is answered 415), ``dryRun`` (400),
  managedFields, Table output, protobuf, aggregated discovery, OpenAPI documents.
* CustomResourceDefinitions and any kind not listed above; ``/api/v1/watch/...`` legacy paths.
* pods/exec with stdin or a tty (a command's output and exit code are, over the WebSocket
  channel protocol); attach, portforward, eviction, namespaces/finalize.
* Scheduling constraints other than nodeSelector (the kubelet doubles as scheduler); rolling
  update pacing (maxSurge/maxUnavailable, minReadySeconds: the new ReplicaSet is scaled up and
  old ones to 0 at once), HPA, Endpoints/EndpointSlices, kube-proxy (a service clusterIP is
  allocated from the loopback range 127.96.0.0/16 so nothing ever leaves the machine, and
  nothing listens there), DNS, volumes and PVC binding (PVCs stay Pending), bootstrap RBAC
  objects, ``kube-root-ca.crt`` ConfigMaps.
* A ``continue`` token pages through the current state, not the snapshot of the first page; an
  ``Exact`` list at an old resourceVersion is answered 410 as if compacted.
* Request counts only include client requests, not the built-in controllers' own work, and
  leave the process-kubelet's traffic out unless asked (``include_kubelet=True``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections import Counter, deque
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .apiparts import _Event, _Watcher, log
from .base import BackgroundLoop, Obj
from .controllers import Controllers
from .rbac import (
    ADMIN,
    Identity,
    Store,
)
from .resources import (
    NAMESPACES,
    RESOURCES,
)
from .routes import ApiRoutes
from .store import ObjectStore
from .subresources import Subresources


class KubeEmulator(ApiRoutes, Subresources, ObjectStore, Controllers):
    """In-memory Kubernetes API server on 127.0.0.1 (see the module docstring).

    ``start()`` binds a free port in a background thread and writes a kubeconfig; ``stop()``
    closes every watch and the server. The Python API beyond that is harness introspection
    only (:meth:`request_counts`, :meth:`reset_request_counts`, :meth:`compact`): product code
    under test must reach the emulator only over HTTP.
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        token: str | None = None,
        history_limit: int = 20000,
        quota_sync_delay: float = 0.2,
    ) -> None:
        self.workdir = Path(workdir)
        # Seconds before the quota controller first counts a new ResourceQuota; until then
        # admission refuses what it covers ("status unknown for quota"), as on a cluster.
        self.quota_sync_delay = quota_sync_delay
        self.token = token or secrets.token_hex(16)
        # Bearer tokens: the harness's admin token (system:masters), and one per
        # ServiceAccount issued through the TokenRequest API (serviceaccounts/token).
        self._identities: dict[str, Identity] = {self.token: ADMIN}
        self._rbac = Store(get=self._rbac_get, list=self._rbac_list)
        self.url = ""
        self.kubeconfig = str(self.workdir / "kubeconfig")
        self._bg = BackgroundLoop("kube-emulator")
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._rv = 0
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {rt.key: {} for rt in RESOURCES}
        self._uids: dict[str, tuple[str, tuple[str, str]]] = {}
        self._history: deque[_Event] = deque(maxlen=history_limit)
        self._history_floor = 0
        self._watchers: set[_Watcher] = set()
        self._pending: set[tuple[str, ...]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._terminating: set[str] = set()
        self._next_ip = 10
        self._counts: Counter[str] = Counter()
        self._kubelet_counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()

    # ---------------------------------------------------------------- lifecycle (test thread)

    def start(self) -> KubeEmulator:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o700)  # the admin kubeconfig: never for a pod's user to read
        self._bg.start()
        port = self._bg.run(self._start())
        self.url = f"http://127.0.0.1:{port}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": "default"},
                }
            ],
            "current-context": "emulator",
            "preferences": {},
        }
        # JSON is YAML, so every kubeconfig loader reads this.
        Path(self.kubeconfig).write_text(json.dumps(config, indent=2))
        return self

    def stop(self) -> None:
        try:
            self._bg.run(self._stop(), timeout=15)
        except Exception:
            log.exception("emulator shutdown failed")
        self._bg.stop()

    async def _start(self) -> int:
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._create(NAMESPACES, None, {"metadata": {"name": name}})
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a watch whose client went away must end, not linger.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5))
        return int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        for w in list(self._watchers):
            w.queue.put_nowait(None)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ---------------------------------------------------------------- harness introspection

    def request_counts(self, include_kubelet: bool = False) -> dict[str, int]:
        """Client requests so far, keyed ``"<verb> <resource>[/<subresource>]"``.

        Verbs are Kubernetes verbs (get, list, watch, create, update, patch, delete,
        deletecollection); discovery requests count as ``get discovery``. The process-kubelet's
        own traffic (by its User-Agent) is left out unless ``include_kubelet``.
        """
        with self._counts_lock:
            counts = Counter(self._counts)
            if include_kubelet:
                counts.update(self._kubelet_counts)
            return dict(counts)

    def reset_request_counts(self) -> None:
        with self._counts_lock:
            self._counts.clear()
            self._kubelet_counts.clear()

    def compact(self) -> int:
        """Forget the watch history, like an etcd compaction; returns the current version.

        A watch from any older resourceVersion then gets a 410 Expired ERROR event.
        """

        def _do() -> int:
            self._history.clear()
            self._history_floor = self._rv
            return self._rv

        return self._bg.call(_do)

    def _count(self, request: web.Request, verb: str, resource: str) -> None:
        key = f"{verb} {resource}"
        with self._counts_lock:
            if request.headers.get("User-Agent", "").startswith("process-kubelet/"):
                self._kubelet_counts[key] += 1
            else:
                self._counts[key] += 1
