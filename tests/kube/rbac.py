"""RBAC for the emulator: who a token is, what the stored Roles and bindings let them do, and
the escalation rule for writing Roles and bindings. Pure functions over plain dicts.

As in kube-apiserver's RBAC authorizer:

* a request is allowed if any rule of any role bound to the caller (a RoleBinding in the
  request's namespace, or a ClusterRoleBinding) matches its verb, API group, resource (or
  ``resource/subresource``) and, when the rule lists ``resourceNames``, its object name;
  ``create`` and collection verbs have no object name, so such rules never allow them;
* ``system:masters`` may do anything (the test harness's admin token is in it);
* a Role or ClusterRole may be written only by someone who already holds every permission
  in it, or holds ``escalate`` on that kind; a binding only by someone who holds every
  permission of the role it references, or ``bind`` on that role.

Not emulated: aggregated ClusterRoles, non-resource URLs beyond discovery (allowed to every
authenticated caller, as the default ``system:discovery`` binding does), impersonation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
RBAC_GROUP = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class Identity:
    name: str
    groups: tuple[str, ...] = (AUTHENTICATED,)

    @property
    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) for a ServiceAccount, else None."""
        parts = self.name.split(":")
        if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
            return parts[2], parts[3]
        return None


ADMIN = Identity("system:admin", (MASTERS, AUTHENTICATED))


def service_account_identity(namespace: str, name: str) -> Identity:
    return Identity(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
    )


@dataclass(frozen=True)
class Request:
    """What is asked: the attributes the authorizer decides on."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def rule_allows(rule: Obj, req: Request) -> bool:
    def has(key: str, value: str) -> bool:
        listed = rule.get(key) or []
        return "*" in listed or value in listed

    if not has("verbs", req.verb) or not has("apiGroups", req.group):
        return False
    resources = rule.get("resources") or []
    if not (
        "*" in resources
        or req.full_resource in resources
        or (req.subresource and f"*/{req.subresource}" in resources)
        or (not req.subresource and req.resource in resources)
    ):
        return False
    names = rule.get("resourceNames") or []
    return not names or (bool(req.name) and req.name in names)


def subject_matches(subject: Obj, who: Identity, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    if kind == "ServiceAccount":
        account = who.service_account
        namespace = subject.get("namespace") or binding_namespace
        return account == (namespace, subject.get("name"))
    if kind == "User":
        return subject.get("name") == who.name
    if kind == "Group":
        return subject.get("name") in who.groups
    return False


@dataclass
class Store:
    """How the authorizer reads the stored RBAC objects (namespace "" for cluster kinds)."""

    get: Callable[[str, str, str], Obj | None]  # (plural, namespace, name)
    list: Callable[[str, str | None], list[Obj]]  # (plural, namespace or None for all)


def rules_of(who: Identity, namespace: str, store: Store) -> list[Obj]:
    """Every rule that applies to ``who`` in ``namespace`` ("" = cluster scope only)."""
    rules: list[Obj] = []
    bindings: list[tuple[Obj, str]] = [(b, "") for b in store.list("clusterrolebindings", None)]
    if namespace:
        bindings += [(b, namespace) for b in store.list("rolebindings", namespace)]
    for binding, binding_ns in bindings:
        if not any(subject_matches(s, who, binding_ns) for s in binding.get("subjects") or []):
            continue
        ref = binding.get("roleRef") or {}
        if ref.get("kind") == "ClusterRole":
            role = store.get("clusterroles", "", ref.get("name", ""))
        elif ref.get("kind") == "Role" and binding_ns:
            role = store.get("roles", binding_ns, ref.get("name", ""))
        else:
            role = None
        if role is not None:
            rules.extend(role.get("rules") or [])
    return rules


def allowed(who: Identity, req: Request, store: Store) -> bool:
    if MASTERS in who.groups:
        return True
    return any(rule_allows(rule, req) for rule in rules_of(who, req.namespace, store))


def forbidden_message(who: Identity, req: Request) -> str:
    """kube-apiserver's words for a refused request."""
    what = f"{req.full_resource if not req.group else req.full_resource + '.' + req.group}"
    subject = f'{what} "{req.name}"' if req.name else what
    scope = f'in the namespace "{req.namespace}"' if req.namespace else "at the cluster scope"
    return (
        f'{subject} is forbidden: User "{who.name}" cannot {req.verb} resource '
        f'"{req.full_resource}" in API group "{req.group}" {scope}'
    )


def _expand(rule: Obj) -> Iterable[Request]:
    """The single permissions a rule grants (wildcards stay literal: only a wildcard covers
    a wildcard)."""
    for verb in rule.get("verbs") or []:
        for group in rule.get("apiGroups") or [""]:
            for resource in rule.get("resources") or []:
                base, _, sub = resource.partition("/")
                for name in rule.get("resourceNames") or [""]:
                    yield Request(verb, group, base, sub, "", name)


def _held_covers(held: list[Obj], want: Request) -> bool:
    for rule in held:
        verbs, groups = rule.get("verbs") or [], rule.get("apiGroups") or []
        resources, names = rule.get("resources") or [], rule.get("resourceNames") or []
        if "*" not in verbs and want.verb not in verbs:
            continue
        if "*" not in groups and want.group not in groups:
            continue
        if not ("*" in resources or want.full_resource in resources):
            if not (want.subresource and f"*/{want.subresource}" in resources):
                continue
        if names and (not want.name or want.name not in names):
            continue
        return True
    return False


def escalation_refusal(
    who: Identity, kind: str, obj: Obj, namespace: str, store: Store
) -> str | None:
    """Why ``who`` may not write this Role/ClusterRole/(Cluster)RoleBinding, or None."""
    if MASTERS in who.groups:
        return None
    held = rules_of(who, namespace, store)
    name = (obj.get("metadata") or {}).get("name", "")
    if kind in ("Role", "ClusterRole"):
        plural = "roles" if kind == "Role" else "clusterroles"
        if any(rule_allows(r, Request("escalate", RBAC_GROUP, plural, "", namespace, name))
               for r in held):  # fmt: skip
            return None
        wanted = obj.get("rules") or []
        what = f'{plural}.{RBAC_GROUP} "{name}"'
    else:
        ref = obj.get("roleRef") or {}
        plural = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
        bind = Request("bind", RBAC_GROUP, plural, "", namespace, ref.get("name", ""))
        if any(rule_allows(r, bind) for r in held):
            return None
        role = (
            store.get("clusterroles", "", ref.get("name", ""))
            if plural == "clusterroles"
            else store.get("roles", namespace, ref.get("name", ""))
        )
        if role is None:
            return None  # a binding to a missing role grants nothing (the real server agrees)
        wanted = role.get("rules") or []
        binding_plural = "rolebindings" if kind == "RoleBinding" else "clusterrolebindings"
        what = f'{binding_plural}.{RBAC_GROUP} "{name}"'
    missing = [w for rule in wanted for w in _expand(rule) if not _held_covers(held, w)]
    if not missing:
        return None
    shown = "; ".join(
        f"{{APIGroups:[{m.group!r}], Resources:[{m.full_resource!r}], Verbs:[{m.verb!r}]"
        + (f", ResourceNames:[{m.name!r}]" if m.name else "")
        + "}"
        for m in missing[:5]
    )
    return (
        f'{what} is forbidden: user "{who.name}" is attempting to grant RBAC permissions not '
        f"currently held: {shown}"
    )
