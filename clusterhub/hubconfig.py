"""The hub's configuration, as a function of the platform settings.

``clusterhub up`` and the Helm chart both load ``jupyterhub_config.py`` beside this
module, which calls :func:`configure_hub`. What differs is the settings file: in "local"
mode the hub starts the proxy and spawns local processes (`clusterhub up` runs the
gateway beside it; a hub on its own starts it as a managed service); in "kubernetes"
mode the proxy and the gateway are their own pods and each user gets a namespace. The
``kubernetes`` settings (written by the chart from its values) are
:class:`clusterhub.settings.KubernetesSettings`.
"""

from __future__ import annotations

import os
import sys

from . import admission, gateway, singleuser
from .procs import PLATFORM_MARKER
from .settings import GATEWAY_SERVICE, SETTINGS_ENV, PlatformSettings

# A server token must reach the gateway: without this scope `Gateway()` in a kernel gets 401.
GATEWAY_ACCESS_SCOPE = f"access:services!service={GATEWAY_SERVICE}"
# The gateway service's token, shared by the hub and the gateway pod (Kubernetes mode).
GATEWAY_TOKEN_ENV = "CLUSTERHUB_GATEWAY_API_TOKEN"
# How long browsers keep to HTTPS once they saw the hub over it (one year, as is usual).
HSTS_MAX_AGE = 365 * 24 * 3600
# Seconds between the idle culler's checks (the chart's culler.every).
CULL_EVERY_ENV = "CLUSTERHUB_CULL_EVERY"


def _bin(name: str) -> str:
    """An executable of this Python environment (the hub may run without it on PATH)."""
    return os.path.join(os.path.dirname(sys.executable), name)


def configure_hub(c, settings: PlatformSettings) -> None:
    """Fill JupyterHub's traitlets config ``c`` from ``settings``."""
    _configure_common(c, settings)
    if settings.mode == "kubernetes":
        _configure_kubernetes(c, settings)
    else:
        _configure_local(c, settings)


def _configure_common(c, settings: PlatformSettings) -> None:
    hub_dir = settings.path("hub")
    c.JupyterHub.bind_url = f"http://{settings.ip}:{settings.port}/"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{settings.hub_port}"

    # State that must survive a restart.
    c.JupyterHub.db_url = "sqlite:///" + os.path.join(hub_dir, "jupyterhub.sqlite")
    c.JupyterHub.cookie_secret_file = os.path.join(hub_dir, "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = os.path.join(hub_dir, "jupyterhub.pid")
    c.JupyterHub.cleanup_proxy = True

    # The hub's pages: no other window (a page a user served, a popup it opened) keeps a
    # handle on them; with TLS, browsers remember to use HTTPS (HSTS).
    headers = {"Cross-Origin-Opener-Policy": "same-origin"}
    if settings.tls_cert:
        c.JupyterHub.ssl_cert = settings.tls_cert
        c.JupyterHub.ssl_key = settings.tls_key
        headers["Strict-Transport-Security"] = f"max-age={HSTS_MAX_AGE}"
    c.JupyterHub.tornado_settings = {"headers": headers}

    # Login: any name plus the workshop code; admins with the admin password.
    c.JupyterHub.authenticator_class = "clusterhub.auth.WorkshopAuthenticator"
    c.SharedPasswordAuthenticator.user_password = settings.workshop_code
    c.SharedPasswordAuthenticator.admin_password = settings.admin_password
    c.Authenticator.admin_users = set(settings.admin_users)
    c.Authenticator.allow_all = True

    c.JupyterHub.concurrent_spawn_limit = settings.concurrent_spawn_limit
    c.Spawner.default_url = "/lab"
    # Locally a start first waits for its turn (clusterhub.admission): a room arriving at
    # once may queue for many minutes, and LocalSpaceSpawner.launch_timeout bounds the start
    # itself once its turn has come.
    c.Spawner.start_timeout = 1800 if settings.mode == "local" else 300
    c.Spawner.http_timeout = 120
    c.Spawner.server_token_scopes = [
        "access:servers!server",
        "users:activity!user",
        GATEWAY_ACCESS_SCOPE,
    ]

    c.JupyterHub.load_roles = [
        {"name": "user", "scopes": ["self", GATEWAY_ACCESS_SCOPE]},
        {
            "name": "idle-culler",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        },
    ]
    c.JupyterHub.services = [
        {
            "name": "idle-culler",
            # JupyterHub gives services a clean environment: keep the platform's marker so
            # that `clusterhub up` can find them even if the hub dies.
            "environment": {PLATFORM_MARKER: os.path.abspath(settings.data_dir)},
            "command": [
                sys.executable,
                "-m",
                "jupyterhub_idle_culler",
                f"--timeout={settings.cull_idle_timeout}",
                f"--cull-every={os.environ.get(CULL_EVERY_ENV, '60')}",
            ],
        },
    ]


def _configure_local(c, settings: PlatformSettings) -> None:
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.proxy_api_port}"
    c.ConfigurableHTTPProxy.command = list(settings.proxy_command)
    c.ConfigurableHTTPProxy.pid_file = settings.path("hub", "proxy.pid")
    c.ConfigurableHTTPProxy.should_start = True
    # Stopping the platform stops every user's server (and so their clusters and engines).
    c.JupyterHub.cleanup_servers = True

    c.JupyterHub.spawner_class = "clusterhub.spawner.local.LocalSpaceSpawner"
    c.LocalSpaceSpawner.data_dir = settings.data_dir
    c.LocalSpaceSpawner.gateway_url = settings.gateway_url
    c.LocalSpaceSpawner.gateway_proxy_address = settings.gateway_proxy_address
    c.LocalSpaceSpawner.user_accounts = settings.user_accounts
    c.LocalSpaceSpawner.account_prefix = settings.account_prefix
    c.LocalSpaceSpawner.account_uid_min = settings.account_uid_min
    c.LocalSpaceSpawner.account_uid_max = settings.account_uid_max
    c.LocalSpaceSpawner.max_accounts = settings.max_accounts
    # A full room: JupyterHub answers new spawns with 429 and "try again in a few minutes".
    c.JupyterHub.active_server_limit = settings.max_servers
    c.Spawner.cmd = [_bin(singleuser.COMMAND)]

    if settings.gateway_api_token:
        # `clusterhub up` runs the gateway beside the hub, not under it, and supervises both:
        # a restart of the hub leaves the gateway and its clusters running.
        c.JupyterHub.services.append(
            {
                "name": GATEWAY_SERVICE,
                "url": f"http://127.0.0.1:{settings.gateway_http_port}",
                "api_token": settings.gateway_api_token,
                "display": False,
                # Its dashboards log users in through the hub (gateway/dashboards.py): the
                # platform's own service needs no "authorize access" page.
                "oauth_no_confirm": True,
            }
        )
        return
    # The hub on its own (e.g. the hub image with a local-mode settings file): it starts the
    # gateway as a managed service.
    c.JupyterHub.services.append(
        {
            "name": GATEWAY_SERVICE,
            "url": f"http://127.0.0.1:{settings.gateway_http_port}",
            "command": gateway.server_command(),
            "cwd": settings.path("gateway"),
            "environment": {
                SETTINGS_ENV: os.environ.get(SETTINGS_ENV, settings.path("run", "settings.json")),
                "PATH": os.environ.get("PATH", ""),
                PLATFORM_MARKER: os.path.abspath(settings.data_dir),
                # Schedulers and workers take turns with every other start (see up.py).
                admission.SOCKET_ENV: os.environ.get(admission.SOCKET_ENV, ""),
            },
            "display": False,
            # Its dashboards log users in through the hub (gateway/dashboards.py): the
            # platform's own service needs no "authorize access" page.
            "oauth_no_confirm": True,
        }
    )


