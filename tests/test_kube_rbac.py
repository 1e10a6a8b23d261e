"""The emulator authorises like kube-apiserver: a ServiceAccount's token may do what the
stored Roles and bindings grant it and nothing else (subresources included), and nobody
grants what they do not hold. A pod gets its own ServiceAccount's token."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from tests.kube import kube_options
from tests.kube import wait_for_async as wait_for

if TYPE_CHECKING:
    from tests.kube.fixtures import KubeCluster

NS = "team"
SA_USER = f"system:serviceaccount:{NS}:robot"


async def token_of(admin: Any, namespace: str, account: str) -> str:
    v1 = client.CoreV1Api(admin)
    await v1.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
    )
    answer = await v1.create_namespaced_service_account_token(
        account, namespace, client.AuthenticationV1TokenRequest(spec={"audiences": []})
    )
    return answer.status.token


def client_with(url: str, token: str) -> Any:
    config = client.Configuration(host=url)
    config.api_key = {"BearerToken": token}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(config)


async def refused(call: Any) -> dict:
    with pytest.raises(ApiException) as caught:
        await call
    assert caught.value.status == 403, caught.value.body
    return json.loads(caught.value.body)


def role(name: str, *rules: dict) -> client.V1Role:
    return client.V1Role(metadata=client.V1ObjectMeta(name=name), rules=list(rules))


def binding(name: str, role_kind: str, role_name: str) -> client.V1RoleBinding:
    return client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=name),
        role_ref=client.V1RoleRef(
            api_group="rbac.authorization.k8s.io", kind=role_kind, name=role_name
        ),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="robot", namespace=NS)],
    )


@pytest_asyncio.fixture
async def robot(kube_api: KubeCluster, kube_client: Any):
    """A ServiceAccount ``robot`` in namespace ``team``, and an API client with its token."""
    await client.CoreV1Api(kube_client).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=NS))
    )
    api = client_with(kube_api.url, await token_of(kube_client, NS, "robot"))
    try:
        yield api
    finally:
        await api.close()


@kube_options(kubelet=False)
@pytest.mark.asyncio
async def test_a_service_account_may_do_what_its_role_grants_and_nothing_else(
    kube_client: Any, robot: Any
) -> None:
    v1 = client.CoreV1Api(robot)
    body = await refused(v1.list_namespaced_pod(NS))
    assert body["message"] == (
        f'pods is forbidden: User "{SA_USER}" cannot list resource "pods" in API group "" in '
        f'the namespace "{NS}"'
    )
    assert body["reason"] == "Forbidden"

    rbac = client.RbacAuthorizationV1Api(kube_client)
    reader = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}
    await rbac.create_namespaced_role(NS, role("reader", reader))
    await rbac.create_namespaced_role_binding(NS, binding("reader", "Role", "reader"))
    assert (await v1.list_namespaced_pod(NS)).items == []  # the control: granted now
    # Only there, only those verbs, only that resource.
    await refused(v1.list_namespaced_pod("default"))
    await refused(v1.list_namespaced_secret(NS))
    body = await refused(v1.delete_namespaced_pod("x", NS))
    assert 'pods "x" is forbidden' in body["message"] and "cannot delete" in body["message"]
    await refused(v1.list_namespace())


@kube_options(kubelet=False)
@pytest.mark.asyncio
async def test_scale_is_its_own_subresource_and_resource_names_bind(
    kube_client: Any, robot: Any
) -> None:
    apps = client.AppsV1Api(kube_client)
    labels = {"app": "w"}
    for name in ("engine", "other"):
        await apps.create_namespaced_deployment(
            NS,
            client.V1Deployment(
                metadata=client.V1ObjectMeta(name=name),
                spec=client.V1DeploymentSpec(
                    replicas=0,
                    selector=client.V1LabelSelector(match_labels=labels),
                    template=client.V1PodTemplateSpec(
                        metadata=client.V1ObjectMeta(labels=labels),
                        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")]),
                    ),
                ),
            ),
        )
    rbac = client.RbacAuthorizationV1Api(kube_client)
    scaler = {
        "apiGroups": ["apps"],
        "resources": ["deployments/scale"],
        "verbs": ["get", "patch"],
        "resourceNames": ["engine"],
    }
    await rbac.create_namespaced_role(NS, role("scaler", scaler))
    await rbac.create_namespaced_role_binding(NS, binding("scaler", "Role", "scaler"))
    mine = client.AppsV1Api(robot)
    scaled = await mine.patch_namespaced_deployment_scale("engine", NS, {"spec": {"replicas": 2}})
    assert scaled.spec.replicas == 2  # the control
    body = await refused(mine.patch_namespaced_deployment("engine", NS, {"spec": {"replicas": 3}}))
    assert 'cannot patch resource "deployments" in API group "apps"' in body["message"]
    image = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "evil"}]}}}}
    await refused(mine.patch_namespaced_deployment("engine", NS, image))
    await refused(mine.patch_namespaced_deployment_scale("other", NS, {"spec": {"replicas": 1}}))
    assert (await apps.read_namespaced_deployment("engine", NS)).spec.template.spec.containers[
        0
    ].image == "x", "the refusals changed nothing"


@kube_options(kubelet=False)
@pytest.mark.asyncio
async def test_nobody_grants_what_they_do_not_hold(kube_client: Any, robot: Any) -> None:
    rbac = client.RbacAuthorizationV1Api(kube_client)
    await rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=client.V1ObjectMeta(name="pod-admin"),
            rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}],
        )
    )
    writer = {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["roles", "rolebindings"],
        "verbs": ["create", "get", "update"],
    }
    pods = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
    await rbac.create_namespaced_role(NS, role("writer", writer, pods))
    await rbac.create_namespaced_role_binding(NS, binding("writer", "Role", "writer"))
    mine = client.RbacAuthorizationV1Api(robot)

    # What it holds it may grant (the control) ...
    await mine.create_namespaced_role(NS, role("get-pods", pods))
    # ... more it may not, in a Role or through a binding to a bigger role.
    delete = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"]}
    body = await refused(mine.create_namespaced_role(NS, role("more", delete)))
    assert "attempting to grant RBAC permissions not currently held" in body["message"]
    assert "'delete'" in body["message"] and "'get'" not in body["message"]
    body = await refused(
        mine.create_namespaced_role_binding(NS, binding("grab", "ClusterRole", "pod-admin"))
    )
    assert "not currently held" in body["message"]
    await refused(mine.replace_namespaced_role("get-pods", NS, role("get-pods", delete)))
    assert (await rbac.read_namespaced_role("get-pods", NS)).rules[0].verbs == ["get"]

    # `bind` on that one ClusterRole (by name) and `escalate` on roles lift the rule.
    await rbac.create_namespaced_role(
        NS,
        role(
            "binder",
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["clusterroles"],
                "verbs": ["bind"],
                "resourceNames": ["pod-admin"],
            },
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["roles"],
                "verbs": ["escalate"],
            },
        ),
    )
    await rbac.create_namespaced_role_binding(NS, binding("binder", "Role", "binder"))
    await mine.create_namespaced_role_binding(NS, binding("grab", "ClusterRole", "pod-admin"))
    await mine.create_namespaced_role(NS, role("more", delete))


@pytest.mark.asyncio
async def test_a_pod_gets_its_own_service_accounts_token(
    kube_api: KubeCluster, kube_client: Any
) -> None:
    v1 = client.CoreV1Api(kube_client)
    await v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    await v1.create_namespaced_service_account(
        NS, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="robot"))
    )
    path = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    script = f"import time; print(open({path!r}).read(), flush=True); time.sleep(600)"
    await v1.create_namespaced_pod(
        NS,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="p"),
            spec=client.V1PodSpec(
                service_account_name="robot",
                containers=[
                    client.V1Container(
                        name="c", image="python:3.11", command=[sys.executable, "-c", script]
                    )
                ],
            ),
        ),
    )

    async def printed() -> str | None:
        try:
            log = await v1.read_namespaced_pod_log("p", NS)
        except ApiException as exc:
            if exc.status == 400:  # still creating
                return None
            raise
        return log.strip() or None

    token = await wait_for(printed, 30)
    assert token != kube_api.token, "not the admin's"
    api = client_with(kube_api.url, token)
    try:
        await refused(client.CoreV1Api(api).list_namespaced_secret(NS))
    finally:
        await api.close()
    await v1.delete_namespaced_pod("p", NS, grace_period_seconds=0)


async def exec_frames(url: str, token: str, pod: str, command: list[str], **query: str) -> dict:
    """pods/exec over a WebSocket, as kubectl and the Kubernetes clients speak it: the bytes
    of each channel (1 stdout, 2 stderr, 3 the closing Status)."""
    import aiohttp

    params = [("command", part) for part in command] + [
        ("stdout", "true"),
        ("stderr", "true"),
        *query.items(),
    ]
    frames: dict[int, bytes] = {}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"{url}/api/v1/namespaces/{NS}/pods/{pod}/exec",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            protocols=("v4.channel.k8s.io",),
            ssl=False,
        ) as ws:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    frames[message.data[0]] = frames.get(message.data[0], b"") + message.data[1:]
    return frames


@pytest.mark.asyncio
async def test_exec_needs_create_on_pods_exec_and_runs_in_the_container(
    kube_api: KubeCluster, kube_client: Any, robot: Any
) -> None:
    import aiohttp

    v1 = client.CoreV1Api(kube_client)
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="box"),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="main",
                    image="python:3.11",
                    command=sleeper,
                    env=[client.V1EnvVar(name="GREETING", value="from the container")],
                )
            ]
        ),
    )
    await v1.create_namespaced_pod(NS, pod)

    async def running() -> bool:
        return (await v1.read_namespaced_pod("box", NS)).status.phase == "Running"

    await wait_for(running, 20)
    robot_token = robot.configuration.api_key["BearerToken"]
    script = ["sh", "-c", 'echo "$GREETING"; echo oops >&2; exit 3']

    # Reading pods and even "get" on pods/exec is not enough: the upgrade needs create.
    rbac = client.RbacAuthorizationV1Api(kube_client)
    getter = {"apiGroups": [""], "resources": ["pods", "pods/exec"], "verbs": ["get"]}
    await rbac.create_namespaced_role(NS, role("getter", getter))
    await rbac.create_namespaced_role_binding(NS, binding("getter", "Role", "getter"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await exec_frames(kube_api.url, robot_token, "box", script)
    assert caught.value.status == 403

    execer = {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}
    await rbac.create_namespaced_role(NS, role("execer", execer))
    await rbac.create_namespaced_role_binding(NS, binding("execer", "Role", "execer"))
    frames = await exec_frames(kube_api.url, robot_token, "box", script)
    assert frames[1] == b"from the container\n" and frames[2] == b"oops\n"
    status = json.loads(frames[3])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert json.loads((await exec_frames(kube_api.url, robot_token, "box", ["true"]))[3]) == {
        "metadata": {},
        "status": "Success",
    }
    # What it does not emulate it refuses, naming it.
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await exec_frames(kube_api.url, robot_token, "box", ["cat"], stdin="true")
    assert caught.value.status == 400
