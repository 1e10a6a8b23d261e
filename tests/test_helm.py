"""The Helm chart in helm/clusterhub: lint, render, validate, and refuse bad values.

Offline: ``helm template`` renders the chart (``lookup`` is empty there, so generated
secrets are fresh on every render) and every object is checked against the Kubernetes
1.34 schemas in strict mode. The settings Secret is the contract with the hub's Python
side (clusterhub/settings.py), so its JSON is checked key by key.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import importlib.util
import json
import re
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from certs import self_signed_certificate
from helmtools import find_helm, helm_env

from clusterhub.gateway.kubeobjects import GATEWAY_CLUSTER_RULES, GATEWAY_SPACE_RULES
from clusterhub.profiles import DEFAULT_PROFILES, validate_profiles
from clusterhub.settings import (
    DEFAULT_NAMESPACE_PREFIX,
    LOCAL_ONLY_FIELDS,
    KubernetesSettings,
    PlatformSettings,
)
from clusterhub.spawner import kubeobjects as ko

K8S_VERSION = "1.34.0"
ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "clusterhub"
EXAMPLES = ROOT / "helm" / "examples"
NAMESPACE = "clusterhub"
RELEASE = "ch"
CODE = "tea-biscuit-42"

SETTINGS_KEYS = {
    "mode",
    "data_dir",
    "workshop_code",
    "admin_password",
    "gateway_encrypt_key",
    "ip",
    "port",
    "hub_port",
    "proxy_api_port",
    "gateway_api_port",
    "gateway_http_port",
    "gateway_tcp_port",
    "admin_users",
    "proxy_command",
    "extra_config_file",
    "cull_idle_timeout",
    "concurrent_spawn_limit",
    "kubernetes",
}
KUBERNETES_KEYS = {
    "hub_namespace",
    "hub_name",
    "namespace_prefix",
    "notebook_image",
    "cluster_image",
    "image_pull_policy",
    "image_pull_secrets",
    "profiles",
    "network_policy",
    "delete_namespace_on_stop",
    "keep_home_pvc",
    "home_storage",
    "proxy_api_url",
    "hub_bind_url",
    "hub_connect_url",
    "gateway_url",
    "gateway_proxy_address",
    "cluster_start_timeout",
    "worker_start_timeout",
    "subdomain_host",
    "kube_api_cidrs",
    "user_node_selector",
    "user_tolerations",
    "space_roles",
}
CASES = ["default", "workshop-150", "enterprise", "engines", "https-secret", "subdomains"]


# ------------------------------------------------------------------------------------------
# helm
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm(tmp_path_factory):
    """Run helm with its cache/config/data homes in a temp dir; returns CompletedProcess."""
    binary = find_helm()
    env = helm_env(tmp_path_factory.mktemp("helm-home"))

    def run(*args: str, kubeconfig: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [binary, *args],
            env={**env, "KUBECONFIG": kubeconfig} if kubeconfig else env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def values_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("values")


def _values_file(directory: Path, name: str, values: dict[str, Any]) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _case_args(case: str) -> list[str]:
    args = ["--set-string", f"hub.workshopCode={CODE}"]
    if case != "default":
        args = ["--values", str(EXAMPLES / f"{case}.yaml"), *args]
    return args


def _template(helm, *args: str) -> subprocess.CompletedProcess:
    return helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)


@pytest.fixture(scope="session")
def rendered(helm):
    """case -> list of rendered objects (rendered once per session)."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def get(case: str) -> list[dict[str, Any]]:
        if case not in cache:
            result = _template(helm, *_case_args(case))
            assert result.returncode == 0, result.stderr
            cache[case] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return cache[case]

    return get


def _one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def _by_component(objects, kind: str, component: str) -> dict[str, Any]:
    found = [
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"{kind} of {component}"
    return found[0]


def _settings(objects) -> dict[str, Any]:
    secret = _one(objects, "Secret")
    return json.loads(base64.b64decode(secret["data"]["settings.json"]))


def _gateway_settings(objects) -> dict[str, Any]:
    """What the gateway pod mounts as its settings.json."""
    gateway = _by_component(objects, "Deployment", ko.GATEWAY_COMPONENT)
    (volume,) = [
        v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "settings"
    ]
    (item,) = volume["secret"]["items"]
    assert item["path"] == "settings.json"
    secret = _one(objects, "Secret")
    return json.loads(base64.b64decode(secret["data"][item["key"]]))


def _hub_and_gateway_config(objects, tmp_path: Path, monkeypatch) -> tuple[Any, Any]:
    """The traitlets config the hub pod and the gateway pod make from their rendered
    settings files."""
    from traitlets.config import Config

    from clusterhub.gateway.config import configure_gateway
    from clusterhub.hubconfig import configure_hub
    from clusterhub.settings import PlatformSettings

    loaded = []
    for name, settings in (("hub", _settings(objects)), ("gateway", _gateway_settings(objects))):
        settings["data_dir"] = str(tmp_path)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(settings))
        loaded.append(PlatformSettings.load(str(path)))
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://hub:8081/hub/api")
    hub, gateway = Config(), Config()
    configure_hub(hub, loaded[0])
    configure_gateway(gateway, loaded[1])
    return hub, gateway


def _gateway_config(settings: dict[str, Any], tmp_path: Path, monkeypatch) -> Any:
    """The traitlets config the gateway pod's config module makes from ``settings``."""
    from traitlets.config import Config

    from clusterhub.gateway.config import configure_gateway
    from clusterhub.settings import PlatformSettings

    settings = {**settings, "data_dir": str(tmp_path)}
    path = tmp_path / "gateway-settings.json"
    path.write_text(json.dumps(settings))
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://hub:8081/hub/api")
    c = Config()
    configure_gateway(c, PlatformSettings.load(str(path)))
    return c


def _secret_keys(objects) -> dict[str, str]:
    secret = _one(objects, "Secret")
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name
    ]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# ------------------------------------------------------------------------------------------
# The chart as a whole
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_lint_strict(helm, case):
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *_case_args(case))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("case", CASES)
def test_every_object_is_valid_kubernetes(rendered, case):
    objects = rendered(case)
    seen = set()
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in seen, f"two objects {key}"
        seen.add(key)
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        cluster_scoped = obj["kind"] in ("ClusterRole", "ClusterRoleBinding", "PriorityClass")
        assert obj["metadata"].get("namespace") == (None if cluster_scoped else NAMESPACE)
    kinds = {kind for kind, _ in seen}
    assert {
        "Deployment",
        "Service",
        "Secret",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "NetworkPolicy",
        "DaemonSet",
    } <= kinds


