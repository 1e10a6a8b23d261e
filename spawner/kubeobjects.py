"""Pure builders for every Kubernetes object of a user's *space*.

A space is one namespace per (hub, user) holding the notebook pod and the user's engines
(Spark standalone, IPyParallel, Dask), fenced by a ResourceQuota, a LimitRange,
NetworkPolicies and a namespaced ServiceAccount + Role.

Every function here is pure: no I/O, no Kubernetes client, no clock, no randomness. Each
returns a fresh plain ``dict`` (JSON-serialisable, in the shape ``kubectl apply`` takes), so
the spawner can send it with any client, the Helm chart can render the same data, and the
tests can validate the result against the Kubernetes schemas offline.

Labels this module defines (the contract with the spawner, the gateway backend and the
JupyterLab extension):

``app.kubernetes.io/managed-by: clusterhub``
    on every object we create; lets the hub find (and only ever delete) its own objects.
``hub.clusterhub.io/name`` / ``hub.clusterhub.io/user``
    which hub / user a namespace belongs to (label-safe values, see :func:`label_value`);
    the raw username is kept in the annotation ``hub.clusterhub.io/username``.
``clusterhub.io/space-member: "true"``
    on the notebook pod *and* on every engine pod: the NetworkPolicy ``notebook-to-engines``
    lets members talk to each other in both directions (Spark executors dial back to the
    driver in the notebook; the notebook dials the masters/controllers).
``clusterhub.io/engine`` (``spark`` | ``ipyparallel`` | ``dask``) and
``clusterhub.io/role`` (``master``/``worker``, ``controller``/``engine``,
``scheduler``/``worker``)
    on engine pods, Deployments and Services. The Dask Gateway backend must put
    ``engine: dask`` and ``role: scheduler|worker`` on the pods it creates so that the
    gateway's ingress to schedulers is allowed (use :func:`engine_labels`).

Fixed ports (pods listen on them; Services expose the same numbers):

- Spark master: 7077 (RPC), 8080 (web UI); Spark worker web UI: 8081.
- IPyParallel controller: 10101-10115 (see :data:`IPYPARALLEL_PORTS`); the controller gets
  them from connection files the hub writes into a Secret, because with fixed ports the
  Service and the NetworkPolicies can be written before the controller starts.
- Dask scheduler: 8786 (comm), 8787 (dashboard), 8788 (its Dask Gateway API).
- Notebook: 8888; hub API: 8081; Dask Gateway (API + multiplexed scheduler proxy): 8000.
"""

from __future__ import annotations

import copy
import hashlib
import json
import posixpath
import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "DEFAULT_NETWORK_ALLOW",
    "ENGINE_ROLES",
    "GATEWAY_PORTS",
    "HUB_API_PORT",
    "HUB_CLUSTER_RULES",
    "HUB_HOME_RULES",
    "HUB_SPACE_RULES",
    "SPACE_BINDINGS",
    "IPYPARALLEL_CLIENT_FILE",
    "IPYPARALLEL_ENGINE_FILE",
    "IPYPARALLEL_MOUNT_PATH",
    "IPYPARALLEL_PORTS",
    "IPYPARALLEL_SECRET_NAME",
    "NOTEBOOK_HOME",
    "NOTEBOOK_PORT",
    "NOTEBOOK_ROLE_RULES",
    "engine_labels",
    "engine_mode",
    "engine_service_name",
    "ipython_security_dir",
    "label_value",
    "make_engine_deployment",
    "make_engine_service",
    "hub_cluster_rules",
    "make_hub_cluster_role",
    "make_hub_cluster_role_binding",
    "make_space_role_binding",
    "make_ipyparallel_connection_files",
    "make_ipyparallel_notebook_volume",
    "make_ipyparallel_secret",
    "make_ipython_dirs_init_container",
    "make_ipython_security_mount",
    "make_limit_range",
    "make_namespace",
    "make_namespace_name",
    "make_network_policies",
    "make_notebook_env",
    "make_resource_quota",
    "make_role",
    "make_role_binding",
    "make_service_account",
    "notebook_ipython_dir",
    "notebook_labels",
    "parse_quantity",
    "placement_spec",
    "pull_secret_names",
    "pull_secrets_spec",
    "space_annotations",
    "space_labels",
]

# --------------------------------------------------------------------------------------------
# Label keys and well-known values
# --------------------------------------------------------------------------------------------

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "clusterhub"
COMPONENT_LABEL = "app.kubernetes.io/component"
HUB_NAME_LABEL = "hub.clusterhub.io/name"
HUB_USER_LABEL = "hub.clusterhub.io/user"
HUB_USERNAME_ANNOTATION = "hub.clusterhub.io/username"
HUB_NAME_ANNOTATION = "hub.clusterhub.io/hub"
SPACE_MEMBER_LABEL = "clusterhub.io/space-member"
ENGINE_LABEL = "clusterhub.io/engine"
ROLE_LABEL = "clusterhub.io/role"
# KubeSpawner puts `component: singleuser-server` on every notebook pod.
NOTEBOOK_SELECTOR = {"component": "singleuser-server"}
# Labels of the pods in the hub's namespace, as the Helm chart sets them.
HUB_COMPONENT = "hub"
PROXY_COMPONENT = "proxy"
GATEWAY_COMPONENT = "dask-gateway"

NOTEBOOK_PORT = 8888
HUB_API_PORT = 8081
GATEWAY_PORTS: tuple[int, ...] = (8000,)

SPARK_MASTER_PORT = 7077
SPARK_MASTER_UI_PORT = 8080
SPARK_WORKER_UI_PORT = 8081
DASK_SCHEDULER_PORT = 8786
DASK_DASHBOARD_PORT = 8787
# The scheduler's Dask Gateway API (the gateway asks it to scale or adapt there).
DASK_GATEWAY_API_PORT = 8788

# IPyParallel controller ports, named as in ipcontroller's connection files. The engine- and
# client-facing sockets are distinct ZMQ sockets, hence two sets. Port names are IANA service
# names (<= 15 chars) so the Service can name them.
IPYPARALLEL_PORTS: dict[str, int] = {
    "registration": 10101,
    "e-control": 10102,
    "e-mux": 10103,
    "e-task": 10104,
    "e-iopub": 10105,
    "e-hb-ping": 10106,
    "e-hb-pong": 10107,
    # ipcontroller's default broadcast tree (depth 1) has two leaf schedulers for engines
    "e-broadcast-0": 10108,
    "e-broadcast-1": 10109,
    "c-control": 10110,
    "c-mux": 10111,
    "c-task": 10112,
    "c-iopub": 10113,
    "c-notification": 10114,
    "c-broadcast": 10115,
}
IPYPARALLEL_SECRET_NAME = "ipyparallel-connection"
IPYPARALLEL_MOUNT_PATH = "/etc/clusterhub/ipyparallel"
IPYPARALLEL_ENGINE_FILE = "ipcontroller-engine.json"
IPYPARALLEL_CLIENT_FILE = "ipcontroller-client.json"
# The notebook image's home (images/base: user jovyan), where IPython keeps its profiles.
NOTEBOOK_HOME = "/home/jovyan"

