"""The Kubernetes spawner: each user's space is a namespace, created on start, deleted on stop.

KubeSpawner (which this extends) can put each user's pod in a namespace of its own but
never deletes the namespace and adds no quota, roles or network policy (kubespawner
#749, #456). Here the namespace *is* the space: ResourceQuota and LimitRange from the
user's profile, deny-by-default NetworkPolicies, a ServiceAccount whose Role reaches only
that namespace, the notebook pod (KubeSpawner's own machinery) and the profile's engines
as Deployments. Stopping deletes the namespace, so nothing of the user outlives their
server, including Dask clusters the gateway put there.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
import time
from urllib.parse import urlsplit

from kubernetes_asyncio.client import (
    AppsV1Api,
    CoreV1Api,
    NetworkingV1Api,
    RbacAuthorizationV1Api,
)
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from tornado import web
from traitlets import Bool, Dict, Float, List, TraitError, Unicode, default, validate

import clusterhub

from ..settings import DEFAULT_HUB_NAME, DEFAULT_NAMESPACE_PREFIX
from . import kubeobjects as k
from .kubespace import (
    NOTEBOOK_SERVICE_ACCOUNT,
    make_space_objects,
    notebook_limits_env,
    space_engines,
    spark_worker_memory,
)
from .options import SpaceSpawnerMixin

# Which typed API and method suffix handles each kind we create.
_KIND_API = {
    "ResourceQuota": (CoreV1Api, "resource_quota"),
    "LimitRange": (CoreV1Api, "limit_range"),
    "ServiceAccount": (CoreV1Api, "service_account"),
    "Service": (CoreV1Api, "service"),
    "Secret": (CoreV1Api, "secret"),
    "ConfigMap": (CoreV1Api, "config_map"),
    "NetworkPolicy": (NetworkingV1Api, "network_policy"),
    "Role": (RbacAuthorizationV1Api, "role"),
    "RoleBinding": (RbacAuthorizationV1Api, "role_binding"),
    "Deployment": (AppsV1Api, "deployment"),
}
# Kinds whose existing object is replaced by the current profile's on a new start; the rest
# (a Service's cluster IP, a Deployment someone scaled, a Secret engines already use) stay.
_REPLACED_ON_START = {
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
    "Role",
    "RoleBinding",
    "ConfigMap",
}


class ForeignNamespace(web.HTTPError):
    """A namespace of the space's name exists but this hub did not make it for the user."""

    def __init__(self, namespace: str, username: str):
        message = (
            f"namespace {namespace} already exists and was not made by this hub for {username}; "
            "it is left alone. A cluster admin can remove it, or give this hub another "
            "namespace prefix"
        )
        super().__init__(409, message)
        self.jupyterhub_message = message


class QuotaExceeded(web.HTTPError):
    """The notebook does not fit what is left of the space's quota."""

    def __init__(self, namespace: str, detail: str):
        message = (
            f"your server does not fit the resource quota of namespace {namespace}: {detail}. "
            "Stop some of your engines' workers, or ask an admin for a larger profile"
        )
        super().__init__(403, message)
        self.jupyterhub_message = message


def quota_refusal(exc: ApiException) -> str | None:
    """What the API server's quota admission said, if that is why it refused (403)."""
    if exc.status != 403:
        return None
    try:
        message = json.loads(exc.body or "{}").get("message", "")
    except (TypeError, ValueError):
        return None
    return message if "quota" in message else None