@pytest.mark.parametrize("case", CASES)
def test_pods_run_as_non_root_with_resources_and_pull_secrets(rendered, case):
    objects = rendered(case)
    settings = _settings(objects)
    workloads = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
    assert len(workloads) >= 4
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"], container["name"]
        pull = [s["name"] for s in pod.get("imagePullSecrets", [])]
        assert pull == settings["kubernetes"]["image_pull_secrets"]


@pytest.mark.parametrize(
    ("case", "address"),
    [
        ("default", "get service proxy-public"),
        ("enterprise", "https://analytics.corp.example.com/"),
        ("engines", "http://<any node's address>:30080/"),
    ],
)
def test_notes_give_address_code_and_admin_login(helm, case, address):
    result = helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        *_case_args(case),
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert address in notes
    assert CODE in notes
    assert "admin_password" in notes and f"secret {RELEASE}-clusterhub-hub" in notes


# ------------------------------------------------------------------------------------------
# The settings contract
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_settings_secret_is_the_contract(rendered, case, tmp_path):
    objects = rendered(case)
    settings = _settings(objects)
    assert set(settings) == SETTINGS_KEYS
    assert set(settings["kubernetes"]) == KUBERNETES_KEYS
    assert settings["mode"] == "kubernetes"
    assert settings["data_dir"] == "/srv/clusterhub"
    assert settings["workshop_code"] == CODE
    assert (settings["ip"], settings["port"], settings["hub_port"]) == ("", 8000, 8081)
    assert settings["proxy_api_port"] == 8001
    assert settings["gateway_api_port"] == 8010
    assert settings["gateway_http_port"] == 8000
    assert settings["gateway_tcp_port"] == 8786
    assert settings["proxy_command"] == []
    for key in ("cull_idle_timeout", "concurrent_spawn_limit", "port"):
        assert type(settings[key]) is int, key
    assert len(settings["admin_password"]) >= 32
    # a Fernet key: 32 bytes, urlsafe base64
    key = settings["gateway_encrypt_key"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}=", key)
    assert len(base64.urlsafe_b64decode(key)) == 32

    k8s = settings["kubernetes"]
    assert k8s["hub_namespace"] == NAMESPACE
    fullname = f"{RELEASE}-clusterhub"
    assert k8s["hub_name"] == fullname
    assert ko.label_value(fullname) == fullname
    assert k8s["proxy_api_url"] == "http://proxy-api:8001"
    assert k8s["hub_bind_url"] == "http://:8081"
    # Notebooks are in their users' namespaces: the hub's name must say which namespace.
    assert k8s["hub_connect_url"] == f"http://hub.{NAMESPACE}.svc:8081"
    assert k8s["gateway_url"] == (f"http://dask-gateway.{NAMESPACE}.svc:8000/services/dask-gateway")
    assert k8s["gateway_proxy_address"] == f"gateway://dask-gateway.{NAMESPACE}.svc:8786"
    assert set(k8s["network_policy"]) == set(ko.DEFAULT_NETWORK_ALLOW)
    assert all(isinstance(v, bool) for v in k8s["network_policy"].values())
    assert k8s["kube_api_cidrs"] == []
    assert set(k8s["home_storage"]) == {"size", "storage_class"}
    # profiles arrive normalised: validate_profiles() changes nothing the chart wrote (a
    # profile without notebook sizes gets the defaults)
    for sent, normal in zip(k8s["profiles"], validate_profiles(k8s["profiles"]), strict=True):
        assert {key: normal[key] for key in sent} == sent
        assert set(normal) - set(sent) <= {"notebook"}
    # a user's namespace name can be made from the prefix
    assert ko.make_namespace_name(k8s["namespace_prefix"], "alice").endswith("alice")
    for image in ("notebook_image", "cluster_image"):
        assert re.fullmatch(r"[^:\s]+(:\d+)?/[^:\s]+:[\w][\w.-]*", k8s[image]), k8s[image]

    # the hub's own loader reads it
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    loaded = PlatformSettings.load(str(path))
    assert loaded.workshop_code == CODE
    assert loaded.gateway_http_port == 8000
    assert loaded.kubernetes.hub_namespace == NAMESPACE
    assert loaded.kubernetes.to_dict() == k8s


def test_settings_keys_are_the_platform_settings_fields():
    """The chart writes exactly what clusterhub.settings.PlatformSettings reads (but for the
    local mode's attendee accounts)."""
    fields = {f.name for f in dataclasses.fields(PlatformSettings)}
    assert fields - LOCAL_ONLY_FIELDS == SETTINGS_KEYS
    assert set(KubernetesSettings.class_trait_names(config=True)) == KUBERNETES_KEYS


def test_default_settings_match_the_python_defaults(rendered):
    settings = _settings(rendered("default"))
    k8s = settings["kubernetes"]
    assert k8s["profiles"] == validate_profiles(copy.deepcopy(DEFAULT_PROFILES))
    assert k8s["network_policy"] == ko.DEFAULT_NETWORK_ALLOW
    assert k8s["namespace_prefix"] == DEFAULT_NAMESPACE_PREFIX
    assert k8s["notebook_image"] == "quay.io/clusterhub/notebook:0.1.0"
    assert k8s["cluster_image"] == "quay.io/clusterhub/cluster:0.1.0"
    assert k8s["home_storage"] == {"size": "1Gi", "storage_class": ""}
    assert k8s["delete_namespace_on_stop"] is True and k8s["keep_home_pvc"] is True
    assert settings["admin_users"] == ["admin"]
    assert settings["cull_idle_timeout"] == 3600
    assert settings["extra_config_file"] == ""
    # generated secrets: 40 random alphanumerics, the tokens too
    assert re.fullmatch(r"[A-Za-z0-9]{40}", settings["admin_password"])
    keys = _secret_keys(rendered("default"))
    assert re.fullmatch(r"[A-Za-z0-9]{64}", keys["proxy.token"])
    assert re.fullmatch(r"[A-Za-z0-9]{64}", keys["gateway.apiToken"])
    assert re.fullmatch(r"[0-9a-f]{64}", keys["hub.cookieSecret"])
    assert len({keys["proxy.token"], keys["gateway.apiToken"]}) == 2


