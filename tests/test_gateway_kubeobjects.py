"""The Kubernetes objects of one Dask Gateway cluster: literal expectations + schema checks."""

from __future__ import annotations

import base64

import kubernetes_validate
import pytest

from clusterhub.engines.entrypoint import command_for
from clusterhub.gateway import kubeobjects as g
from clusterhub.spawner import kubeobjects as ko

K8S_VERSION = "1.34.0"
NS = "clusterhub-alice"
CLUSTER = "0123456789abcdef0123456789abcdef"
WORKER = "fedcba9876543210fedcba9876543210"
POD_IP_ENV = {"name": "CLUSTERHUB_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
COMMON = {
    "app.kubernetes.io/managed-by": "clusterhub",
    "gateway.clusterhub.io/hub": "workshop",
    "gateway.clusterhub.io/cluster": CLUSTER,
}
SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CREDENTIALS_VOLUME = {
    "name": "dask-credentials",
    "secret": {"secretName": f"dask-credentials-{CLUSTER}", "defaultMode": 0o440},
}
CREDENTIALS_MOUNT = {
    "name": "dask-credentials",
    "mountPath": "/etc/dask-credentials",
    "readOnly": True,
}


def validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_secret_holds_cert_key_and_token():
    secret = g.make_cluster_secret(
        NS, CLUSTER, hub_name="workshop", tls_cert=b"CERT", tls_key=b"KEY", api_token="tok"
    )
    assert secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"dask-credentials-{CLUSTER}", "namespace": NS, "labels": COMMON},
        "type": "Opaque",
        "data": {
            "dask.crt": base64.b64encode(b"CERT").decode(),
            "dask.pem": base64.b64encode(b"KEY").decode(),
            "api-token": base64.b64encode(b"tok").decode(),
        },
    }
    validate(secret)


def test_service_is_headless_and_names_the_scheduler():
    service = g.make_cluster_service(NS, CLUSTER, hub_name="workshop")
    assert service == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"dask-{CLUSTER}",
            "namespace": NS,
            "labels": {**COMMON, **ko.engine_labels("dask", "scheduler")},
        },
        "spec": {
            "clusterIP": "None",
            "selector": {
                "gateway.clusterhub.io/cluster": CLUSTER,
                "clusterhub.io/role": "scheduler",
            },
            "ports": [
                {"name": "tcp-comm", "port": 8786, "targetPort": 8786, "protocol": "TCP"},
                {"name": "http-dashboard", "port": 8787, "targetPort": 8787, "protocol": "TCP"},
                {"name": "http-api", "port": 8788, "targetPort": 8788, "protocol": "TCP"},
            ],
        },
    }
    validate(service)
    # Ports chosen by the scheduler at run time are not the Service's to publish.
    free = g.make_cluster_service(
        NS, CLUSTER, hub_name="workshop", ports={"tcp-comm": 0, "http-api": 0}
    )
    assert "ports" not in free["spec"]
    validate(free)


