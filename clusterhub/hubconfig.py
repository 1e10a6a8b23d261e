"""The hub's configuration, as a function of the platform settings.

``clusterhub up`` and the Helm chart both load ``jupyterhub_config.py`` beside
this module, which calls :func:`configure_hub`; what differs between them is
only the settings file (and, on Kubernetes, the spawner class).
"""

from __future__ import annotations

import os
import sys

from . import gateway
from .settings import GATEWAY_SERVICE, SETTINGS_ENV, PlatformSettings

# A server token must reach the gateway: without this scope `Gateway()` in a kernel gets 401.
GATEWAY_ACCESS_SCOPE = f"access:services!service={GATEWAY_SERVICE}"


def _bin(name: str) -> str:
    """An executable of this Python environment (the hub may run without it on PATH)."""
    return os.path.join(os.path.dirname(sys.executable), name)


def configure_hub(c, settings: PlatformSettings) -> None:
    """Fill JupyterHub's traitlets config ``c`` from ``settings``."""
    hub_dir = settings.path("hub")

    # -- network: only the proxy's public port leaves loopback --------------------------------
    c.JupyterHub.bind_url = f"http://{settings.ip}:{settings.port}/"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{settings.hub_port}"
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.proxy_api_port}"
    c.ConfigurableHTTPProxy.command = list(settings.proxy_command)
    c.ConfigurableHTTPProxy.pid_file = os.path.join(hub_dir, "proxy.pid")
    c.ConfigurableHTTPProxy.should_start = True

    # -- state that must survive a restart ----------------------------------------------------
    c.JupyterHub.db_url = "sqlite:///" + os.path.join(hub_dir, "jupyterhub.sqlite")
    c.JupyterHub.cookie_secret_file = os.path.join(hub_dir, "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = os.path.join(hub_dir, "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.cleanup_proxy = True

    # -- login: any name plus the workshop code; admins with the admin password ---------------
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = settings.workshop_code
    c.SharedPasswordAuthenticator.admin_password = settings.admin_password
    c.Authenticator.admin_users = set(settings.admin_users)
    c.Authenticator.allow_all = True

    # -- spawning -----------------------------------------------------------------------------
    c.JupyterHub.spawner_class = "clusterhub.spawner.local.LocalSpaceSpawner"
    c.JupyterHub.concurrent_spawn_limit = settings.concurrent_spawn_limit
    c.LocalSpaceSpawner.data_dir = settings.data_dir
    c.LocalSpaceSpawner.gateway_url = settings.gateway_url
    c.LocalSpaceSpawner.gateway_proxy_address = settings.gateway_proxy_address
    c.Spawner.cmd = [_bin("jupyterhub-singleuser")]
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = 120
    c.Spawner.http_timeout = 90
    c.Spawner.server_token_scopes = [
        "access:servers!server",
        "users:activity!user",
        GATEWAY_ACCESS_SCOPE,
    ]

    # -- services: the Dask Gateway and the idle culler ---------------------------------------
    service_env = {
        SETTINGS_ENV: os.environ.get(SETTINGS_ENV, settings.path("run", "settings.json")),
        "PATH": os.environ.get("PATH", ""),
    }
    gateway_config = os.path.join(os.path.dirname(gateway.__file__), "dask_gateway_config.py")
    c.JupyterHub.services = [
        {
            "name": GATEWAY_SERVICE,
            "url": f"http://127.0.0.1:{settings.gateway_http_port}",
            "command": [_bin("dask-gateway-server"), "-f", gateway_config],
            "cwd": settings.path("gateway"),
            "environment": service_env,
            "display": False,
        },
        {
            "name": "idle-culler",
            "command": [
                sys.executable,
                "-m",
                "jupyterhub_idle_culler",
                f"--timeout={settings.cull_idle_timeout}",
                "--cull-every=60",
            ],
        },
    ]
    c.JupyterHub.load_roles = [
        {"name": "user", "scopes": ["self", GATEWAY_ACCESS_SCOPE]},
        {
            "name": "idle-culler",
            "scopes": [
                "list:users",
                "read:users:activity",
                "read:servers",
                "delete:servers",
            ],
            "services": ["idle-culler"],
        },
    ]