def test_example_settings(rendered):
    workshop = _settings(rendered("workshop-150"))
    assert workshop["concurrent_spawn_limit"] == 30
    assert workshop["cull_idle_timeout"] == 1800
    assert workshop["kubernetes"]["namespace_prefix"] == "ws-"
    assert workshop["kubernetes"]["notebook_image"].endswith(":2026.09.1")

    enterprise = _settings(rendered("enterprise"))
    k8s = enterprise["kubernetes"]
    assert k8s["image_pull_secrets"] == ["registry-corp"]
    assert k8s["image_pull_policy"] == "Always"
    assert k8s["notebook_image"].startswith("registry.corp.example.com/")
    assert k8s["network_policy"]["internet"] is False
    assert k8s["network_policy"]["private_ips"] is True
    assert enterprise["extra_config_file"] == "/etc/clusterhub/extra_config.py"

    engines = _settings(rendered("engines"))
    profiles = {p["slug"]: p for p in engines["kubernetes"]["profiles"]}
    assert profiles["spark"]["engines"] == ["spark"] and profiles["spark"]["default"]
    assert profiles["everything"]["engines"] == ["spark", "ipyparallel"]
    assert profiles["ipyparallel"]["workers"] == {"default": 4, "max": 16}


def test_user_given_secrets_are_used(helm, values_dir):
    password = "p" * 32
    key = base64.urlsafe_b64encode(b"k" * 32).decode()
    path = _values_file(
        values_dir,
        "given-secrets",
        {"hub": {"adminPassword": password}, "gateway": {"encryptKey": key}},
    )
    result = _template(helm, "--values", str(path), *_case_args("default"))
    assert result.returncode == 0, result.stderr
    settings = _settings([d for d in yaml.safe_load_all(result.stdout) if d])
    assert settings["admin_password"] == password
    assert settings["gateway_encrypt_key"] == key


# ------------------------------------------------------------------------------------------
# Upgrades keep generated secrets (lookup of the Secret in the cluster)
# ------------------------------------------------------------------------------------------


