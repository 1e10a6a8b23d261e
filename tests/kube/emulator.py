"""A small, honest, in-memory Kubernetes API server for tests.

It speaks the real wire protocol (JSON over HTTP, bearer token) so that unmodified clients
(kubernetes_asyncio, KubeSpawner, kubectl with ``--kubeconfig``) can talk to it, and it answers
the way a real kube-apiserver would: server-filled metadata, ``Status`` error bodies with the
real reasons and messages, resourceVersion semantics, watches, cascading deletion. Where it
cannot behave like a real cluster it fails loudly instead of pretending.

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
* pods/log is proxied to the kubelet's HTTP endpoint, which the kubelet registers in its Node
  object (``status.daemonEndpoints``), as the real API server does.

Not emulated
------------
* Admission other than the NamespaceLifecycle checks above; no ResourceQuota/LimitRange
  enforcement or accounting.
* Server-side apply (``application/apply-patch+yaml`` is answered 415), ``dryRun`` (400),
  managedFields, Table output, protobuf, aggregated discovery, OpenAPI documents.
* CustomResourceDefinitions and any kind not listed above; ``/api/v1/watch/...`` legacy paths.
* pods/exec, attach, portforward, eviction, namespaces/finalize.
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
import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from . import admission
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

log = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")

KUBE_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0+clusterhub-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# The alphabet Kubernetes uses for generated name suffixes and pod-template hashes (no vowels,
# no look-alike characters), so generated names look like a real cluster's.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_STANDARD_VERBS = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
]


def now_iso(offset_seconds: float = 0) -> str:
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset_seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(_SAFE_ALPHABET) for _ in range(n))


# --------------------------------------------------------------------------------------------
# Background event loop: the emulator (and the kubelet) run in their own thread so that both
# synchronous test code and the test's own asyncio loop can talk to them over HTTP.
# --------------------------------------------------------------------------------------------


class BackgroundLoop:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        """Run a coroutine in the loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float | None = 30) -> T:
        """Run a plain function in the loop's thread (for loop-owned state) and return it."""

        async def _wrapper() -> T:
            return fn()

        return self.run(_wrapper(), timeout)

    def stop(self) -> None:
        if not self._thread.is_alive():
            self.loop.close()
            return

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(_cancel_all(), timeout=10)
        except Exception:  # a stuck task must not keep the thread (and the test) alive
            log.exception("%s: cancelling tasks failed", self.name)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


# --------------------------------------------------------------------------------------------
# Resource types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # The main endpoint ignores status writes (status is written through /status).
    has_status: bool = False
    # DELETE answers with the object instead of a Status (pods, services, namespaces).
    return_deleted_object: bool = False
    # PUT of a missing object creates it (true for the RBAC kinds in a real server).
    create_on_update: bool = False
    name_rule: str = "subdomain"

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The group-qualified resource name real error messages use (``deployments.apps``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


_RBAC = "rbac.authorization.k8s.io"
RESOURCES: list[ResourceType] = [
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        ("ns",),
        ("status",),
        True,
        True,
        name_rule="label",
    ),
    ResourceType("", "v1", "nodes", "Node", False, ("no",), ("status",), True),
    ResourceType("", "v1", "pods", "Pod", True, ("po",), ("status", "log", "binding"), True, True),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        True,
        ("svc",),
        ("status",),
        True,
        True,
        name_rule="dns1035",
    ),
    ResourceType("", "v1", "secrets", "Secret", True),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), ("token",)),
    ResourceType(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        True,
        ("pvc",),
        ("status",),
        True,
    ),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",), ("status",), True),
    ResourceType("", "v1", "limitranges", "LimitRange", True, ("limits",)),
    ResourceType("", "v1", "events", "Event", True, ("ev",)),
    ResourceType(
        "apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale"), True
    ),
    ResourceType(
        "apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale"), True
    ),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    ResourceType(_RBAC, "v1", "roles", "Role", True, create_on_update=True, name_rule="path"),
    ResourceType(
        _RBAC, "v1", "rolebindings", "RoleBinding", True, create_on_update=True, name_rule="path"
    ),
    ResourceType(
        _RBAC, "v1", "clusterroles", "ClusterRole", False, create_on_update=True, name_rule="path"
    ),
    ResourceType(
        _RBAC,
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        False,
        create_on_update=True,
        name_rule="path",
    ),
]
_BY_GV: dict[tuple[str, str], dict[str, ResourceType]] = {}
for _rt in RESOURCES:
    _BY_GV.setdefault((_rt.group, _rt.version), {})[_rt.plural] = _rt
