"""The emulator admits pods, Services and claims as kube-apiserver does: LimitRange defaults
and bounds, ResourceQuota usage, and "status unknown for quota" until the quota controller
has counted a new quota. First the rules against literal objects, then through the real
client, with the ReplicaSet controller retrying what admission refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from tests.kube import kube_options
from tests.kube import wait_for_async as wait_for
from tests.kube.admission import (
    Refused,
    admit,
    apply_limit_ranges,
    namespace_usage,
    pod_usage,
    quota_status,
    spell,
)

LIMITS = {
    "metadata": {"name": "limits"},
    "spec": {
        "limits": [
            {
                "type": "Container",
                "default": {"cpu": "1", "memory": "1Gi"},
                "defaultRequest": {"cpu": "250m", "memory": "512Mi"},
                "max": {"cpu": "2", "memory": "4Gi"},
            }
        ]
    },
}
HARD = {"limits.cpu": "3", "limits.memory": "3Gi", "requests.cpu": "3", "pods": "2"}
QUOTA = {"metadata": {"name": "q"}, "spec": {"hard": HARD}}


def quota(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "q"}, "spec": {"hard": dict(HARD)}, "status": status or {}}


def pod_spec(**resources: Any) -> dict[str, Any]:
    return {"containers": [{"name": "main", "image": "x", "resources": resources}]}


# -- the rules ----------------------------------------------------------------------------


def test_limit_ranges_fill_in_defaults_and_refuse_a_container_above_the_maximum():
    spec = pod_spec(limits={"memory": "2Gi"})
    apply_limit_ranges(spec, [LIMITS])
    assert spec["containers"][0]["resources"] == {
        "limits": {"memory": "2Gi", "cpu": "1"},
        "requests": {"cpu": "250m", "memory": "512Mi"},
    }
    with pytest.raises(Refused, match=r"^maximum cpu usage per Container is 2, but limit is 4$"):
        apply_limit_ranges(pod_spec(limits={"cpu": "4"}), [LIMITS])


def test_a_quota_not_yet_counted_refuses_what_it_covers():
    with pytest.raises(Refused) as refused:
        admit([quota()], pod_usage(pod_spec(limits={"cpu": "1", "memory": "1Gi"})))
    assert str(refused.value) == (
        "status unknown for quota: q, resources: limits.cpu,limits.memory,pods,requests.cpu"
    )


def test_a_counted_quota_needs_limits_and_refuses_what_goes_past_hard():
    counted = quota(quota_status(quota(), {}))
    assert counted["status"]["used"] == {
        "limits.cpu": "0",
        "limits.memory": "0",
        "requests.cpu": "0",
        "pods": "0",
    }
    bare = pod_spec()
    with pytest.raises(Refused) as refused:
        admit([counted], pod_usage(bare), bare)
    assert str(refused.value) == (
        "failed quota: q: must specify limits.cpu for: main; limits.memory for: main; "
        "requests.cpu for: main"
    )
    fits = pod_spec(limits={"cpu": "2", "memory": "2Gi"}, requests={"cpu": "2", "memory": "2Gi"})
    admit([counted], pod_usage(fits), fits)  # the control
    used = quota(quota_status(quota(), namespace_usage([{"spec": fits}], [], [])))
    assert used["status"]["used"]["limits.memory"] == "2Gi"
    with pytest.raises(Refused) as refused:
        admit([used], pod_usage(fits), fits)
    assert str(refused.value) == (
        "exceeded quota: q, requested: limits.cpu=2,limits.memory=2Gi,requests.cpu=2, "
        "used: limits.cpu=2,limits.memory=2Gi,requests.cpu=2, "
        "limited: limits.cpu=3,limits.memory=3Gi,requests.cpu=3"
    )
    # Finished pods count for nothing.
    done = namespace_usage([{"spec": fits, "status": {"phase": "Succeeded"}}], [], [])
    assert done == {}


def test_quantities_are_spelled_as_the_api_server_spells_them():
    assert [spell("limits.cpu", v) for v in (2.0, 0.25, 1.5)] == ["2", "250m", "1500m"]
    assert spell("requests.memory", 3 * 2**30) == "3Gi"
    assert spell("requests.memory", 1536 * 2**20) == "1536Mi"
    assert spell("pods", 3.0) == "3"


# -- through the API server ---------------------------------------------------------------


def _message(exc: ApiException) -> str:
    return json.loads(exc.body)["message"]


@pytest.mark.asyncio
@kube_options(kubelet=False)
async def test_the_api_server_admits_pods_as_quota_and_limit_range_say(kube_api, kube_client):
    kube_api.emulator.quota_sync_delay = 1.0
    v1 = client.CoreV1Api(kube_client)
    await v1.create_namespace({"metadata": {"name": "space"}})
    await v1.create_namespaced_limit_range("space", LIMITS)
    await v1.create_namespaced_resource_quota(
        "space", {"metadata": {"name": "q"}, "spec": {"hard": HARD}}
    )
    pod = {"metadata": {"name": "p1"}, "spec": pod_spec()}

    # Right after the quota: not counted yet.
    with pytest.raises(ApiException) as refused:
        await v1.create_namespaced_pod("space", pod)
    assert refused.value.status == 403
    assert _message(refused.value).startswith(
        'pods "p1" is forbidden: status unknown for quota: q, resources: '
    )
    assert not (await v1.list_namespaced_pod("space")).items

    async def counted() -> bool:
        got = await v1.read_namespaced_resource_quota("q", "space")
        return bool(got.status and got.status.hard)

    await wait_for(counted, 10, "the quota controller")
    created = await v1.create_namespaced_pod("space", pod)
    # The LimitRange's defaults were filled in before the quota counted them.
    assert created.spec.containers[0].resources.limits == {"cpu": "1", "memory": "1Gi"}
    await v1.create_namespaced_pod("space", {**pod, "metadata": {"name": "p2"}})
    got = await v1.read_namespaced_resource_quota("q", "space")
    assert got.status.used["limits.memory"] == "2Gi" and got.status.used["pods"] == "2"

    with pytest.raises(ApiException) as refused:
        await v1.create_namespaced_pod("space", {**pod, "metadata": {"name": "p3"}})
    assert _message(refused.value) == (
        'pods "p3" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, '
        "limited: pods=2"
    )
    # Deleting a pod frees its share: the same pod is admitted now.
    await v1.delete_namespaced_pod("p1", "space", grace_period_seconds=0)
    await v1.create_namespaced_pod("space", {**pod, "metadata": {"name": "p3"}})


@pytest.mark.asyncio
@kube_options(kubelet=False)
async def test_a_replica_set_retries_the_pods_a_new_quota_refused(kube_api, kube_client):
    kube_api.emulator.quota_sync_delay = 2.0
    v1, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    await v1.create_namespace({"metadata": {"name": "engines"}})
    await v1.create_namespaced_limit_range("engines", LIMITS)
    await v1.create_namespaced_resource_quota(
        "engines", {"metadata": {"name": "q"}, "spec": {"hard": HARD}}
    )
    labels = {"app": "w"}
    await apps.create_namespaced_deployment(
        "engines",
        {
            "metadata": {"name": "w"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec()},
            },
        },
    )

    async def failed_create() -> list[Any]:
        events = (await v1.list_namespaced_event("engines")).items
        return [e for e in events if e.reason == "FailedCreate"]

    (event, *_) = await wait_for(failed_create, 10, "a FailedCreate event")
    assert "status unknown for quota: q" in event.message

    async def pods() -> int:
        return len((await v1.list_namespaced_pod("engines")).items)

    # Once counted, the controller makes what fits: two of three (pods: 2).
    async def two_pods() -> bool:
        return await pods() == 2

    await wait_for(two_pods, 15, "two pods")

    async def exceeded() -> bool:
        return any("exceeded quota: q" in e.message for e in await failed_create())

    await wait_for(exceeded, 10, "the third pod refused for the quota")
    assert await pods() == 2