# engine -> (leader role, follower role); the leader is a singleton reached through a Service.
ENGINE_ROLES: dict[str, tuple[str, str]] = {
    "spark": ("master", "worker"),
    "ipyparallel": ("controller", "engine"),
    "dask": ("scheduler", "worker"),
}
_MODES: dict[tuple[str, str], str] = {
    ("spark", "master"): "spark-master",
    ("spark", "worker"): "spark-worker",
    ("ipyparallel", "controller"): "ipcontroller",
    ("ipyparallel", "engine"): "ipengine",
    ("dask", "scheduler"): "dask-scheduler",
    ("dask", "worker"): "dask-worker",
}

# The images' unprivileged user and its group (jovyan, images/base). Every user pod runs as
# them, so a misbuilt image fails loudly instead of running as root, and its volumes belong
# to the group (a fresh cloud disk is root's, 0755).
IMAGE_UID = 1000
IMAGE_GID = 1000

# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------

_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRET_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
_QUANTITY_RE = re.compile(
    r"^(?P<number>\+?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$"
)
_QUANTITY_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def _check_dns_label(value: object, argument: str) -> str:
    if not isinstance(value, str) or not _DNS_LABEL_RE.match(value):
        raise ValueError(
            f"{argument} must be a DNS-1123 label (<= 63 chars of [a-z0-9-], "
            f"starting and ending alphanumeric), got {value!r}"
        )
    return value


def _check_name(value: object, argument: str) -> str:
    """Object names that may be DNS subdomains (Role, ServiceAccount, Secret, ...)."""
    if not isinstance(value, str) or len(value) > 253 or not _DNS_SUBDOMAIN_RE.match(value):
        raise ValueError(f"{argument} must be a DNS-1123 subdomain, got {value!r}")
    return value


def _check_labels(labels: Mapping[str, str] | None, argument: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in (labels or {}).items():
        prefix, _, name = key.rpartition("/") if isinstance(key, str) else ("", "", "")
        if not _LABEL_NAME_RE.match(name) or (
            prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix))
        ):
            raise ValueError(f"{argument}: invalid label key {key!r}")
        if not isinstance(value, str) or not _LABEL_VALUE_RE.match(value):
            raise ValueError(
                f"{argument}: label {key!r} has invalid value {value!r}; use label_value()"
            )
        result[key] = value
    return result


def _check_annotations(annotations: Mapping[str, str] | None, argument: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in (annotations or {}).items():
        if not isinstance(value, str):
            raise ValueError(f"{argument}: annotation {key!r} must be a string, got {value!r}")
        # annotation keys follow the label-key syntax
        _check_labels({key: ""}, argument)
        result[key] = value
    return result


def parse_quantity(value: str | int, argument: str = "quantity") -> Decimal:
    """Parse a non-negative Kubernetes quantity ("500m", "4", "8Gi", "1e3") into a Decimal.

    Used to reject impossible profiles early (a LimitRange whose default exceeds its max
    makes every pod in the namespace unschedulable, with an error far from the cause).
    """
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    match = _QUANTITY_RE.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(
            f"{argument} must be a Kubernetes quantity like '2', '500m', '8Gi'; got {value!r}"
        )
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["number"])
        if suffix[:1] in ("e", "E"):
            return number * (Decimal(10) ** int(suffix[1:]))
        return number * _QUANTITY_SUFFIX[suffix]
    except InvalidOperation as e:  # pragma: no cover - the regex already guards this
        raise ValueError(f"{argument}: cannot parse {value!r}") from e


def _quantity(value: str | int, argument: str) -> str:
    parse_quantity(value, argument)
    return str(value)


def _metadata(
    name: str,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = {MANAGED_BY_LABEL: MANAGED_BY, **_check_labels(labels, "labels")}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


# --------------------------------------------------------------------------------------------
# Names and labels
# --------------------------------------------------------------------------------------------

_HASH_LENGTH = 8
# Separator before the hash. Names returned unchanged never contain "--" (for DNS labels) or
# "---" (for label values), so a hashed name can never equal an unhashed one.
_HASH_SEPARATOR = "---"
# Namespaces a user must never be mapped to, whatever the prefix (a cull deletes the namespace).
_RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


def _short_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LENGTH]


def _ascii_fold(raw: str) -> str:
    """Drop accents (Zoë-ñandú -> Zoe-nandu) so slugs of accented names stay readable."""
    return unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode("ascii")


def make_namespace_name(
    template_prefix: str, username: str, *, reserved: Collection[str] = ()
) -> str:
    """The namespace of ``username``'s space: ``<prefix><slug>`` or ``<prefix><slug>---<hash>``.

    The result is a DNS-1123 label (<= 63 chars). It is the plain ``prefix + username`` only
    when the username already is a lowercase slug with single hyphens that fits; otherwise
    (upper case, dots, non-ASCII, "--", too long) a hash of the *raw* username is appended,
    so ``a.b`` and ``a-b`` (or ``Alice`` and ``alice``) never share a namespace. After the
    prefix, unhashed names never contain "--" and hashed ones always contain "---", so the
    two sets are disjoint; two hashed names collide only if 32-bit hashes and slugs do.

    ``reserved`` lists names that must never be produced unhashed, e.g. the hub's own
    namespace: the hub deletes a space's namespace on cull, so a user called ``system``
    with prefix ``clusterhub-`` must not land in a hub namespace ``clusterhub-system``.
    """
    if not isinstance(template_prefix, str) or not re.match(
        r"^[a-z][-a-z0-9]{0,39}$", template_prefix
    ):
        raise ValueError(
            "template_prefix must be 1-40 chars of [a-z0-9-] starting with a letter "
            f"(an empty prefix could map a user onto 'kube-system'), got {template_prefix!r}"
        )
    if template_prefix.startswith("kube-"):
        raise ValueError(f"template_prefix must not start with 'kube-', got {template_prefix!r}")
    if not isinstance(username, str) or not username:
        raise ValueError(f"username must be a non-empty string, got {username!r}")

    slug = re.sub(r"[^a-z0-9]+", "-", _ascii_fold(username).lower()).strip("-")
    plain = template_prefix + slug
    if (
        slug == username
        and len(plain) <= 63
        and _DNS_LABEL_RE.match(plain)
        and plain not in _RESERVED_NAMESPACES
        and plain not in reserved
    ):
        return plain

    suffix = _HASH_SEPARATOR + _short_hash(username)
    room = 63 - len(template_prefix) - len(suffix)
    slug = slug[:room].rstrip("-") or "x"
    return template_prefix + slug + suffix


def label_value(raw: str) -> str:
    """A label-safe value for an arbitrary string (username, hub name).

    Valid values (<= 63 chars of [A-Za-z0-9_.-], alphanumeric at both ends) without "---"
    are returned unchanged, so selectors stay readable; anything else becomes a readable
    ASCII prefix + "---" + a hash of the raw string, which keeps distinct inputs distinct.
    """
    if not isinstance(raw, str):
        raise ValueError(f"raw must be a string, got {raw!r}")
    if raw and _LABEL_VALUE_RE.match(raw) and _HASH_SEPARATOR not in raw:
        return raw
    safe = re.sub(r"[^A-Za-z0-9_.]+", "-", _ascii_fold(raw))
    suffix = _HASH_SEPARATOR + _short_hash(raw)
    safe = re.sub(r"^[^A-Za-z0-9]+", "", safe[: 63 - len(suffix)])
    safe = re.sub(r"[^A-Za-z0-9]+$", "", safe) or "x"
    return safe + suffix