_BY_KEY = {rt.key: rt for rt in RESOURCES}
_KNOWN_KINDS = {(rt.api_version, rt.kind) for rt in RESOURCES}
NAMESPACES = _BY_KEY["/namespaces"]
NODES = _BY_KEY["/nodes"]
PODS = _BY_KEY["/pods"]
SERVICES = _BY_KEY["/services"]
SECRETS = _BY_KEY["/secrets"]
SERVICE_ACCOUNTS = _BY_KEY["/serviceaccounts"]
SERVICEACCOUNTS = _BY_KEY["/serviceaccounts"]
DEPLOYMENTS = _BY_KEY["apps/deployments"]
REPLICASETS = _BY_KEY["apps/replicasets"]
CLAIMS = _BY_KEY["/persistentvolumeclaims"]
QUOTAS = _BY_KEY["/resourcequotas"]
LIMIT_RANGES = _BY_KEY["/limitranges"]

# Field labels the real server accepts per resource (besides metadata.name/namespace).
_FIELD_LABELS: dict[str, set[str]] = {
    "pods": {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    },
    "events": {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
    "namespaces": {"status.phase"},
    "secrets": {"type"},
    "nodes": {"spec.unschedulable"},
    "replicasets": {"status.replicas"},
}
_FIELD_ALIASES = {"source": "source.component"}

_UNDELETABLE_NAMESPACES = {"default", "kube-system", "kube-public"}


# --------------------------------------------------------------------------------------------
# Errors: always a v1 Status body, with the reasons and messages of the real server.
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(rt: ResourceType, name: str, kind: str | None = None, **extra: Any) -> Obj:
    d: Obj = {"name": name}
    if rt.group:
        d["group"] = rt.group
    d["kind"] = kind or rt.plural
    d.update(extra)
    return d


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _details(rt, name)
    )


def conflict(rt: ResourceType, name: str, why: str | None = None) -> ApiError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version and "
        "try again"
    )
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        _details(rt, name),
    )


def invalid(rt: ResourceType, name: str, errors: list[tuple[str, str]]) -> ApiError:
    parts = [f"{f}: {m}" for f, m in errors]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    causes = [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in errors]
    return ApiError(
        422,
        "Invalid",
        f'{rt.qualified_kind} "{name}" is invalid: {joined}',
        _details(rt, name, kind=rt.kind, causes=causes),
    )


def forbidden(rt: ResourceType, name: str, why: str, causes: list[Obj] | None = None) -> ApiError:
    extra = {"causes": causes} if causes else {}
    return ApiError(
        403,
        "Forbidden",
        f'{rt.qualified} "{name}" is forbidden: {why}',
        _details(rt, name, **extra),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def resource_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def _name_errors(name: str, rule: str) -> list[str]:
    if rule == "path":
        if name in (".", "..") or "/" in name or "%" in name:
            return [f"Invalid value: \"{name}\": may not contain '/' or '%' or be '.' or '..'"]
        return []
    if rule == "label":
        ok = len(name) <= 63 and _DNS1123_LABEL.fullmatch(name)
        what = (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
            "'-', and must start and end with an alphanumeric character"
        )
    elif rule == "dns1035":
        ok = len(name) <= 63 and _DNS1035_LABEL.fullmatch(name)
        what = (
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
            "with an alphabetic character, and end with an alphanumeric character"
        )
    else:
        ok = len(name) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(name)
        what = (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character"
        )
    return [] if ok else [f'Invalid value: "{name}": {what}']


def _label_errors(labels: Any, path: str) -> list[tuple[str, str]]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [(path, "Invalid value: must be a map of strings")]
    errors = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not (len(prefix) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(prefix))) or not (
            len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name)
        ):
            errors.append(
                (
                    path,
                    f'Invalid value: "{key}": name part must consist of alphanumeric '
                    "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                    "character",
                )
            )
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            errors.append(
                (
                    path,
                    f'Invalid value: "{value}": a valid label must be an empty string or '
                    "consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                    "with an alphanumeric character",
                )
            )
    return errors


# --------------------------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------------------------

_KEY_RE = r"[A-Za-z0-9][-A-Za-z0-9_./]*"


