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
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from traitlets import Bool, Dict, Float, List, TraitError, Unicode
from traitlets.config import Configurable

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
# Kubernetes mode: the hub's name (labels its spaces) and its users' namespaces' prefix, as the
# spawner, the gateway and the chart's defaults know them.
DEFAULT_HUB_NAME = "clusterhub"
DEFAULT_NAMESPACE_PREFIX = "clusterhub-"
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


class KubernetesSettings(Configurable):
    """Kubernetes mode's settings: the ``kubernetes`` section of the settings file, which the
    Helm chart writes from its values and both the hub and the gateway read.

    Typed once, here: :meth:`from_dict` refuses an unknown key or a value of the wrong type,
    naming it, so a chart and a release that disagree fail at start, not at a user's spawn.
    """

    hub_namespace = Unicode(
        config=True, help="The namespace of the hub, the proxy and the gateway (required)."
    )
    hub_name = Unicode(
        DEFAULT_HUB_NAME,
        config=True,
        help="The hub's name (the release's): labels every space and cluster pod it owns.",
    )
    namespace_prefix = Unicode(
        DEFAULT_NAMESPACE_PREFIX,
        config=True,
        help="Prefix of every user's namespace (the chart's singleuser.namespacePrefix).",
    )
    notebook_image = Unicode(config=True, help="The notebook image, as pulled (required).")
    cluster_image = Unicode(
        config=True, help="The one image of scheduler, worker and engine pods (required)."
    )
    image_pull_policy = Unicode(
        "IfNotPresent", config=True, help="Pull policy of the notebook and cluster images."
    )
    image_pull_secrets = List(
        config=True,
        help="Secrets of the hub's namespace with registry credentials, copied into each space "
        "(names, or {name: ...} as in a pod spec).",
    )
    profiles = List(
        Dict(), config=True, help="The spawn form's profiles (see clusterhub.profiles)."
    )
    network_policy = Dict(
        config=True,
        help="The allowances of each space's NetworkPolicies (dns, internet, private_ips, "
        "cloud_metadata, gateway_to_scheduler, notebook_to_engines, kube_api).",
    )
    kube_api_cidrs = List(
        Unicode(), config=True, help="The API server's addresses: where kube_api egress may go."
    )
    user_node_selector = Dict(
        Unicode(), config=True, help="Node selector of every user pod (notebook and engines)."
    )
    user_tolerations = List(Dict(), config=True, help="Tolerations of every user pod.")
    delete_namespace_on_stop = Bool(
        True, config=True, help="Delete a user's namespace when their server stops."
    )
    keep_home_pvc = Bool(
        True, config=True, help="Keep the home volume when the namespace is deleted."
    )
    home_storage = Dict(
        per_key_traits={"size": Unicode(), "storage_class": Unicode()},
        config=True,
        help="Each user's home volume: size (e.g. 10Gi; empty: no volume) and storage_class.",
    )
    proxy_api_url = Unicode(
        config=True, help="The proxy pod's API URL; empty: the hub starts a proxy of its own."
    )
    hub_bind_url = Unicode(config=True, help="Where the hub listens (JupyterHub.hub_bind_url).")
    hub_connect_url = Unicode(
        config=True, help="Where pods reach the hub (JupyterHub.hub_connect_url)."
    )
    gateway_url = Unicode(config=True, help="The gateway's HTTP URL, as notebooks reach it.")
    gateway_proxy_address = Unicode(
        config=True, help="The gateway's scheduler proxy, gateway://HOST:PORT."
    )
    cluster_start_timeout = Float(
        600.0, config=True, help="Seconds a cluster's scheduler may take to start."
    )
    worker_start_timeout = Float(600.0, config=True, help="Seconds a worker may take to start.")
    subdomain_host = Unicode(
        config=True, help="Per-user subdomains (JupyterHub.subdomain_host); empty: none."
    )
    space_roles = Dict(
        config=True,
        help="What the hub binds in each space for hub and gateway: "
        "{cluster_role, service_account} each (KubeSpaceSpawner.space_roles).",
    )

    REQUIRED = ("hub_namespace", "notebook_image", "cluster_image")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> KubernetesSettings:
        """The section as written in a settings file; ValueError naming the first bad key."""
        if not isinstance(values, dict):
            raise ValueError(f"kubernetes: must be an object, not {type(values).__name__}")
        known = cls.class_trait_names(config=True)
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"kubernetes.{unknown[0]}: not a setting; the settings are {', '.join(known)}"
            )
        settings = cls()
        for name, value in values.items():
            try:
                setattr(settings, name, value)
            except TraitError:
                info = cls.class_traits()[name].info()
                raise ValueError(f"kubernetes.{name}: must be {info}, not {value!r}") from None
        return settings

    def check_required(self) -> None:
        for name in self.REQUIRED:
            if not getattr(self, name):
                raise ValueError(f"kubernetes.{name}: required in kubernetes mode")

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.class_trait_names(config=True)}


@dataclass
class PlatformSettings:
    """Everything the hub and the gateway need to know about their platform.

    ``mode`` is "local" (``clusterhub up``: every user a set of local processes) or
    "kubernetes" (the Helm chart: every user a namespace); ``kubernetes`` holds that mode's
    settings (:class:`KubernetesSettings`).
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
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)

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
            json.dump(self.to_dict(), f, indent=1)
        os.replace(path + ".tmp", path)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["kubernetes"] = self.kubernetes.to_dict()
        return data

    @classmethod
    def load(cls, path: str | None = None) -> PlatformSettings:
        path = path or os.environ.get(SETTINGS_ENV)
        if not path:
            raise RuntimeError(
                f"{SETTINGS_ENV} is not set: start the platform with `clusterhub up`"
            )
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: settings must be an object, not {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        for name, value in data.items():
            _check_type(name, known[name].type, value)
        missing = [f.name for f in known.values() if f.name not in data and _required(f)]
        if missing:
            raise ValueError(f"{missing[0]}: required in the settings file {path}")
        data["kubernetes"] = KubernetesSettings.from_dict(data.get("kubernetes") or {})
        settings = cls(**data)
        if settings.mode not in ("local", "kubernetes"):
            raise ValueError(f"mode: must be 'local' or 'kubernetes', not {settings.mode!r}")
        if settings.mode == "kubernetes":
            settings.kubernetes.check_required()
        return settings


# The settings file's field types, as PlatformSettings declares them (its annotations are
# strings: ``from __future__ import annotations``); "kubernetes" is checked by its own class.
_FIELD_TYPES = {
    "str": (str, "a string"),
    "int": (int, "a whole number"),
    "bool": (bool, "true or false"),
}


def _check_type(name: str, declared: str, value: Any) -> None:
    if declared == "list[str]":
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"{name}: must be a list of strings, not {value!r}")
        return
    if declared not in _FIELD_TYPES:
        return
    kind, words = _FIELD_TYPES[declared]
    # JSON's true is no number here, and a number is no flag.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name}: must be {words}, not {value!r}")


def _required(f) -> bool:
    return f.default is MISSING and f.default_factory is MISSING