def space_labels(hub_name: str, username: str) -> dict[str, str]:
    """Labels that mark a namespace (and its objects) as ``username``'s space on ``hub_name``.

    Lets one cluster host several hubs: each hub lists only namespaces with its own name.
    """
    if not isinstance(hub_name, str) or not hub_name:
        raise ValueError(f"hub_name must be a non-empty string, got {hub_name!r}")
    if not isinstance(username, str) or not username:
        raise ValueError(f"username must be a non-empty string, got {username!r}")
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        HUB_NAME_LABEL: label_value(hub_name),
        HUB_USER_LABEL: label_value(username),
    }


def space_annotations(hub_name: str, username: str) -> dict[str, str]:
    """The raw (unescaped) hub and user names, since label values may be hashed."""
    if not isinstance(hub_name, str) or not hub_name:
        raise ValueError(f"hub_name must be a non-empty string, got {hub_name!r}")
    if not isinstance(username, str) or not username:
        raise ValueError(f"username must be a non-empty string, got {username!r}")
    return {HUB_NAME_ANNOTATION: hub_name, HUB_USERNAME_ANNOTATION: username}


def engine_mode(engine: str, role: str) -> str:
    """The cluster image's mode (first argument) for an engine role, e.g. ``spark-master``.

    It is also the name of the role's Deployment (one cluster per engine per space).
    """
    if engine not in ENGINE_ROLES:
        raise ValueError(f"engine must be one of {sorted(ENGINE_ROLES)}, got {engine!r}")
    if role not in ENGINE_ROLES[engine]:
        raise ValueError(f"role of {engine} must be one of {ENGINE_ROLES[engine]}, got {role!r}")
    return _MODES[(engine, role)]


def engine_service_name(engine: str) -> str:
    """Name of the Service in front of an engine's leader (master/controller/scheduler)."""
    return engine_mode(engine, ENGINE_ROLES.get(engine, ("",))[0])


def engine_labels(engine: str, role: str) -> dict[str, str]:
    """Labels for an engine pod; the NetworkPolicies select on them."""
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        COMPONENT_LABEL: engine_mode(engine, role),
        SPACE_MEMBER_LABEL: "true",
        ENGINE_LABEL: engine,
        ROLE_LABEL: role,
    }


def notebook_labels() -> dict[str, str]:
    """Extra labels the spawner must add to the notebook pod (to reach its engines)."""
    return {SPACE_MEMBER_LABEL: "true"}


# --------------------------------------------------------------------------------------------
# Namespace, quota, limits
# --------------------------------------------------------------------------------------------


#: The ConfigMap in which a space records what its owner's server was started with.
SPACE_RECORD_NAME = "clusterhub-space"


def make_space_record(
    namespace: str, *, limits: Mapping[str, Any], options: Mapping[str, Any]
) -> dict[str, Any]:
    """What the owner's server was started with, for the gateway: the profile's maxima
    (``limits``) bound their clusters, the sizes chosen on the spawn form (``options``) are
    their defaults. The hub resolves the profile once, from its own settings and config, so
    the gateway needs no copy of the profiles; one machine keeps the same in ``space.json``.

    Only the hub writes it: the notebook's Role has no rights on ConfigMaps.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": SPACE_RECORD_NAME,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        },
        "data": {
            "limits": json.dumps(dict(limits), sort_keys=True),
            "options": json.dumps(dict(options), sort_keys=True),
        },
    }


def read_space_record(data: Mapping[str, str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(limits, options)`` of a space record's data; ValueError if it is not one."""
    try:
        limits = json.loads((data or {})["limits"])
        options = json.loads((data or {}).get("options") or "{}")
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{SPACE_RECORD_NAME}: not a space record") from None
    if not isinstance(limits, dict) or not isinstance(options, dict):
        raise ValueError(f"{SPACE_RECORD_NAME}: not a space record")
    return limits, options


def make_namespace(
    name: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    *,
    pod_security_enforce: str | None = "baseline",
    pod_security_warn: str | None = "restricted",
) -> dict[str, Any]:
    """The space's Namespace.

    Pod Security Admission: the notebook's ServiceAccount may patch its Deployments, i.e. it
    can run any pod template in its namespace. ``baseline`` (enforced) still forbids
    privileged pods, host namespaces and hostPath, which is what would let a user escape to
    the node. ``restricted`` is only warned/audited because KubeSpawner's default notebook
    pod does not satisfy it (engine pods built here do).
    """
    _check_dns_label(name, "name")
    meta = _metadata(
        name, labels=labels, annotations=_check_annotations(annotations, "annotations")
    )
    levels = ("privileged", "baseline", "restricted")
    for argument, level in (
        ("pod_security_enforce", pod_security_enforce),
        ("pod_security_warn", pod_security_warn),
    ):
        if level is not None and level not in levels:
            raise ValueError(f"{argument} must be one of {levels} or None, got {level!r}")
    if pod_security_enforce is not None:
        meta["labels"]["pod-security.kubernetes.io/enforce"] = pod_security_enforce
    if pod_security_warn is not None:
        meta["labels"]["pod-security.kubernetes.io/warn"] = pod_security_warn
        meta["labels"]["pod-security.kubernetes.io/audit"] = pod_security_warn
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def make_resource_quota(
    namespace: str,
    *,
    cpu_limit: str,
    memory_limit: str,
    max_pods: int,
    cpu_request: str | None = None,
    memory_request: str | None = None,
    storage: str | None = None,
    max_pvcs: int | None = None,
    max_services: int = 10,
    name: str = "space-quota",
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The space's ResourceQuota: the ceiling over notebook + all engines together.

    Requests default to the limits (a space may be fully guaranteed, never more). Because a
    quota on ``limits.cpu``/``limits.memory`` makes the API server reject pods without limits,
    the namespace also needs :func:`make_limit_range` to fill in defaults. NodePort and
    LoadBalancer services are capped at 0: a space must not open ports outside the cluster.
    """
    _check_dns_label(namespace, "namespace")
    _check_name(name, "name")
    if not isinstance(max_pods, int) or isinstance(max_pods, bool) or max_pods < 1:
        raise ValueError(f"max_pods must be a positive int, got {max_pods!r}")
    hard: dict[str, str] = {
        "limits.cpu": _quantity(cpu_limit, "cpu_limit"),
        "limits.memory": _quantity(memory_limit, "memory_limit"),
        "requests.cpu": _quantity(
            cpu_request if cpu_request is not None else cpu_limit, "cpu_request"
        ),
        "requests.memory": _quantity(
            memory_request if memory_request is not None else memory_limit, "memory_request"
        ),
        "pods": str(max_pods),
        "services": str(max_services),
        "services.nodeports": "0",
        "services.loadbalancers": "0",
    }
    if parse_quantity(hard["requests.cpu"]) > parse_quantity(hard["limits.cpu"]):
        raise ValueError(f"cpu_request {cpu_request!r} exceeds cpu_limit {cpu_limit!r}")
    if parse_quantity(hard["requests.memory"]) > parse_quantity(hard["limits.memory"]):
        raise ValueError(f"memory_request {memory_request!r} exceeds memory_limit {memory_limit!r}")
    for argument, count in (("max_services", max_services), ("max_pvcs", max_pvcs)):
        if count is not None and (
            not isinstance(count, int) or isinstance(count, bool) or count < 0
        ):
            raise ValueError(f"{argument} must be an int >= 0, got {count!r}")
    if storage is not None:
        hard["requests.storage"] = _quantity(storage, "storage")
    if max_pvcs is not None:
        hard["persistentvolumeclaims"] = str(max_pvcs)
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _metadata(name, namespace, labels),
        "spec": {"hard": hard},
    }


def make_limit_range(
    namespace: str,
    *,
    default_cpu_request: str,
    default_memory_request: str,
    default_cpu_limit: str,
    default_memory_limit: str,
    max_cpu: str,
    max_memory: str,
    name: str = "space-limits",
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The space's LimitRange: per-container defaults and maximum.

    Defaults let pods that declare no resources pass the quota; the maximum stops one
    container from taking the whole quota. Impossible combinations (request > limit,
    default > max) are rejected here, because in the cluster they surface only as pods that
    never get created.
    """
    _check_dns_label(namespace, "namespace")
    _check_name(name, "name")
    values = {
        "default_cpu_request": default_cpu_request,
        "default_memory_request": default_memory_request,
        "default_cpu_limit": default_cpu_limit,
        "default_memory_limit": default_memory_limit,
        "max_cpu": max_cpu,
        "max_memory": max_memory,
    }
    parsed = {arg: parse_quantity(value, arg) for arg, value in values.items()}
    for small, big in (
        ("default_cpu_request", "default_cpu_limit"),
        ("default_memory_request", "default_memory_limit"),
        ("default_cpu_limit", "max_cpu"),
        ("default_memory_limit", "max_memory"),
    ):
        if parsed[small] > parsed[big]:
            raise ValueError(f"{small} ({values[small]!r}) exceeds {big} ({values[big]!r})")
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _metadata(name, namespace, labels),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": str(default_cpu_limit), "memory": str(default_memory_limit)},
                    "defaultRequest": {
                        "cpu": str(default_cpu_request),
                        "memory": str(default_memory_request),
                    },
                    "max": {"cpu": str(max_cpu), "memory": str(max_memory)},
                }
            ]
        },
    }


