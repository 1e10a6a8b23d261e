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

from clusterhub.settings import GATEWAY_PREFIX, PlatformSettings
from clusterhub.space import LocalSpace

from .options import make_cluster_options


def dask_command(subcommand: str) -> list[str]:
    """``dask scheduler`` / ``dask worker`` (distributed 2026 has no dask-scheduler script)."""
    dask = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
    return [dask or "dask", subcommand]


def configure_gateway(c, settings: PlatformSettings) -> None:
    """Fill traitlets config ``c`` for dask-gateway-server from the platform settings."""
    c.DaskGateway.address = f"127.0.0.1:{settings.gateway_api_port}"
    c.Proxy.address = f"127.0.0.1:{settings.gateway_http_port}"
    c.Proxy.tcp_address = f"127.0.0.1:{settings.gateway_tcp_port}"
    c.Proxy.prefix = GATEWAY_PREFIX

    c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
    # JupyterHub hands a managed service its token and API URL in the environment.
    c.JupyterHubAuthenticator.jupyterhub_api_token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    c.JupyterHubAuthenticator.jupyterhub_api_url = os.environ.get(
        "JUPYTERHUB_API_URL", f"http://127.0.0.1:{settings.hub_port}/hub/api"
    )

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
    c.ClusterConfig.idle_timeout = 1800.0
    c.ClusterConfig.scheduler_memory = "512 M"