def _configure_kubernetes(c, settings: PlatformSettings) -> None:
    kube = settings.kubernetes
    if kube.proxy_api_url:
        # The proxy is its own pod; the hub reads CONFIGPROXY_AUTH_TOKEN from its env.
        c.ConfigurableHTTPProxy.api_url = kube.proxy_api_url
        c.ConfigurableHTTPProxy.should_start = False
    else:
        c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.proxy_api_port}"
        c.ConfigurableHTTPProxy.command = list(settings.proxy_command)
        c.ConfigurableHTTPProxy.should_start = True
    if kube.hub_bind_url:
        c.JupyterHub.hub_bind_url = kube.hub_bind_url
    if kube.hub_connect_url:
        c.JupyterHub.hub_connect_url = kube.hub_connect_url
    if kube.subdomain_host:
        # Each user's server (and the gateway's dashboards) on a subdomain of its own: what a
        # user serves never shares the hub's origin (the chart's hub.subdomains).
        c.JupyterHub.subdomain_host = kube.subdomain_host
    # User namespaces outlive a hub restart; the hub reattaches to them from its database.
    c.JupyterHub.cleanup_servers = False

    c.JupyterHub.spawner_class = "clusterhub.spawner.kube.KubeSpaceSpawner"
    spawner = c.KubeSpaceSpawner
    spawner.hub_namespace = kube.hub_namespace
    spawner.hub_name = kube.hub_name
    spawner.namespace_prefix = kube.namespace_prefix
    spawner.image = kube.notebook_image
    spawner.cluster_image = kube.cluster_image
    spawner.image_pull_policy = kube.image_pull_policy
    if kube.image_pull_secrets:
        spawner.image_pull_secrets = list(kube.image_pull_secrets)
    if kube.profiles:
        spawner.profiles = kube.profiles
    spawner.network_allow = dict(kube.network_policy)
    spawner.space_roles = dict(kube.space_roles)
    spawner.kube_api_cidrs = list(kube.kube_api_cidrs)
    # Every user pod on the users' nodes: the notebook (KubeSpawner's own traits) and, through
    # the spawner, the engines.
    spawner.node_selector = dict(kube.user_node_selector)
    spawner.tolerations = list(kube.user_tolerations)
    spawner.delete_namespace_on_stop = kube.delete_namespace_on_stop
    spawner.keep_home_pvc = kube.keep_home_pvc
    storage = kube.home_storage
    if storage.get("size"):
        spawner.storage_pvc_ensure = True
        spawner.storage_capacity = storage["size"]
        if storage.get("storage_class"):
            spawner.storage_class = storage["storage_class"]
        spawner.volumes = [{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}]
        spawner.volume_mounts = [{"name": "home", "mountPath": "/home/jovyan"}]
    spawner.gateway_url = kube.gateway_url
    spawner.gateway_proxy_address = kube.gateway_proxy_address

    if kube.gateway_url:
        service = {
            "name": GATEWAY_SERVICE,
            "url": kube.gateway_url.split("/services/")[0],
            "display": False,
            # Its dashboards log users in through the hub (gateway/dashboards.py): the
            # platform's own service needs no "authorize access" page.
            "oauth_no_confirm": True,
        }
        if os.environ.get(GATEWAY_TOKEN_ENV):
            service["api_token"] = os.environ[GATEWAY_TOKEN_ENV]
        c.JupyterHub.services.append(service)
        # The gateway bounds a cluster by the profile its owner's server runs with, and
        # refuses clusters to users without a running server: it reads users' servers.
        c.JupyterHub.load_roles.append(
            {"name": "dask-gateway", "scopes": ["read:servers"], "services": [GATEWAY_SERVICE]}
        )