# --------------------------------------------------------------------------------------------
# Network policies
# --------------------------------------------------------------------------------------------

#: Switchable allowances of :func:`make_network_policies` and their defaults (like
#: zero-to-jupyterhub's ``singleuser.networkPolicy.egressAllowRules``).
DEFAULT_NETWORK_ALLOW: dict[str, bool] = {
    # egress to port 53 in kube-system, on private IPs and on the metadata server address
    # (where node-local / cloud DNS resolvers live)
    "dns": True,
    # egress to every address except private ranges and the cloud metadata server
    "internet": True,
    # egress to 10/8, 172.16/12, 192.168/16 (other services in the cluster's network)
    "private_ips": False,
    # egress to 169.254.169.254 (cloud credentials!)
    "cloud_metadata": False,
    # Dask Gateway -> scheduler (8786/8787/8788) and scheduler -> gateway API (heartbeats)
    "gateway_to_scheduler": True,
    # notebook <-> engine pods in both directions
    "notebook_to_engines": True,
    # notebook -> Kubernetes API (443/6443): scaling engines with its ServiceAccount
    "kube_api": True,
}

_PRIVATE_CIDRS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
_CLOUD_METADATA_CIDR = "169.254.169.254/32"


def _ports(numbers: Sequence[int], *protocols: str) -> list[dict[str, Any]]:
    return [{"protocol": proto, "port": n} for n in numbers for proto in (protocols or ("TCP",))]


def _hub_pods(hub_namespace: str, *components: str) -> dict[str, Any]:
    # namespaceSelector AND podSelector in one peer: those pods in that namespace only.
    # kubernetes.io/metadata.name is set by the API server on every namespace (>= 1.21).
    pod_selector: dict[str, Any]
    if len(components) == 1:
        pod_selector = {"matchLabels": {COMPONENT_LABEL: components[0]}}
    else:
        pod_selector = {
            "matchExpressions": [
                {"key": COMPONENT_LABEL, "operator": "In", "values": list(components)}
            ]
        }
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": hub_namespace}},
        "podSelector": pod_selector,
    }


def _policy(
    namespace: str,
    name: str,
    pod_selector: Mapping[str, Any],
    labels: Mapping[str, str] | None,
    *,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": dict(pod_selector), "policyTypes": []}
    if ingress is not None:
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = egress
    # Selectors are reused between rules; a JSON round trip (unlike deepcopy, which keeps
    # aliases) gives callers a tree in which editing one rule cannot change another.
    return json.loads(
        json.dumps(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": _metadata(name, namespace, labels),
                "spec": spec,
            }
        )
    )


