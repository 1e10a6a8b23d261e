"""A Dask Gateway backend that runs each cluster in its owner's Kubernetes namespace.

Why dask-gateway-server's ``DBBackendBase`` and not its Kubernetes backend: upstream's
Kubernetes backend is a controller reconciling ``DaskCluster`` custom resources behind a
Traefik proxy, i.e. CRDs (cluster-admin to install), a controller Deployment and Traefik
next to the gateway, and every cluster in one namespace (the gateway's). The database-backed
base keeps the deployment to one gateway pod with the built-in proxy and no CRDs; its
database (on a volume, encrypted) checkpoints every cluster and worker, so a restarted
gateway resumes running clusters; and we decide where pods go: into the namespace the
spawner made for the cluster's owner, so a cluster dies with its owner's space.

What this adds to the base:

- pods, a headless Service and a credentials Secret per cluster, built by the pure
  functions of :mod:`clusterhub.gateway.kubeobjects`, in the owner's namespace (named by the
  spawner's own rule, :func:`clusterhub.spawner.kubeobjects.make_namespace_name`);
- one shared watch of this gateway's pods in all namespaces (a kubespawner reflector)
  instead of polling per cluster; pending clusters/workers and vanished schedulers are
  judged from it;
- a cluster whose scheduler pod disappears because its namespace is gone (the user's
  server stopped or was culled) is recorded as stopped; one whose scheduler failed, as
  failed;
- options bounded by the owner's profile: the maxima and sizes the hub recorded in their
  space when their server started; no running server, or no namespace, means no cluster.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote, urlsplit

from aiohttp import web
from dask_gateway_server.backends.base import ClusterConfig
from dask_gateway_server.backends.db_base import DBBackendBase, JobStatus
from dask_gateway_server.options import Options
from dask_gateway_server.traitlets import Type
from kubernetes_asyncio.client.rest import ApiException
from traitlets import Dict, Float, Integer, List, Unicode, default

from clusterhub.settings import DEFAULT_HUB_NAME, DEFAULT_NAMESPACE_PREFIX
from clusterhub.spawner import kubeobjects as k
from clusterhub.usererror import CONFLICT, UserError

from . import kubeobjects as g
from .dashboards import DashboardRoutes
from .options import bounded_options

_FINISHED = ("Succeeded", "Failed")


class KubeSpaceClusterConfig(ClusterConfig):
    """Per-cluster settings of the Kubernetes backend (on top of dask-gateway's own)."""

    image = Unicode(
        config=True,
        help="The cluster image of scheduler and worker pods (the platform's cluster image).",
    )

    image_pull_policy = Unicode(
        "IfNotPresent",
        config=True,
        help="imagePullPolicy of scheduler and worker pods: Always, IfNotPresent or Never.",
    )

    node_selector = Dict(
        config=True,
        help="The nodeSelector of scheduler and worker pods: user pods' nodes (the chart's "
        "singleuser.nodeSelector).",
    )

    tolerations = List(
        Dict(),
        config=True,
        help="The tolerations of scheduler and worker pods (the chart's singleuser.tolerations), "
        "e.g. for a tainted pool of user nodes.",
    )

    image_pull_secrets = List(
        Unicode(),
        config=True,
        help="Names of the Secrets scheduler and worker pods pull their image with (a private "
        "registry). The hub copies them into each user's namespace, where these pods run.",
    )

    @default("scheduler_cmd")
    def _default_scheduler_cmd(self):
        # Arguments to the cluster image's entrypoint (clusterhub-engine MODE ...).
        return ["dask-gateway-scheduler"]

    @default("worker_cmd")
    def _default_worker_cmd(self):
        return ["dask-gateway-worker"]


class KubeSpaceBackend(DashboardRoutes, DBBackendBase):
    cluster_config_class = Type(
        "clusterhub.gateway.kube.KubeSpaceClusterConfig",
        klass="dask_gateway_server.backends.base.ClusterConfig",
        config=True,
        help="The cluster config class to use.",
    )

    hub_name = Unicode(
        DEFAULT_HUB_NAME,
        config=True,
        help="The hub's name, as KubeSpaceSpawner.hub_name: labels spaces and cluster pods.",
    )

    hub_namespace = Unicode(
        config=True,
        help="The hub's namespace, as KubeSpaceSpawner.hub_namespace (never a user's space).",
    )

    namespace_prefix = Unicode(
        DEFAULT_NAMESPACE_PREFIX,
        config=True,
        help="Prefix of user namespaces, as KubeSpaceSpawner.namespace_prefix.",
    )

    hub_api_url = Unicode(
        config=True,
        help="JupyterHub's API URL, e.g. http://hub:8081/hub/api (whose servers run, and "
        "with which profile).",
    )

    hub_api_token = Unicode(
        config=True,
        help="The gateway service's JupyterHub token; needs the read:servers scope.",
    )

    scheduler_port = Integer(
        g.SCHEDULER_PORTS["tcp-comm"],
        config=True,
        help="""Port of the scheduler's comm (TLS) in its pod; the space's NetworkPolicy
        admits the gateway on it. 0 = any free port, which the scheduler reports to the
        gateway: only where pods share one network (the test kubelet).""",
    )

    dashboard_port = Integer(
        g.SCHEDULER_PORTS["http-dashboard"],
        config=True,
        help="Port of the scheduler's dashboard in its pod (0 = any free port).",
    )

    api_port = Integer(
        g.SCHEDULER_PORTS["http-api"],
        config=True,
        help="Port of the scheduler's gateway API (scale/adapt) in its pod (0 = any).",
    )

    space_check_period = Float(
        1.0,
        config=True,
        help="""Seconds between looks at the watched pods for schedulers that vanished
        (namespace deleted) or failed. No API requests unless one did.""",
    )

    server_check_period = Float(
        30.0,
        config=True,
        help="""Seconds between asking the hub, once per owner of a running cluster, whether
        their server still runs; clusters of owners without one are stopped. Namespace
        deletion already ends them when a server stops; this also covers spaces kept after
        a stop (KubeSpaceSpawner.delete_namespace_on_stop = False). 0 turns it off.""",
    )

    k8s_request_timeout = Float(
        30.0, config=True, help="Seconds to wait for one Kubernetes API request."
    )

    # -- names ----------------------------------------------------------------------------
    def namespace_for(self, username: str) -> str:
        """The user's namespace, by the spawner's rule (KubeSpaceSpawner.space_namespace)."""
        reserved = [self.hub_namespace] if self.hub_namespace else []
        return k.make_namespace_name(self.namespace_prefix, username, reserved=reserved)

    @property
    def ports(self) -> dict[str, int]:
        return {
            "tcp-comm": self.scheduler_port,
            "http-dashboard": self.dashboard_port,
            "http-api": self.api_port,
        }

    # -- setup ----------------------------------------------------------------------------
    async def do_setup(self) -> None:
        from kubespawner.clients import load_config, shared_client
        from kubespawner.reflector import MultiNamespaceResourceReflector

        load_config()
        self.core = shared_client("CoreV1Api")
        self.pods = MultiNamespaceResourceReflector(
            parent=self,
            log=self.log,
            kind="pods",
            labels={g.GATEWAY_HUB_LABEL: k.label_value(self.hub_name)},
        )
        await self.pods.start()
        # Before anything judges pods: clusters whose space went while we were down.
        await self.check_spaces()
        self._space_task = asyncio.ensure_future(self._space_loop())
        self._server_task = None
        if self.server_check_period > 0:
            self._server_task = asyncio.ensure_future(self._server_loop())

    async def do_cleanup(self) -> None:
        for task in (getattr(self, "_space_task", None), getattr(self, "_server_task", None)):
            if task is not None:
                task.cancel()
        if hasattr(self, "pods"):
            await self.pods.stop()

    async def _request(self, coro):
        return await asyncio.wait_for(coro, self.k8s_request_timeout)

    # -- the owner's space ----------------------------------------------------------------
    async def space_namespace(self, username: str) -> str:
        """The owner's namespace if it is their active space on this hub, else a UserError."""
        name = self.namespace_for(username)
        try:
            namespace = await self._request(self.core.read_namespace(name))
        except ApiException as exc:
            if exc.status != 404:
                raise
            namespace = None
        labels = (namespace.metadata.labels or {}) if namespace else {}
        if (
            namespace is None
            or namespace.status.phase != "Active"
            or labels.get(k.HUB_NAME_LABEL) != k.label_value(self.hub_name)
            or labels.get(k.HUB_USER_LABEL) != k.label_value(username)
        ):
            raise UserError(
                f"user {username!r} has no running server (no namespace {name}): start "
                "your server, then create a cluster from it",
                status=CONFLICT,
            )
        return name

    async def space_profile(self, username: str) -> tuple[dict, dict]:
        """The maxima of the profile the owner's running server was started with, and the
        worker sizes they chose on the spawn form.

        The hub says whether that server runs; the space's record (a ConfigMap only the hub
        writes, :func:`clusterhub.spawner.kubeobjects.make_space_record`) says with what. The
        hub resolved the profile from its own settings and config, so profiles set only in
        the hub's extra config bound clusters too.
        """
        namespace = await self.space_namespace(username)
        server = await self.hub_server(username)
        if not server or server.get("stopped") or not server.get("ready"):
            raise UserError(
                f"user {username!r} has no running server: start your server, then create "
                "a cluster from it",
                status=CONFLICT,
            )
        try:
            record = await self._request(
                self.core.read_namespaced_config_map(k.SPACE_RECORD_NAME, namespace)
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            record = None
        try:
            return k.read_space_record(record.data if record else None)
        except ValueError:
            raise UserError(
                f"user {username!r}'s space has no record of its profile "
                f"({k.SPACE_RECORD_NAME} in {namespace}): restart your server",
                status=CONFLICT,
            ) from None

    async def hub_server(self, username: str) -> dict | None:
        """The hub's model of the user's default server; None if they have none (or no user)."""
        url = f"{self.hub_api_url.rstrip('/')}/users/{quote(username, safe='')}"
        response = await self.session.get(
            url, headers={"Authorization": f"token {self.hub_api_token}"}
        )
        if response.status == 404:
            return None
        if response.status != 200:
            raise RuntimeError(
                f"cannot read {username!r}'s server from the hub ({response.status}); "
                "the gateway service needs the read:servers scope"
            )
        return (await response.json()).get("servers", {}).get("")

    async def get_cluster_options(self, user) -> Options:
        try:
            return bounded_options(*await self.space_profile(user.name))
        except (UserError, RuntimeError) as exc:
            # 409 from GET /options; creating a cluster turns it into the base's 422.
            raise web.HTTPConflict(reason=str(exc)) from None

    # -- commands and environment ---------------------------------------------------------
    def get_tls_paths(self, cluster):
        return f"{g.CREDENTIALS_PATH}/{g.CERT_FILE}", f"{g.CREDENTIALS_PATH}/{g.KEY_FILE}"

    def get_env(self, cluster) -> dict:
        env = super().get_env(cluster)
        # The token from the mounted Secret, not in the pod spec (the preload reads a path).
        env["DASK_GATEWAY_API_TOKEN"] = f"{g.CREDENTIALS_PATH}/{g.TOKEN_FILE}"
        return env

    def get_scheduler_command(self, cluster) -> list[str]:
        host = "$(CLUSTERHUB_POD_IP)"
        config = cluster.config
        return [
            *config.scheduler_cmd,
            "--protocol", "tls",
            "--host", host,
            "--port", str(self.scheduler_port),
            "--dashboard-address", f"{host}:{self.dashboard_port}",
            "--preload", "dask_gateway.scheduler_preload",
            "--dg-api-address", f"{host}:{self.api_port}",
            "--dg-heartbeat-period", str(self.cluster_heartbeat_period),
            "--dg-adaptive-period", str(config.adaptive_period),
            "--dg-idle-timeout", str(config.idle_timeout),
        ]  # fmt: skip

    def get_worker_command(self, cluster, worker_name, scheduler_address=None) -> list[str]:
        # Workers dial the scheduler by its Service's name (its port is the one it reported).
        port = urlsplit(scheduler_address or cluster.scheduler_address).port
        namespace = cluster.state["namespace"]
        address = f"tls://{g.service_name(cluster.name)}.{namespace}.svc:{port}"
        nthreads, memory_limit = self.worker_nthreads_memory_limit_args(cluster)
        host = "$(CLUSTERHUB_POD_IP)"
        return [
            *cluster.config.worker_cmd,
            address,
            "--host", host,
            "--dashboard-address", f"{host}:0",
            "--name", worker_name,
            "--nthreads", nthreads,
            "--memory-limit", memory_limit,
        ]  # fmt: skip

    # -- clusters -------------------------------------------------------------------------
    async def _create(self, kind: str, namespace: str, body: dict) -> None:
        try:
            await self._request(getattr(self.core, f"create_namespaced_{kind}")(namespace, body))
        except ApiException as exc:
            if exc.status != 409:  # already there: a retried start
                raise

    async def _delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self._request(
                getattr(self.core, f"delete_namespaced_{kind}")(
                    name, namespace, grace_period_seconds=5
                )
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def do_start_cluster(self, cluster):
        namespace = await self.space_namespace(cluster.username)
        yield {"namespace": namespace}
        config = cluster.config
        common = {"hub_name": self.hub_name}
        await self._create(
            "secret",
            namespace,
            g.make_cluster_secret(
                namespace,
                cluster.name,
                tls_cert=cluster.tls_cert,
                tls_key=cluster.tls_key,
                api_token=cluster.token,
                **common,
            ),
        )
        await self._create(
            "service",
            namespace,
            g.make_cluster_service(namespace, cluster.name, ports=self.ports, **common),
        )
        pod = g.make_scheduler_pod(
            namespace,
            cluster.name,
            image=config.image,
            image_pull_policy=config.image_pull_policy,
            image_pull_secrets=config.image_pull_secrets,
            node_selector=config.node_selector,
            tolerations=config.tolerations,
            args=self.get_scheduler_command(cluster),
            env=self.get_scheduler_env(cluster),
            cores=config.scheduler_cores,
            memory=config.scheduler_memory,
            ports=self.ports,
            **common,
        )
        await self._create("pod", namespace, pod)
        yield {"namespace": namespace, "pod": pod["metadata"]["name"]}

    async def do_stop_cluster(self, cluster) -> None:
        namespace = cluster.state.get("namespace")
        if not namespace:
            return
        # Workers first (the base stops them too; these are any it never learnt of).
        for key, pod in list(self.pods.resources.items()):
            labels = pod["metadata"].get("labels", {})
            if key.startswith(namespace + "/") and labels.get(g.CLUSTER_LABEL) == cluster.name:
                await self._delete("pod", namespace, pod["metadata"]["name"])
        await self._delete("pod", namespace, g.scheduler_pod_name(cluster.name))
        await self._delete("service", namespace, g.service_name(cluster.name))
        await self._delete("secret", namespace, g.secret_name(cluster.name))

    async def _pod_alive(self, namespace: str | None, name: str | None) -> bool:
        """Pending or running, judged from the watch; a pod the watch has not seen (yet, or
        any more) is looked up once."""
        if not namespace or not name:
            return False
        pod = self.pods.resources.get(f"{namespace}/{name}")
        if pod is None:
            try:
                found = await self._request(self.core.read_namespaced_pod(name, namespace))
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return found.status.phase not in _FINISHED
        return (pod.get("status") or {}).get("phase") not in _FINISHED

    async def do_check_clusters(self, clusters) -> list[bool]:
        statuses = []
        for c in clusters:
            alive = await self._pod_alive(c.state.get("namespace"), c.state.get("pod"))
            statuses.append(alive or await self._stop_if_space_gone(c))
        return statuses

    # -- workers --------------------------------------------------------------------------
    async def do_start_worker(self, worker):
        cluster = worker.cluster
        namespace = cluster.state["namespace"]
        config = cluster.config
        pod = g.make_worker_pod(
            namespace,
            cluster.name,
            worker.name,
            hub_name=self.hub_name,
            image=config.image,
            image_pull_policy=config.image_pull_policy,
            image_pull_secrets=config.image_pull_secrets,
            node_selector=config.node_selector,
            tolerations=config.tolerations,
            args=self.get_worker_command(cluster, worker.name),
            env=self.get_worker_env(cluster),
            cores=config.worker_cores,
            memory=config.worker_memory,
        )
        try:
            await self._create("pod", namespace, pod)
        except ApiException as exc:
            if exc.status == 404:  # the namespace: stop the cluster rather than count failures
                await self._stop_if_space_gone(cluster)
            raise
        yield {"namespace": namespace, "pod": pod["metadata"]["name"]}

    async def do_stop_worker(self, worker) -> None:
        namespace, name = worker.state.get("namespace"), worker.state.get("pod")
        if namespace and name:
            await self._delete("pod", namespace, name)

    async def do_check_workers(self, workers) -> list[bool]:
        statuses = []
        for w in workers:
            alive = await self._pod_alive(w.state.get("namespace"), w.state.get("pod"))
            # A worker lost with its namespace did not fail: its whole cluster stops.
            statuses.append(alive or await self._stop_if_space_gone(w.cluster))
        return statuses

    # -- clusters whose space went away ---------------------------------------------------
    async def _namespace_gone(self, namespace: str) -> bool:
        try:
            found = await self._request(self.core.read_namespace(namespace))
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return found.status.phase == "Terminating"

    async def _stop_if_space_gone(self, cluster) -> bool:
        """Record ``cluster`` as stopped if its owner's namespace is gone; whether it was."""
        namespace = cluster.state.get("namespace")
        if not namespace or not await self._namespace_gone(namespace):
            return False
        if cluster.target <= JobStatus.RUNNING:
            self.log.info(
                "Cluster %s stopped: the space %s of %s is gone (server stopped)",
                cluster.name,
                namespace,
                cluster.username,
            )
            await self.stop_cluster(cluster.name)
        return True

    async def check_spaces(self) -> list[str]:
        """Stop every started cluster whose scheduler pod vanished or finished; the names."""
        stopped = []
        for cluster in list(self.db.active_clusters()):
            if cluster.status not in (JobStatus.SUBMITTED, JobStatus.RUNNING):
                continue
            namespace, pod = cluster.state.get("namespace"), cluster.state.get("pod")
            if not namespace or not pod:
                continue
            watched = self.pods.resources.get(f"{namespace}/{pod}")
            if watched is not None and (watched.get("status") or {}).get("phase") not in _FINISHED:
                continue
            if await self._pod_alive(namespace, pod):
                continue
            if not await self._stop_if_space_gone(cluster):
                self.log.warning("Cluster %s failed: its scheduler pod %s ended", cluster.name, pod)
                await self.stop_cluster(cluster.name, failed=True)
            stopped.append(cluster.name)
        return stopped

    async def _space_loop(self) -> None:
        while True:
            await asyncio.sleep(self.space_check_period)
            try:
                await self.check_spaces()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("Checking the spaces of running clusters failed")

    # -- clusters whose owner's server stopped ------------------------------------------------
    async def reap_orphans(self) -> list[str]:
        """Stop every running cluster whose owner has no running server; their names."""
        reaped = []
        owners = {c.username for c in self.db.active_clusters() if c.target <= JobStatus.RUNNING}
        for username in sorted(owners):
            server = await self.hub_server(username)
            if server and not server.get("stopped"):
                continue
            for cluster in list(self.db.active_clusters()):
                if cluster.username == username and cluster.target <= JobStatus.RUNNING:
                    self.log.info(
                        "Stopping cluster %s: its owner %s has no running server",
                        cluster.name,
                        username,
                    )
                    await self.stop_cluster(cluster.name)
                    reaped.append(cluster.name)
        return reaped

    async def _server_loop(self) -> None:
        while True:
            await asyncio.sleep(self.server_check_period)
            try:
                await self.reap_orphans()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("Asking the hub whose servers run failed")