def _split_top_level(text: str) -> list[str]:
    """Split a selector on commas that are not inside ``in (...)`` value lists."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


LabelPredicate = Callable[[dict[str, str]], bool]


def parse_label_selector(text: str | None) -> LabelPredicate:
    """Parse the string form of a label selector into a predicate over a label map."""
    if not text:
        return lambda labels: True
    reqs: list[LabelPredicate] = []
    for term in _split_top_level(text):
        m = re.fullmatch(rf"(!?)\s*({_KEY_RE})", term)
        if m:
            neg, key = m.group(1) == "!", m.group(2)
            reqs.append(lambda lb, k=key, n=neg: (k in lb) != n)
            continue
        m = re.fullmatch(rf"({_KEY_RE})\s+(in|notin)\s*\(([^()]*)\)", term)
        if m:
            key, op = m.group(1), m.group(2)
            values = {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                reqs.append(lambda lb, k=key, vs=values: k in lb and lb[k] in vs)
            else:
                reqs.append(lambda lb, k=key, vs=values: k not in lb or lb[k] not in vs)
            continue
        m = re.fullmatch(rf"({_KEY_RE})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)", term)
        if m:
            key, op, value = m.group(1), m.group(2), m.group(3)
            if op == "!=":
                reqs.append(lambda lb, k=key, v=value: k not in lb or lb[k] != v)
            else:
                reqs.append(lambda lb, k=key, v=value: k in lb and lb[k] == v)
            continue
        raise ValueError(f"unable to parse requirement: {term!r}")
    return lambda labels: all(r(labels) for r in reqs)


def label_selector_object_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Match a metav1.LabelSelector object (matchLabels/matchExpressions)."""
    if not selector:
        return False  # an empty/absent selector selects nothing for controllers
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        k, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(k) not in values:
            return False
        if op == "NotIn" and k in labels and labels[k] in values:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def label_selector_to_string(selector: Obj | None) -> str:
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        k, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{k} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{k} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(k)
        elif op == "DoesNotExist":
            parts.append(f"!{k}")
    return ",".join(parts)


def _field_value(obj: Obj, path: str) -> str:
    cur: Any = obj
    for part in _FIELD_ALIASES.get(path, path).split("."):
        if not isinstance(cur, dict):
            cur = None
            break
        cur = cur.get(part)
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if cur is None:
        return "false" if path in ("spec.hostNetwork", "spec.unschedulable") else ""
    return str(cur)


def parse_field_selector(text: str | None, rt: ResourceType) -> Callable[[Obj], bool]:
    if not text:
        return lambda obj: True
    allowed = {"metadata.name", "metadata.namespace"} | _FIELD_LABELS.get(rt.plural, set())
    reqs: list[Callable[[Obj], bool]] = []
    for term in _split_top_level(text):
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{term}'")
        key, op, value = m.group(1), m.group(2), m.group(3).strip()
        if key not in allowed:
            raise ValueError(f"field label not supported: {key}")
        if op == "!=":
            reqs.append(lambda o, k=key, v=value: _field_value(o, k) != v)
        else:
            reqs.append(lambda o, k=key, v=value: _field_value(o, k) == v)
    return lambda obj: all(r(obj) for r in reqs)


# --------------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


# patchMergeKey of the list fields clients commonly strategic-merge-patch; other lists are
# replaced, as for fields without a patch strategy in the real API.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}
_PRIMITIVE_SET_LISTS = {"finalizers"}