def make_network_policies(
    namespace: str,
    *,
    hub_namespace: str,
    allow: Mapping[str, bool] | None = None,
    notebook_port: int = NOTEBOOK_PORT,
    hub_api_port: int = HUB_API_PORT,
    gateway_ports: Sequence[int] = GATEWAY_PORTS,
    kube_api_cidrs: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """All NetworkPolicies of a space: deny everything, then allow named paths.

    NetworkPolicies are additive, so each allowance is its own object, named after what it
    allows; ``allow`` switches them (keys and defaults: :data:`DEFAULT_NETWORK_ALLOW`).

    Always on, because a space does not work without them: ``notebook-from-hub`` (hub and
    proxy reach the notebook server), ``notebook-to-hub`` (the notebook reaches the hub API
    and the Dask Gateway) and ``engines-internal`` (an engine's pods reach each other, e.g.
    Spark workers -> master). Ports are the *pods'* ports, which is what policies match
    after Service address translation.

    ``kube_api``: the API server is not a pod, so no selector can name it. With
    ``kube_api_cidrs`` empty the notebook may reach ports 443/6443 on any address; pass the
    API endpoints' CIDRs to narrow it. Kubelet readiness probes come from the node and are
    allowed by CNIs regardless of policies.
    """
    _check_dns_label(namespace, "namespace")
    _check_dns_label(hub_namespace, "hub_namespace")
    if namespace == hub_namespace:
        raise ValueError("namespace must differ from hub_namespace")
    unknown = set(allow or {}) - set(DEFAULT_NETWORK_ALLOW)
    if unknown:
        raise ValueError(
            f"allow: unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_NETWORK_ALLOW)}"
        )
    for key, value in (allow or {}).items():
        if not isinstance(value, bool):
            raise ValueError(f"allow[{key!r}] must be True or False, got {value!r}")
    allowed = {**DEFAULT_NETWORK_ALLOW, **(allow or {})}
    notebook = dict(NOTEBOOK_SELECTOR)
    any_engine = {"matchExpressions": [{"key": ENGINE_LABEL, "operator": "Exists"}]}
    member = {"matchLabels": {SPACE_MEMBER_LABEL: "true"}}
    dask_scheduler = {"matchLabels": {ENGINE_LABEL: "dask", ROLE_LABEL: "scheduler"}}
    gateway = _hub_pods(hub_namespace, GATEWAY_COMPONENT)

    policies = [
        # No rules + both policy types = nothing in or out unless another policy allows it.
        _policy(namespace, "default-deny", {}, labels, ingress=[], egress=[]),
        _policy(
            namespace,
            "notebook-from-hub",
            {"matchLabels": notebook},
            labels,
            ingress=[
                {
                    "from": [_hub_pods(hub_namespace, HUB_COMPONENT, PROXY_COMPONENT)],
                    "ports": _ports([notebook_port]),
                }
            ],
        ),
        _policy(
            namespace,
            "notebook-to-hub",
            {"matchLabels": notebook},
            labels,
            egress=[
                {"to": [_hub_pods(hub_namespace, HUB_COMPONENT)], "ports": _ports([hub_api_port])},
                {"to": [gateway], "ports": _ports(gateway_ports)},
            ],
        ),
        _policy(
            namespace,
            "engines-internal",
            any_engine,
            labels,
            ingress=[{"from": [{"podSelector": any_engine}]}],
            egress=[{"to": [{"podSelector": any_engine}]}],
        ),
    ]
    if allowed["notebook_to_engines"]:
        # Both directions: Spark executors connect back to the driver inside the notebook.
        policies.append(
            _policy(
                namespace,
                "notebook-to-engines",
                member,
                labels,
                ingress=[{"from": [{"podSelector": member}]}],
                egress=[{"to": [{"podSelector": member}]}],
            )
        )
    if allowed["gateway_to_scheduler"]:
        policies.append(
            _policy(
                namespace,
                "gateway-to-dask-scheduler",
                dask_scheduler,
                labels,
                ingress=[
                    {
                        "from": [gateway],
                        "ports": _ports(
                            [DASK_SCHEDULER_PORT, DASK_DASHBOARD_PORT, DASK_GATEWAY_API_PORT]
                        ),
                    }
                ],
                # a gateway scheduler reports its state to the gateway API
                egress=[{"to": [gateway], "ports": _ports(gateway_ports)}],
            )
        )
    if allowed["kube_api"]:
        rule: dict[str, Any] = {"ports": _ports([443, 6443])}
        if kube_api_cidrs:
            rule = {"to": [{"ipBlock": {"cidr": cidr}} for cidr in kube_api_cidrs], **rule}
        policies.append(
            _policy(namespace, "kube-api", {"matchLabels": notebook}, labels, egress=[rule])
        )
    if allowed["dns"]:
        dns_to = [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}},
            *({"ipBlock": {"cidr": cidr}} for cidr in _PRIVATE_CIDRS),
            {"ipBlock": {"cidr": _CLOUD_METADATA_CIDR}},
        ]
        policies.append(
            _policy(
                namespace,
                "dns",
                {},
                labels,
                egress=[{"to": dns_to, "ports": _ports([53], "UDP", "TCP")}],
            )
        )
    if allowed["internet"]:
        policies.append(
            _policy(
                namespace,
                "internet",
                {},
                labels,
                egress=[
                    {
                        "to": [
                            {
                                "ipBlock": {
                                    "cidr": "0.0.0.0/0",
                                    "except": [*_PRIVATE_CIDRS, _CLOUD_METADATA_CIDR],
                                }
                            }
                        ]
                    }
                ],
            )
        )
    if allowed["private_ips"]:
        policies.append(
            _policy(
                namespace,
                "private-ips",
                {},
                labels,
                egress=[{"to": [{"ipBlock": {"cidr": cidr}} for cidr in _PRIVATE_CIDRS]}],
            )
        )
    if allowed["cloud_metadata"]:
        policies.append(
            _policy(
                namespace,
                "cloud-metadata",
                {},
                labels,
                egress=[{"to": [{"ipBlock": {"cidr": _CLOUD_METADATA_CIDR}}]}],
            )
        )
    return policies


# --------------------------------------------------------------------------------------------
# ServiceAccount and RBAC
# --------------------------------------------------------------------------------------------

#: What the notebook's ServiceAccount may do, in its own namespace only: see its pods and
#: scale its engines. ``deployments/scale`` only supports get/patch/update.
NOTEBOOK_ROLE_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    # Read the engines, and scale them through the scale subresource: never patch or update
    # a Deployment itself, whose pod template (image, user, mounts, node) is the platform's.
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments/scale"],
        "verbs": ["get", "patch", "update"],
    },
]

_CRUD = ["create", "delete", "get", "list", "watch"]

RBAC_GROUP = "rbac.authorization.k8s.io"
#: The RoleBindings that give the hub and the gateway their rights in a user's namespace,
#: by purpose (the keys of the spawner's ``space_roles``).
SPACE_BINDINGS = {"hub": "clusterhub-hub", "gateway": "clusterhub-dask-gateway"}

#: What the hub may do in every namespace (a ClusterRole bound cluster-wide): make and remove
#: users' namespaces, watch pods and events in all of them (KubeSpawner's one reflector per
#: kind), and create RoleBindings, of which the API server only lets it create those of
#: roles it holds or may ``bind`` (:func:`hub_cluster_rules` adds the two space roles). No
#: Secrets, no pods, no Deployments anywhere: those rights exist only inside the spaces it
#: binds :data:`HUB_SPACE_RULES` in.
HUB_CLUSTER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": list(_CRUD)},
    {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [RBAC_GROUP], "resources": ["rolebindings"], "verbs": ["create"]},
]

#: What the hub may do inside a user's namespace: a ClusterRole it binds there, first thing
#: after making the namespace (a RoleBinding, see :func:`make_space_role_binding`). It must
#: cover NOTEBOOK_ROLE_RULES: the API server lets a subject create a Role only with
#: permissions it holds (RBAC escalation prevention; the tests check the inclusion).
HUB_SPACE_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": [
            "pods",
            "persistentvolumeclaims",
            "services",
            "secrets",
            "serviceaccounts",
        ],
        "verbs": list(_CRUD),
    },
    # A space's settings are replaced when they exist already (a namespace kept over a stop,
    # or left by an interrupted one): create alone would fail there forever.
    {
        "apiGroups": [""],
        "resources": ["resourcequotas", "limitranges", "configmaps"],
        "verbs": [*_CRUD, "update"],
    },
    # KubeSpawner watches events to report spawn progress
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": [*_CRUD, "patch", "update"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments/scale"],
        "verbs": ["get", "patch", "update"],
    },
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": [*_CRUD, "update"],
    },
    {
        "apiGroups": [RBAC_GROUP],
        "resources": ["roles", "rolebindings"],
        "verbs": [*_CRUD, "update"],
    },
]

#: What the hub may do in its own namespace (a Role there): read the image pull secrets it
#: copies into each space.
HUB_HOME_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
]


def hub_cluster_rules(space_roles: Sequence[str]) -> list[dict[str, Any]]:
    """:data:`HUB_CLUSTER_RULES`, plus ``bind`` on exactly the ClusterRoles the hub binds in
    each space (its own and the gateway's)."""
    rules = copy.deepcopy(HUB_CLUSTER_RULES)
    if space_roles:
        names = sorted({_check_name(name, "space_roles") for name in space_roles})
        rules.append(
            {
                "apiGroups": [RBAC_GROUP],
                "resources": ["clusterroles"],
                "verbs": ["bind"],
                "resourceNames": names,
            }
        )
    return rules


def make_service_account(
    namespace: str, name: str, *, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The notebook's ServiceAccount (its token is what the extension scales engines with)."""
    _check_dns_label(namespace, "namespace")
    _check_name(name, "name")
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(name, namespace, labels),
    }


