"""Configuration of the one Dask Gateway server per hub.

Used by ``clusterhub up`` (through ``dask_gateway_config.py`` beside this
module) and by the Helm chart: the gateway is a JupyterHub service, users
authenticate with their JupyterHub token, and clusters belong to their owner's
space.
"""

from __future__ import annotations

import os
import shutil
import sys

from clusterhub.settings import GATEWAY_PREFIX, GATEWAY_SERVICE, PlatformSettings
from clusterhub.space import LocalSpace
from clusterhub.spawner.kubeobjects import pull_secret_names

from .options import make_cluster_options


def dask_command(subcommand: str) -> list[str]:
    """``dask scheduler`` / ``dask worker`` (distributed 2026 has no dask-scheduler script)."""
    dask = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
    return [dask or "dask", subcommand]


ENCRYPT_KEY_ENV = "CLUSTERHUB_GATEWAY_ENCRYPT_KEY"

# Dask's defaults poll as if each cluster had the machine to itself: every scheduler, nanny
# and worker ticks its event loop 50 times a second, each worker samples its own stack 100
# times a second and each nanny checks its worker's memory 10 times a second. Measured idle
# on the 2-core build machine, a one-worker cluster took 9.2 % of a core (scheduler 2.4,
# nanny 2.3, worker 4.6), so a room of idle clusters filled the machine; with these, 1.7 %.
# What a user gives up: a coarser profile (10 samples a second), dashboards' system plots
# every 2 s, and a nanny that notices a worker over its memory limit within half a second.
QUIET_DASK_CONFIG = {
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.profile.interval": "100ms",
    "distributed.worker.memory.monitor-interval": "500ms",
}


def dask_environment(config: dict[str, str]) -> dict[str, str]:
    """Dask settings as the ``DASK_*`` variables a scheduler or worker reads at start."""
    return {
        "DASK_" + key.upper().replace(".", "__").replace("-", "_"): value
        for key, value in config.items()
    }


def configure_gateway(c, settings: PlatformSettings) -> None:
    """Fill traitlets config ``c`` for dask-gateway-server from the platform settings."""
    c.Proxy.prefix = GATEWAY_PREFIX
    c.DaskGateway.authenticator_class = "clusterhub.gateway.auth.HubAuthenticator"
    # JupyterHub hands a managed service its token and API URL in the environment (the
    # Helm chart sets the same variables in the gateway pod).
    c.HubAuthenticator.jupyterhub_api_token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    # Tokens must carry access to this service (upstream accepts any hub token otherwise).
    c.HubAuthenticator.jupyterhub_service_name = GATEWAY_SERVICE
    c.HubAuthenticator.jupyterhub_api_url = os.environ.get(
        "JUPYTERHUB_API_URL", f"http://127.0.0.1:{settings.hub_port}/hub/api"
    )
    c.ClusterConfig.idle_timeout = 1800.0
    c.ClusterConfig.environment = dask_environment(QUIET_DASK_CONFIG)
    if settings.mode == "kubernetes":
        _configure_kubernetes(c, settings)
    else:
        _configure_local(c, settings)


def _configure_local(c, settings: PlatformSettings) -> None:
    c.DaskGateway.address = f"127.0.0.1:{settings.gateway_api_port}"
    c.Proxy.address = f"127.0.0.1:{settings.gateway_http_port}"
    c.Proxy.tcp_address = f"127.0.0.1:{settings.gateway_tcp_port}"

    c.DaskGateway.backend_class = "clusterhub.gateway.local.LocalSpaceBackend"
    c.LocalSpaceBackend.data_dir = settings.data_dir
    c.LocalSpaceBackend.db_url = "sqlite:///" + settings.path("gateway", "gateway.sqlite")
    c.LocalSpaceBackend.db_encrypt_keys = [settings.gateway_encrypt_key]
    c.LocalSpaceBackend.cluster_options = make_cluster_options(
        lambda username: LocalSpace(settings.data_dir, username)
    )
    c.LocalSpaceBackend.inherited_environment = [
        "PATH",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "LANG",
        "LC_ALL",
    ]

    c.ClusterConfig.scheduler_cmd = dask_command("scheduler")
    c.ClusterConfig.worker_cmd = dask_command("worker")
    c.ClusterConfig.scheduler_memory = "512 M"


def _configure_kubernetes(c, settings: PlatformSettings) -> None:
    """The gateway pod of the Helm chart: clusters in their owner's namespace.

    The chart writes the ``kubernetes`` settings (:class:`KubernetesSettings`) the hub
    reads too, so the gateway names namespaces and bounds options exactly as the spawner.
    """
    kube = settings.kubernetes
    # The pod's own port: the private API on loopback, the proxy (HTTP and TLS) for others.
    c.DaskGateway.address = f"127.0.0.1:{settings.gateway_api_port}"
    c.Proxy.address = f"{settings.ip}:{settings.gateway_http_port}"
    c.Proxy.tcp_address = f"{settings.ip}:{settings.gateway_tcp_port}"

    c.DaskGateway.backend_class = "clusterhub.gateway.kube.KubeSpaceBackend"
    # Per-user subdomains (the chart's hub.subdomains): the dashboards' login crosses origins.
    c.HubAuthenticator.subdomain_host = kube.subdomain_host
    backend = c.KubeSpaceBackend
    os.makedirs(settings.path("gateway"), exist_ok=True)
    backend.db_url = "sqlite:///" + settings.path("gateway", "gateway.sqlite")
    # A key from a Secret the operator manages (gateway.existingSecret) wins over the chart's.
    backend.db_encrypt_keys = [os.environ.get(ENCRYPT_KEY_ENV) or settings.gateway_encrypt_key]
    # Clusters outlive a gateway restart (an upgrade, a rescheduled pod): the database on
    # the gateway's volume resumes them. They end with their owner's space instead.
    backend.stop_clusters_on_shutdown = False
    # Schedulers reach the gateway API through its Service, as notebooks do.
    if kube.gateway_url:
        backend.api_url = kube.gateway_url.rstrip("/") + "/api"
    backend.hub_name = kube.hub_name
    backend.hub_namespace = kube.hub_namespace
    backend.namespace_prefix = kube.namespace_prefix
    backend.hub_api_url = os.environ.get(
        "JUPYTERHUB_API_URL", f"http://127.0.0.1:{settings.hub_port}/hub/api"
    )
    backend.hub_api_token = os.environ.get("JUPYTERHUB_API_TOKEN", "")

    # Pulling a large image onto a new node takes minutes (dask-gateway's default is 60 s).
    # Settings of the backend, not of ClusterConfig (which has no such traits).
    backend.cluster_start_timeout = kube.cluster_start_timeout
    backend.worker_start_timeout = kube.worker_start_timeout
    c.KubeSpaceClusterConfig.image = kube.cluster_image
    c.KubeSpaceClusterConfig.image_pull_policy = kube.image_pull_policy
    c.KubeSpaceClusterConfig.node_selector = dict(kube.user_node_selector)
    c.KubeSpaceClusterConfig.tolerations = list(kube.user_tolerations)
    c.KubeSpaceClusterConfig.image_pull_secrets = pull_secret_names(kube.image_pull_secrets)
    # What the space's quota counts for a coordinator (clusterhub.spawner.kubespace).
    c.ClusterConfig.scheduler_cores = 1
    c.ClusterConfig.scheduler_memory = "1 G"
