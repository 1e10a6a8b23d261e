"""A private registry on the process-kubelet: its images run only for pods that name a pull
secret with credentials for it, as a node's runtime pulls them; others wait in
ImagePullBackOff until such a Secret exists."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import aiohttp
import pytest

from tests.kube import kube_options
from tests.kube import wait_for_async as wait_for
from tests.kube.registry import pull_refusal, registry_of

PRIVATE = "registry.example.com"
IMAGE = f"{PRIVATE}/team/cluster:1"


def docker_config(*registries: str) -> dict[str, Any]:
    auths = {r: {"auth": base64.b64encode(b"robot:secret").decode()} for r in registries}
    config = base64.b64encode(json.dumps({"auths": auths}).encode()).decode()
    return {"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": config}}


def test_the_registry_of_an_image_and_what_it_needs():
    assert registry_of("registry.example.com/team/cluster:1") == PRIVATE
    assert registry_of("localhost:5000/x") == "localhost:5000"
    assert registry_of("cluster:test") == registry_of("library/python:3") == "docker.io"
    assert pull_refusal("cluster:test", [], {PRIVATE}) is None
    refused = pull_refusal(IMAGE, [docker_config("other.example")], {PRIVATE})
    assert refused and "pull access denied" in refused and IMAGE in refused
    assert pull_refusal(IMAGE, [docker_config(f"https://{PRIVATE}/v1/")], {PRIVATE}) is None
    assert pull_refusal(IMAGE, [{"type": "Opaque", "data": {}}], {PRIVATE})


@pytest.mark.asyncio
@kube_options(
    private_registries=(PRIVATE,),
    image_entrypoints={IMAGE: [sys.executable, "-c", "print('pulled and ran')"]},
)
async def test_a_private_image_waits_for_its_pull_secret_then_runs(kube_api) -> None:
    base = kube_api.url
    headers = {"Authorization": f"Bearer {kube_api.token}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def post(path: str, body: dict[str, Any]) -> None:
            async with http.post(base + path, json=body) as response:
                assert response.status == 201, await response.text()

        async def state(name: str) -> dict[str, Any]:
            async with http.get(f"{base}/api/v1/namespaces/private/pods/{name}") as response:
                pod = await response.json()
            statuses = pod["status"].get("containerStatuses") or [{}]
            return statuses[0].get("state") or {}

        await post("/api/v1/namespaces", {"metadata": {"name": "private"}})
        pod = {
            "spec": {
                "restartPolicy": "Never",
                "imagePullSecrets": [{"name": "robot"}],
                "containers": [{"name": "main", "image": IMAGE}],
            }
        }
        await post("/api/v1/namespaces/private/pods", {"metadata": {"name": "named"}, **pod})
        without = {**pod, "spec": {**pod["spec"], "imagePullSecrets": []}}
        await post("/api/v1/namespaces/private/pods", {"metadata": {"name": "unnamed"}, **without})

        async def backing_off(name: str) -> bool:
            return (await state(name)).get("waiting", {}).get("reason") == "ImagePullBackOff"

        # The Secret it names does not exist yet: no pull, as for the pod naming none.
        for name in ("named", "unnamed"):
            await wait_for(lambda n=name: backing_off(n), 15, f"{name} to back off")
        assert kube_api.kubelet.pod_pids("private", "named") == []
        async with http.get(f"{base}/api/v1/namespaces/private/events") as response:
            events = (await response.json())["items"]
        assert any(e["reason"] == "Failed" and "pull access denied" in e["message"] for e in events)

        # The control: once the pull secret exists, the pod that names it runs.
        await post(
            "/api/v1/namespaces/private/secrets",
            {"metadata": {"name": "robot"}, **docker_config(PRIVATE)},
        )

        async def ran() -> bool:
            return (await state("named")).get("terminated", {}).get("exitCode") == 0

        await wait_for(ran, 30, "the named pod to pull and run")
        assert await backing_off("unnamed")