def make_role(
    namespace: str, name: str, *, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The notebook's Role (:data:`NOTEBOOK_ROLE_RULES`): a Role, not a ClusterRole, so the
    rights end at the namespace border. No secrets, no pod creation, no exec."""
    _check_dns_label(namespace, "namespace")
    _check_name(name, "name")
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(name, namespace, labels),
        "rules": copy.deepcopy(NOTEBOOK_ROLE_RULES),
    }


def make_role_binding(
    namespace: str,
    role: str,
    service_account: str,
    *,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Binds ``role`` to ``service_account``, both in ``namespace``."""
    _check_dns_label(namespace, "namespace")
    _check_name(role, "role")
    _check_name(service_account, "service_account")
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(_check_name(name or role, "name"), namespace, labels),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }


def make_hub_cluster_role(
    name: str, *, space_roles: Sequence[str] = (), labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The hub's cluster-wide ClusterRole, :func:`hub_cluster_rules` (the Helm chart renders
    the same data)."""
    _check_name(name, "name")
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": _metadata(name, labels=labels),
        "rules": hub_cluster_rules(space_roles),
    }


def _cluster_role_grant(
    cluster_role: str, service_account: str, service_account_namespace: str
) -> dict[str, Any]:
    """The roleRef and subjects of a binding that grants a ClusterRole to a ServiceAccount."""
    _check_name(cluster_role, "cluster_role")
    _check_name(service_account, "service_account")
    _check_dns_label(service_account_namespace, "service_account_namespace")
    return {
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role},
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": service_account,
                "namespace": service_account_namespace,
            }
        ],
    }


def make_space_role_binding(
    namespace: str,
    name: str,
    *,
    cluster_role: str,
    service_account: str,
    service_account_namespace: str,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Grants a platform ServiceAccount (the hub's, the gateway's; in the hub's namespace)
    a ClusterRole's rights in one user's namespace only."""
    _check_dns_label(namespace, "namespace")
    _check_name(name, "name")
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(name, namespace, labels),
        **_cluster_role_grant(cluster_role, service_account, service_account_namespace),
    }


