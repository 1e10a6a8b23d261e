"""A small, honest, in-memory Kubernetes API server for tests.

It speaks the real wire protocol (JSON over HTTP, bearer token) so that unmodified clients
(kubernetes_asyncio, KubeSpawner, kubectl with ``--kubeconfig``) can talk to it, and it answers
the way a real kube-apiserver would: server-filled metadata, ``Status`` error bodies with the
real reasons and messages, resourceVersion semantics, watches, cascading deletion. Where it
cannot behave like a real cluster it fails loudly instead of pretending.

The pure parts live in modules of their own beside this one: ``resources`` (the kinds),
``errors`` (Status bodies, name and label checks), ``selectors``, ``patches``, ``defaults``
(what create fills in), ``admission`` (LimitRange and ResourceQuota) and ``rbac``; this
module is the server, its storage, watches and built-in controllers.

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
import base64
import contextvars
import copy
import json
import logging
import secrets
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .base import _STANDARD_VERBS, KUBE_VERSION, BackgroundLoop, Obj, now_iso, random_suffix
from .controllers import Controllers
from .defaults import _qos_class, _strip_type, default_pod_spec
from .errors import (
    ApiError,
    _details,
    _label_errors,
    _name_errors,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    method_not_allowed,
    not_found,
    resource_not_found,
)
from .patches import PATCH_TYPES, apply_patch
from .rbac import (
    ADMIN,
    Identity,
    Store,
    escalation_refusal,
    forbidden_message,
    service_account_identity,
)
from .rbac import Request as RbacRequest
from .rbac import allowed as rbac_allowed
from .resources import (
    _BY_GV,
    _BY_KEY,
    _RBAC,
    CLAIMS,
    DEPLOYMENTS,
    NAMESPACES,
    NODES,
    PODS,
    REPLICASETS,
    RESOURCES,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    ResourceType,
)
from .selectors import (
    LabelPredicate,
    label_selector_object_matches,
    label_selector_to_string,
    parse_field_selector,
    parse_label_selector,
)

log = logging.getLogger(__name__)

_NAMED_VERBS = {
    "GET": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
    "POST": "create",
}
# Who the request being handled comes from (set once its token is checked). Built-in
# controllers act as the admin.
_CALLER: contextvars.ContextVar[Identity] = contextvars.ContextVar("caller", default=ADMIN)


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------


@dataclass
class _Event:
    rv: int
    rt_key: str
    type: str
    obj: Obj
    old: Obj | None = None


@dataclass(eq=False)
class _Watcher:
    rt_key: str
    queue: asyncio.Queue[_Event | None] = field(default_factory=asyncio.Queue)


class KubeEmulator(Controllers):
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

    # ---------------------------------------------------------------- storage primitives

    def _get_obj(self, rt: ResourceType, ns: str | None, name: str) -> Obj | None:
        return self._objects[rt.key].get((ns or "", name))

    def _objects_in(self, rt: ResourceType, ns: str | None) -> list[Obj]:
        items = [o for (ons, _), o in self._objects[rt.key].items() if ns is None or ons == ns]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items

    def _commit(self, rt: ResourceType, obj: Obj, etype: str, old: Obj | None = None) -> Obj:
        """Store (or remove, for DELETED) an object under a new resourceVersion."""
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        key = (meta.get("namespace", ""), meta["name"])
        if etype == "DELETED":
            self._objects[rt.key].pop(key, None)
            self._uids.pop(meta["uid"], None)
        else:
            self._objects[rt.key][key] = obj
            self._uids[meta["uid"]] = (rt.key, key)
        event = _Event(self._rv, rt.key, etype, obj, old)
        if self._history.maxlen and len(self._history) == self._history.maxlen:
            self._history_floor = self._history[0].rv
        self._history.append(event)
        for w in self._watchers:
            if w.rt_key == rt.key:
                w.queue.put_nowait(event)
        self._on_change(rt, event)
        return obj

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        gone = copy.deepcopy(obj)
        self._commit(rt, gone, "DELETED", obj)
        self._schedule(("gc",))
        return gone

    # ---------------------------------------------------------------- core operations

    def _check_body(self, rt: ResourceType, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request must be a {rt.kind} object")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind and kind != rt.kind:
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        if api_version and api_version != rt.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
            )
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        return body

    def _with_type(self, rt: ResourceType, obj: Obj) -> Obj:
        out = {"kind": rt.kind, "apiVersion": rt.api_version}
        out.update(_strip_type(obj))
        return out

    def _namespace_usable(self, rt: ResourceType, ns: str, name: str) -> None:
        ns_obj = self._get_obj(NAMESPACES, None, ns)
        if ns_obj is None:
            raise not_found(NAMESPACES, ns)
        if ns_obj.get("status", {}).get("phase") == "Terminating":
            why = f"unable to create new content in namespace {ns} because it is being terminated"
            raise forbidden(
                rt,
                name,
                why,
                [{"reason": "NamespaceTerminating", "message": why, "field": "metadata.namespace"}],
            )

    def _create(self, rt: ResourceType, ns: str | None, body: Any) -> Obj:
        obj = copy.deepcopy(self._check_body(rt, body))
        meta = obj.get("metadata") or {}
        if rt.namespaced:
            assert ns is not None
            if meta.get("namespace") and meta["namespace"] != ns:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = meta["generateName"] + random_suffix()
        if not name:
            raise invalid(
                rt, "", [("metadata.name", "Required value: name or generateName is required")]
            )
        meta["name"] = name
        errors = [("metadata.name", e) for e in _name_errors(name, rt.name_rule)]
        errors += _label_errors(meta.get("labels"), "metadata.labels")
        if errors:
            raise invalid(rt, name, errors)
        if rt.namespaced:
            self._namespace_usable(rt, ns or "", name)
        self._check_escalation(rt, obj, ns)
        if self._get_obj(rt, ns, name) is not None:
            raise already_exists(rt, name)
        for k in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
            "generation",
        ):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        obj["metadata"] = meta
        obj = self._with_type(rt, obj)
        self._prepare_create(rt, obj)
        return self._commit(rt, obj, "ADDED")

    def _prepare_create(self, rt: ResourceType, obj: Obj) -> None:
        """Per-kind defaulting and validation on create."""
        meta, name = obj["metadata"], obj["metadata"]["name"]
        if rt.has_status and rt is not NODES:
            obj["status"] = {}
        if rt is NAMESPACES:
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
            obj["status"] = {"phase": "Active"}
        elif rt is PODS:
            spec = obj.get("spec")
            if not isinstance(spec, dict) or not spec.get("containers"):
                raise invalid(rt, name, [("spec.containers", "Required value")])
            errors = []
            for n, c in enumerate(spec["containers"]):
                if not c.get("name"):
                    errors.append((f"spec.containers[{n}].name", "Required value"))
                if not c.get("image"):
                    errors.append((f"spec.containers[{n}].image", "Required value"))
            if errors:
                raise invalid(rt, name, errors)
            default_pod_spec(spec)
            self._admit(rt, obj)
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
        elif rt is SERVICES:
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec.get("clusterIP") != "None":
                if not spec.get("ports"):
                    raise invalid(rt, name, [("spec.ports", "Required value")])
                spec["clusterIP"] = self._allocate_ip()
                spec["clusterIPs"] = [spec["clusterIP"]]
            else:
                spec["clusterIPs"] = ["None"]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
            obj["status"] = {"loadBalancer": {}}
            self._admit(rt, obj)
        elif rt is SECRETS:
            self._normalise_secret(obj)
        elif rt in (DEPLOYMENTS, REPLICASETS):
            self._validate_workload(rt, obj)
            meta["generation"] = 1
        elif rt is CLAIMS:
            obj.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
            obj["status"] = {"phase": "Pending"}
            self._admit(rt, obj)

    def _normalise_secret(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        obj.setdefault("type", "Opaque")
        data = obj.get("data") or {}
        for k, v in data.items():
            try:
                base64.b64decode(v, validate=True)
            except Exception:
                raise invalid(
                    SECRETS, name, [(f"data[{k}]", "Invalid value: illegal base64 data")]
                ) from None
        for k, v in (obj.pop("stringData", None) or {}).items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        if data:
            obj["data"] = data

    def _validate_workload(self, rt: ResourceType, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        if rt is DEPLOYMENTS:
            spec.setdefault(
                "strategy",
                {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                },
            )
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
        errors: list[tuple[str, str]] = []
        selector = spec.get("selector")
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not selector:
            errors.append(("spec.selector", "Required value"))
        elif not label_selector_object_matches(selector, labels):
            errors.append(
                (
                    "spec.template.metadata.labels",
                    f"Invalid value: {json.dumps(labels)}: `selector` does not match template "
                    "`labels`",
                )
            )
        errors += _label_errors(labels, "spec.template.metadata.labels")
        if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 0:
            errors.append(("spec.replicas", "Invalid value: must be greater than or equal to 0"))
        tspec = template.get("spec")
        if not isinstance(tspec, dict) or not tspec.get("containers"):
            errors.append(("spec.template.spec.containers", "Required value"))
        else:
            default_pod_spec(tspec)
        if errors:
            raise invalid(rt, name, errors)

    def _allocate_ip(self) -> str:
        n = self._next_ip
        self._next_ip += 1
        return f"127.96.{n // 256}.{n % 256}"

    def _get(self, rt: ResourceType, ns: str | None, name: str) -> Obj:
        obj = self._get_obj(rt, ns, name)
        if obj is None:
            raise not_found(rt, name)
        return obj

    def _update(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        body: Any,
        subresource: str | None = None,
    ) -> Obj:
        new = copy.deepcopy(self._check_body(rt, body))
        nmeta = new.get("metadata") or {}
        if nmeta.get("name") and nmeta["name"] != name:
            raise bad_request(
                f"the name of the object ({nmeta['name']}) does not match the name on the URL "
                f"({name})"
            )
        if rt.namespaced and nmeta.get("namespace") and nmeta["namespace"] != ns:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        cur = self._get_obj(rt, ns, name)
        if cur is None:
            if rt.create_on_update and subresource is None:
                nmeta["name"] = name
                new["metadata"] = nmeta
                return self._create(rt, ns, new)
            raise not_found(rt, name)
        cmeta = cur["metadata"]
        if subresource is None:
            self._check_escalation(rt, {**new, "metadata": {**nmeta, "name": name}}, ns)
        if nmeta.get("resourceVersion") and nmeta["resourceVersion"] != cmeta["resourceVersion"]:
            raise conflict(rt, name)
        if nmeta.get("uid") and nmeta["uid"] != cmeta["uid"]:
            raise conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {nmeta['uid']}, UID in object meta: "
                f"{cmeta['uid']}",
            )
        if subresource == "status":
            result = copy.deepcopy(cur)
            if "status" in new:
                result["status"] = new["status"]
        else:
            result = self._with_type(rt, new)
            meta = dict(nmeta)
            for k in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
                "generateName",
            ):
                if k in cmeta:
                    meta[k] = cmeta[k]
                else:
                    meta.pop(k, None)
            meta.pop("managedFields", None)
            result["metadata"] = meta
            if rt.has_status:
                if "status" in cur:
                    result["status"] = copy.deepcopy(cur["status"])
                else:
                    result.pop("status", None)
            errors = _label_errors(meta.get("labels"), "metadata.labels")
            if errors:
                raise invalid(rt, name, errors)
            self._prepare_update(rt, result, cur)
        if _strip_rv(result) == _strip_rv(cur):
            return cur  # a no-op write gets no new resourceVersion and no event
        result["metadata"]["resourceVersion"] = cmeta["resourceVersion"]
        self._commit(rt, result, "MODIFIED", cur)
        self._maybe_finish_deletion(rt, result)
        return result

    def _prepare_update(self, rt: ResourceType, new: Obj, cur: Obj) -> None:
        name = cur["metadata"]["name"]
        if rt is NAMESPACES:
            new["spec"] = copy.deepcopy(cur.get("spec", {}))
            new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        elif rt is PODS:
            spec = new.get("spec") or {}
            default_pod_spec(spec)
            allowed = copy.deepcopy(cur["spec"])
            for field_name in ("containers", "initContainers"):
                for c_new, c_allowed in zip(
                    spec.get(field_name) or [], allowed.get(field_name) or [], strict=False
                ):
                    if "image" in c_new:
                        c_allowed["image"] = c_new["image"]
            for k in ("activeDeadlineSeconds", "tolerations"):
                if k in spec:
                    allowed[k] = spec[k]
            if spec != allowed:
                raise invalid(
                    rt,
                    name,
                    [
                        (
                            "spec",
                            "Forbidden: pod updates may not change fields other than "
                            "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                            "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions "
                            "to existing tolerations), `spec.terminationGracePeriodSeconds` "
                            "(allow it to be set to 1 if it was previously negative)",
                        )
                    ],
                )
            new["spec"] = spec
        elif rt is SERVICES:
            spec = new.setdefault("spec", {})
            cspec = cur.get("spec", {})
            for k in ("clusterIP", "clusterIPs"):
                if not spec.get(k):
                    spec[k] = copy.deepcopy(cspec.get(k))
                elif spec[k] != cspec.get(k):
                    raise invalid(rt, name, [(f"spec.{k}", "Invalid value: field is immutable")])
            for k in ("type", "sessionAffinity", "ipFamilies", "ipFamilyPolicy"):
                if k in cspec:
                    spec.setdefault(k, cspec[k])
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
        elif rt is SECRETS:
            if cur.get("immutable") and (
                new.get("data") != cur.get("data") or new.get("stringData")
            ):
                raise invalid(
                    rt, name, [("data", "Forbidden: field is immutable when `immutable` is set")]
                )
            self._normalise_secret(new)
        elif rt.plural == "configmaps":
            if cur.get("immutable") and (
                new.get("data") != cur.get("data") or new.get("binaryData") != cur.get("binaryData")
            ):
                raise invalid(
                    rt, name, [("data", "Forbidden: field is immutable when `immutable` is set")]
                )
        elif rt in (DEPLOYMENTS, REPLICASETS):
            new_sel = (new.get("spec") or {}).get("selector")
            if new_sel != cur["spec"].get("selector"):
                raise invalid(rt, name, [("spec.selector", "Invalid value: field is immutable")])
            self._validate_workload(rt, new)
            if new["spec"] != cur["spec"]:
                new["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1

    def _patch(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        body: Any,
        content_type: str,
        subresource: str | None = None,
    ) -> Obj:
        cur = self._get(rt, ns, name)
        try:
            patched = apply_patch(cur, body, content_type)
        except ValueError as exc:
            raise ApiError(422, "Invalid", str(exc)) from None
        if not isinstance(patched, dict):
            raise bad_request("the patch did not produce an object")
        meta = patched.setdefault("metadata", {})
        # A resourceVersion the patch did not set is the current one: patches are
        # unconditional unless they carry a resourceVersion themselves.
        if isinstance(body, dict) and not (body.get("metadata") or {}).get("resourceVersion"):
            meta["resourceVersion"] = cur["metadata"]["resourceVersion"]
        return self._update(rt, ns, name, patched, subresource)

    def _maybe_finish_deletion(self, rt: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return
        if rt is NAMESPACES and (obj.get("spec") or {}).get("finalizers"):
            return
        if rt is PODS and (meta.get("deletionGracePeriodSeconds") or 0) > 0:
            return  # the kubelet has to confirm the containers are gone
        self._remove(rt, obj)

    def _delete(
        self,
        rt: ResourceType,
        obj: Obj,
        grace: int | None = None,
        propagation: str | None = None,
        preconditions: Obj | None = None,
    ) -> tuple[Obj, bool]:
        """Delete or start deleting ``obj``; returns (object, removed-from-storage)."""
        meta = obj["metadata"]
        name = meta["name"]
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{meta['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(
                rt,
                name,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        if rt is NAMESPACES:
            return self._delete_namespace(obj), False
        if propagation not in (None, "Background", "Foreground", "Orphan"):
            raise bad_request(f"propagationPolicy {propagation!r} is not supported")
        if rt is PODS:
            spec, status = obj.get("spec", {}), obj.get("status", {})
            period = grace if grace is not None else spec.get("terminationGracePeriodSeconds", 30)
            if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
                period = 0
            period = max(int(period), 0)
            current = meta.get("deletionGracePeriodSeconds")
            if meta.get("deletionTimestamp") and current is not None and period >= current:
                return obj, False
            if period > 0:
                new = copy.deepcopy(obj)
                new["metadata"]["deletionTimestamp"] = now_iso(period)
                new["metadata"]["deletionGracePeriodSeconds"] = period
                self._commit(rt, new, "MODIFIED", obj)
                return new, False
        if propagation == "Orphan":
            self._orphan_dependents(meta["uid"])
        finalizers = list(meta.get("finalizers") or [])
        if propagation == "Foreground" and self._has_dependents(meta["uid"]):
            if "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
        if finalizers:
            new = copy.deepcopy(obj)
            new["metadata"]["finalizers"] = finalizers
            new["metadata"].setdefault("deletionTimestamp", now_iso())
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if new != obj:
                self._commit(rt, new, "MODIFIED", obj)
            self._schedule(("gc",))
            return new, False
        return self._remove(rt, obj), True

    # ---------------------------------------------------------------- HTTP layer

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        try:
            if path in ("/healthz", "/livez", "/readyz"):
                return web.Response(text="ok")
            if path == "/version":
                self._count(request, "get", "version")
                return web.json_response(KUBE_VERSION)
            self._check_auth(request)
            return await self._route(request, [s for s in path.split("/") if s])
        except ApiError as exc:
            return web.json_response(exc.status(), status=exc.code)
        except _PageNotFound:
            return web.Response(status=404, text="404 page not found\n")
        except Exception as exc:  # a bug in the emulator: answer like the real server would
            log.exception("emulator error on %s %s", request.method, request.path)
            err = ApiError(500, "InternalError", f"Internal error occurred: {exc!r}")
            return web.json_response(err.status(), status=500)

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        who = self._identities.get(token)
        if who is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        _CALLER.set(who)

    # ---------------------------------------------------------------- RBAC (see rbac.py)

    def _rbac_get(self, plural: str, ns: str, name: str) -> Obj | None:
        return self._get_obj(_BY_KEY[f"{_RBAC}/{plural}"], ns or None, name)

    def _rbac_list(self, plural: str, ns: str | None) -> list[Obj]:
        return self._objects_in(_BY_KEY[f"{_RBAC}/{plural}"], ns)

    def _authorize(
        self,
        request: web.Request,
        rt: ResourceType,
        ns: str | None,
        name: str | None,
        sub: str | None,
    ) -> None:
        method = request.method
        if name is None:
            if method == "GET":
                watch = request.query.get("watch", "").lower() in ("1", "true", "t")
                verb = "watch" if watch else "list"
            else:
                verb = {"POST": "create", "DELETE": "deletecollection"}.get(method, method.lower())
        elif sub == "exec":
            # A WebSocket upgrade is a GET, but exec needs create (Kubernetes 1.31 and later).
            verb = "create"
        else:
            verb = _NAMED_VERBS.get(method, method.lower())
        req = RbacRequest(verb, rt.group, rt.plural, sub or "", ns or "", name or "")
        who = _CALLER.get()
        if not rbac_allowed(who, req, self._rbac):
            details = {"name": name or "", "kind": rt.plural}
            if rt.group:
                details["group"] = rt.group
            raise ApiError(403, "Forbidden", forbidden_message(who, req), details)

    def _check_escalation(self, rt: ResourceType, obj: Obj, ns: str | None) -> None:
        if rt.group != _RBAC:
            return
        why = escalation_refusal(_CALLER.get(), rt.kind, obj, ns or "", self._rbac)
        if why:
            name = obj["metadata"].get("name", "")
            raise ApiError(403, "Forbidden", why, _details(rt, name))

    def _token_request(self, ns: str, name: str, body: Any) -> web.Response:
        """TokenRequest: a bearer token for the ServiceAccount (one per account, kept)."""
        self._get(SERVICE_ACCOUNTS, ns, name)  # 404 for a missing account
        who = service_account_identity(ns, name)
        token = next((t for t, i in self._identities.items() if i == who), None)
        if token is None:
            token = secrets.token_hex(16)
            self._identities[token] = who
        spec = (body or {}).get("spec") or {}
        return web.json_response(
            {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"audiences": spec.get("audiences") or [], **spec},
                "status": {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"},
            },
            status=201,
        )

    async def _route(self, request: web.Request, segs: list[str]) -> web.StreamResponse:
        if segs == ["api"]:
            self._count(request, "get", "discovery")
            host = request.host
            return web.json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": host}
                    ],
                }
            )
        if segs == ["apis"]:
            self._count(request, "get", "discovery")
            groups = sorted({(rt.group, rt.version) for rt in RESOURCES if rt.group})
            return web.json_response(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [self._api_group(g, v) for g, v in groups],
                }
            )
        if segs[0] == "api" and len(segs) >= 2:
            group, version, rest = "", segs[1], segs[2:]
        elif segs[0] == "apis" and len(segs) == 2:
            versions = [v for (g, v) in _BY_GV if g == segs[1]]
            if not versions:
                raise _PageNotFound()
            self._count(request, "get", "discovery")
            return web.json_response(
                {"kind": "APIGroup", "apiVersion": "v1", **self._api_group(segs[1], versions[0])}
            )
        elif segs[0] == "apis" and len(segs) >= 3:
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise _PageNotFound()
        kinds = _BY_GV.get((group, version))
        if kinds is None:
            raise _PageNotFound()
        if not rest:
            self._count(request, "get", "discovery")
            return web.json_response(self._resource_list(group, version, kinds))
        ns: str | None = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and rest[2] in kinds
            and kinds[rest[2]].namespaced
        ):
            ns, rest = rest[1], rest[2:]
        rt = kinds.get(rest[0])
        if rt is None or len(rest) > 3:
            raise resource_not_found()
        if rt.namespaced and ns is None and len(rest) > 1:
            raise resource_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in rt.subresources:
            raise resource_not_found()
        return await self._dispatch(request, rt, ns, name, sub)

    @staticmethod
    def _api_group(group: str, version: str) -> Obj:
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        return {"name": group, "versions": [gv], "preferredVersion": gv}

    @staticmethod
    def _resource_list(group: str, version: str, kinds: dict[str, ResourceType]) -> Obj:
        resources: list[Obj] = []
        for rt in kinds.values():
            entry: Obj = {
                "name": rt.plural,
                "singularName": rt.kind.lower(),
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(_STANDARD_VERBS),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            resources.append(entry)
            for sub in rt.subresources:
                s: Obj = {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                }
                if sub == "status":
                    s.update(kind=rt.kind, verbs=["get", "patch", "update"])
                elif sub == "scale":
                    s.update(
                        group="autoscaling",
                        version="v1",
                        kind="Scale",
                        verbs=["get", "patch", "update"],
                    )
                elif sub == "log":
                    s.update(kind="Pod", verbs=["get"])
                elif sub == "exec":
                    s.update(kind="PodExecOptions", verbs=["create", "get"])
                elif sub == "binding":
                    s.update(kind="Binding", verbs=["create"])
                resources.append(s)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    async def _read_body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None

    async def _dispatch(
        self,
        request: web.Request,
        rt: ResourceType,
        ns: str | None,
        name: str | None,
        sub: str | None,
    ) -> web.StreamResponse:
        q = request.query
        method = request.method
        resource = rt.plural + (f"/{sub}" if sub else "")
        self._authorize(request, rt, ns, name, sub)
        if "dryRun" in q:
            raise bad_request("dryRun is not supported by the test emulator")
        if name is None:
            if method == "GET":
                is_watch = q.get("watch", "").lower() in ("1", "true", "t")
                self._count(request, "watch" if is_watch else "list", resource)
                lsel, fsel = self._selectors(rt, q)
                if is_watch:
                    return await self._watch(request, rt, ns, lsel, fsel)
                return web.json_response(await self._list(rt, ns, lsel, fsel, q))
            if method == "POST":
                self._count(request, "create", resource)
                if rt.namespaced and ns is None:
                    raise method_not_allowed()
                body = await self._read_body(request)
                return web.json_response(self._create(rt, ns, body), status=201)
            if method == "DELETE":
                self._count(request, "deletecollection", resource)
                if rt.namespaced and ns is None:
                    raise method_not_allowed()
                lsel, fsel = self._selectors(rt, q)
                opts = self._delete_options(q, await self._read_body(request))
                items = []
                for obj in self._objects_in(rt, ns):
                    if lsel(obj["metadata"].get("labels") or {}) and fsel(obj):
                        out, _ = self._delete(rt, obj, opts["grace"], opts["propagation"])
                        items.append(_strip_type(out))
                return web.json_response(
                    {
                        "kind": f"{rt.kind}List",
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(self._rv)},
                        "items": items,
                    }
                )
            raise method_not_allowed()

        if sub == "log":
            if method != "GET":
                raise method_not_allowed()
            self._count(request, "get", resource)
            return await self._pod_log(request, ns, name)
        if sub == "exec":
            self._count(request, "create", resource)
            return await self._pod_exec(request, ns or "", name)
        if sub == "binding":
            if method != "POST":
                raise method_not_allowed()
            self._count(request, "create", resource)
            return self._bind(ns, name, await self._read_body(request))
        if sub == "scale":
            return await self._scale(request, rt, ns, name)
        if sub == "token":
            if method != "POST":
                raise method_not_allowed()
            self._count(request, "create", resource)
            return self._token_request(ns or "", name, await self._read_body(request))
        if method == "GET":
            self._count(request, "get", resource)
            return web.json_response(self._get(rt, ns, name))
        if method == "PUT":
            self._count(request, "update", resource)
            body = await self._read_body(request)
            existed = self._get_obj(rt, ns, name) is not None
            # 201 when the PUT created the object (the RBAC kinds allow create-on-update).
            return web.json_response(
                self._update(rt, ns, name, body, sub), status=200 if existed else 201
            )
        if method == "PATCH":
            self._count(request, "patch", resource)
            ctype = request.content_type
            if ctype not in PATCH_TYPES:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(PATCH_TYPES)}",
                )
            body = await self._read_body(request)
            return web.json_response(self._patch(rt, ns, name, body, ctype, sub))
        if method == "DELETE" and sub is None:
            self._count(request, "delete", resource)
            opts = self._delete_options(q, await self._read_body(request))
            obj = self._get(rt, ns, name)
            out, removed = self._delete(rt, obj, opts["grace"], opts["propagation"], opts["pre"])
            if removed and not rt.return_deleted_object:
                return web.json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": _details(rt, name, uid=out["metadata"]["uid"]),
                    }
                )
            return web.json_response(out)
        raise method_not_allowed()

    def _selectors(self, rt: ResourceType, q: Any) -> tuple[LabelPredicate, Callable[[Obj], bool]]:
        try:
            return (
                parse_label_selector(q.get("labelSelector")),
                parse_field_selector(q.get("fieldSelector"), rt),
            )
        except ValueError as exc:
            raise bad_request(str(exc)) from None

    @staticmethod
    def _delete_options(q: Any, body: Any) -> Obj:
        body = body if isinstance(body, dict) else {}
        grace = body.get("gracePeriodSeconds")
        if q.get("gracePeriodSeconds") is not None:
            grace = q.get("gracePeriodSeconds")
        propagation = q.get("propagationPolicy") or body.get("propagationPolicy")
        orphan = q.get("orphanDependents") or body.get("orphanDependents")
        if propagation is None and orphan in (True, "true"):
            propagation = "Orphan"
        try:
            grace = int(grace) if grace is not None else None
        except ValueError:
            raise bad_request(f"invalid gracePeriodSeconds {grace!r}") from None
        return {"grace": grace, "propagation": propagation, "pre": body.get("preconditions")}

    async def _list(
        self,
        rt: ResourceType,
        ns: str | None,
        lsel: LabelPredicate,
        fsel: Callable[[Obj], bool],
        q: Any,
    ) -> Obj:
        rv, match = q.get("resourceVersion"), q.get("resourceVersionMatch")
        if match and not rv:
            raise bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided"
            )
        if rv not in (None, "", "0"):
            try:
                wanted = int(rv)
            except ValueError:
                raise bad_request(f"invalid resource version {rv!r}") from None
            if match == "Exact" and wanted != self._rv:
                raise ApiError(
                    410, "Expired", "The resourceVersion for the provided list is too old."
                )
            for _ in range(30):  # the real server waits up to 3 s for a future version
                if wanted <= self._rv:
                    break
                await asyncio.sleep(0.1)
            else:
                raise ApiError(
                    504,
                    "Timeout",
                    f"Too large resource version: {wanted}, current: {self._rv}",
                    {
                        "causes": [
                            {
                                "reason": "ResourceVersionTooLarge",
                                "message": "Too large resource version",
                            }
                        ],
                        "retryAfterSeconds": 1,
                    },
                )
        items = [
            o
            for o in self._objects_in(rt, ns)
            if lsel(o["metadata"].get("labels") or {}) and fsel(o)
        ]
        meta: Obj = {"resourceVersion": str(self._rv)}
        cont = q.get("continue")
        if cont:
            try:
                start = json.loads(base64.urlsafe_b64decode(cont.encode()))["start"]
            except Exception:
                raise bad_request(
                    "continue key is not valid: incorrect encoded start resourceVersion "
                    "(version meta.k8s.io/v1)"
                ) from None
            items = [
                o
                for o in items
                if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > start
            ]
        limit = int(q.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            token = {"rv": self._rv, "start": [last.get("namespace", ""), last["name"]]}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": meta,
            "items": [_strip_type(o) for o in items],
        }

    async def _watch(
        self,
        request: web.Request,
        rt: ResourceType,
        ns: str | None,
        lsel: LabelPredicate,
        fsel: Callable[[Obj], bool],
    ) -> web.StreamResponse:
        q = request.query
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        except ValueError:
            raise bad_request(f"invalid timeoutSeconds {q.get('timeoutSeconds')!r}") from None
        rv = q.get("resourceVersion")

        def matches(o: Obj | None) -> bool:
            if o is None:
                return False
            meta = o["metadata"]
            return (
                (ns is None or meta.get("namespace") == ns)
                and lsel(meta.get("labels") or {})
                and fsel(o)
            )

        def translate(ev: _Event) -> tuple[str, Obj] | None:
            now, before = matches(ev.obj), matches(ev.old)
            if ev.type == "ADDED":
                return ("ADDED", ev.obj) if now else None
            if ev.type == "DELETED":
                return ("DELETED", ev.obj) if now or before else None
            if now and before:
                return ("MODIFIED", ev.obj)
            if now:
                return ("ADDED", ev.obj)
            if before and ev.old is not None:
                # The object left the selection: the real watch cache sends DELETED.
                gone = copy.deepcopy(ev.old)
                gone["metadata"]["resourceVersion"] = ev.obj["metadata"]["resourceVersion"]
                return ("DELETED", gone)
            return None

        initial: list[tuple[str, Obj]] = []
        send_initial = q.get("sendInitialEvents", "").lower() == "true"
        if send_initial and (
            q.get("resourceVersionMatch") != "NotOlderThan"
            or q.get("allowWatchBookmarks", "").lower() not in ("1", "true")
        ):
            raise ApiError(
                422,
                "Invalid",
                "sendInitialEvents requires allowWatchBookmarks=true and "
                "resourceVersionMatch=NotOlderThan",
            )
        if rv in (None, "", "0") or send_initial:
            initial = [("ADDED", o) for o in self._objects_in(rt, ns) if matches(o)]
            if send_initial:
                # The watch-list protocol: a bookmark marks the end of the initial state.
                bookmark = {
                    "kind": rt.kind,
                    "apiVersion": rt.api_version,
                    "metadata": {
                        "resourceVersion": str(self._rv),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }
                initial.append(("BOOKMARK", bookmark))
        else:
            try:
                start = int(rv)
            except ValueError:
                raise bad_request(f"invalid resource version {rv!r}") from None
            if start < self._history_floor:
                status = ApiError(
                    410, "Expired", f"too old resource version: {start} ({self._history_floor})"
                ).status()
                initial = [("ERROR", status)]
            else:
                for ev in self._history:
                    if ev.rv > start and ev.rt_key == rt.key:
                        t = translate(ev)
                        if t:
                            initial.append(t)
        # Registered synchronously with the snapshot above: nothing can slip in between.
        watcher = _Watcher(rt.key)
        expired = bool(initial) and initial[0][0] == "ERROR"
        if not expired:
            self._watchers.add(watcher)
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"},
        )
        resp.enable_chunked_encoding()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        try:
            await resp.prepare(request)
            if initial:
                await resp.write(b"".join(_event_line(t, o) for t, o in initial))
            while not expired:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(watcher.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if ev is None:
                    break
                t = translate(ev)
                if t:
                    await resp.write(_event_line(*t))
            await resp.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self._watchers.discard(watcher)
        return resp

    async def _scale(
        self, request: web.Request, rt: ResourceType, ns: str | None, name: str
    ) -> web.StreamResponse:
        method = request.method
        verb = {"GET": "get", "PUT": "update", "PATCH": "patch"}.get(method)
        if verb is None:
            raise method_not_allowed()
        self._count(request, verb, f"{rt.plural}/scale")
        cur = self._get(rt, ns, name)
        if method == "GET":
            return web.json_response(self._scale_of(cur))
        body = await self._read_body(request)
        if method == "PATCH":
            ctype = request.content_type
            if ctype not in PATCH_TYPES:
                raise ApiError(415, "UnsupportedMediaType", "unsupported patch type")
            try:
                body = apply_patch(self._scale_of(cur), body, ctype)
            except ValueError as exc:
                raise ApiError(422, "Invalid", str(exc)) from None
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a Scale object")
        replicas = (body.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            scale_rt = ResourceType("autoscaling", "v1", "scale", "Scale", True)
            raise invalid(
                scale_rt,
                name,
                [("spec.replicas", "Invalid value: must be greater than or equal to 0")],
            )
        brv = (body.get("metadata") or {}).get("resourceVersion")
        if brv and brv != cur["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        new = copy.deepcopy(cur)
        new["spec"]["replicas"] = replicas
        updated = self._update(rt, ns, name, new)
        return web.json_response(self._scale_of(updated))

    @staticmethod
    def _scale_of(obj: Obj) -> Obj:
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": obj["spec"].get("replicas", 0)},
            "status": {
                "replicas": obj.get("status", {}).get("replicas", 0),
                "selector": label_selector_to_string(obj["spec"].get("selector")),
            },
        }

    def _bind(self, ns: str | None, name: str, body: Any) -> web.Response:
        pod = self._get(PODS, ns, name)
        target = (body or {}).get("target") or {}
        node = target.get("name")
        if not node:
            raise invalid(
                ResourceType("", "v1", "bindings", "Binding", True),
                name,
                [("target.name", "Required value")],
            )
        if pod["spec"].get("nodeName"):
            raise conflict(
                ResourceType("", "v1", "pods/binding", "Binding", True),
                name,
                f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
            )
        if pod["metadata"].get("deletionTimestamp"):
            raise conflict(PODS, name, "pod is being deleted, cannot be assigned to a host")
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node
        conditions = [
            c for c in new["status"].get("conditions") or [] if c.get("type") != "PodScheduled"
        ]
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now_iso(),
            }
        )
        new["status"]["conditions"] = conditions
        self._commit(PODS, new, "MODIFIED", pod)
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            status=201,
        )

    def _pod_container(self, pod: Obj, name: str, container: str | None) -> str:
        """The container a log or exec request means (the only one, or the named one)."""
        spec = pod["spec"]
        names = [c["name"] for c in spec.get("containers") or []]
        init_names = [c["name"] for c in spec.get("initContainers") or []]
        if not container:
            if len(names) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(names)}]"
                    + (
                        f" or one of the init containers: [{' '.join(init_names)}]"
                        if init_names
                        else ""
                    )
                )
            container = names[0]
        if container not in names + init_names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        return container

    def _kubelet_url(self, pod: Obj, container: str) -> str:
        """Where the kubelet of the pod's node serves it; 400 while the container waits."""
        spec, name = pod["spec"], pod["metadata"]["name"]
        statuses = {
            s["name"]: s
            for s in (pod.get("status", {}).get("containerStatuses") or [])
            + (pod.get("status", {}).get("initContainerStatuses") or [])
        }
        st = statuses.get(container)
        waiting = st is None or ("waiting" in (st.get("state") or {}) and not st.get("lastState"))
        if not spec.get("nodeName") or waiting:
            reason = (
                ((st or {}).get("state") or {})
                .get("waiting", {})
                .get("reason", "ContainerCreating")
            )
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: {reason}'
            )
        node = self._get_obj(NODES, None, spec["nodeName"])
        endpoint = (
            ((node or {}).get("status") or {}).get("daemonEndpoints", {}).get("kubeletEndpoint", {})
        )
        port = endpoint.get("Port")
        address = next(
            (
                a["address"]
                for a in ((node or {}).get("status") or {}).get("addresses") or []
                if a.get("type") == "InternalIP"
            ),
            None,
        )
        if not port or not address:
            raise ApiError(
                500, "InternalError", f"no kubelet endpoint registered for node {spec['nodeName']}"
            )
        return f"http://{address}:{port}"

    async def _pod_log(self, request: web.Request, ns: str | None, name: str) -> web.StreamResponse:
        q = request.query
        pod = self._get(PODS, ns, name)
        container = self._pod_container(pod, name, q.get("container"))
        kubelet = self._kubelet_url(pod, container)
        params = {
            k: q[k]
            for k in ("follow", "tailLines", "previous", "limitBytes", "timestamps")
            if k in q
        }
        assert self._http is not None
        url = f"{kubelet}/containerLogs/{ns}/{name}/{container}"
        async with self._http.get(url, params=params) as upstream:
            if upstream.status != 200:
                text = await upstream.text()
                raise ApiError(
                    upstream.status,
                    "BadRequest" if upstream.status == 400 else "NotFound",
                    text.strip(),
                )
            resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                pass
            return resp

    async def _pod_exec(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        """pods/exec: the kubelet runs the command in the container; its output and exit code
        go back over the WebSocket channel protocol, as ``kubectl exec`` reads them."""
        q = request.query
        flags = ("stdin", "stdout", "stderr", "tty")
        flag = {k: q.get(k, "").lower() in ("1", "true") for k in flags}
        command = q.getall("command", [])
        if not (flag["stdin"] or flag["stdout"] or flag["stderr"]):
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        if not command:
            raise bad_request("you must specify at least one command for the container")
        if flag["stdin"] or flag["tty"]:
            raise bad_request("exec with stdin or a tty is not emulated by the test emulator")
        pod = self._get(PODS, ns, name)
        container = self._pod_container(pod, name, q.get("container"))
        kubelet = self._kubelet_url(pod, container)
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS)
        if not ws.can_prepare(request).ok:
            raise bad_request("Upgrade request required")
        await ws.prepare(request)
        assert self._http is not None
        url = f"{kubelet}/exec/{ns}/{name}/{container}"
        async with self._http.post(url, json={"command": command}) as answer:
            if answer.status != 200:
                status = {
                    "metadata": {},
                    "status": "Failure",
                    "message": (await answer.text()).strip(),
                    "reason": "BadRequest",
                    "code": answer.status,
                }
                await ws.send_bytes(b"\x03" + json.dumps(status).encode())
                await ws.close()
                return ws
            result = await answer.json()
        out, err = base64.b64decode(result["stdout"]), base64.b64decode(result["stderr"])
        if flag["stdout"] and out:
            await ws.send_bytes(b"\x01" + out)
        if flag["stderr"] and err:
            await ws.send_bytes(b"\x02" + err)
        await ws.send_bytes(b"\x03" + json.dumps(_exec_status(command, result)).encode())
        await ws.close()
        return ws


# What kubectl and the Kubernetes clients offer for exec; v4 and later carry the exit code.
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


def _exec_status(command: list[str], result: dict) -> Obj:
    """The Status that ends an exec stream (what the real kubelet sends on channel 3)."""
    code = int(result["code"])
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    if result.get("error"):
        return {"metadata": {}, "status": "Failure", "message": result["error"]}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            f"command terminated with non-zero exit code: error executing command "
            f"[{' '.join(command)}], exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


class _PageNotFound(Exception):
    pass


def _strip_rv(obj: Obj) -> Obj:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return out


def _event_line(etype: str, obj: Obj) -> bytes:
    return (json.dumps({"type": etype, "object": obj}, separators=(",", ":")) + "\n").encode()
