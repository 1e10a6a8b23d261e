"""The kinds the emulator serves: their API groups, names, scopes and subresources, and the
field labels the real server accepts per kind."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # The main endpoint ignores status writes (status is written through /status).
    has_status: bool = False
    # DELETE answers with the object instead of a Status (pods, services, namespaces).
    return_deleted_object: bool = False
    # PUT of a missing object creates it (true for the RBAC kinds in a real server).
    create_on_update: bool = False
    name_rule: str = "subdomain"

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The group-qualified resource name real error messages use (``deployments.apps``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


_RBAC = "rbac.authorization.k8s.io"
RESOURCES: list[ResourceType] = [
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        ("ns",),
        ("status",),
        True,
        True,
        name_rule="label",
    ),
    ResourceType("", "v1", "nodes", "Node", False, ("no",), ("status",), True),
    ResourceType(
        "", "v1", "pods", "Pod", True, ("po",), ("status", "log", "binding", "exec"), True, True
    ),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        True,
        ("svc",),
        ("status",),
        True,
        True,
        name_rule="dns1035",
    ),
    ResourceType("", "v1", "secrets", "Secret", True),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), ("token",)),
    ResourceType(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        True,
        ("pvc",),
        ("status",),
        True,
    ),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",), ("status",), True),
    ResourceType("", "v1", "limitranges", "LimitRange", True, ("limits",)),
    ResourceType("", "v1", "events", "Event", True, ("ev",)),
    ResourceType(
        "apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale"), True
    ),
    ResourceType(
        "apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale"), True
    ),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    ResourceType(_RBAC, "v1", "roles", "Role", True, create_on_update=True, name_rule="path"),
    ResourceType(
        _RBAC, "v1", "rolebindings", "RoleBinding", True, create_on_update=True, name_rule="path"
    ),
    ResourceType(
        _RBAC, "v1", "clusterroles", "ClusterRole", False, create_on_update=True, name_rule="path"
    ),
    ResourceType(
        _RBAC,
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        False,
        create_on_update=True,
        name_rule="path",
    ),
]
_BY_GV: dict[tuple[str, str], dict[str, ResourceType]] = {}
for _rt in RESOURCES:
    _BY_GV.setdefault((_rt.group, _rt.version), {})[_rt.plural] = _rt
_BY_KEY = {rt.key: rt for rt in RESOURCES}
_KNOWN_KINDS = {(rt.api_version, rt.kind) for rt in RESOURCES}
NAMESPACES = _BY_KEY["/namespaces"]
NODES = _BY_KEY["/nodes"]
PODS = _BY_KEY["/pods"]
SERVICES = _BY_KEY["/services"]
SECRETS = _BY_KEY["/secrets"]
SERVICE_ACCOUNTS = _BY_KEY["/serviceaccounts"]
DEPLOYMENTS = _BY_KEY["apps/deployments"]
REPLICASETS = _BY_KEY["apps/replicasets"]
CLAIMS = _BY_KEY["/persistentvolumeclaims"]
QUOTAS = _BY_KEY["/resourcequotas"]
LIMIT_RANGES = _BY_KEY["/limitranges"]

# Field labels the real server accepts per resource (besides metadata.name/namespace).
_FIELD_LABELS: dict[str, set[str]] = {
    "pods": {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    },
    "events": {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
    "namespaces": {"status.phase"},
    "secrets": {"type"},
    "nodes": {"spec.unschedulable"},
    "replicasets": {"status.replicas"},
}
_FIELD_ALIASES = {"source": "source.component"}

_UNDELETABLE_NAMESPACES = {"default", "kube-system", "kube-public"}
