"""The Helm chart's own objects in the emulator: render it with ``helm template``, load the
RBAC it ships (ServiceAccounts, Roles, ClusterRoles and their bindings), and hand out
kubeconfigs with the tokens of its ServiceAccounts, so that the hub and the gateway under
test hold exactly the rights the chart gives them on a real cluster."""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import requests
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "clusterhub"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
_PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
}


def render_chart(release: str, namespace: str, *args: str) -> list[dict[str, Any]]:
    """``helm template`` of the chart: the objects it would install."""
    from helmtools import find_helm, helm_env

    with tempfile.TemporaryDirectory(prefix="helm-home-") as home:
        result = subprocess.run(
            [find_helm(), "template", release, str(CHART), "--namespace", namespace, *args],
            env=helm_env(home),
            capture_output=True,
            text=True,
            timeout=60,
        )
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class ChartRbac:
    """The chart's RBAC loaded into an emulated cluster (as the admin, like `helm install`)."""

    def __init__(self, url: str, admin_token: str, objects: list[dict[str, Any]], namespace: str):
        self.url = url
        self.namespace = namespace
        self._admin = {"Authorization": f"Bearer {admin_token}"}
        self.objects = [o for o in objects if o.get("kind") in RBAC_KINDS]
        # What the chart tells the hub about them: the roles it binds in each user's space.
        (settings,) = [
            json.loads(base64.b64decode(o["data"]["settings.json"]))
            for o in objects
            if o.get("kind") == "Secret" and "settings.json" in (o.get("data") or {})
        ]
        self.space_roles: dict[str, dict[str, str]] = settings["kubernetes"]["space_roles"]

    def _post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=self._admin, timeout=10)

    def install(self) -> ChartRbac:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        created = self._post("/api/v1/namespaces", namespace)
        if created.status_code not in (201, 409):
            raise RuntimeError(f"namespace {self.namespace}: {created.text}")
        for obj in self.objects:
            ns = obj["metadata"].get("namespace") or self.namespace
            response = self._post(_PATHS[obj["kind"]].format(ns=ns), obj)
            if response.status_code not in (201, 409):
                raise RuntimeError(f"{obj['kind']} {obj['metadata']['name']}: {response.text}")
        return self

    def token(self, service_account: str) -> str:
        """A token of one of the chart's ServiceAccounts (the TokenRequest API)."""
        path = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{service_account}/token"
        response = self._post(path, {"apiVersion": "authentication.k8s.io/v1", "spec": {}})
        response.raise_for_status()
        return response.json()["status"]["token"]

    def kubeconfig(self, service_account: str, path: str | Path) -> str:
        """A kubeconfig that acts as the ServiceAccount (what its pod's token would do)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": service_account, "user": {"token": self.token(service_account)}}],
            "contexts": [
                {
                    "name": service_account,
                    "context": {
                        "cluster": "emulator",
                        "user": service_account,
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": service_account,
        }
        Path(path).write_text(json.dumps(config, indent=2))
        return str(path)

    def service_account(self, component: str) -> str:
        """The name of the chart's ServiceAccount of ``component`` (hub, dask-gateway)."""
        for obj in self.objects:
            labels = obj["metadata"].get("labels") or {}
            if obj["kind"] == "ServiceAccount" and labels.get("app.kubernetes.io/component") == (
                component
            ):
                return obj["metadata"]["name"]
        raise KeyError(f"the chart has no ServiceAccount for {component}")