def _list_merge_key(name: str, items: list[Any]) -> str | None:
    if name == "ports":
        dicts = [i for i in items if isinstance(i, dict)]
        if any("containerPort" in i for i in dicts):
            return "containerPort"
        return "port"
    return _MERGE_KEYS.get(name)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            fname = k.split("/", 1)[1]
            result[fname] = [x for x in result.get(fname) or [] if x not in v]
            continue
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict):
            merged = strategic_merge_patch(result.get(k), v)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
        elif isinstance(v, list) and k in _PRIMITIVE_SET_LISTS:
            cur = list(result.get(k) or [])
            result[k] = cur + [x for x in v if x not in cur]
        elif isinstance(v, list) and (mkey := _list_merge_key(k, v)) is not None:
            result[k] = _merge_list(list(result.get(k) or []), v, mkey)
        else:
            result[k] = copy.deepcopy(v)
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    result = [copy.deepcopy(i) for i in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(copy.deepcopy(item))
            continue
        idx = next(
            (n for n, c in enumerate(result) if isinstance(c, dict) and c.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
            continue
        if idx is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[idx] = strategic_merge_patch(result[idx], item)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise ValueError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)

    def parent(d: Any, parts: list[str]) -> tuple[Any, str]:
        for p in parts[:-1]:
            d = d[int(p)] if isinstance(d, list) else d[p]
        return d, parts[-1]

    def get(d: Any, parts: list[str]) -> Any:
        for p in parts:
            d = d[int(p)] if isinstance(d, list) else d[p]
        return d

    def add(d: Any, parts: list[str], value: Any) -> Any:
        if not parts:
            return value
        par, last = parent(d, parts)
        if isinstance(par, list):
            if last == "-":
                par.append(value)
            else:
                par.insert(int(last), value)
        else:
            par[last] = value
        return d

    def remove(d: Any, parts: list[str]) -> Any:
        par, last = parent(d, parts)
        if isinstance(par, list):
            return par.pop(int(last))
        return par.pop(last)

    for op in ops:
        kind, path = op.get("op"), _pointer(op.get("path", ""))
        try:
            if kind == "add":
                doc = add(doc, path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(doc, path)
            elif kind == "replace":
                get(doc, path)  # must exist
                if path:
                    par, last = parent(doc, path)
                    par[int(last) if isinstance(par, list) else last] = copy.deepcopy(op["value"])
                else:
                    doc = copy.deepcopy(op["value"])
            elif kind == "move":
                value = remove(doc, _pointer(op["from"]))
                doc = add(doc, path, value)
            elif kind == "copy":
                doc = add(doc, path, copy.deepcopy(get(doc, _pointer(op["from"]))))
            elif kind == "test":
                if get(doc, path) != op.get("value"):
                    raise ValueError(f"testing value {op.get('path')} failed")
            else:
                raise ValueError(f"Unexpected kind: {kind}")
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(
                f'doc is missing path: "{op.get("path")}": missing value ({exc})'
            ) from None
    return doc


PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


def apply_patch(obj: Obj, body: Any, content_type: str) -> Obj:
    if content_type == "application/json-patch+json":
        return json_patch(obj, body)
    if content_type == "application/merge-patch+json":
        return merge_patch(obj, body)
    return strategic_merge_patch(obj, body)


# --------------------------------------------------------------------------------------------
# Defaults applied on create, as the real API server's defaulting does
# --------------------------------------------------------------------------------------------


def _default_container(c: Obj) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    # Quantities come back in canonical form ("1", "500m", "2Gi"), numbers too; a resource
    # with a limit and no request is requested at its limit.
    resources = c.get("resources") or {}
    for kind in ("limits", "requests"):
        values = resources.get(kind)
        if isinstance(values, dict):
            for name, value in values.items():
                if isinstance(value, str) and value[-1:] in ("k", "M", "G", "T"):
                    continue  # decimal units keep their spelling
                try:
                    values[name] = admission.spell(name, admission.quantity(value))
                except ValueError:
                    pass  # left for validation to refuse
    for name, limit in (resources.get("limits") or {}).items():
        resources.setdefault("requests", {}).setdefault(name, limit)
    c.setdefault("terminationMessagePolicy", "File")
    image = c.get("image") or ""
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    c.setdefault("resources", {})
    for p in c.get("ports") or []:
        p.setdefault("protocol", "TCP")


def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    if "serviceAccountName" not in spec and "serviceAccount" not in spec:
        spec["serviceAccountName"] = "default"
    spec.setdefault("serviceAccount", spec.get("serviceAccountName"))
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if isinstance(c, dict):
            _default_container(c)


def _qos_class(spec: Obj) -> str:
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    limits_all, any_set = True, False
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or req.get(r, lim[r]) != lim[r]:
                limits_all = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if limits_all else "Burstable"


def template_hash(template: Obj) -> str:
    """A stable hash of a pod template, spelled like the pod-template-hash label."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_SAFE_ALPHABET[b % len(_SAFE_ALPHABET)] for b in digest[:10])


def controller_ref(obj: Obj) -> Obj | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def _strip_type(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


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


class KubeEmulator:
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

    # ---------------------------------------------------------------- controllers plumbing

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule(self, key: tuple[str, ...]) -> None:
        # Controllers run soon after the change that triggered them, never inside the
        # request that made it, like real controllers reacting to watch events.
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._run_controllers)
        self._pending.add(key)

    def _run_controllers(self) -> None:
        rounds = 0
        while self._pending and rounds < 100:
            rounds += 1
            batch, self._pending = self._pending, set()
            for key in sorted(batch):
                try:
                    if key[0] == "deploy":
                        self._reconcile_deployment(key[1], key[2])
                    elif key[0] == "rs":
                        self._reconcile_replicaset(key[1], key[2])
                    elif key[0] == "gc":
                        self._collect_garbage()
                    elif key[0] == "nsinit":
                        self._init_namespace(key[1])
                    elif key[0] == "quota":
                        self._count_quota(key[1], key[2])
                except Exception:
                    log.exception("controller %s failed", key)
        if self._pending:
            asyncio.get_running_loop().call_soon(self._run_controllers)

    def _on_change(self, rt: ResourceType, ev: _Event) -> None:
        meta = ev.obj["metadata"]
        ns = meta.get("namespace", "")
        if rt is QUOTAS and ev.type != "DELETED":
            old_spec = (ev.old or {}).get("spec") if ev.old is not None else None
            if ev.type == "ADDED" or old_spec != ev.obj.get("spec"):
                # The quota controller counts a new or changed quota a moment later.
                asyncio.get_running_loop().call_later(
                    self.quota_sync_delay, self._schedule, ("quota", ns, meta["name"])
                )
        elif rt in (PODS, SERVICES, CLAIMS):
            self._count_quotas(ns)
        if rt is NAMESPACES and ev.type == "ADDED":
            self._schedule(("nsinit", meta["name"]))
        elif rt is DEPLOYMENTS:
            self._schedule(("deploy", ns, meta["name"]))
        elif rt is REPLICASETS:
            self._schedule(("rs", ns, meta["name"]))
            ref = controller_ref(ev.obj)
            if ref and ref.get("kind") == "Deployment":
                self._schedule(("deploy", ns, ref["name"]))
        elif rt is PODS:
            ref = controller_ref(ev.obj)
            if ref and ref.get("kind") == "ReplicaSet":
                self._schedule(("rs", ns, ref["name"]))

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

    # ---------------------------------------------------------------- namespaces

    def _delete_namespace(self, ns_obj: Obj) -> Obj:
        name = ns_obj["metadata"]["name"]
        if name in _UNDELETABLE_NAMESPACES:
            raise forbidden(NAMESPACES, name, "this namespace may not be deleted")
        if ns_obj.get("status", {}).get("phase") == "Terminating":
            return ns_obj
        new = copy.deepcopy(ns_obj)
        new["metadata"]["deletionTimestamp"] = now_iso()
        new["status"] = {"phase": "Terminating"}
        self._commit(NAMESPACES, new, "MODIFIED", ns_obj)
        if name not in self._terminating:
            self._terminating.add(name)
            self._spawn(self._finalize_namespace(name))
        return new

    async def _finalize_namespace(self, name: str) -> None:
        """The namespace controller: delete all content, then the namespace itself."""
        try:
            while True:
                remaining = 0
                for rt in RESOURCES:
                    if not rt.namespaced:
                        continue
                    for obj in self._objects_in(rt, name):
                        if obj["metadata"].get("deletionTimestamp") and rt is not PODS:
                            continue
                        try:
                            self._delete(rt, obj)
                        except ApiError:
                            log.exception("namespace %s: deleting %s failed", name, rt.plural)
                remaining = sum(
                    len(self._objects_in(rt, name)) for rt in RESOURCES if rt.namespaced
                )
                if remaining == 0:
                    break
                await asyncio.sleep(0.05)
            cur = self._get_obj(NAMESPACES, None, name)
            if cur is None:
                return
            new = copy.deepcopy(cur)
            new.setdefault("spec", {})["finalizers"] = []
            if new["metadata"].get("finalizers"):
                self._commit(NAMESPACES, new, "MODIFIED", cur)
            else:
                self._remove(NAMESPACES, new)
        finally:
            self._terminating.discard(name)

    def _init_namespace(self, name: str) -> None:
        # The serviceaccount controller gives every namespace a "default" ServiceAccount.
        ns = self._get_obj(NAMESPACES, None, name)
        if ns is None or ns.get("status", {}).get("phase") != "Active":
            return
        if self._get_obj(SERVICEACCOUNTS, name, "default") is None:
            try:
                self._create(SERVICEACCOUNTS, name, {"metadata": {"name": "default"}})
            except ApiError:
                pass

    # ---------------------------------------------------------------- garbage collector

    def _has_dependents(self, uid: str) -> bool:
        return any(
            any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
            for store in self._objects.values()
            for o in store.values()
        )

    def _orphan_dependents(self, uid: str) -> None:
        for rt in RESOURCES:
            for o in list(self._objects[rt.key].values()):
                refs = o["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    new = copy.deepcopy(o)
                    new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    if not new["metadata"]["ownerReferences"]:
                        del new["metadata"]["ownerReferences"]
                    self._commit(rt, new, "MODIFIED", o)

    def _owner(self, uid: str) -> Obj | None:
        where = self._uids.get(uid)
        if where is None:
            return None
        return self._objects[where[0]].get(where[1])

    def _collect_garbage(self) -> None:
        for rt in RESOURCES:
            for o in list(self._objects[rt.key].values()):
                refs = o["metadata"].get("ownerReferences") or []
                if not refs or o["metadata"].get("deletionTimestamp"):
                    continue
                if any((r.get("apiVersion"), r.get("kind")) not in _KNOWN_KINDS for r in refs):
                    # The real GC cannot resolve an unknown owner kind and leaves it alone.
                    continue
                owners = [self._owner(r.get("uid", "")) for r in refs]
                alive = [
                    w
                    for w in owners
                    if w is not None
                    and not (
                        w["metadata"].get("deletionTimestamp")
                        and "foregroundDeletion" in (w["metadata"].get("finalizers") or [])
                    )
                ]
                if not alive:
                    cur = self._objects[rt.key].get(
                        (o["metadata"].get("namespace", ""), o["metadata"]["name"])
                    )
                    if cur is not None:
                        self._delete(rt, cur)
        # Release owners waiting for their dependents (foreground deletion).
        for rt in RESOURCES:
            for o in list(self._objects[rt.key].values()):
                fin = o["metadata"].get("finalizers") or []
                if "foregroundDeletion" in fin and not self._has_dependents(o["metadata"]["uid"]):
                    new = copy.deepcopy(o)
                    new["metadata"]["finalizers"] = [f for f in fin if f != "foregroundDeletion"]
                    if not new["metadata"]["finalizers"]:
                        del new["metadata"]["finalizers"]
                    self._commit(rt, new, "MODIFIED", o)
                    self._maybe_finish_deletion(rt, new)

    # ---------------------------------------------------------------- workload controllers

    def _namespace_active(self, ns: str) -> bool:
        obj = self._get_obj(NAMESPACES, None, ns)
        return obj is not None and obj.get("status", {}).get("phase") == "Active"

    def _owned(self, rt: ResourceType, ns: str, owner_uid: str) -> list[Obj]:
        return [
            o
            for o in self._objects_in(rt, ns)
            if (ref := controller_ref(o)) is not None and ref.get("uid") == owner_uid
        ]

    @staticmethod
    def _pod_ready(pod: Obj) -> bool:
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in pod.get("status", {}).get("conditions") or []
        )

    def _reconcile_deployment(self, ns: str, name: str) -> None:
        d = self._get_obj(DEPLOYMENTS, ns, name)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        spec, uid = d["spec"], d["metadata"]["uid"]
        desired = spec.get("replicas", 1)
        thash = template_hash(spec["template"])
        owned = self._owned(REPLICASETS, ns, uid)
        revisions = [
            int(rs["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", 0))
            for rs in owned
        ]
        new_rs = next(
            (
                rs
                for rs in owned
                if rs["metadata"].get("labels", {}).get("pod-template-hash") == thash
            ),
            None,
        )
        if new_rs is None and self._namespace_active(ns):
            template = copy.deepcopy(spec["template"])
            template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = (
                thash
            )
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = thash
            revision = max(revisions, default=0) + 1
            body = {
                "metadata": {
                    "name": f"{name}-{thash}",
                    "labels": dict(template["metadata"]["labels"]),
                    "annotations": {
                        "deployment.kubernetes.io/desired-replicas": str(desired),
                        "deployment.kubernetes.io/max-replicas": str(desired),
                        "deployment.kubernetes.io/revision": str(revision),
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": name,
                            "uid": uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {
                    "replicas": desired,
                    "minReadySeconds": spec.get("minReadySeconds", 0),
                    "selector": selector,
                    "template": template,
                },
            }
            try:
                new_rs = self._create(REPLICASETS, ns, body)
            except ApiError:
                log.exception("deployment %s/%s: creating replicaset failed", ns, name)
                return
            owned.append(new_rs)
        if (
            new_rs is not None
            and new_rs["spec"].get("replicas") != desired
            and not spec.get("paused")
        ):
            upd = copy.deepcopy(new_rs)
            upd["spec"]["replicas"] = desired
            upd["metadata"].setdefault("annotations", {})[
                "deployment.kubernetes.io/desired-replicas"
            ] = str(desired)
            upd["metadata"]["generation"] = upd["metadata"].get("generation", 1) + 1
            new_rs = self._commit(REPLICASETS, upd, "MODIFIED", new_rs)
        for rs in owned:
            if rs is not new_rs and rs["spec"].get("replicas", 0) != 0:
                upd = copy.deepcopy(rs)
                upd["spec"]["replicas"] = 0
                upd["metadata"]["generation"] = upd["metadata"].get("generation", 1) + 1
                self._commit(REPLICASETS, upd, "MODIFIED", rs)
        self._update_deployment_status(d, new_rs, self._owned(REPLICASETS, ns, uid))

    def _update_deployment_status(self, d: Obj, new_rs: Obj | None, owned: list[Obj]) -> None:
        spec = d["spec"]
        desired = spec.get("replicas", 1)
        replicas = sum(rs.get("status", {}).get("replicas", 0) for rs in owned)
        ready = sum(rs.get("status", {}).get("readyReplicas", 0) for rs in owned)
        available = sum(rs.get("status", {}).get("availableReplicas", 0) for rs in owned)
        updated = (new_rs or {}).get("status", {}).get("replicas", 0)
        max_unavailable = (
            (spec.get("strategy") or {}).get("rollingUpdate", {}).get("maxUnavailable", "25%")
        )
        if isinstance(max_unavailable, str) and max_unavailable.endswith("%"):
            max_unavailable = desired * int(max_unavailable[:-1]) // 100
        old_status = d.get("status", {})
        old_conditions = {c["type"]: c for c in old_status.get("conditions") or []}

        def condition(ctype: str, status: str, reason: str, message: str) -> Obj:
            old = old_conditions.get(ctype)
            if old and old.get("status") == status and old.get("reason") == reason:
                return old
            ts = now_iso()
            return {
                "type": ctype,
                "status": status,
                "lastUpdateTime": ts,
                "lastTransitionTime": ts,
                "reason": reason,
                "message": message,
            }

        name = d["metadata"]["name"]
        rs_name = (new_rs or {}).get("metadata", {}).get("name", "")
        conditions = [
            condition(
                "Available",
                "True" if available >= desired - int(max_unavailable) else "False",
                "MinimumReplicasAvailable"
                if available >= desired - int(max_unavailable)
                else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available >= desired - int(max_unavailable)
                else "Deployment does not have minimum availability.",
            ),
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable"
                if updated == desired and available >= desired
                else "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" has successfully progressed.'
                if updated == desired and available >= desired
                else f'ReplicaSet "{rs_name}" is progressing.',
            ),
        ]
        status: Obj = {"observedGeneration": d["metadata"].get("generation", 1)}
        for k, v in (
            ("replicas", replicas),
            ("updatedReplicas", updated),
            ("readyReplicas", ready),
            ("availableReplicas", available),
            ("unavailableReplicas", max(desired - available, 0)),
        ):
            if v:  # omitempty, as the real serialisation
                status[k] = v
        status["conditions"] = conditions
        revision = (
            (new_rs or {})
            .get("metadata", {})
            .get("annotations", {})
            .get("deployment.kubernetes.io/revision")
        )
        annotations = d["metadata"].get("annotations") or {}
        if status == old_status and (
            revision is None or annotations.get("deployment.kubernetes.io/revision") == revision
        ):
            return
        upd = copy.deepcopy(d)
        upd["status"] = status
        if revision is not None:
            upd["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = (
                revision
            )
        self._commit(DEPLOYMENTS, upd, "MODIFIED", d)
        log.debug("deployment %s status %s", name, status)

    def _record_event(self, obj: Obj, etype: str, reason: str, message: str) -> None:
        """An Event about ``obj`` from a built-in controller."""
        meta = obj["metadata"]
        stamp = now_iso()
        try:
            self._create(
                _BY_KEY["/events"],
                meta["namespace"],
                {
                    "metadata": {"generateName": f"{meta['name']}."},
                    "involvedObject": {
                        "apiVersion": obj.get("apiVersion", ""),
                        "kind": obj.get("kind", ""),
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "uid": meta["uid"],
                    },
                    "type": etype,
                    "reason": reason,
                    "message": message,
                    "count": 1,
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "source": {"component": "replicaset-controller"},
                },
            )
        except ApiError:
            pass  # a terminating namespace takes no events

    # ---------------------------------------------------------------- quotas

    def _usage(self, ns: str) -> dict[str, float]:
        return admission.namespace_usage(
            self._objects_in(PODS, ns), self._objects_in(SERVICES, ns), self._objects_in(CLAIMS, ns)
        )

    def _count_quota(self, ns: str, name: str) -> None:
        """The quota controller: ``status`` = hard as specified, and what the namespace uses."""
        quota = self._get_obj(QUOTAS, ns, name)
        if quota is None or quota["metadata"].get("deletionTimestamp"):
            return
        status = admission.quota_status(quota, self._usage(ns))
        if status != quota.get("status"):
            upd = copy.deepcopy(quota)
            upd["status"] = status
            self._commit(QUOTAS, upd, "MODIFIED", quota)

    def _count_quotas(self, ns: str) -> None:
        """Usage changed: recount every quota the controller has counted before (admission
        updates it with each object it lets in; deletions free it again)."""
        for quota in self._objects_in(QUOTAS, ns):
            if (quota.get("status") or {}).get("hard"):
                self._count_quota(ns, quota["metadata"]["name"])

    def _admit(self, rt: ResourceType, obj: Obj) -> None:
        """LimitRanger, then ResourceQuota, for a new pod, Service or claim."""
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        spec = obj.get("spec") or {}
        try:
            if rt is PODS:
                admission.apply_limit_ranges(spec, self._objects_in(LIMIT_RANGES, ns))
                request = admission.pod_usage(spec)
            elif rt is SERVICES:
                request = admission.service_usage(spec)
            else:
                request = admission.claim_usage(spec)
            admission.admit(self._objects_in(QUOTAS, ns), request, spec if rt is PODS else None)
        except admission.Refused as refused:
            raise forbidden(rt, name, str(refused)) from None
        except ValueError as exc:
            raise invalid(rt, name, [("spec", str(exc))]) from None

    def _reconcile_replicaset(self, ns: str, name: str) -> None:
        rs = self._get_obj(REPLICASETS, ns, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        uid = rs["metadata"]["uid"]
        desired = rs["spec"].get("replicas", 1)

        def active_pods() -> list[Obj]:
            return [
                p
                for p in self._owned(PODS, ns, uid)
                if not p["metadata"].get("deletionTimestamp")
                and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            ]

        active = active_pods()
        if len(active) < desired and self._namespace_active(ns):
            template = rs["spec"]["template"]
            for _ in range(desired - len(active)):
                tmeta = template.get("metadata") or {}
                body = {
                    "metadata": {
                        "generateName": f"{name}-",
                        "labels": dict(tmeta.get("labels") or {}),
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "ReplicaSet",
                                "name": name,
                                "uid": uid,
                                "controller": True,
                                "blockOwnerDeletion": True,
                            }
                        ],
                    },
                    "spec": copy.deepcopy(template["spec"]),
                }
                if tmeta.get("annotations"):
                    body["metadata"]["annotations"] = dict(tmeta["annotations"])
                try:
                    self._create(PODS, ns, body)
                except ApiError as exc:
                    # As the real controller: an event, and another try after a back-off
                    # (a quota may be counted, or freed, meanwhile).
                    log.info("replicaset %s/%s: creating pod failed: %s", ns, name, exc)
                    self._record_event(rs, "Warning", "FailedCreate", f"Error creating: {exc}")
                    asyncio.get_running_loop().call_later(1.0, self._schedule, ("rs", ns, name))
                    break
        elif len(active) > desired:
            phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}
            # The real controller deletes unscheduled, then pending, then not-ready pods
            # first, and the youngest among equals: sort youngest-first, then stably by rank.
            victims = sorted(active, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)
            victims.sort(
                key=lambda p: (
                    bool(p["spec"].get("nodeName")),
                    phase_rank.get(p.get("status", {}).get("phase", "Pending"), 0),
                    self._pod_ready(p),
                )
            )
            for p in victims[: len(active) - desired]:
                self._delete(PODS, p)
        active = active_pods()
        ready = sum(1 for p in active if self._pod_ready(p))
        status: Obj = {"replicas": len(active)}
        if active:
            status["fullyLabeledReplicas"] = len(active)
        if ready:
            status["readyReplicas"] = ready
            status["availableReplicas"] = ready
        status["observedGeneration"] = rs["metadata"].get("generation", 1)
        if status != rs.get("status"):
            upd = copy.deepcopy(rs)
            upd["status"] = status
            self._commit(REPLICASETS, upd, "MODIFIED", rs)

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

    async def _pod_log(self, request: web.Request, ns: str | None, name: str) -> web.StreamResponse:
        q = request.query
        pod = self._get(PODS, ns, name)
        spec = pod["spec"]
        names = [c["name"] for c in spec.get("containers") or []]
        init_names = [c["name"] for c in spec.get("initContainers") or []]
        container = q.get("container")
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
        params = {
            k: q[k]
            for k in ("follow", "tailLines", "previous", "limitBytes", "timestamps")
            if k in q
        }
        assert self._http is not None
        url = f"http://{address}:{port}/containerLogs/{ns}/{name}/{container}"
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


class _PageNotFound(Exception):
    pass


def _strip_rv(obj: Obj) -> Obj:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return out


def _event_line(etype: str, obj: Obj) -> bytes:
    return (json.dumps({"type": etype, "object": obj}, separators=(",", ":")) + "\n").encode()