class KubeSpaceSpawner(SpaceSpawnerMixin, KubeSpawner):
    hub_name = Unicode(
        DEFAULT_HUB_NAME,
        config=True,
        help="This hub's name: labels every space, so several hubs can share a cluster.",
    )

    hub_namespace = Unicode(
        config=True,
        help="""The namespace the hub, proxy and gateway run in.

        Network policies of each space admit traffic from there, and no user's space may
        ever be this namespace.""",
    )

    namespace_prefix = Unicode(
        DEFAULT_NAMESPACE_PREFIX,
        config=True,
        help="""Prefix of every user's namespace. The rest is the user's name made
        DNS-safe, with a hash of the raw name whenever that changed it (so ``a.b`` and
        ``a-b`` get different namespaces).""",
    )

    cluster_image = Unicode(
        config=True,
        help="The image of engine pods (one image; the mode is its first argument).",
    )

    network_allow = Dict(
        config=True,
        help="""Which allowances the space's NetworkPolicies make, on top of what every
        space needs. Keys: see ``clusterhub.spawner.kubeobjects.DEFAULT_NETWORK_ALLOW``.""",
    )

    kube_api_cidrs = List(
        Unicode(),
        config=True,
        help="""The Kubernetes API server's addresses (CIDRs, e.g. ``10.0.0.1/32``): the only
        places the notebook's egress to ports 443/6443 may go. Empty: any address, since
        the API server is not a pod and no selector can name it.""",
    )

    space_roles = Dict(
        config=True,
        help="""The rights the hub and the gateway get in each user's namespace: for ``hub``
        and ``gateway``, ``{"cluster_role": NAME, "service_account": NAME}`` (a ClusterRole
        and a ServiceAccount of the hub's namespace). The hub binds them there first thing
        after making the namespace, so neither needs those rights cluster-wide (the Helm
        chart sets this). Empty: no bindings, for a hub that was given the rights otherwise.""",
    )

    @validate("space_roles")
    def _validate_space_roles(self, proposal):
        roles = proposal.value
        for purpose, role in roles.items():
            if purpose not in k.SPACE_BINDINGS or not isinstance(role, dict):
                raise TraitError(
                    f"space_roles: keys must be {sorted(k.SPACE_BINDINGS)} with "
                    f"{{'cluster_role': ..., 'service_account': ...}}, not {purpose!r}: {role!r}"
                )
            if set(role) != {"cluster_role", "service_account"}:
                raise TraitError(
                    f"space_roles.{purpose}: needs exactly 'cluster_role' and 'service_account'"
                )
        return roles

    delete_namespace_on_stop = Bool(
        True,
        config=True,
        help="""Delete the user's namespace, and so everything in it, when their server
        stops. Off: the namespace and its engines stay (they count against the quota).""",
    )

    keep_home_pvc = Bool(
        True,
        config=True,
        help="""When the home lives on a PVC (``storage_pvc_ensure``), keep the namespace
        with only that PVC on stop, instead of deleting the namespace and the user's files.""",
    )

    notebook_home = Unicode(
        k.NOTEBOOK_HOME,
        config=True,
        help="""The notebook image's home directory (its user's ``HOME``). With IPyParallel,
        ``IPYTHONDIR`` is set to its ``.ipython`` and the controller's client file is mounted
        into that profile's security dir, so a bare ``ipyparallel.Client()`` connects.""",
    )

    namespace_delete_timeout = Float(
        300.0,
        config=True,
        help="""Seconds stop() waits for the user's namespace to be gone, and a new start for
        a previous one still terminating (before start_timeout begins).""",
    )

    @default("enable_user_namespaces")
    def _default_enable_user_namespaces(self):
        return True

    @default("service_account")
    def _default_service_account(self):
        return NOTEBOOK_SERVICE_ACCOUNT

    @default("automount_service_account_token")
    def _default_automount(self):
        # The notebook scales its own engines through its namespaced ServiceAccount.
        return True

    # The notebook image's user and group, and the group that owns the pod's volumes: without
    # fsGroup a new home disk stays root's and JupyterLab cannot write to it.
    @default("uid")
    def _default_uid(self):
        return k.IMAGE_UID

    @default("gid")
    def _default_gid(self):
        return k.IMAGE_GID

    @default("fs_gid")
    def _default_fs_gid(self):
        return k.IMAGE_GID

    @default("extra_labels")
    def _default_extra_labels(self):
        return {k.SPACE_MEMBER_LABEL: "true", k.MANAGED_BY_LABEL: k.MANAGED_BY}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.namespace = self.space_namespace()
        self.dns_name = self.dns_name_template.format(namespace=self.namespace, name=self.pod_name)

    def space_namespace(self) -> str:
        reserved = [self.hub_namespace] if self.hub_namespace else []
        return k.make_namespace_name(self.namespace_prefix, self.user.name, reserved=reserved)

    async def load_user_options(self):
        # Our profiles replace KubeSpawner's profile_list; API choices are checked like form ones.
        options = self.space_options()
        # The notebook's own size comes from the profile (KubeSpawner's traits make them the
        # container's requests and limits).
        sizes = self.space_profile(options)["notebook"]
        self.cpu_guarantee = sizes["cpu"]["guarantee"]
        self.cpu_limit = sizes["cpu"]["limit"]
        self.mem_guarantee = int(sizes["memory_gib"]["guarantee"] * 2**30)
        self.mem_limit = int(sizes["memory_gib"]["limit"] * 2**30)

    async def _create_once_counted(self, create) -> None:
        """``create()`` again while the API server refuses it because the space's new quota
        is not counted yet ("status unknown for quota"), for up to
        ``k8s_api_request_retry_timeout``; any other refusal is raised."""
        deadline = time.monotonic() + self.k8s_api_request_retry_timeout
        pause = 0.1
        while True:
            try:
                await self._request(create())
                return
            except ApiException as exc:
                message = quota_refusal(exc) or ""
                if "status unknown for quota" not in message or time.monotonic() > deadline:
                    raise
            self.log.info("Quota of %s not counted yet; creating again", self.namespace)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def _make_create_pod_request(self, pod, request_timeout):
        # A pod created right after its namespace's new quota can be refused with "status
        # unknown for quota" until the quota controller has counted the namespace: retried
        # like a timeout, as a controller would. A quota the pod does not fit is the user's.
        try:
            return await super()._make_create_pod_request(pod, request_timeout)
        except ApiException as exc:
            message = quota_refusal(exc)
            if message is None:
                raise
            if "status unknown for quota" in message:
                self.log.info("Quota of %s not counted yet; creating the pod again", self.namespace)
                return False
            raise QuotaExceeded(self.namespace, message.split(": ", 1)[-1]) from None

    async def progress(self):
        # The space is prepared before the pod exists, so say so first; then the pod's events.
        yield {
            "progress": 2,
            "message": f"Preparing your space: namespace {self.namespace} with its quota, "
            "network policies, service account and engines",
        }
        async for event in super().progress():
            yield event

    # -- state: everything needed to find the space again after a hub restart -----------------
    def get_state(self):
        state = super().get_state()
        state["clusterhub_version"] = clusterhub.__version__
        return state

    # -- environment --------------------------------------------------------------------------
    def get_env(self):
        env = super().get_env()
        options = self.space_options()
        env.update(
            k.make_notebook_env(
                self.namespace,
                engines=space_engines(self.space_profile(options)),
                gateway_address=self.gateway_url or None,
                gateway_proxy_address=self.gateway_proxy_address or None,
                ipython_dir=k.notebook_ipython_dir(self.notebook_home),
            )
        )
        env.update(self.gateway_env())
        env.update(notebook_limits_env(self.space_profile(options)))
        if "spark" in self.space_profile(options)["engines"]:
            # An executor must fit the worker that offers it (see kubespace.spark_worker_env).
            env["SPARK_EXECUTOR_MEMORY"] = spark_worker_memory(options)
        return env

    async def get_pod_manifest(self):
        pod = await super().get_pod_manifest()
        if "ipyparallel" in self.space_profile(self.space_options())["engines"]:
            self._add_ipyparallel_client_file(pod)
        return pod

    def _add_ipyparallel_client_file(self, pod) -> None:
        """Mount the client connection file where ``ipp.Client()`` looks (the profile's
        security dir, see ``k.make_ipython_security_mount``) and at the explicit path
        ``CLUSTERHUB_IPP_CLIENT_FILE`` names; when the home is a volume, the security dir's
        parents are made in it first, as the notebook's user."""
        home = self.notebook_home
        volume, mount = k.make_ipyparallel_notebook_volume()
        container = pod.spec.containers[0]
        mounts = list(container.volume_mounts or [])
        serialize = self.api.api_client.sanitize_for_serialization
        home_mounts = [
            m
            for m in (serialize(m) for m in mounts)
            if home == m["mountPath"].rstrip("/")
            or home.startswith(m["mountPath"].rstrip("/") + "/")
        ]
        pod.spec.volumes = [*(pod.spec.volumes or []), volume]
        container.volume_mounts = [*mounts, mount, k.make_ipython_security_mount(home)]
        if home_mounts:
            # Only a volume outlives the init container; without one the image should ship
            # the directories (else the runtime makes them, as root, in the container).
            init = k.make_ipython_dirs_init_container(
                container.image,
                home,
                volume_mounts=home_mounts,
                security_context=serialize(container.security_context) or None,
                image_pull_policy=container.image_pull_policy,
            )
            pod.spec.init_containers = [*(pod.spec.init_containers or []), init]

    # -- the space ----------------------------------------------------------------------------
    def gateway_ports(self) -> tuple[int, ...]:
        """The gateway pod's ports a notebook must reach: its HTTP API and its scheduler proxy."""
        ports = []
        for address in (self.gateway_url, self.gateway_proxy_address):
            port = urlsplit(address).port if address else None
            if port and port not in ports:
                ports.append(port)
        return tuple(ports) or k.GATEWAY_PORTS

    def _api(self, cls):
        return cls(self.api.api_client)

    async def _request(self, coro):
        return await asyncio.wait_for(coro, self.k8s_api_request_timeout)

    async def _wait_namespace_gone(self, timeout: float) -> bool:
        core = self._api(CoreV1Api)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await self._request(core.read_namespace(self.namespace))
            except ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            await asyncio.sleep(0.5)
        return False

    async def run_pre_spawn_hook(self):
        # JupyterHub times start() alone (start_timeout); a previous namespace of this user
        # that is still terminating is waited out here, before it, so that a slow deletion
        # does not eat the new server's start budget. Then the configured hook, if any.
        await self._wait_out_previous_namespace()
        result = super().run_pre_spawn_hook()
        if inspect.isawaitable(result):
            await result

    async def _wait_out_previous_namespace(self) -> None:
        core = self._api(CoreV1Api)
        try:
            existing = await self._request(core.read_namespace(self.namespace))
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        if existing.status.phase != "Terminating":
            return
        self._check_namespace_is_ours(existing.metadata.labels or {})
        self.log.info("Waiting for %s's previous namespace to be gone", self.user.name)
        if not await self._wait_namespace_gone(self.namespace_delete_timeout):
            raise TimeoutError(
                f"namespace {self.namespace} is still terminating after "
                f"{self.namespace_delete_timeout:.0f} s; check its finalizers "
                f"(kubectl get namespace {self.namespace} -o yaml)"
            )

    async def _ensure_namespace(self):
        """Create the namespace (a previous one that is still terminating, as when it began
        terminating after the pre-spawn wait, is waited out here too)."""
        core = self._api(CoreV1Api)
        body = k.make_namespace(
            self.namespace,
            labels=k.space_labels(self.hub_name, self.user.name),
            annotations=k.space_annotations(self.hub_name, self.user.name),
        )
        try:
            existing = await self._request(core.read_namespace(self.namespace))
        except ApiException as exc:
            if exc.status != 404:
                raise
            existing = None
        if existing is not None and existing.status.phase == "Terminating":
            await self._wait_out_previous_namespace()
            existing = None
        if existing is not None:
            self._check_namespace_is_ours(existing.metadata.labels or {})
        if existing is None:
            try:
                await self._request(core.create_namespace(body))
            except ApiException as exc:
                if exc.status != 409:
                    raise
        await self._create_space_objects()

    def _check_namespace_is_ours(self, labels: dict[str, str]) -> None:
        """A namespace of that name that this hub did not make for this user is never
        adopted (nor, at stop, deleted): it may be another team's, secrets and all."""
        wanted = k.space_labels(self.hub_name, self.user.name)
        if any(labels.get(key) != value for key, value in wanted.items()):
            raise ForeignNamespace(self.namespace, self.user.name)

    async def _create_space_objects(self) -> None:
        options = self.space_options()
        objects = make_space_objects(
            self.namespace,
            hub_namespace=self.hub_namespace,
            profile=self.space_profile(options),
            options=options,
            cluster_image=self.cluster_image,
            # KubeSpawner leaves it unset (the cluster decides); a Deployment needs a value.
            image_pull_policy=self.image_pull_policy or "IfNotPresent",
            network_allow=self.network_allow or None,
            kube_api_cidrs=self.kube_api_cidrs,
            # The engines go where the notebook goes (KubeSpawner's node_selector/tolerations).
            node_selector=dict(self.node_selector or {}),
            tolerations=list(self.tolerations or []),
            gateway_ports=self.gateway_ports(),
            ipyparallel_key=secrets.token_hex(32),
            # The engines pull the cluster image as the notebook pulls its own.
            image_pull_secrets=k.pull_secret_names(self.image_pull_secrets),
            space_roles=self.space_roles,
        )
        for obj in objects:
            await self._create_or_keep(obj)
        await self._copy_image_pull_secrets()

    async def _copy_image_pull_secrets(self) -> None:
        """Pods can only use pull secrets of their own namespace: copy the hub's into the space."""
        core = self._api(CoreV1Api)
        for name in k.pull_secret_names(self.image_pull_secrets):
            try:
                source = await self._request(core.read_namespaced_secret(name, self.hub_namespace))
            except ApiException as exc:
                if exc.status == 404:
                    raise RuntimeError(
                        f"image pull secret {name!r} does not exist in namespace "
                        f"{self.hub_namespace!r}: create it there, or remove it from "
                        "image_pull_secrets"
                    ) from None
                raise
            copy = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name,
                    "namespace": self.namespace,
                    "labels": {k.MANAGED_BY_LABEL: k.MANAGED_BY},
                },
                "type": source.type,
                "data": source.data,
            }
            await self._create_or_keep(copy)

    async def _create_or_keep(self, obj: dict) -> None:
        cls, suffix = _KIND_API[obj["kind"]]
        api = self._api(cls)
        name = obj["metadata"]["name"]
        try:
            await self._create_once_counted(
                lambda: getattr(api, f"create_namespaced_{suffix}")(self.namespace, obj)
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
            if obj["kind"] in _REPLACED_ON_START:
                await self._request(
                    getattr(api, f"replace_namespaced_{suffix}")(name, self.namespace, obj)
                )

    async def stop(self, now=False):
        await super().stop(now=now)
        if not self.delete_namespace_on_stop:
            return
        if self.keep_home_pvc and self.storage_pvc_ensure:
            await self._delete_all_but_home()
            return
        core = self._api(CoreV1Api)
        try:
            existing = await self._request(core.read_namespace(self.namespace))
            self._check_namespace_is_ours(existing.metadata.labels or {})
            await self._request(core.delete_namespace(self.namespace))
        except ForeignNamespace as exc:
            self.log.warning("Not deleting: %s", exc.jupyterhub_message)
            return
        except ApiException as exc:
            if exc.status != 404:
                raise
        except ValueError:
            # kubernetes_asyncio parses the returned Namespace as a Status and may fail on
            # it; the deletion itself was accepted.
            pass
        if not await self._wait_namespace_gone(self.namespace_delete_timeout):
            self.log.error(
                "Namespace %s of %s is still terminating after %.0f s; check its finalizers "
                "(kubectl get namespace %s -o yaml)",
                self.namespace,
                self.user.name,
                self.namespace_delete_timeout,
                self.namespace,
            )

    async def _delete_all_but_home(self) -> None:
        """Delete every workload and setting of the space, keeping the namespace and its PVC."""
        label = f"{k.MANAGED_BY_LABEL}={k.MANAGED_BY}"
        for kind, (cls, suffix) in _KIND_API.items():
            api = self._api(cls)
            listed = await self._request(
                getattr(api, f"list_namespaced_{suffix}")(self.namespace, label_selector=label)
            )
            for item in listed.items:
                if kind == "RoleBinding" and item.metadata.name in k.SPACE_BINDINGS.values():
                    # The hub's and the gateway's rights here: kept with the namespace (the
                    # hub's own is what lets it delete the rest, and the namespace later).
                    continue
                try:
                    await self._request(
                        getattr(api, f"delete_namespaced_{suffix}")(
                            item.metadata.name, self.namespace
                        )
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise
            self.log.debug("Deleted %ss of %s", kind, self.namespace)