def test_scheduler_pod():
    pod = g.make_scheduler_pod(
        NS,
        CLUSTER,
        hub_name="workshop",
        image="cluster:1",
        args=["dask-gateway-scheduler", "--port", "8786"],
        env={"DASK_GATEWAY_CLUSTER_NAME": CLUSTER},
        cores=1,
        memory=2**30,
    )
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"dask-scheduler-{CLUSTER}",
            "namespace": NS,
            "labels": {
                **COMMON,
                "app.kubernetes.io/component": "dask-scheduler",
                "clusterhub.io/space-member": "true",
                "clusterhub.io/engine": "dask",
                "clusterhub.io/role": "scheduler",
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": POD_SECURITY,
            "containers": [
                {
                    "name": "dask-scheduler",
                    "image": "cluster:1",
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["dask-gateway-scheduler", "--port", "8786"],
                    "env": [POD_IP_ENV, {"name": "DASK_GATEWAY_CLUSTER_NAME", "value": CLUSTER}],
                    "resources": {
                        "requests": {"cpu": "1", "memory": "1073741824"},
                        "limits": {"cpu": "1", "memory": "1073741824"},
                    },
                    "volumeMounts": [CREDENTIALS_MOUNT],
                    "securityContext": SECURITY,
                    "ports": [
                        {"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
                        {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"},
                        {"name": "http-api", "containerPort": 8788, "protocol": "TCP"},
                    ],
                    "readinessProbe": {
                        "httpGet": {"path": "/api/health", "port": 8788},
                        "periodSeconds": 5,
                        "failureThreshold": 3,
                    },
                }
            ],
            "volumes": [CREDENTIALS_VOLUME],
        },
    }
    validate(pod)
    # The space's NetworkPolicy "gateway-to-dask-scheduler" selects exactly these labels.
    policies = ko.make_network_policies(NS, hub_namespace="hub")
    (gateway_policy,) = [
        p for p in policies if p["metadata"]["name"] == "gateway-to-dask-scheduler"
    ]
    selector = gateway_policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()


def test_scheduler_pod_with_ports_chosen_at_run_time_has_no_probe():
    pod = g.make_scheduler_pod(
        NS,
        CLUSTER,
        hub_name="workshop",
        image="cluster:1",
        args=[],
        env={},
        cores=0.5,
        memory=512 * 2**20,
        ports={"tcp-comm": 0, "http-dashboard": 0, "http-api": 0},
    )
    container = pod["spec"]["containers"][0]
    assert "ports" not in container and "readinessProbe" not in container
    assert container["resources"]["limits"] == {"cpu": "0.5", "memory": "536870912"}
    validate(pod)


def test_worker_pod_is_named_after_the_worker_and_fits_a_hostname():
    pod = g.make_worker_pod(
        NS,
        CLUSTER,
        WORKER,
        hub_name="a hub name that needs hashing",
        image="cluster:1",
        args=["dask-gateway-worker", "tls://x:1"],
        env={},
        cores=2,
        memory=4 * 2**30,
        image_pull_policy="Always",
    )
    name = pod["metadata"]["name"]
    assert name == f"dask-worker-{WORKER}" and len(name) <= 63
    labels = pod["metadata"]["labels"]
    assert labels["gateway.clusterhub.io/worker"] == WORKER
    assert labels["gateway.clusterhub.io/cluster"] == CLUSTER
    assert labels["gateway.clusterhub.io/hub"] == ko.label_value("a hub name that needs hashing")
    assert labels["clusterhub.io/role"] == "worker"
    container = pod["spec"]["containers"][0]
    assert container["name"] == "dask-worker" and container["imagePullPolicy"] == "Always"
    assert "ports" not in container and "readinessProbe" not in container
    assert pod["spec"]["volumes"] == [CREDENTIALS_VOLUME]
    validate(pod)


def test_scheduler_and_worker_pods_pull_with_the_spaces_pull_secrets():
    common = dict(
        hub_name="hub", image="registry.corp/cluster:1", env={}, cores=1, memory=2**30,
        image_pull_secrets=["registry-credentials"],
    )  # fmt: skip
    scheduler = g.make_scheduler_pod(NS, CLUSTER, args=["dask-gateway-scheduler"], **common)
    worker = g.make_worker_pod(NS, CLUSTER, WORKER, args=["dask-gateway-worker"], **common)
    for pod in (scheduler, worker):
        assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-credentials"}]
        validate(pod)


def test_scheduler_and_worker_pods_go_to_the_users_nodes():
    users = [{"key": "clusterhub.io/users", "operator": "Exists", "effect": "NoSchedule"}]
    common = dict(
        hub_name="hub", image="cluster:1", env={}, cores=1, memory=2**30,
        node_selector={"node-pool": "users"}, tolerations=users,
    )  # fmt: skip
    scheduler = g.make_scheduler_pod(NS, CLUSTER, args=["dask-gateway-scheduler"], **common)
    worker = g.make_worker_pod(NS, CLUSTER, WORKER, args=["dask-gateway-worker"], **common)
    for pod in (scheduler, worker):
        assert pod["spec"]["nodeSelector"] == {"node-pool": "users"}
        assert pod["spec"]["tolerations"] == users
        validate(pod)
    bare = g.make_worker_pod(NS, CLUSTER, WORKER, args=[], hub_name="h", image="c:1", env={},
                             cores=1, memory=2**30)  # fmt: skip
    assert "nodeSelector" not in bare["spec"] and "tolerations" not in bare["spec"]
    with pytest.raises(ValueError, match="tolerations"):
        g.make_worker_pod(NS, CLUSTER, WORKER, args=[], hub_name="h", image="c:1", env={},
                          cores=1, memory=2**30, tolerations="NoSchedule")  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image": "has space"}, "image must be"),
        ({"image_pull_policy": "Sometimes"}, "image_pull_policy must be"),
        ({"args": "dask worker"}, "args must be a sequence"),
        ({"env": {"1BAD": "x"}}, "env: invalid entry"),
    ],
)
def test_bad_pod_arguments_are_refused(kwargs, message):
    arguments = dict(hub_name="h", image="cluster:1", args=[], env={}, cores=1, memory=1)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        g.make_worker_pod(NS, CLUSTER, WORKER, **arguments)


def test_bad_secret_and_namespace_are_refused():
    with pytest.raises(ValueError, match="tls_key must be non-empty bytes"):
        g.make_cluster_secret(NS, CLUSTER, hub_name="h", tls_cert=b"c", tls_key=b"", api_token="t")
    with pytest.raises(ValueError, match="namespace must be a DNS-1123 label"):
        g.make_cluster_service("Not_A_Namespace", CLUSTER, hub_name="h")


def test_the_cluster_image_runs_gateway_schedulers_and_workers_with_the_gateways_arguments():
    args = ["--protocol", "tls", "--port", "0"]
    scheduler = command_for("dask-gateway-scheduler", args, {})
    worker = command_for("dask-gateway-worker", ["tls://s:1", "--name", "w"], {})
    assert scheduler[0].endswith("dask") and scheduler[1:] == ["scheduler", *args]
    assert worker[1:] == ["worker", "tls://s:1", "--name", "w"]
