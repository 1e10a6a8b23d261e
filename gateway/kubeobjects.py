"""Pure builders for the Kubernetes objects of one Dask Gateway cluster in its owner's space.

A cluster is a Secret (its TLS certificate and key and its gateway API token), a headless
Service naming its scheduler, one scheduler pod and one pod per worker, all in the owner's
namespace. Like :mod:`clusterhub.spawner.kubeobjects` (whose labels and checks these reuse),
every function is pure and returns a plain dict, so the tests can compare it with literal
expectations and validate it against the Kubernetes schemas offline.

Labels (on top of the space's engine labels ``clusterhub.io/engine: dask`` and
``clusterhub.io/role: scheduler|worker``, which the space's NetworkPolicies select on):

``gateway.clusterhub.io/hub``
    the hub (label-safe name) whose gateway made the object: one watch per kind, filtered
    by this label, sees every cluster pod of this gateway in every namespace;
``gateway.clusterhub.io/cluster`` / ``gateway.clusterhub.io/worker``
    the gateway's cluster and worker names (32 hex digits each).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from clusterhub.spawner import kubeobjects as k

GATEWAY_HUB_LABEL = "gateway.clusterhub.io/hub"
CLUSTER_LABEL = "gateway.clusterhub.io/cluster"
WORKER_LABEL = "gateway.clusterhub.io/worker"

CREDENTIALS_VOLUME = "dask-credentials"
CREDENTIALS_PATH = "/etc/dask-credentials"
CERT_FILE = "dask.crt"
KEY_FILE = "dask.pem"
TOKEN_FILE = "api-token"

# The ports a scheduler pod listens on. 0 = any free port (the scheduler reports the one it
# got to the gateway); only sensible where pods share a network, and then without a
# readiness probe or Service ports.
SCHEDULER_PORTS: dict[str, int] = {
    "tcp-comm": k.DASK_SCHEDULER_PORT,
    "http-dashboard": k.DASK_DASHBOARD_PORT,
    "http-api": k.DASK_GATEWAY_API_PORT,
}


#: What the gateway's ServiceAccount may do everywhere (a ClusterRole bound cluster-wide):
#: read pods (one watch for all clusters) and namespaces (to tell "the user's server
#: stopped" from "the scheduler failed"). Nothing it may write.
GATEWAY_CLUSTER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
]

#: What it may do in a user's namespace, where the hub binds these rules for it when it makes
#: the space: make and remove a cluster's pods, its Service and its TLS Secret, and read the
#: space's record. Secrets are never read back (no get/list/watch). The Helm chart renders
#: both lists from helm/clusterhub/files/rbac-rules.json (helm/generate_rbac.py;
#: tests/test_helm.py checks).
GATEWAY_SPACE_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete"]},
    {"apiGroups": [""], "resources": ["services", "secrets"], "verbs": ["create", "delete"]},
    # The space's record (clusterhub-space): the profile's maxima and the chosen sizes.
    {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": [k.SPACE_RECORD_NAME],
        "verbs": ["get"],
    },
]


def secret_name(cluster: str) -> str:
    return f"dask-credentials-{cluster}"


def service_name(cluster: str) -> str:
    return f"dask-{cluster}"


def scheduler_pod_name(cluster: str) -> str:
    return f"dask-scheduler-{cluster}"


def worker_pod_name(worker: str) -> str:
    # The worker name alone keeps the name (and so the pod's hostname) within 63 characters;
    # the cluster is in the labels.
    return f"dask-worker-{worker}"


def cluster_labels(hub_name: str, cluster: str) -> dict[str, str]:
    return {
        k.MANAGED_BY_LABEL: k.MANAGED_BY,
        GATEWAY_HUB_LABEL: k.label_value(hub_name),
        CLUSTER_LABEL: k.label_value(cluster),
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_cluster_secret(
    namespace: str,
    cluster: str,
    *,
    hub_name: str,
    tls_cert: bytes,
    tls_key: bytes,
    api_token: str,
) -> dict[str, Any]:
    """The cluster's credentials, mounted read-only into its scheduler and worker pods."""
    k._check_dns_label(namespace, "namespace")
    for argument, value in (("tls_cert", tls_cert), ("tls_key", tls_key)):
        if not isinstance(value, bytes) or not value:
            raise ValueError(f"{argument} must be non-empty bytes")
    if not isinstance(api_token, str) or not api_token:
        raise ValueError("api_token must be a non-empty string")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": k._metadata(secret_name(cluster), namespace, cluster_labels(hub_name, cluster)),
        "type": "Opaque",
        "data": {
            CERT_FILE: _b64(tls_cert),
            KEY_FILE: _b64(tls_key),
            TOKEN_FILE: _b64(api_token.encode()),
        },
    }


def make_cluster_service(
    namespace: str, cluster: str, *, hub_name: str, ports: Mapping[str, int] = SCHEDULER_PORTS
) -> dict[str, Any]:
    """A headless Service: ``dask-<cluster>.<namespace>.svc`` names the scheduler pod.

    Headless, because the gateway's own proxy (not kube-proxy) carries client traffic and
    workers dial the scheduler pod directly; it also works when the scheduler's ports are
    only known once it runs (ports of 0 are left out).
    """
    k._check_dns_label(namespace, "namespace")
    labels = {**cluster_labels(hub_name, cluster), **k.engine_labels("dask", "scheduler")}
    spec: dict[str, Any] = {
        "clusterIP": "None",
        "selector": {CLUSTER_LABEL: k.label_value(cluster), k.ROLE_LABEL: "scheduler"},
    }
    fixed = [
        {"name": name, "port": port, "targetPort": port, "protocol": "TCP"}
        for name, port in ports.items()
        if port
    ]
    if fixed:
        spec["ports"] = fixed
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": k._metadata(service_name(cluster), namespace, labels),
        "spec": spec,
    }


