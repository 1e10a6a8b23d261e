"""The platform's settings, as handed from ``clusterhub up`` to the hub and the gateway.

``clusterhub up`` resolves its flags, the persisted secrets and free ports into
one :class:`PlatformSettings`, writes it (mode 0600, it holds secrets) into the
data dir, and points ``CLUSTERHUB_SETTINGS`` at it. The hub's and the gateway's
config files read it back, so the same config modules serve ``clusterhub up`` and
the Helm chart (which writes the same file from values).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

SETTINGS_ENV = "CLUSTERHUB_SETTINGS"
# Only `clusterhub up` (local mode) writes these: the chart has no attendee accounts, its
# TLS is the Ingress's or the proxy's, and its gateway is a pod of its own.
LOCAL_ONLY_FIELDS = frozenset(
    {
        "tls_cert",
        "tls_key",
        "gateway_api_token",
        "user_accounts",
        "account_prefix",
        "account_uid_min",
        "account_uid_max",
        "max_accounts",
        "max_servers",
        "start_slots",
        "expect",
    }
)
# Where root's platform keeps its data: every attendee account (and the build account) must
# be able to pass through its parents, which root's home (0700) does not allow.
ROOT_DATA_DIR = "/var/lib/clusterhub"
USER_DATA_DIR = "~/.clusterhub"
GATEWAY_SERVICE = "dask-gateway"
GATEWAY_PREFIX = f"/services/{GATEWAY_SERVICE}"


def gateway_origin(subdomain_host: str, subdomain_hook=None) -> str:
    """Where the gateway's pages are served under per-user subdomains (JupyterHub's
    ``subdomain_host``, e.g. ``https://hub.example.org``): the service's own subdomain,
    ``https://dask-gateway--service.hub.example.org``. Empty without subdomains, where the
    gateway shares the hub's origin under :data:`GATEWAY_PREFIX`."""
    if not subdomain_host:
        return ""
    from urllib.parse import urlsplit

    if subdomain_hook is None:
        from jupyterhub.utils import subdomain_hook_idna as subdomain_hook
    parsed = urlsplit(subdomain_host)
    host = subdomain_hook(GATEWAY_SERVICE, parsed.hostname, kind="service")
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}"


def default_data_dir() -> str:
    """``--data-dir``'s default for ``clusterhub up`` and ``clusterhub build`` alike."""
    return ROOT_DATA_DIR if os.geteuid() == 0 else os.path.expanduser(USER_DATA_DIR)


@dataclass
class PlatformSettings:
    """Everything the hub and the gateway need to know about their platform.

    ``mode`` is "local" (``clusterhub up``: every user a set of local processes) or
    "kubernetes" (the Helm chart: every user a namespace); ``kubernetes`` holds that mode's
    settings (see :mod:`clusterhub.hubconfig`).
    """

    data_dir: str
    workshop_code: str
    admin_password: str
    gateway_encrypt_key: str
    # Local mode: the gateway's token as a hub service (it is `clusterhub up`'s child, not
    # the hub's); a new one each run.
    gateway_api_token: str = ""
    ip: str = ""
    port: int = 8000
    hub_port: int = 8081
    proxy_api_port: int = 8001
    gateway_api_port: int = 8010
    gateway_http_port: int = 8011
    gateway_tcp_port: int = 8012
    admin_users: list[str] = field(default_factory=lambda: ["admin"])
    proxy_command: list[str] = field(default_factory=lambda: ["configurable-http-proxy"])
    extra_config_file: str = ""
    # HTTPS on the public port (local mode: the proxy serves it); both or neither.
    tls_cert: str = ""
    tls_key: str = ""
    cull_idle_timeout: int = 3600
    concurrent_spawn_limit: int = 50
    # Local mode, as root: one system account and control group per user.
    user_accounts: bool = False
    account_prefix: str = "ch-"
    account_uid_min: int = 20000
    account_uid_max: int = 29999
    max_accounts: int = 0
    max_servers: int = 0
    # Local mode: starts (servers, kernels, schedulers, workers) at once; 0: one per core.
    start_slots: int = 0
    # Local mode: attendees expected at once (``--expect``): `up` says whether the machine's
    # memory holds them before the doors open.
    expect: int = 0
    mode: str = "local"
    kubernetes: dict = field(default_factory=dict)

    # -- derived paths ------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return os.path.join(self.data_dir, *parts)

    @property
    def gateway_url(self) -> str:
        """Where the hub and notebooks reach the gateway's HTTP API (loopback, no proxy hop)."""
        return f"http://127.0.0.1:{self.gateway_http_port}{GATEWAY_PREFIX}"

    @property
    def gateway_proxy_address(self) -> str:
        return f"gateway://127.0.0.1:{self.gateway_tcp_port}"

    @property
    def local_url(self) -> str:
        host = self.ip if self.ip not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}/"

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=1)
        os.replace(path + ".tmp", path)

    @classmethod
    def load(cls, path: str | None = None) -> PlatformSettings:
        path = path or os.environ.get(SETTINGS_ENV)
        if not path:
            raise RuntimeError(
                f"{SETTINGS_ENV} is not set: start the platform with `clusterhub up`"
            )
        with open(path) as f:
            data = json.load(f)
        known = {f.name for f in fields(cls)}
        settings = cls(**{k: v for k, v in data.items() if k in known})
        if settings.mode not in ("local", "kubernetes"):
            raise ValueError(f"mode: must be 'local' or 'kubernetes', not {settings.mode!r}")
        return settings