class _TlsFront:
    """TLS in front of the (plain HTTP) Kubernetes emulator: Go's client sends no bearer
    token over plain HTTP, so helm's ``lookup`` needs HTTPS. Pipes bytes both ways."""

    def __init__(self, backend_port: int, cert_file: Path, key_file: Path) -> None:
        self._backend = backend_port
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert_file, key_file)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            client.settimeout(10)
            tls = self._context.wrap_socket(client, server_side=True)
            backend = socket.create_connection(("127.0.0.1", self._backend), timeout=10)
        except OSError:
            client.close()
            return

        def pipe(source, sink) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (source, sink):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pipe, args=(backend, tls), daemon=True)
        back.start()
        pipe(tls, backend)
        back.join(timeout=10)
        tls.close()
        backend.close()

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def kube_https(tmp_path):
    """The Kubernetes emulator behind TLS: (kubeconfig path, api(method, path, body))."""
    from tests.kube.emulator import KubeEmulator

    emulator = KubeEmulator(tmp_path / "apiserver").start()
    cert_file, key_file, pem = self_signed_certificate(tmp_path)
    front = _TlsFront(int(emulator.url.rsplit(":", 1)[1]), cert_file, key_file)
    server = f"https://127.0.0.1:{front.port}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "e",
                        "cluster": {
                            "server": server,
                            "certificate-authority-data": base64.b64encode(pem).decode(),
                        },
                    }
                ],
                "users": [{"name": "e", "user": {"token": emulator.token}}],
                "contexts": [{"name": "e", "context": {"cluster": "e", "user": "e"}}],
                "current-context": "e",
            }
        )
    )

    def api(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import requests

        response = requests.request(
            method,
            emulator.url + path,
            json=body,
            headers={"Authorization": f"Bearer {emulator.token}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    try:
        yield str(kubeconfig), api
    finally:
        front.stop()
        emulator.stop()


def test_upgrade_keeps_generated_secrets(helm, kube_https):
    """Render once, store the Secret as an install would, render again against the cluster:
    the generated admin password, encryption key, tokens and cookie secret are kept, while
    the settings still follow the new values."""
    kubeconfig, api = kube_https
    first = _template(helm, *_case_args("default"))
    assert first.returncode == 0, first.stderr
    secret = _one([d for d in yaml.safe_load_all(first.stdout) if d], "Secret")
    # what `helm install` adds to every object it creates
    secret["metadata"]["annotations"] = {
        "meta.helm.sh/release-name": RELEASE,
        "meta.helm.sh/release-namespace": NAMESPACE,
    }
    api("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    api("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)

    second = helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=server",
        "--disable-openapi-validation",
        "--set",
        "culler.timeout=7200",
        # DaemonSets are not emulated, and server-side dry runs map every kind
        "--set",
        "prePuller.enabled=false",
        *_case_args("default"),
        kubeconfig=kubeconfig,
    )
    assert second.returncode == 0, second.stderr
    upgraded = [d for d in yaml.safe_load_all(second.stdout) if d]
    old, new = _secret_keys([secret]), _secret_keys(upgraded)
    for key in ("proxy.token", "gateway.apiToken", "hub.cookieSecret"):
        assert new[key] == old[key], key
    old_settings, new_settings = json.loads(old["settings.json"]), json.loads(new["settings.json"])
    assert new_settings["admin_password"] == old_settings["admin_password"]
    assert new_settings["gateway_encrypt_key"] == old_settings["gateway_encrypt_key"]
    assert new_settings["cull_idle_timeout"] == 7200


# ------------------------------------------------------------------------------------------
# Pods: the contract with the images
# ------------------------------------------------------------------------------------------


def _secret_refs(pod_spec: dict[str, Any]) -> list[tuple[str, str]]:
    refs = []
    for container in pod_spec["containers"]:
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.append((ref["name"], ref["key"]))
    for volume in pod_spec.get("volumes", []):
        if "secret" in volume:
            for item in volume["secret"].get("items", []):
                refs.append((volume["secret"]["secretName"], item["key"]))
    return refs


@pytest.mark.parametrize("case", CASES)
def test_secret_references_exist(rendered, case):
    objects = rendered(case)
    secret = _one(objects, "Secret")
    external = {("hub-db", "password")} if case == "enterprise" else set()
    for workload in (o for o in objects if o["kind"] == "Deployment"):
        for name, key in _secret_refs(workload["spec"]["template"]["spec"]):
            if (name, key) in external:
                continue
            assert name == secret["metadata"]["name"], (workload["metadata"]["name"], name)
            assert key in secret["data"], (workload["metadata"]["name"], key)


def test_hub_pod(rendered):
    objects = rendered("default")
    hub = _by_component(objects, "Deployment", "hub")
    assert hub["spec"]["replicas"] == 1
    assert hub["spec"]["strategy"]["type"] == "Recreate"
    container = _container(hub, "hub")
    assert container["command"] == [
        "jupyterhub",
        "-f",
        "/usr/local/lib/python3.11/site-packages/clusterhub/jupyterhub_config.py",
        "--upgrade-db",
    ]
    env = _env(container)
    assert env["CLUSTERHUB_SETTINGS"] == "/etc/clusterhub/settings.json"
    assert env["CONFIGPROXY_AUTH_TOKEN"]["secretKeyRef"]["key"] == "proxy.token"
    assert env["CLUSTERHUB_GATEWAY_API_TOKEN"]["secretKeyRef"]["key"] == "gateway.apiToken"
    assert env["JPY_COOKIE_SECRET"]["secretKeyRef"]["key"] == "hub.cookieSecret"
    assert env["CLUSTERHUB_CULL_EVERY"] == "60"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/etc/clusterhub": "settings", "/srv/clusterhub": "data"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/hub/health", "port": "http"}
    assert {"name": "http", "containerPort": 8081} in container["ports"]
    pod = hub["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    pvc = _one(objects, "PersistentVolumeClaim", f"{RELEASE}-clusterhub-hub-db")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    sa = _one(objects, "ServiceAccount", pod["serviceAccountName"])
    binding = next(
        b
        for b in objects
        if b["kind"] == "ClusterRoleBinding" and b["subjects"][0]["name"] == sa["metadata"]["name"]
    )
    role = _one(objects, "ClusterRole", binding["roleRef"]["name"])
    # Cluster-wide only namespaces, reading pods and events, and binding the space roles the
    # hub hands out in each user's namespace, for itself and the gateway (the settings say
    # which).
    space_roles = _settings(objects)["kubernetes"]["space_roles"]
    assert space_roles == {
        "hub": {
            "cluster_role": f"{NAMESPACE}-{RELEASE}-clusterhub-hub-in-space",
            "service_account": sa["metadata"]["name"],
        },
        "gateway": {
            "cluster_role": f"{NAMESPACE}-{RELEASE}-clusterhub-gateway-in-space",
            "service_account": f"{RELEASE}-clusterhub-gateway",
        },
    }
    assert role["rules"] == ko.hub_cluster_rules([r["cluster_role"] for r in space_roles.values()])
    assert _one(objects, "ClusterRole", space_roles["hub"]["cluster_role"])["rules"] == (
        ko.HUB_SPACE_RULES
    )
    # No binding makes the space role hold anywhere but where the hub binds it.
    assert not [
        b
        for b in objects
        if b["kind"].endswith("Binding") and b["roleRef"]["name"].endswith("-in-space")
    ]
    home = _one(objects, "Role", f"{RELEASE}-clusterhub-hub")
    assert home["metadata"]["namespace"] == NAMESPACE and home["rules"] == ko.HUB_HOME_RULES
    service = _one(objects, "Service", "hub")
    assert service["spec"]["ports"][0]["port"] == 8081
    assert (
        service["spec"]["selector"].items() <= hub["spec"]["template"]["metadata"]["labels"].items()
    )


def test_proxy_pod_and_services(rendered):
    objects = rendered("default")
    proxy = _by_component(objects, "Deployment", "proxy")
    container = _container(proxy, "proxy")
    assert container["command"][0] == "configurable-http-proxy"
    assert "--port=8000" in container["command"] and "--api-port=8001" in container["command"]
    assert "--default-target=http://hub:8081" in container["command"]
    assert _env(container)["CONFIGPROXY_AUTH_TOKEN"]["secretKeyRef"]["key"] == "proxy.token"
    assert container["readinessProbe"]["tcpSocket"] == {"port": "http"}
    assert proxy["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    public = _one(objects, "Service", "proxy-public")
    assert public["spec"]["type"] == "LoadBalancer"
    assert public["spec"]["ports"][0]["port"] == 80
    api = _one(objects, "Service", "proxy-api")
    assert api["spec"]["type"] == "ClusterIP" and api["spec"]["ports"][0]["port"] == 8001
    nodeport = _one(rendered("engines"), "Service", "proxy-public")
    assert nodeport["spec"]["type"] == "NodePort"
    assert nodeport["spec"]["ports"][0]["nodePort"] == 30080
    assert "volumes" not in proxy["spec"]["template"]["spec"], "no TLS Secret by default"
    assert not [arg for arg in container["command"] if arg.startswith("--ssl-")]


def test_the_proxy_serves_https_from_a_tls_secret(rendered):
    objects = rendered("https-secret")
    proxy = _by_component(objects, "Deployment", "proxy")
    container = _container(proxy, "proxy")
    assert "--ssl-cert=/etc/clusterhub/tls/tls.crt" in container["command"]
    assert "--ssl-key=/etc/clusterhub/tls/tls.key" in container["command"]
    assert container["volumeMounts"] == [
        {"name": "tls", "mountPath": "/etc/clusterhub/tls", "readOnly": True}
    ]
    assert proxy["spec"]["template"]["spec"]["volumes"] == [
        {"name": "tls", "secret": {"secretName": "workshop-tls", "defaultMode": 0o444}}
    ]
    public = _one(objects, "Service", "proxy-public")
    assert public["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "http", "protocol": "TCP"}
    ]


def test_gateway_pod_rbac_and_service(rendered):
    objects = rendered("default")
    gateway = _by_component(objects, "Deployment", "dask-gateway")
    container = _container(gateway, "gateway")
    assert container["command"] == [
        "dask-gateway-server",
        "-f",
        "/usr/local/lib/python3.11/site-packages/clusterhub/gateway/dask_gateway_config.py",
    ]
    env = _env(container)
    assert env["CLUSTERHUB_SETTINGS"] == "/etc/clusterhub/settings.json"
    assert env["JUPYTERHUB_API_URL"] == "http://hub:8081/hub/api"
    assert env["JUPYTERHUB_API_TOKEN"]["secretKeyRef"]["key"] == "gateway.apiToken"
    assert container["readinessProbe"]["httpGet"]["path"].endswith("/api/health")
    service = _one(objects, "Service", "dask-gateway")
    assert sorted(p["port"] for p in service["spec"]["ports"]) == [8000, 8786]
    settings = _settings(objects)
    assert settings["kubernetes"]["gateway_url"].startswith(
        f"http://{service['metadata']['name']}.{NAMESPACE}.svc:8000/"
    )
    sa = gateway["spec"]["template"]["spec"]["serviceAccountName"]
    binding = next(
        b for b in objects if b["kind"] == "ClusterRoleBinding" and b["subjects"][0]["name"] == sa
    )
    role = _one(objects, "ClusterRole", binding["roleRef"]["name"])
    # Cluster-wide it only reads; what it writes, it writes in the spaces the hub binds
    # gateway-in-space in (and it never reads Secrets).
    assert role["rules"] == GATEWAY_CLUSTER_RULES
    gateway_role = settings["kubernetes"]["space_roles"]["gateway"]
    assert gateway_role["service_account"] == sa
    in_space = _one(objects, "ClusterRole", gateway_role["cluster_role"])
    assert in_space["rules"] == GATEWAY_SPACE_RULES
    # Its database lives on a volume, so a restarted gateway resumes running clusters.
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
    assert _one(objects, "PersistentVolumeClaim", claim)["spec"]["resources"] == {
        "requests": {"storage": "1Gi"}
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == settings["data_dir"]


def test_the_charts_gateway_config_runs_the_kubernetes_backend(rendered, tmp_path, monkeypatch):
    """The config module the gateway pod loads, fed the chart's settings: clusters go into
    user namespaces named as the spawner names them."""

    settings = _gateway_settings(rendered("default"))
    # The hub's login secrets are not the gateway's: a compromised gateway cannot hand them out.
    assert settings["workshop_code"] == settings["admin_password"] == ""
    assert CODE not in json.dumps(settings)
    hub_settings = _settings(rendered("default"))
    assert {
        k: v for k, v in hub_settings.items() if k not in ("workshop_code", "admin_password")
    } == {k: v for k, v in settings.items() if k not in ("workshop_code", "admin_password")}
    c = _gateway_config(settings, tmp_path, monkeypatch)
    assert c.DaskGateway.backend_class == "clusterhub.gateway.kube.KubeSpaceBackend"
    assert c.DaskGateway.authenticator_class == "clusterhub.gateway.auth.HubAuthenticator"
    backend = c.KubeSpaceBackend
    assert backend.hub_namespace == NAMESPACE
    assert backend.namespace_prefix == settings["kubernetes"]["namespace_prefix"]
    assert backend.hub_name == settings["kubernetes"]["hub_name"]
    # The gateway has no copy of the profiles: each space records its own (its ConfigMap).
    assert "profiles" not in backend
    assert backend.stop_clusters_on_shutdown is False
    assert backend.api_url == (
        f"http://dask-gateway.{NAMESPACE}.svc:8000/services/dask-gateway/api"
    )
    assert backend.hub_api_url == "http://hub:8081/hub/api"
    assert c.KubeSpaceClusterConfig.image == settings["kubernetes"]["cluster_image"]
    assert c.KubeSpaceClusterConfig.image_pull_secrets == []
    # Minutes, not dask-gateway's 60 s: a new node first pulls the cluster image. Read from
    # a backend made from this config: ClusterConfig has no such setting, it would be lost.
    from clusterhub.gateway.kube import KubeSpaceBackend

    made = KubeSpaceBackend(config=c)
    assert made.cluster_start_timeout == made.worker_start_timeout == 600
    assert c.Proxy.address == ":8000" and c.Proxy.tcp_address == ":8786"


def test_the_gateways_pods_pull_with_the_charts_pull_secrets(rendered, tmp_path, monkeypatch):
    """A private registry: scheduler and worker pods get the pull secrets, as notebooks do."""
    settings = _gateway_settings(rendered("enterprise"))
    wanted = [
        e["name"] if isinstance(e, dict) else e
        for e in settings["kubernetes"]["image_pull_secrets"]
    ]
    assert wanted
    c = _gateway_config(settings, tmp_path, monkeypatch)
    assert c.KubeSpaceClusterConfig.image_pull_secrets == wanted


def test_hub_pods_carry_the_labels_user_namespaces_select(rendered):
    """kubeobjects' NetworkPolicies admit hub, proxy and gateway pods by component."""
    objects = rendered("default")
    for component in (ko.HUB_COMPONENT, ko.PROXY_COMPONENT, ko.GATEWAY_COMPONENT):
        deployment = _by_component(objects, "Deployment", component)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels[ko.COMPONENT_LABEL] == component


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_network_policies(rendered):
    objects = rendered("default")
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
    pods = {
        c: _by_component(objects, "Deployment", c)["spec"]["template"]["metadata"]["labels"]
        for c in ("hub", "proxy", "dask-gateway")
    }
    for component, labels in pods.items():
        selecting = [p for p in policies.values() if _selects(p["spec"]["podSelector"], labels)]
        assert len(selecting) == 1, component
        assert selecting[0]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    user_ns = {
        "app.kubernetes.io/managed-by": "clusterhub",
        ko.HUB_NAME_LABEL: f"{RELEASE}-clusterhub",
    }

    def port_peers(policy, direction, port):
        key = "from" if direction == "ingress" else "to"
        return [
            rule.get(key)
            for rule in policy["spec"][direction]
            if any(p["port"] == port for p in rule.get("ports", []))
        ]

    hub = policies[f"{RELEASE}-clusterhub-hub"]
    (peers,) = port_peers(hub, "ingress", 8081)
    assert {"namespaceSelector": {"matchLabels": user_ns}} in peers
    proxy = policies[f"{RELEASE}-clusterhub-proxy"]
    assert port_peers(proxy, "ingress", 8000) == [None]  # the public port: anyone
    gateway = policies[f"{RELEASE}-clusterhub-gateway"]
    (peers,) = port_peers(gateway, "ingress", 8786)
    assert peers == [{"namespaceSelector": {"matchLabels": user_ns}}]
    # the enterprise hub reaches its database
    rules = _one(rendered("enterprise"), "NetworkPolicy", f"{RELEASE}-clusterhub-hub")["spec"][
        "egress"
    ]
    assert {
        "to": [{"ipBlock": {"cidr": "10.20.30.0/24"}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    } in rules


# ------------------------------------------------------------------------------------------
# Optional parts
# ------------------------------------------------------------------------------------------


def test_enterprise_database_ingress_and_registry(rendered):
    objects = rendered("enterprise")
    # The hub's database is external; only the gateway keeps its own on a volume.
    claims = [o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert claims == [f"{RELEASE}-clusterhub-gateway-db"]
    hub = _by_component(objects, "Deployment", "hub")
    container = _container(hub, "hub")
    env = _env(container)
    assert env["CLUSTERHUB_DB_URL"]["secretKeyRef"]["key"] == "hub.db.url"
    assert env["PGPASSWORD"]["secretKeyRef"] == {"name": "hub-db", "key": "password"}
    assert "--upgrade-db" not in container["command"]
    assert container["image"] == "registry.corp.example.com/clusterhub/hub:0.1.0-corp.3"
    volumes = {v["name"]: v for v in hub["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    keys = _secret_keys(objects)
    assert keys["hub.db.url"].startswith("postgresql://")
    extra = keys["extra_config.py"]
    compile(extra, "extra_config.py", "exec")
    assert 'c.JupyterHub.db_url = os.environ["CLUSTERHUB_DB_URL"]' in extra
    assert "hub.extraConfig.10-branding" in extra
    items = [i["path"] for i in volumes["settings"]["secret"]["items"]]
    assert items == ["settings.json", "extra_config.py"]
    ingress = _one(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"secretName": "analytics-tls", "hosts": ["analytics.corp.example.com"]}
    ]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "proxy-public", "port": {"name": "http"}}
    assert _one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    for workload in (o for o in objects if o["kind"] in ("Deployment", "DaemonSet")):
        pod = workload["spec"]["template"]["spec"]
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["image"].startswith("registry.corp.example.com/"), c["image"]


def test_workshop_placeholders_and_pre_puller(rendered):
    objects = rendered("workshop-150")
    priority = _one(objects, "PriorityClass")
    assert priority["value"] == -10 and priority["preemptionPolicy"] == "Never"
    placeholders = _by_component(objects, "Deployment", "user-placeholder")
    assert placeholders["spec"]["replicas"] == 20
    pod = placeholders["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == priority["metadata"]["name"]
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "2500m", "memory": "3584Mi"}
    assert pod["nodeSelector"] == {"node-pool": "users"}
    puller = _one(objects, "DaemonSet")
    init = puller["spec"]["template"]["spec"]["initContainers"]
    settings = _settings(objects)["kubernetes"]
    assert [c["image"] for c in init] == [settings["notebook_image"], settings["cluster_image"]]
    # Placeholders and pre-puller land where user pods land: the tainted users' pool.
    users = [{"key": "clusterhub.io/users", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["tolerations"] == users
    assert puller["spec"]["template"]["spec"]["nodeSelector"] == {"node-pool": "users"}
    assert puller["spec"]["template"]["spec"]["tolerations"] == users
    # defaults: placeholders off, pre-puller on
    default = rendered("default")
    assert not [o for o in default if o["kind"] == "PriorityClass"]
    assert _one(default, "DaemonSet")


# ------------------------------------------------------------------------------------------
# Sources of truth
# ------------------------------------------------------------------------------------------


def _generate_rbac_module():
    spec = importlib.util.spec_from_file_location(
        "generate_rbac", ROOT / "helm" / "generate_rbac.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rbac_rules_file_is_in_sync_with_python():
    generator = _generate_rbac_module()
    path = CHART / "files" / "rbac-rules.json"
    assert path.read_text() == generator.render(), "run: python helm/generate_rbac.py"
    assert json.loads(path.read_text()) == {
        "hubCluster": ko.HUB_CLUSTER_RULES,
        "hubSpace": ko.HUB_SPACE_RULES,
        "hubHome": ko.HUB_HOME_RULES,
        "gatewayCluster": GATEWAY_CLUSTER_RULES,
        "gatewaySpace": GATEWAY_SPACE_RULES,
    }
    assert generator.main(["--check"]) == 0


def test_values_defaults_match_python():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert validate_profiles(values["singleuser"]["profiles"]) == validate_profiles(
        copy.deepcopy(DEFAULT_PROFILES)
    )
    names = {
        "dns": "dns",
        "internet": "internet",
        "privateIPs": "private_ips",
        "cloudMetadata": "cloud_metadata",
        "gatewayToScheduler": "gateway_to_scheduler",
        "notebookToEngines": "notebook_to_engines",
        "kubeApi": "kube_api",
    }
    network = dict(values["singleuser"]["networkPolicy"])
    assert network.pop("kubeApiCIDRs") == []  # the API server's addresses, not an allowance
    assert {names[k]: v for k, v in network.items()} == ko.DEFAULT_NETWORK_ALLOW


def _schema_objects(node: Any, path: str = "$"):
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, value in node.items():
            yield from _schema_objects(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _schema_objects(value, f"{path}[{index}]")


def test_schema_closes_every_object():
    schema = json.loads((CHART / "values.schema.json").read_text())
    objects = list(_schema_objects(schema))
    assert len(objects) > 30
    for path, node in objects:
        extra = node.get("additionalProperties")
        # closed objects, or maps whose values are all strings (labels, annotations, env)
        assert extra is False or extra == {"type": "string"}, path
        if extra is False:
            assert "properties" in node, path


def test_values_yaml_is_fully_commented():
    """Every top-level section of values.yaml has a comment (a block may explain several)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Za-z]", line):
            above = index - 1
            while above >= 0 and re.match(r"^[A-Za-z]\w*: \S", lines[above]):
                above -= 1  # one-line keys grouped under one comment
            assert above >= 0 and lines[above].startswith("#"), line


# ------------------------------------------------------------------------------------------
# Bad values are refused, naming the field
# ------------------------------------------------------------------------------------------

POSTGRES = {"type": "postgres", "url": "postgresql://hub@db:5432/hub"}
DB_EGRESS = {"hubExtraEgress": [{"to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}]}]}


def _profile(**changes):
    profile = copy.deepcopy(DEFAULT_PROFILES[0])
    profile.update(changes)
    return profile


BAD_VALUES = {
    "https-without-secret": (
        {"proxy": {"https": {"enabled": True}}},
        "proxy.https.enabled needs proxy.https.secretName",
    ),
    "https-and-ingress": (
        {
            "proxy": {"https": {"enabled": True, "secretName": "tls"}},
            "ingress": {"enabled": True, "hosts": ["hub.example.org"]},
        },
        "proxy.https.enabled and ingress.enabled: choose one",
    ),
    "https-secret-not-a-name": (
        {"proxy": {"https": {"enabled": True, "secretName": "Not A Name"}}},
        "/proxy/https/secretName",
    ),
    "https-port-out-of-range": (
        {"proxy": {"https": {"enabled": True, "secretName": "tls", "port": 70000}}},
        "/proxy/https/port",
    ),
    "https-unknown-key": (
        {"proxy": {"https": {"enabled": True, "secretName": "tls", "certificate": "x"}}},
        "'certificate' not allowed",
    ),
    "workshop-code-missing": ({"hub": {"workshopCode": ""}}, "hub.workshopCode is required"),
    "workshop-code-short": ({"hub": {"workshopCode": "short"}}, "hub.workshopCode"),
    "workshop-code-long": ({"hub": {"workshopCode": "x" * 129}}, "/hub/workshopCode"),
    "admin-password-short": ({"hub": {"adminPassword": "secret"}}, "hub.adminPassword"),
    "unknown-key": ({"hub": {"workshopcode": "typo-typo"}}, "'workshopcode' not allowed"),
    "encrypt-key-not-fernet": ({"gateway": {"encryptKey": "not-a-key"}}, "/gateway/encryptKey"),
    "kube-api-cidr-not-a-cidr": (
        {"singleuser": {"networkPolicy": {"kubeApiCIDRs": ["the api server"]}}},
        "/singleuser/networkPolicy/kubeApiCIDRs/0",
    ),
    "encrypt-key-twice": (
        {"gateway": {"encryptKey": "A" * 43 + "=", "existingSecret": "gateway-key"}},
        "gateway.encryptKey and gateway.existingSecret",
    ),
    "existing-secret-not-a-name": (
        {"gateway": {"existingSecret": "Not A Name"}},
        "/gateway/existingSecret",
    ),
    "cluster-start-timeout-short": (
        {"gateway": {"clusterStartTimeout": 10}},
        "/gateway/clusterStartTimeout",
    ),
    "worker-start-timeout-not-a-number": (
        {"gateway": {"workerStartTimeout": "soon"}},
        "/gateway/workerStartTimeout",
    ),
    "gateway-volume-size": (
        {"gateway": {"persistence": {"size": "lots"}}},
        "/gateway/persistence/size",
    ),
    "placeholders-negative": (
        {"placeholders": {"enabled": True, "count": -1}},
        "/placeholders/count",
    ),
    "placeholders-priority-not-below-users": (
        {"placeholders": {"priority": 0}},
        "/placeholders/priority",
    ),
    "ingress-without-hosts": ({"ingress": {"enabled": True}}, "ingress.hosts"),
    "subdomains-without-host": (
        {"hub": {"subdomains": {"enabled": True, "host": ""}}},
        "hub.subdomains.host is required",
    ),
    "subdomains-host-not-enabled": (
        {"hub": {"subdomains": {"enabled": False, "host": "hub.example.org"}}},
        "hub.subdomains.host is only used with hub.subdomains.enabled",
    ),
    "subdomains-host-not-a-name": (
        {"hub": {"subdomains": {"enabled": True, "host": "https://Hub.example.org/"}}},
        "/hub/subdomains/host",
    ),
    "subdomains-tls-host-not-served": (
        {
            "hub": {"subdomains": {"enabled": True, "host": "hub.example.org"}},
            "ingress": {
                "enabled": True,
                "tls": [{"secretName": "tls", "hosts": ["*.other.example.org"]}],
            },
        },
        "ingress.tls[0].hosts",
    ),
    "ingress-tls-host-not-served": (
        {
            "ingress": {
                "enabled": True,
                "hosts": ["hub.example.org"],
                "tls": [{"secretName": "tls", "hosts": ["other.example.org"]}],
            }
        },
        "ingress.tls[0].hosts",
    ),
    "postgres-without-url": (
        {"hub": {"db": {"type": "postgres"}}, "networkPolicy": DB_EGRESS},
        "hub.db.url is required",
    ),
    "postgres-with-mysql-url": (
        {"hub": {"db": {"type": "postgres", "url": "mysql://db/hub"}}, "networkPolicy": DB_EGRESS},
        "hub.db.url must start with",
    ),
    "sqlite-with-url": ({"hub": {"db": {"url": "postgresql://db/hub"}}}, "hub.db.url"),
    "db-password-and-existing-secret": (
        {
            "hub": {
                "db": {**POSTGRES, "password": "pw", "existingSecret": {"name": "s", "key": "k"}}
            },
            "networkPolicy": DB_EGRESS,
        },
        "hub.db.password and hub.db.existingSecret.name",
    ),
    "postgres-unreachable-behind-network-policy": (
        {"hub": {"db": POSTGRES}},
        "networkPolicy.hubExtraEgress",
    ),
    "db-type-unknown": ({"hub": {"db": {"type": "oracle"}}}, "/hub/db/type"),
    "pre-puller-without-images": (
        {"prePuller": {"enabled": True, "notebookImage": False, "clusterImage": False}},
        "prePuller.enabled but no image",
    ),
    "profile-default-above-max": (
        {"singleuser": {"profiles": [_profile(workers={"default": 9, "max": 8})]}},
        "singleuser.profiles[0].workers.default (9) exceeds",
    ),
    "profile-max-out-of-range": (
        {"singleuser": {"profiles": [_profile(worker_memory_gib={"default": 1, "max": 512})]}},
        "/singleuser/profiles/0/worker_memory_gib/max",
    ),
    "profile-notebook-guarantee-above-limit": (
        {
            "singleuser": {
                "profiles": [_profile(notebook={"memory_gib": {"guarantee": 4, "limit": 2}})]
            }
        },
        "singleuser.profiles[0].notebook.memory_gib.guarantee (4) exceeds",
    ),
    "profile-notebook-cpu-out-of-range": (
        {"singleuser": {"profiles": [_profile(notebook={"cpu": {"guarantee": 0, "limit": 1}})]}},
        "/singleuser/profiles/0/notebook/cpu/guarantee",
    ),
    "profile-unknown-engine": (
        {"singleuser": {"profiles": [_profile(engines=["ray"])]}},
        "/singleuser/profiles/0/engines/0",
    ),
    "profile-slug-twice": (
        {"singleuser": {"profiles": [_profile(), _profile(default=False)]}},
        "singleuser.profiles[1].slug",
    ),
    "profile-two-defaults": (
        {"singleuser": {"profiles": [_profile(), _profile(slug="other")]}},
        "at most one profile may have default",
    ),
    "profiles-empty": ({"singleuser": {"profiles": []}}, "/singleuser/profiles"),
    "namespace-prefix-invalid": (
        {"singleuser": {"namespacePrefix": "Users_"}},
        "/singleuser/namespacePrefix",
    ),
    "namespace-prefix-kube": ({"singleuser": {"namespacePrefix": "kube-"}}, "namespacePrefix"),
    "namespace-prefix-covers-hub-namespace": (
        {"singleuser": {"namespacePrefix": "cluster"}},
        "singleuser.namespacePrefix",
    ),
    "proxy-service-type-unknown": ({"proxy": {"service": {"type": "Ingress"}}}, "/proxy/service"),
    "node-port-on-cluster-ip": (
        {"proxy": {"service": {"type": "ClusterIP", "nodePort": 30080}}},
        "proxy.service.nodePort",
    ),
    "pull-policies-differ": (
        {"images": {"cluster": {"pullPolicy": "Always"}}},
        "images.cluster.pullPolicy",
    ),
    "culler-checks-less-often-than-timeout": (
        {"culler": {"timeout": 600, "every": 3600}},
        "culler.every",
    ),
    "extra-egress-unknown-field": (
        {"networkPolicy": {"hubExtraEgress": [{"too": []}]}},
        "/networkPolicy/hubExtraEgress/0",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_bad_values_are_refused(helm, values_dir, name):
    values, field = BAD_VALUES[name]
    values = copy.deepcopy(values)
    values.setdefault("hub", {}).setdefault("workshopCode", CODE)
    path = _values_file(values_dir, name, values)
    result = _template(helm, "--values", str(path))
    assert result.returncode != 0, f"{name}: rendered without error"
    assert field in result.stderr, result.stderr


def test_the_api_servers_cidrs_reach_the_spawner(helm, values_dir, tmp_path):
    """kubeApiCIDRs -> settings -> the hub's config -> KubeSpaceSpawner.kube_api_cidrs."""
    from traitlets.config import Config

    from clusterhub.hubconfig import configure_hub
    from clusterhub.settings import PlatformSettings

    values = {
        "hub": {"workshopCode": CODE},
        "singleuser": {"networkPolicy": {"kubeApiCIDRs": ["10.0.0.1/32", "fd00::1/128"]}},
    }
    result = _template(helm, "--values", str(_values_file(values_dir, "api-cidrs", values)))
    assert result.returncode == 0, result.stderr
    settings = _settings([doc for doc in yaml.safe_load_all(result.stdout) if doc])
    settings["data_dir"] = str(tmp_path)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    c = Config()
    configure_hub(c, PlatformSettings.load(str(path)))
    assert c.KubeSpaceSpawner.kube_api_cidrs == ["10.0.0.1/32", "fd00::1/128"]


def test_every_user_pod_goes_to_the_users_nodes(rendered, tmp_path, monkeypatch):
    """workshop-150 taints its users' pool: notebooks, engines and Dask pods must all
    tolerate it and select it, or none of them can ever be placed."""

    from clusterhub.profiles import validate_options, validate_profiles
    from clusterhub.spawner.kubespace import make_space_objects

    objects = rendered("workshop-150")
    users = [{"key": "clusterhub.io/users", "operator": "Exists", "effect": "NoSchedule"}]
    hub, gateway = _hub_and_gateway_config(objects, tmp_path, monkeypatch)
    # the notebook pod (KubeSpawner's own traits)
    assert hub.KubeSpaceSpawner.node_selector == {"node-pool": "users"}
    assert hub.KubeSpaceSpawner.tolerations == users
    # the gateway's scheduler and worker pods
    assert gateway.KubeSpaceClusterConfig.node_selector == {"node-pool": "users"}
    assert gateway.KubeSpaceClusterConfig.tolerations == users
    # the engines, as the spawner makes them
    profiles = validate_profiles(
        [
            dict(p, engines=["spark", "ipyparallel"])
            for p in _settings(objects)["kubernetes"]["profiles"]
        ]
    )
    options = validate_options(profiles, {"profile": profiles[0]["slug"]})
    space = make_space_objects(
        "ws-ada", hub_namespace=NAMESPACE, profile=profiles[0], options=options,
        cluster_image="c:1", ipyparallel_key="ab" * 32,
        node_selector=hub.KubeSpaceSpawner.node_selector,
        tolerations=hub.KubeSpaceSpawner.tolerations,
    )  # fmt: skip
    deployments = [o for o in space if o["kind"] == "Deployment"]
    assert len(deployments) == 4
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"node-pool": "users"} and pod["tolerations"] == users


def test_the_gateway_key_can_come_from_a_secret_the_operator_manages(
    helm, values_dir, tmp_path, monkeypatch
):
    """Rendered without the cluster (helm template, Argo CD), a generated key would change at
    every render: with gateway.existingSecret the chart generates none and the gateway reads
    the operator's."""
    values = {"hub": {"workshopCode": CODE}, "gateway": {"existingSecret": "gateway-key"}}
    result = _template(helm, "--values", str(_values_file(values_dir, "gateway-key", values)))
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    settings = _gateway_settings(objects)
    assert settings["gateway_encrypt_key"] == ""
    env = _container(_by_component(objects, "Deployment", ko.GATEWAY_COMPONENT), "gateway")["env"]
    (key,) = [e for e in env if e["name"] == "CLUSTERHUB_GATEWAY_ENCRYPT_KEY"]
    assert key["valueFrom"]["secretKeyRef"] == {"name": "gateway-key", "key": "encrypt-key"}
    monkeypatch.setenv("CLUSTERHUB_GATEWAY_ENCRYPT_KEY", "B" * 43 + "=")
    c = _gateway_config(settings, tmp_path, monkeypatch)
    assert c.KubeSpaceBackend.db_encrypt_keys == ["B" * 43 + "="]
    # Without it, the rendered key is the gateway's and no variable is set.
    default = rendered_default = [
        d
        for d in yaml.safe_load_all(
            _template(helm, "--set-string", f"hub.workshopCode={CODE}").stdout
        )
        if d
    ]
    gateway = _container(_by_component(default, "Deployment", ko.GATEWAY_COMPONENT), "gateway")
    assert "CLUSTERHUB_GATEWAY_ENCRYPT_KEY" not in {e["name"] for e in gateway["env"]}
    assert _gateway_settings(rendered_default)["gateway_encrypt_key"]


def test_subdomains_serve_each_user_and_the_gateway_on_names_of_their_own(
    rendered, tmp_path, monkeypatch
):
    """hub.subdomains: the Ingress serves the hub's name and its wildcard, and the setting
    reaches the hub (JupyterHub.subdomain_host, https: the Ingress has TLS) and the gateway
    (its dashboards' login comes back to the gateway's own subdomain)."""
    from traitlets.config import Config

    from clusterhub.hubconfig import configure_hub
    from clusterhub.settings import PlatformSettings, gateway_origin

    objects = rendered("subdomains")
    ingress = _one(objects, "Ingress")
    assert [r["host"] for r in ingress["spec"]["rules"]] == [
        "hub.example.org",
        "*.hub.example.org",
    ]
    assert ingress["spec"]["tls"][0]["hosts"] == ["hub.example.org", "*.hub.example.org"]
    for settings in (_settings(objects), _gateway_settings(objects)):
        assert settings["kubernetes"]["subdomain_host"] == "https://hub.example.org"
    hub, gateway = _hub_and_gateway_config(objects, tmp_path, monkeypatch)
    assert hub.JupyterHub.subdomain_host == "https://hub.example.org"
    assert gateway.HubAuthenticator.subdomain_host == "https://hub.example.org"
    # JupyterHub's own naming of a service's subdomain.
    origin = gateway_origin("https://hub.example.org")
    assert origin == "https://dask-gateway--service.hub.example.org"
    # Without the option: no subdomains anywhere.
    plain = _settings(rendered("default"))
    assert plain["kubernetes"]["subdomain_host"] == ""
    settings = {**plain, "data_dir": str(tmp_path)}
    (tmp_path / "plain.json").write_text(json.dumps(settings))
    c = Config()
    configure_hub(c, PlatformSettings.load(str(tmp_path / "plain.json")))
    assert "subdomain_host" not in c.JupyterHub