def _resources(cores: float, memory: int) -> dict[str, dict[str, str]]:
    size = {"cpu": f"{cores:g}", "memory": str(int(memory))}
    return {"requests": dict(size), "limits": dict(size)}


def _pod(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    *,
    container_name: str,
    image: str,
    args: Sequence[str],
    env: Mapping[str, str],
    cores: float,
    memory: int,
    image_pull_policy: str,
    cluster: str,
    image_pull_secrets: Sequence[str] = (),
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    if not isinstance(image, str) or not image or any(c.isspace() for c in image):
        raise ValueError(f"image must be a non-empty image reference, got {image!r}")
    if image_pull_policy not in ("Always", "IfNotPresent", "Never"):
        raise ValueError(
            f"image_pull_policy must be Always/IfNotPresent/Never, got {image_pull_policy!r}"
        )
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
        raise ValueError(f"args must be a sequence of strings, got {args!r}")
    env_list: list[dict[str, Any]] = [
        # The scheduler and workers listen on the pod's address, and tell it to others.
        {"name": "CLUSTERHUB_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    for key, value in env.items():
        if not isinstance(key, str) or not k._ENV_NAME_RE.match(key) or not isinstance(value, str):
            raise ValueError(f"env: invalid entry {key!r}={value!r}")
        env_list.append({"name": key, "value": value})
    container: dict[str, Any] = {
        "name": container_name,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "args": list(args),
        "env": env_list,
        "resources": _resources(cores, memory),
        "volumeMounts": [
            {"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_PATH, "readOnly": True}
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": k.IMAGE_UID,
        },
    }
    spec_extra = {
        **k.pull_secrets_spec(image_pull_secrets),
        **k.placement_spec(node_selector, tolerations),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": k._metadata(name, namespace, labels),
        "spec": {
            **spec_extra,
            # The gateway, not the kubelet, replaces a failed scheduler or worker: it must
            # see each failure to count it (and fail a cluster whose workers keep dying).
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": k.IMAGE_UID,
                "runAsGroup": k.IMAGE_GID,
                "fsGroup": k.IMAGE_GID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [
                {
                    "name": CREDENTIALS_VOLUME,
                    # 0440 + fsGroup: readable by the engine user, not by everyone.
                    "secret": {"secretName": secret_name(cluster), "defaultMode": 0o440},
                }
            ],
        },
    }


def make_scheduler_pod(
    namespace: str,
    cluster: str,
    *,
    hub_name: str,
    image: str,
    args: Sequence[str],
    env: Mapping[str, str],
    cores: float,
    memory: int,
    ports: Mapping[str, int] = SCHEDULER_PORTS,
    image_pull_policy: str = "IfNotPresent",
    image_pull_secrets: Sequence[str] = (),
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The scheduler pod. Readiness is its gateway API's health route when that port is fixed
    (the gateway itself learns the scheduler is up from its first heartbeat)."""
    k._check_dns_label(namespace, "namespace")
    labels = {**cluster_labels(hub_name, cluster), **k.engine_labels("dask", "scheduler")}
    pod = _pod(
        scheduler_pod_name(cluster),
        namespace,
        labels,
        container_name="dask-scheduler",
        image=image,
        args=args,
        env=env,
        cores=cores,
        memory=memory,
        image_pull_policy=image_pull_policy,
        cluster=cluster,
        image_pull_secrets=image_pull_secrets,
        node_selector=node_selector,
        tolerations=tolerations,
    )
    container = pod["spec"]["containers"][0]
    fixed = {name: port for name, port in ports.items() if port}
    if fixed:
        container["ports"] = [
            {"name": name, "containerPort": port, "protocol": "TCP"} for name, port in fixed.items()
        ]
    if fixed.get("http-api"):
        container["readinessProbe"] = {
            "httpGet": {"path": "/api/health", "port": fixed["http-api"]},
            "periodSeconds": 5,
            "failureThreshold": 3,
        }
    return pod


def make_worker_pod(
    namespace: str,
    cluster: str,
    worker: str,
    *,
    hub_name: str,
    image: str,
    args: Sequence[str],
    env: Mapping[str, str],
    cores: float,
    memory: int,
    image_pull_policy: str = "IfNotPresent",
    image_pull_secrets: Sequence[str] = (),
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """One worker's pod; it dials its scheduler, so it needs no ports or Service."""
    k._check_dns_label(namespace, "namespace")
    labels = {
        **cluster_labels(hub_name, cluster),
        **k.engine_labels("dask", "worker"),
        WORKER_LABEL: k.label_value(worker),
    }
    return _pod(
        worker_pod_name(worker),
        namespace,
        labels,
        container_name="dask-worker",
        image=image,
        args=args,
        env=env,
        cores=cores,
        memory=memory,
        image_pull_policy=image_pull_policy,
        cluster=cluster,
        image_pull_secrets=image_pull_secrets,
        node_selector=node_selector,
        tolerations=tolerations,
    )