def make_hub_cluster_role_binding(
    name: str,
    *,
    cluster_role: str,
    service_account: str,
    service_account_namespace: str,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Binds the hub's ClusterRole to the hub's ServiceAccount (in the hub namespace)."""
    _check_name(name, "name")
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _metadata(name, labels=labels),
        **_cluster_role_grant(cluster_role, service_account, service_account_namespace),
    }


# --------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------


def _service_host(namespace: str, engine: str) -> str:
    # <svc>.<ns>.svc resolves through the pod's DNS search path whatever the cluster domain is
    return f"{engine_service_name(engine)}.{namespace}.svc"


def _spark_master_url(namespace: str) -> str:
    return f"spark://{_service_host(namespace, 'spark')}:{SPARK_MASTER_PORT}"


def _dask_scheduler_address(namespace: str) -> str:
    return f"tcp://{_service_host(namespace, 'dask')}:{DASK_SCHEDULER_PORT}"


def _mode_ports(mode: str) -> list[tuple[str, int]]:
    """(name, port) pairs a mode listens on at fixed numbers."""
    return {
        "spark-master": [("spark", SPARK_MASTER_PORT), ("http-ui", SPARK_MASTER_UI_PORT)],
        "spark-worker": [("http-ui", SPARK_WORKER_UI_PORT)],
        "ipcontroller": list(IPYPARALLEL_PORTS.items()),
        "dask-scheduler": [
            ("tcp-comm", DASK_SCHEDULER_PORT),
            ("http-dashboard", DASK_DASHBOARD_PORT),
        ],
    }.get(mode, [])


# The port whose readiness means "others can connect now". ipengine and dask-worker only dial
# out (or listen on random ports), so there is nothing to probe: Ready = running.
_READINESS_PORT = {
    "spark-master": SPARK_MASTER_PORT,
    "spark-worker": SPARK_WORKER_UI_PORT,
    "ipcontroller": IPYPARALLEL_PORTS["registration"],
    "dask-scheduler": DASK_SCHEDULER_PORT,
}


def _mode_env(namespace: str, mode: str) -> list[dict[str, Any]]:
    """Environment that pins each mode to the fixed ports and tells it where its leader is."""
    spark_master_url = _spark_master_url(namespace)
    plain: dict[str, dict[str, str]] = {
        "spark-master": {
            "SPARK_MASTER_PORT": str(SPARK_MASTER_PORT),
            "SPARK_MASTER_WEBUI_PORT": str(SPARK_MASTER_UI_PORT),
        },
        "spark-worker": {
            "SPARK_MASTER_URL": spark_master_url,
            "SPARK_WORKER_WEBUI_PORT": str(SPARK_WORKER_UI_PORT),
        },
        "dask-worker": {
            "DASK_SCHEDULER_ADDRESS": _dask_scheduler_address(namespace),
        },
    }
    env = [{"name": k, "value": v} for k, v in plain.get(mode, {}).items()]
    if mode == "ipengine":
        # ipengine reads its connection info from $IPP_CONNECTION_INFO, so engines need no
        # volume; the value comes straight from the Secret the hub wrote.
        env.append(
            {
                "name": "IPP_CONNECTION_INFO",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": IPYPARALLEL_SECRET_NAME,
                        "key": IPYPARALLEL_ENGINE_FILE,
                    }
                },
            }
        )
    return env


def _mode_args(mode: str) -> list[str]:
    if mode == "ipcontroller":
        # --reuse: take ports and key from the hub-written files instead of random ones
        # (absolute paths override the profile's security dir; the mount is read-only and
        # with --reuse the controller does not write the files back).
        return [
            mode,
            "--reuse",
            f"--IPController.engine_json_file={IPYPARALLEL_MOUNT_PATH}/{IPYPARALLEL_ENGINE_FILE}",
            f"--IPController.client_json_file={IPYPARALLEL_MOUNT_PATH}/{IPYPARALLEL_CLIENT_FILE}",
        ]
    return [mode]


def _check_resources(resources: Mapping[str, Mapping[str, str]] | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for kind, amounts in (resources or {}).items():
        if kind not in ("requests", "limits"):
            raise ValueError(f"resources: keys must be 'requests'/'limits', got {kind!r}")
        result[kind] = {res: _quantity(q, f"resources.{kind}.{res}") for res, q in amounts.items()}
    return result


def pull_secret_names(entries: Sequence[str | Mapping[str, str]]) -> list[str]:
    """The Secret names of image pull secrets given as names or as ``{"name": ...}`` (both
    are what KubeSpawner and the chart's ``imagePullSecrets`` accept)."""
    return [e["name"] if isinstance(e, Mapping) else e for e in entries or []]


def pull_secrets_spec(names: Sequence[str]) -> dict[str, Any]:
    """A pod spec's ``imagePullSecrets`` (nothing when there are none). The Secrets must be in
    the pod's namespace: the spawner copies the hub's into each space."""
    if isinstance(names, str):
        raise ValueError(f"image_pull_secrets must be a list of Secret names, got {names!r}")
    for name in names:
        _check_name(name, "image_pull_secrets")
    return {"imagePullSecrets": [{"name": name} for name in names]} if names else {}


def placement_spec(
    node_selector: Mapping[str, str] | None, tolerations: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A pod spec's ``nodeSelector`` and ``tolerations`` (only those given): where user pods
    go, e.g. a tainted pool of user nodes."""
    spec: dict[str, Any] = {}
    if node_selector:
        spec["nodeSelector"] = dict(_check_labels(node_selector, "node_selector"))
    if isinstance(tolerations, (str, Mapping)) or not all(
        isinstance(t, Mapping) for t in tolerations
    ):
        raise ValueError(f"tolerations must be a list of tolerations, got {tolerations!r}")
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    return spec


def make_engine_deployment(
    namespace: str,
    *,
    engine: str,
    role: str,
    image: str,
    replicas: int,
    resources: Mapping[str, Mapping[str, str]] | None = None,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    service_account: str = "default",
    image_pull_policy: str = "IfNotPresent",
    image_pull_secrets: Sequence[str] = (),
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A Deployment running one engine role (named after its mode, e.g. ``spark-worker``).

    The container runs the cluster image with ``args = [<mode>, *mode_args, *args]``; the
    image's entrypoint dispatches on the mode. Scaling = patching ``replicas``, which the
    notebook's Role allows. Leaders (master/controller/scheduler) are singletons updated with
    ``Recreate``, since two controllers sharing fixed ports/keys would split the engines.

    Pods: non-root (uid 1000), no privilege escalation, no capabilities, RuntimeDefault
    seccomp (passes Pod Security "restricted"); no API token (engines never call the API);
    ``enableServiceLinks: false`` because Kubernetes would otherwise inject e.g.
    ``SPARK_MASTER_PORT=tcp://10.x.y.z:7077`` for the ``spark-master`` Service, which Spark
    reads as its own port setting.
    """
    _check_dns_label(namespace, "namespace")
    mode = engine_mode(engine, role)
    if not isinstance(image, str) or not image or any(c.isspace() for c in image):
        raise ValueError(f"image must be a non-empty image reference, got {image!r}")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ValueError(f"replicas must be an int >= 0, got {replicas!r}")
    leader = role == ENGINE_ROLES[engine][0]
    if leader and replicas > 1:
        raise ValueError(f"replicas of the {engine} {role} must be 0 or 1, got {replicas}")
    if image_pull_policy not in ("Always", "IfNotPresent", "Never"):
        raise ValueError(
            f"image_pull_policy must be Always/IfNotPresent/Never, got {image_pull_policy!r}"
        )
    _check_name(service_account, "service_account")
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
        raise ValueError(f"args must be a sequence of strings, got {args!r}")

    pod_labels = {**_check_labels(labels, "labels"), **engine_labels(engine, role)}
    selector = {ENGINE_LABEL: engine, ROLE_LABEL: role}

    env_list: list[dict[str, Any]] = [
        {"name": "CLUSTERHUB_NAMESPACE", "value": namespace},
        {"name": "CLUSTERHUB_ENGINE", "value": engine},
        {"name": "CLUSTERHUB_ROLE", "value": role},
        {"name": "CLUSTERHUB_MODE", "value": mode},
        # The node name is what "which host ran this task" means to a workshop audience;
        # the pod's own hostname is its pod name.
        {"name": "CLUSTERHUB_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "CLUSTERHUB_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        *_mode_env(namespace, mode),
    ]
    for key, value in (env or {}).items():
        if not isinstance(key, str) or not _ENV_NAME_RE.match(key) or not isinstance(value, str):
            raise ValueError(f"env: invalid entry {key!r}={value!r}")
        # the caller's value wins over ours, keeping one entry per name
        env_list = [e for e in env_list if e["name"] != key]
        env_list.append({"name": key, "value": value})

    container: dict[str, Any] = {
        "name": mode,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "args": [*_mode_args(mode), *args],
        "env": env_list,
    }
    ports = _mode_ports(mode)
    if ports:
        container["ports"] = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports]
    container["resources"] = _check_resources(resources)
    if mode in _READINESS_PORT:
        container["readinessProbe"] = {
            "tcpSocket": {"port": _READINESS_PORT[mode]},
            "periodSeconds": 5,
            "failureThreshold": 3,
        }
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
    }

    pod_spec: dict[str, Any] = {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_GID,
            "fsGroup": IMAGE_GID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if mode == "ipcontroller":
        pod_spec["volumes"] = [
            {"name": "ipyparallel-connection", "secret": {"secretName": IPYPARALLEL_SECRET_NAME}}
        ]
        container["volumeMounts"] = [
            {
                "name": "ipyparallel-connection",
                "mountPath": IPYPARALLEL_MOUNT_PATH,
                "readOnly": True,
            }
        ]

    pod_spec.update(pull_secrets_spec(image_pull_secrets))
    pod_spec.update(placement_spec(node_selector, tolerations))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(mode, namespace, pod_labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "Recreate"} if leader else {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def make_engine_service(
    namespace: str, *, engine: str, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ClusterIP Service in front of an engine's leader (Spark master: 7077 + UI 8080;
    IPyParallel controller: 10101-10115; Dask scheduler: 8786 + dashboard 8787).

    Followers need no Service: they dial the leader, and the leader learns their pod IPs.
    """
    _check_dns_label(namespace, "namespace")
    if engine not in ENGINE_ROLES:
        raise ValueError(f"engine must be one of {sorted(ENGINE_ROLES)}, got {engine!r}")
    role = ENGINE_ROLES[engine][0]
    mode = engine_mode(engine, role)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            mode, namespace, {**_check_labels(labels, "labels"), **engine_labels(engine, role)}
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": {ENGINE_LABEL: engine, ROLE_LABEL: role},
            "ports": [
                {"name": n, "port": p, "targetPort": p, "protocol": "TCP"}
                for n, p in _mode_ports(mode)
            ],
        },
    }


def make_ipyparallel_connection_files(namespace: str, *, key: str) -> dict[str, dict[str, Any]]:
    """ipcontroller's two connection files, written by the hub instead of the controller.

    The controller binds all interfaces (``tcp://*``); clients and engines replace ``*`` by
    ``location``, the controller's Service name. ``key`` signs every message: pass a fresh
    random secret (e.g. ``secrets.token_hex(32)``) - this module stays deterministic.
    """
    _check_dns_label(namespace, "namespace")
    if not isinstance(key, str) or len(key) < 16 or not key.isascii():
        raise ValueError("key must be an ASCII string of at least 16 characters")
    p = IPYPARALLEL_PORTS
    common = {
        "key": key,
        "signature_scheme": "hmac-sha256",
        "pack": "json",
        "unpack": "json",
        "location": _service_host(namespace, "ipyparallel"),
        "ssh": "",
        "curve_serverkey": None,
        "interface": "tcp://*",
        "registration": p["registration"],
    }
    engine = {
        **common,
        "control": p["e-control"],
        "mux": p["e-mux"],
        "task": p["e-task"],
        "iopub": p["e-iopub"],
        "hb_ping": p["e-hb-ping"],
        "hb_pong": p["e-hb-pong"],
        "broadcast": [p["e-broadcast-0"], p["e-broadcast-1"]],
    }
    client = {
        **common,
        "control": p["c-control"],
        "mux": p["c-mux"],
        "task": p["c-task"],
        "task_scheme": "leastload",
        "iopub": p["c-iopub"],
        "notification": p["c-notification"],
        "broadcast": p["c-broadcast"],
    }
    return {IPYPARALLEL_ENGINE_FILE: engine, IPYPARALLEL_CLIENT_FILE: client}


def make_ipyparallel_secret(
    namespace: str,
    name: str = IPYPARALLEL_SECRET_NAME,
    connection_files: Mapping[str, Mapping[str, Any] | str] | None = None,
    *,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Secret holding the IPyParallel connection files (they contain the signing key).

    A Secret, not a ConfigMap, and written by the hub: the notebook's Role cannot read
    Secrets, so the files reach the controller and notebook as mounts and the engines as an
    env var. ``stringData`` keeps the manifest readable; dict values are JSON-encoded with
    sorted keys so the object is byte-for-byte deterministic.
    """
    _check_dns_label(namespace, "namespace")
    _check_name(name, "name")
    if not connection_files:
        raise ValueError("connection_files must name at least one file")
    data: dict[str, str] = {}
    for filename, content in connection_files.items():
        if not isinstance(filename, str) or not _SECRET_KEY_RE.match(filename):
            raise ValueError(f"connection_files: invalid file name {filename!r}")
        data[filename] = (
            content if isinstance(content, str) else json.dumps(content, sort_keys=True, indent=1)
        )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(name, namespace, labels),
        "type": "Opaque",
        "stringData": data,
    }


def make_ipyparallel_notebook_volume(
    secret_name: str = IPYPARALLEL_SECRET_NAME,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, volumeMount) that put ``ipcontroller-client.json`` into the notebook pod at
    :data:`IPYPARALLEL_MOUNT_PATH` (only the client file: the notebook needs nothing else)."""
    _check_name(secret_name, "secret_name")
    volume = {
        "name": "ipyparallel-connection",
        "secret": {
            "secretName": secret_name,
            "items": [{"key": IPYPARALLEL_CLIENT_FILE, "path": IPYPARALLEL_CLIENT_FILE}],
            # optional: a space without IPyParallel still starts its notebook
            "optional": True,
        },
    }
    mount = {
        "name": "ipyparallel-connection",
        "mountPath": IPYPARALLEL_MOUNT_PATH,
        "readOnly": True,
    }
    return volume, mount


def notebook_ipython_dir(home: str = NOTEBOOK_HOME) -> str:
    """The notebook's ``IPYTHONDIR``: IPython's default for that home, made explicit so that
    the profile a kernel uses is the one the client file is mounted into."""
    if not home.startswith("/") or posixpath.normpath(home) != home or home == "/":
        raise ValueError(f"home must be a normalised absolute path other than /, got {home!r}")
    return f"{home}/.ipython"


def ipython_security_dir(home: str = NOTEBOOK_HOME) -> str:
    """Where ``ipp.Client()`` with no arguments looks for ``ipcontroller-client.json``."""
    return f"{notebook_ipython_dir(home)}/profile_default/security"


def make_ipython_security_mount(home: str = NOTEBOOK_HOME) -> dict[str, Any]:
    """A second mount of :func:`make_ipyparallel_notebook_volume`'s volume, at the default
    profile's security dir, so that a bare ``ipp.Client()`` finds the space's controller.

    It nests under the home (often a volume itself, which Kubernetes allows). The container
    runtime creates a missing mount point, and its missing parents, as root: see
    :func:`make_ipython_dirs_init_container`, which creates them as the user first.
    """
    return {
        "name": "ipyparallel-connection",
        "mountPath": ipython_security_dir(home),
        "readOnly": True,
    }


def make_ipython_dirs_init_container(
    image: str,
    home: str = NOTEBOOK_HOME,
    *,
    volume_mounts: Sequence[Mapping[str, Any]] = (),
    security_context: Mapping[str, Any] | None = None,
    image_pull_policy: str | None = None,
) -> dict[str, Any]:
    """An init container that creates ``$IPYTHONDIR/profile_default/security`` as the
    notebook's user, with the notebook's home mounts, before the notebook starts.

    Without it, a home volume gets ``.ipython`` and ``profile_default`` created by the
    runtime as root for :func:`make_ipython_security_mount`, and IPython (running as the
    user) could then never write its history or profile there. An existing directory is
    left as it is. ``volume_mounts`` should be the notebook's mounts at or above ``home``.
    """
    if not isinstance(image, str) or not image:
        raise ValueError(f"image must be a non-empty image reference, got {image!r}")
    container: dict[str, Any] = {
        "name": "ipython-dirs",
        "image": image,
        "command": ["mkdir", "-p", ipython_security_dir(home)],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
    }
    if image_pull_policy:
        container["imagePullPolicy"] = image_pull_policy
    if volume_mounts:
        container["volumeMounts"] = [dict(m) for m in volume_mounts]
    if security_context:
        container["securityContext"] = dict(security_context)
    return container


def make_notebook_env(
    namespace: str,
    *,
    engines: Collection[str] = ("spark", "ipyparallel", "dask"),
    gateway_address: str | None = None,
    gateway_proxy_address: str | None = None,
    ipython_dir: str | None = None,
) -> dict[str, str]:
    """Environment of the notebook so that every engine works with no arguments.

    - Spark: ``MASTER`` is spark-submit's fallback master, so a bare
      ``SparkSession.builder.getOrCreate()`` lands on the space's master; ``SPARK_MASTER_URL``
      is for our own code.
    - IPyParallel: ``ipp.Client`` has no env var for its connection file; a bare
      ``ipp.Client()`` reads it from the default profile's security dir, where
      :func:`make_ipython_security_mount` puts it, under ``IPYTHONDIR`` (``ipython_dir``,
      see :func:`notebook_ipython_dir`, set when given). ``CLUSTERHUB_IPP_CLIENT_FILE``
      names the same file at :data:`IPYPARALLEL_MOUNT_PATH`, for explicit use.
    - Dask: with a gateway, dask-gateway's own config variables; without one, the space's
      plain scheduler (``DASK_SCHEDULER_ADDRESS``, read by ``distributed.Client()``).
    """
    _check_dns_label(namespace, "namespace")
    unknown = set(engines) - set(ENGINE_ROLES)
    if isinstance(engines, str) or unknown:
        raise ValueError(f"engines must be a collection of {sorted(ENGINE_ROLES)}, got {engines!r}")
    chosen = [e for e in ENGINE_ROLES if e in engines]  # fixed order: deterministic output
    env = {"CLUSTERHUB_NAMESPACE": namespace, "CLUSTERHUB_ENGINES": ",".join(chosen)}
    if "spark" in chosen:
        env["SPARK_MASTER_URL"] = env["MASTER"] = _spark_master_url(namespace)
    if "ipyparallel" in chosen:
        env["CLUSTERHUB_IPP_CLIENT_FILE"] = f"{IPYPARALLEL_MOUNT_PATH}/{IPYPARALLEL_CLIENT_FILE}"
        if ipython_dir is not None:
            if not ipython_dir.startswith("/"):
                raise ValueError(f"ipython_dir must be an absolute path, got {ipython_dir!r}")
            env["IPYTHONDIR"] = ipython_dir
    if "dask" in chosen:
        if gateway_address:
            env["DASK_GATEWAY__ADDRESS"] = gateway_address
            env["DASK_GATEWAY__AUTH__TYPE"] = "jupyterhub"
            if gateway_proxy_address:
                env["DASK_GATEWAY__PROXY_ADDRESS"] = gateway_proxy_address
        else:
            env["DASK_SCHEDULER_ADDRESS"] = _dask_scheduler_address(namespace)
    elif gateway_address or gateway_proxy_address:
        raise ValueError("gateway_address given but 'dask' is not in engines")
    return env
