"""Tests for clusterhub.spawner.kubeobjects: literal manifests, schema validation, slugs."""

from __future__ import annotations

import copy
import json
import re

import kubernetes_validate
import pytest

from clusterhub.spawner import kubeobjects as ko

K8S_VERSION = "1.34.0"
NS = "clusterhub-alice"
HUB_NS = "clusterhub"
MANAGED = {"app.kubernetes.io/managed-by": "clusterhub"}
RBAC = "rbac.authorization.k8s.io"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# ------------------------------------------------------------------------------------------
# Names and labels
# ------------------------------------------------------------------------------------------


def test_namespace_name_keeps_plain_slugs():
    assert ko.make_namespace_name("clusterhub-", "alice") == "clusterhub-alice"
    assert ko.make_namespace_name("clusterhub-", "a-b") == "clusterhub-a-b"
    assert ko.make_namespace_name("ch-", "user42") == "ch-user42"


def test_namespace_name_a_dot_b_differs_from_a_dash_b():
    dotted = ko.make_namespace_name("clusterhub-", "a.b")
    dashed = ko.make_namespace_name("clusterhub-", "a-b")
    assert dashed == "clusterhub-a-b"
    assert dotted != dashed
    assert re.fullmatch(r"clusterhub-a-b---[0-9a-f]{8}", dotted)
    assert DNS_LABEL.match(dotted)


def test_namespace_name_long_name_is_truncated_valid_and_distinct():
    long_a = "a" * 200
    long_b = "a" * 199 + "b"  # same 51-char readable prefix after truncation
    name_a = ko.make_namespace_name("clusterhub-", long_a)
    name_b = ko.make_namespace_name("clusterhub-", long_b)
    assert len(name_a) == 63 and len(name_b) == 63
    assert DNS_LABEL.match(name_a) and DNS_LABEL.match(name_b)
    assert name_a != name_b
    assert name_a.startswith("clusterhub-aaaa")
    # exactly-fitting plain names are kept, one more character forces the hash
    fits = "b" * (63 - len("clusterhub-"))
    assert ko.make_namespace_name("clusterhub-", fits) == "clusterhub-" + fits
    assert "---" in ko.make_namespace_name("clusterhub-", fits + "b")


def test_namespace_name_non_ascii():
    name = ko.make_namespace_name("clusterhub-", "Zoë-ñandú")
    assert re.fullmatch(r"clusterhub-zoe-nandu---[0-9a-f]{8}", name)
    assert name != ko.make_namespace_name("clusterhub-", "zoe-nandu")
    only_cjk = ko.make_namespace_name("clusterhub-", "日本語")
    assert DNS_LABEL.match(only_cjk)
    assert only_cjk != ko.make_namespace_name("clusterhub-", "中文")
    assert DNS_LABEL.match(ko.make_namespace_name("clusterhub-", "😀" * 100))


def test_namespace_name_case():
    upper = ko.make_namespace_name("clusterhub-", "Alice")
    assert DNS_LABEL.match(upper)
    assert upper.startswith("clusterhub-alice---")
    # names that differ only by case get different namespaces
    assert upper != ko.make_namespace_name("clusterhub-", "alice")
    assert upper != ko.make_namespace_name("clusterhub-", "ALICE")
    assert ko.make_namespace_name("clusterhub-", "ALICE") != ko.make_namespace_name(
        "clusterhub-", "aLICE"
    )


def test_namespace_name_hashed_never_equals_plain():
    hashed = ko.make_namespace_name("clusterhub-", "a.b")
    raw_lookalike = hashed.removeprefix("clusterhub-")  # a user literally called that
    assert ko.make_namespace_name("clusterhub-", raw_lookalike) != hashed
    assert ko.make_namespace_name("clusterhub-", "a--b") != ko.make_namespace_name(
        "clusterhub-", "a-b"
    )


def test_namespace_name_is_deterministic_and_avoids_reserved():
    assert ko.make_namespace_name("clusterhub-", "Zoë") == ko.make_namespace_name(
        "clusterhub-", "Zoë"
    )
    # a user called "system" must not land in the hub's namespace "clusterhub-system"
    name = ko.make_namespace_name("clusterhub-", "system", reserved={"clusterhub-system"})
    assert name != "clusterhub-system" and name.startswith("clusterhub-system---")
    assert ko.make_namespace_name("kube", "-system") != "kube-system"


@pytest.mark.parametrize(
    ("prefix", "username", "argument"),
    [
        ("clusterhub-", "", "username"),
        ("clusterhub-", None, "username"),
        ("", "alice", "template_prefix"),
        ("Clusterhub-", "alice", "template_prefix"),
        ("cluster_hub-", "alice", "template_prefix"),
        ("-hub", "alice", "template_prefix"),
        ("kube-", "system", "template_prefix"),
        ("a" * 41, "alice", "template_prefix"),
    ],
)
def test_namespace_name_rejects_invalid_input(prefix, username, argument):
    with pytest.raises(ValueError, match=argument):
        ko.make_namespace_name(prefix, username)


def test_label_value():
    assert ko.label_value("alice") == "alice"
    assert ko.label_value("Alice.B_c-1") == "Alice.B_c-1"  # valid label values stay as-is
    non_ascii = ko.label_value("Zoë-ñandú")
    assert re.fullmatch(r"Zoe-nandu---[0-9a-f]{8}", non_ascii)
    long = ko.label_value("x" * 200)
    assert len(long) == 63 and LABEL_VALUE.match(long)
    for raw in ["a b", "-a", "a-", "user@example.org", "日本", "x" * 64, "a---b", ""]:
        value = ko.label_value(raw)
        assert LABEL_VALUE.match(value), (raw, value)
        assert "---" in value
    assert ko.label_value("a b") != ko.label_value("a_b")
    assert ko.label_value("a@b") != ko.label_value("a-b")


def test_space_labels_and_annotations():
    assert ko.space_labels("workshop", "Zoë@example.org") == {
        "app.kubernetes.io/managed-by": "clusterhub",
        "hub.clusterhub.io/name": "workshop",
        "hub.clusterhub.io/user": ko.label_value("Zoë@example.org"),
    }
    assert ko.space_annotations("workshop", "Zoë@example.org") == {
        "hub.clusterhub.io/hub": "workshop",
        "hub.clusterhub.io/username": "Zoë@example.org",
    }
    with pytest.raises(ValueError, match="hub_name"):
        ko.space_labels("", "alice")
    with pytest.raises(ValueError, match="username"):
        ko.space_labels("workshop", "")
    with pytest.raises(ValueError, match="username"):
        ko.space_annotations("workshop", "")


# ------------------------------------------------------------------------------------------
# Literal manifests
# ------------------------------------------------------------------------------------------

SPACE_LABELS = {
    "app.kubernetes.io/managed-by": "clusterhub",
    "hub.clusterhub.io/name": "workshop",
    "hub.clusterhub.io/user": "alice",
}


def test_make_namespace_literal():
    ns = ko.make_namespace(
        NS,
        ko.space_labels("workshop", "alice"),
        ko.space_annotations("workshop", "alice"),
    )
    assert ns == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "clusterhub-alice",
            "labels": {
                "app.kubernetes.io/managed-by": "clusterhub",
                "hub.clusterhub.io/name": "workshop",
                "hub.clusterhub.io/user": "alice",
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
            "annotations": {
                "hub.clusterhub.io/hub": "workshop",
                "hub.clusterhub.io/username": "alice",
            },
        },
    }
    validate(ns)


def test_make_namespace_rejects_bad_input():
    with pytest.raises(ValueError, match="name"):
        ko.make_namespace("Alice", SPACE_LABELS)
    with pytest.raises(ValueError, match="labels"):
        ko.make_namespace(NS, {"hub.clusterhub.io/user": "Zoë"})
    with pytest.raises(ValueError, match="pod_security_enforce"):
        ko.make_namespace(NS, SPACE_LABELS, pod_security_enforce="strict")
    plain = ko.make_namespace(NS, SPACE_LABELS, pod_security_enforce=None, pod_security_warn=None)
    assert not any(k.startswith("pod-security") for k in plain["metadata"]["labels"])


def test_make_resource_quota_literal():
    quota = ko.make_resource_quota(
        NS, cpu_limit="4", memory_limit="8Gi", max_pods=12, labels=SPACE_LABELS
    )
    assert quota == {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "space-quota", "namespace": NS, "labels": SPACE_LABELS},
        "spec": {
            "hard": {
                "limits.cpu": "4",
                "limits.memory": "8Gi",
                "requests.cpu": "4",
                "requests.memory": "8Gi",
                "pods": "12",
                "services": "10",
                "services.nodeports": "0",
                "services.loadbalancers": "0",
            }
        },
    }
    validate(quota)


def test_make_resource_quota_options_and_errors():
    quota = ko.make_resource_quota(
        NS,
        cpu_limit="4",
        memory_limit="8Gi",
        cpu_request="2500m",
        memory_request="4Gi",
        max_pods=5,
        storage="20Gi",
        max_pvcs=2,
    )
    hard = quota["spec"]["hard"]
    assert hard["requests.cpu"] == "2500m" and hard["requests.memory"] == "4Gi"
    assert hard["requests.storage"] == "20Gi" and hard["persistentvolumeclaims"] == "2"
    validate(quota)
    with pytest.raises(ValueError, match="cpu_limit"):
        ko.make_resource_quota(NS, cpu_limit="four", memory_limit="8Gi", max_pods=1)
    with pytest.raises(ValueError, match="memory_limit"):
        ko.make_resource_quota(NS, cpu_limit="4", memory_limit="8GB", max_pods=1)
    with pytest.raises(ValueError, match="max_pods"):
        ko.make_resource_quota(NS, cpu_limit="4", memory_limit="8Gi", max_pods=0)
    with pytest.raises(ValueError, match="cpu_request"):
        ko.make_resource_quota(NS, cpu_limit="1", cpu_request="2", memory_limit="8Gi", max_pods=1)
    with pytest.raises(ValueError, match="namespace"):
        ko.make_resource_quota("", cpu_limit="4", memory_limit="8Gi", max_pods=1)


def test_make_limit_range_literal():
    limits = ko.make_limit_range(
        NS,
        default_cpu_request="250m",
        default_memory_request="512Mi",
        default_cpu_limit="1",
        default_memory_limit="1Gi",
        max_cpu="2",
        max_memory="4Gi",
    )
    assert limits == {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "space-limits", "namespace": NS, "labels": MANAGED},
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": "1", "memory": "1Gi"},
                    "defaultRequest": {"cpu": "250m", "memory": "512Mi"},
                    "max": {"cpu": "2", "memory": "4Gi"},
                }
            ]
        },
    }
    validate(limits)


def test_make_limit_range_rejects_impossible_profiles():
    good = dict(
        default_cpu_request="250m",
        default_memory_request="512Mi",
        default_cpu_limit="1",
        default_memory_limit="1Gi",
        max_cpu="2",
        max_memory="4Gi",
    )
    with pytest.raises(ValueError, match="default_cpu_limit"):
        ko.make_limit_range(NS, **{**good, "default_cpu_limit": "3"})
    with pytest.raises(ValueError, match="default_memory_request"):
        ko.make_limit_range(NS, **{**good, "default_memory_request": "2Gi"})
    with pytest.raises(ValueError, match="max_memory"):
        ko.make_limit_range(NS, **{**good, "max_memory": "lots"})


def test_parse_quantity():
    assert ko.parse_quantity("500m") == ko.parse_quantity("0.5")
    assert ko.parse_quantity("1Gi") == 1024**3
    assert ko.parse_quantity("1G") == 10**9
    assert ko.parse_quantity("1e3") == 1000
    assert ko.parse_quantity(4) == 4
    assert ko.parse_quantity("1Gi") > ko.parse_quantity("1000Mi")
    for bad in ["", "1 Gi", "-1", "1gb", "Gi", None, True]:
        with pytest.raises(ValueError, match="cpu"):
            ko.parse_quantity(bad, "cpu")


def test_make_service_account_literal():
    sa = ko.make_service_account(NS, "notebook")
    assert sa == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "notebook", "namespace": NS, "labels": MANAGED},
    }
    validate(sa)


def test_make_role_literal():
    role = ko.make_role(NS, "clusterhub-notebook")
    assert role == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "clusterhub-notebook", "namespace": NS, "labels": MANAGED},
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": ["apps"],
                "resources": ["deployments"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["apps"],
                "resources": ["deployments/scale"],
                "verbs": ["get", "patch", "update"],
            },
        ],
    }
    validate(role)
    # no secrets, no pod creation, no wildcards
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert resources == {"pods", "deployments", "deployments/scale"}
    assert not any("*" in rule["verbs"] or "create" in rule["verbs"] for rule in role["rules"])


def test_make_role_binding_literal():
    binding = ko.make_role_binding(NS, "clusterhub-notebook", "notebook")
    assert binding == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "clusterhub-notebook", "namespace": NS, "labels": MANAGED},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "clusterhub-notebook",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "notebook", "namespace": NS}],
    }
    validate(binding)
    with pytest.raises(ValueError, match="service_account"):
        ko.make_role_binding(NS, "clusterhub-notebook", "Not Valid")


def _grants(rules):
    return {
        (group, resource, verb, name)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [""]
    }


def test_hub_rules_cover_notebook_role():
    """RBAC escalation prevention: the hub can only create the notebook Role in a space if it
    holds every permission in it there itself."""
    granted = _grants(ko.HUB_SPACE_RULES)
    for group, resource, verb, _ in _grants(ko.NOTEBOOK_ROLE_RULES):
        assert (group, resource, verb, "") in granted, (group, resource, verb)


def test_cluster_wide_the_hub_makes_namespaces_reads_pods_and_binds_only_the_space_roles():
    rules = ko.hub_cluster_rules(["ns-ch-gateway-in-space", "ns-ch-hub-in-space"])
    assert rules == [
        {
            "apiGroups": [""],
            "resources": ["namespaces"],
            "verbs": ["create", "delete", "get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [RBAC], "resources": ["rolebindings"], "verbs": ["create"]},
        {
            "apiGroups": [RBAC],
            "resources": ["clusterroles"],
            "verbs": ["bind"],
            "resourceNames": ["ns-ch-gateway-in-space", "ns-ch-hub-in-space"],
        },
    ]
    granted = _grants(rules)
    # Nothing it could read secrets with, or run anything with, outside the spaces.
    writes = {"create", "delete", "patch", "update"}
    assert not {g for g in granted if g[1] in ("secrets", "deployments")}
    assert not {g for g in granted if g[1] == "pods" and g[2] in writes}
    assert not {g for g in granted if g[2] in ("*", "escalate", "impersonate")}
    with pytest.raises(ValueError, match="space_roles"):
        ko.hub_cluster_rules(["Not A Name"])


def test_in_a_space_the_hub_may_do_what_making_it_needs():
    all_verbs = {v for rule in ko.HUB_SPACE_RULES for v in rule["verbs"]}
    assert not all_verbs & {"*", "escalate", "bind", "impersonate", "deletecollection"}
    resources = {r for rule in ko.HUB_SPACE_RULES for r in rule["resources"]}
    assert "*" not in resources and "namespaces" not in resources
    for needed in [
        "pods",
        "persistentvolumeclaims",
        "services",
        "secrets",
        "serviceaccounts",
        "resourcequotas",
        "limitranges",
        "networkpolicies",
        "deployments",
        "roles",
        "rolebindings",
    ]:
        rule = next(rule for rule in ko.HUB_SPACE_RULES if needed in rule["resources"])
        assert {"create", "delete", "get", "list", "watch"} <= set(rule["verbs"]), needed
    # In its own namespace only the pull secrets it copies.
    assert ko.HUB_HOME_RULES == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]


def test_the_hub_may_replace_the_settings_it_replaces_on_start():
    # spawner/kube.py replaces these when a space's namespace kept them over a stop.
    kept = (
        "resourcequotas",
        "limitranges",
        "networkpolicies",
        "roles",
        "rolebindings",
        "configmaps",
    )
    for plural in kept:
        rule = next(rule for rule in ko.HUB_SPACE_RULES if plural in rule["resources"])
        assert "update" in rule["verbs"], plural


def test_the_space_record_holds_the_profiles_maxima_and_the_chosen_sizes():
    record = ko.make_space_record(
        "clusterhub-alice",
        limits={"workers": 8, "worker_cores": 2, "worker_memory_gib": 4},
        options={"profile": "dask", "workers": 2, "worker_cores": 2, "worker_memory_gib": 3},
    )
    assert record == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "clusterhub-space",
            "namespace": "clusterhub-alice",
            "labels": {"app.kubernetes.io/managed-by": "clusterhub"},
        },
        "data": {
            "limits": '{"worker_cores": 2, "worker_memory_gib": 4, "workers": 8}',
            "options": (
                '{"profile": "dask", "worker_cores": 2, "worker_memory_gib": 3, "workers": 2}'
            ),
        },
    }
    assert ko.read_space_record(record["data"]) == (
        {"workers": 8, "worker_cores": 2, "worker_memory_gib": 4},
        {"profile": "dask", "workers": 2, "worker_cores": 2, "worker_memory_gib": 3},
    )


@pytest.mark.parametrize(
    "data", [None, {}, {"limits": "not json"}, {"limits": "[8]"}, {"limits": "{}", "options": "3"}]
)
def test_what_is_not_a_space_record_is_refused(data):
    with pytest.raises(ValueError, match="clusterhub-space: not a space record"):
        ko.read_space_record(data)


def test_the_notebook_has_no_rights_on_the_space_record():
    # Only the hub writes it and only the gateway reads it: the attendee's code can do neither.
    assert not any("configmaps" in rule["resources"] for rule in ko.NOTEBOOK_ROLE_RULES)


def test_hub_cluster_role_and_binding():
    role = ko.make_hub_cluster_role("clusterhub-hub", space_roles=["ns-ch-hub-in-space"])
    assert role["kind"] == "ClusterRole"
    assert role["rules"] == ko.hub_cluster_rules(["ns-ch-hub-in-space"])
    role["rules"][0]["verbs"].append("escalate")  # a copy: the module's data is untouched
    assert "escalate" not in ko.HUB_CLUSTER_RULES[0]["verbs"]
    binding = ko.make_hub_cluster_role_binding(
        "clusterhub-hub",
        cluster_role="clusterhub-hub",
        service_account="hub",
        service_account_namespace=HUB_NS,
    )
    assert binding == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "clusterhub-hub", "labels": MANAGED},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "clusterhub-hub",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": HUB_NS}],
    }
    validate(binding)
    validate(ko.make_hub_cluster_role("clusterhub-hub", space_roles=["ns-ch-hub-in-space"]))


def test_a_space_role_binding_grants_a_platform_account_a_cluster_role_in_one_namespace():
    binding = ko.make_space_role_binding(
        NS,
        "clusterhub-hub",
        cluster_role="ns-ch-hub-in-space",
        service_account="ch-hub",
        service_account_namespace=HUB_NS,
    )
    assert binding == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "clusterhub-hub", "namespace": NS, "labels": MANAGED},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "ns-ch-hub-in-space"},
        "subjects": [{"kind": "ServiceAccount", "name": "ch-hub", "namespace": HUB_NS}],
    }
    validate(binding)
    with pytest.raises(ValueError, match="service_account_namespace"):
        ko.make_space_role_binding(
            NS, "b", cluster_role="r", service_account="s", service_account_namespace="Bad_NS"
        )


# ------------------------------------------------------------------------------------------
# Network policies
# ------------------------------------------------------------------------------------------


def _policies(**allow):
    return {
        p["metadata"]["name"]: p
        for p in ko.make_network_policies(NS, hub_namespace=HUB_NS, allow=allow or None)
    }


def test_network_policy_notebook_from_hub_literal():
    assert _policies()["notebook-from-hub"] == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "notebook-from-hub", "namespace": NS, "labels": MANAGED},
        "spec": {
            "podSelector": {"matchLabels": {"component": "singleuser-server"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "clusterhub"}
                            },
                            "podSelector": {
                                "matchExpressions": [
                                    {
                                        "key": "app.kubernetes.io/component",
                                        "operator": "In",
                                        "values": ["hub", "proxy"],
                                    }
                                ]
                            },
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": 8888}],
                }
            ],
        },
    }


def test_network_policy_default_deny_and_defaults():
    policies = _policies()
    assert list(policies) == [
        "default-deny",
        "notebook-from-hub",
        "notebook-to-hub",
        "engines-internal",
        "notebook-to-engines",
        "gateway-to-dask-scheduler",
        "kube-api",
        "dns",
        "internet",
    ]
    deny = policies["default-deny"]["spec"]
    assert deny == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [],
    }
    for policy in policies.values():
        validate(policy)


def test_network_policy_egress_to_hub_and_gateway():
    egress = _policies()["notebook-to-hub"]["spec"]["egress"]
    assert egress[0]["to"][0]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/component": "hub"}
    }
    assert egress[0]["ports"] == [{"protocol": "TCP", "port": 8081}]
    assert egress[1]["to"][0]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/component": "dask-gateway"}
    }
    assert egress[1]["ports"] == [{"protocol": "TCP", "port": 8000}]
    for rule in egress:
        assert rule["to"][0]["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": HUB_NS}
        }


def test_network_policy_gateway_to_scheduler():
    spec = _policies()["gateway-to-dask-scheduler"]["spec"]
    assert spec["podSelector"] == {
        "matchLabels": {"clusterhub.io/engine": "dask", "clusterhub.io/role": "scheduler"}
    }
    assert spec["ingress"][0]["from"][0]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/component": "dask-gateway"}
    }
    assert [p["port"] for p in spec["ingress"][0]["ports"]] == [8786, 8787, 8788]
    # the scheduler pods built here match the selector
    labels = ko.make_engine_deployment(
        NS, engine="dask", role="scheduler", image="img", replicas=1
    )["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= labels.items()


def test_network_policy_notebook_and_engines_share_member_label():
    spec = _policies()["notebook-to-engines"]["spec"]
    member = {"matchLabels": {"clusterhub.io/space-member": "true"}}
    assert spec["podSelector"] == member
    assert spec["ingress"] == [{"from": [{"podSelector": member}]}]
    assert spec["egress"] == [{"to": [{"podSelector": member}]}]
    assert ko.notebook_labels() == {"clusterhub.io/space-member": "true"}
    for engine, roles in ko.ENGINE_ROLES.items():
        for role in roles:
            assert ko.engine_labels(engine, role)["clusterhub.io/space-member"] == "true"


def test_network_policy_dns_and_internet():
    policies = _policies()
    dns = policies["dns"]["spec"]
    assert dns["podSelector"] == {} and dns["policyTypes"] == ["Egress"]
    assert dns["egress"][0]["ports"] == [
        {"protocol": "UDP", "port": 53},
        {"protocol": "TCP", "port": 53},
    ]
    assert dns["egress"][0]["to"][0] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    }
    internet = policies["internet"]["spec"]["egress"]
    assert internet == [
        {
            "to": [
                {
                    "ipBlock": {
                        "cidr": "0.0.0.0/0",
                        "except": [
                            "10.0.0.0/8",
                            "172.16.0.0/12",
                            "192.168.0.0/16",
                            "169.254.169.254/32",
                        ],
                    }
                }
            ]
        }
    ]


def test_network_policy_switches():
    off = _policies(
        dns=False,
        internet=False,
        gateway_to_scheduler=False,
        notebook_to_engines=False,
        kube_api=False,
    )
    # the always-on policies remain: without them a space cannot work at all
    assert list(off) == ["default-deny", "notebook-from-hub", "notebook-to-hub", "engines-internal"]
    on = _policies(private_ips=True, cloud_metadata=True)
    assert on["private-ips"]["spec"]["egress"] == [
        {
            "to": [
                {"ipBlock": {"cidr": "10.0.0.0/8"}},
                {"ipBlock": {"cidr": "172.16.0.0/12"}},
                {"ipBlock": {"cidr": "192.168.0.0/16"}},
            ]
        }
    ]
    assert on["cloud-metadata"]["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}]}
    ]
    narrowed = ko.make_network_policies(
        NS, hub_namespace=HUB_NS, kube_api_cidrs=["203.0.113.10/32"]
    )
    kube_api = next(p for p in narrowed if p["metadata"]["name"] == "kube-api")
    assert kube_api["spec"]["egress"] == [
        {
            "to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}],
            "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
        }
    ]
    for policy in [*on.values(), kube_api]:
        validate(policy)


def test_network_policies_reject_bad_input():
    with pytest.raises(ValueError, match="allow"):
        ko.make_network_policies(NS, hub_namespace=HUB_NS, allow={"everything": True})
    with pytest.raises(ValueError, match="allow"):
        ko.make_network_policies(NS, hub_namespace=HUB_NS, allow={"dns": "yes"})
    with pytest.raises(ValueError, match="hub_namespace"):
        ko.make_network_policies(NS, hub_namespace="Hub NS")
    with pytest.raises(ValueError, match="hub_namespace"):
        ko.make_network_policies(NS, hub_namespace=NS)


def test_network_policies_have_no_shared_subtrees():
    policies = ko.make_network_policies(NS, hub_namespace=HUB_NS)
    snapshot = copy.deepcopy(policies)
    policies[3]["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"].clear()
    assert policies[3]["spec"]["podSelector"] == snapshot[3]["spec"]["podSelector"]


# ------------------------------------------------------------------------------------------
# Engines
# ------------------------------------------------------------------------------------------

IMAGE = "registry.example.org/clusterhub/cluster:2026.8"
SMALL = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
}
BASE_ENV = [
    {"name": "CLUSTERHUB_NAMESPACE", "value": NS},
    {"name": "CLUSTERHUB_ENGINE", "value": "spark"},
]


def test_make_engine_deployment_spark_master_literal():
    deployment = ko.make_engine_deployment(
        NS,
        engine="spark",
        role="master",
        image=IMAGE,
        replicas=1,
        resources=SMALL,
        env={"SPARK_DAEMON_MEMORY": "512m"},
        labels=SPACE_LABELS,
    )
    labels = {
        "app.kubernetes.io/managed-by": "clusterhub",
        "hub.clusterhub.io/name": "workshop",
        "hub.clusterhub.io/user": "alice",
        "app.kubernetes.io/component": "spark-master",
        "clusterhub.io/space-member": "true",
        "clusterhub.io/engine": "spark",
        "clusterhub.io/role": "master",
    }
    assert deployment == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "spark-master", "namespace": NS, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {
                "matchLabels": {"clusterhub.io/engine": "spark", "clusterhub.io/role": "master"}
            },
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "default",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": POD_SECURITY,
                    "containers": [
                        {
                            "name": "spark-master",
                            "image": IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "args": ["spark-master"],
                            "env": [
                                {"name": "CLUSTERHUB_NAMESPACE", "value": NS},
                                {"name": "CLUSTERHUB_ENGINE", "value": "spark"},
                                {"name": "CLUSTERHUB_ROLE", "value": "master"},
                                {"name": "CLUSTERHUB_MODE", "value": "spark-master"},
                                {
                                    "name": "CLUSTERHUB_NODE_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                },
                                {
                                    "name": "CLUSTERHUB_POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                },
                                {"name": "SPARK_MASTER_PORT", "value": "7077"},
                                {"name": "SPARK_MASTER_WEBUI_PORT", "value": "8080"},
                                {"name": "SPARK_DAEMON_MEMORY", "value": "512m"},
                            ],
                            "ports": [
                                {"name": "spark", "containerPort": 7077, "protocol": "TCP"},
                                {"name": "http-ui", "containerPort": 8080, "protocol": "TCP"},
                            ],
                            "resources": SMALL,
                            "readinessProbe": {
                                "tcpSocket": {"port": 7077},
                                "periodSeconds": 5,
                                "failureThreshold": 3,
                            },
                            "securityContext": CONTAINER_SECURITY,
                        }
                    ],
                },
            },
        },
    }
    validate(deployment)


@pytest.mark.parametrize(
    ("engine", "role", "mode", "probe_port"),
    [
        ("spark", "master", "spark-master", 7077),
        ("spark", "worker", "spark-worker", 8081),
        ("ipyparallel", "controller", "ipcontroller", 10101),
        ("ipyparallel", "engine", "ipengine", None),
        ("dask", "scheduler", "dask-scheduler", 8786),
        ("dask", "worker", "dask-worker", None),
    ],
)
def test_engine_deployment_modes(engine, role, mode, probe_port):
    deployment = ko.make_engine_deployment(
        NS, engine=engine, role=role, image=IMAGE, replicas=1, args=["--extra"]
    )
    assert deployment["metadata"]["name"] == mode == ko.engine_mode(engine, role)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][0] == mode and container["args"][-1] == "--extra"
    assert container["securityContext"] == CONTAINER_SECURITY
    assert pod["securityContext"] == POD_SECURITY
    assert pod["automountServiceAccountToken"] is False
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["clusterhub.io/engine"] == engine and labels["clusterhub.io/role"] == role
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    if probe_port is None:
        assert "readinessProbe" not in container
    else:
        assert container["readinessProbe"]["tcpSocket"] == {"port": probe_port}
        assert probe_port in [p["containerPort"] for p in container["ports"]]
    validate(deployment)


def test_engine_deployment_wiring():
    def env_of(engine, role):
        deployment = ko.make_engine_deployment(
            NS, engine=engine, role=role, image=IMAGE, replicas=2 if role != "master" else 1
        )
        return {
            e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }

    assert env_of("spark", "worker")["SPARK_MASTER_URL"]["value"] == (
        "spark://spark-master.clusterhub-alice.svc:7077"
    )
    assert env_of("dask", "worker")["DASK_SCHEDULER_ADDRESS"]["value"] == (
        "tcp://dask-scheduler.clusterhub-alice.svc:8786"
    )
    assert env_of("ipyparallel", "engine")["IPP_CONNECTION_INFO"] == {
        "name": "IPP_CONNECTION_INFO",
        "valueFrom": {
            "secretKeyRef": {"name": "ipyparallel-connection", "key": "ipcontroller-engine.json"}
        },
    }
    controller = ko.make_engine_deployment(
        NS, engine="ipyparallel", role="controller", image=IMAGE, replicas=1
    )
    pod = controller["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "ipyparallel-connection", "secret": {"secretName": "ipyparallel-connection"}}
    ]
    container = pod["containers"][0]
    assert container["volumeMounts"] == [
        {
            "name": "ipyparallel-connection",
            "mountPath": "/etc/clusterhub/ipyparallel",
            "readOnly": True,
        }
    ]
    assert container["args"] == [
        "ipcontroller",
        "--reuse",
        "--IPController.engine_json_file=/etc/clusterhub/ipyparallel/ipcontroller-engine.json",
        "--IPController.client_json_file=/etc/clusterhub/ipyparallel/ipcontroller-client.json",
    ]
    # caller env replaces ours instead of duplicating the name
    worker = ko.make_engine_deployment(
        NS,
        engine="spark",
        role="worker",
        image=IMAGE,
        replicas=3,
        env={"SPARK_WORKER_WEBUI_PORT": "9999"},
    )
    env = worker["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == "SPARK_WORKER_WEBUI_PORT"] == ["9999"]
    assert worker["spec"]["strategy"] == {"type": "RollingUpdate"}


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"engine": "flink"}, "engine"),
        ({"role": "driver"}, "role"),
        ({"image": ""}, "image"),
        ({"replicas": -1}, "replicas"),
        ({"role": "master", "replicas": 2}, "replicas"),
        ({"resources": {"limits": {"cpu": "lots"}}}, "resources.limits.cpu"),
        ({"resources": {"limit": {"cpu": "1"}}}, "resources"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"args": "--oops"}, "args"),
        ({"labels": {"clusterhub.io/owner": "Zoë"}}, "labels"),
        ({"service_account": "Not Valid"}, "service_account"),
        ({"namespace": "UPPER"}, "namespace"),
    ],
)
def test_engine_deployment_rejects_bad_input(kwargs, argument):
    arguments = {
        "namespace": NS,
        "engine": "spark",
        "role": "worker",
        "image": IMAGE,
        "replicas": 1,
        **kwargs,
    }
    namespace = arguments.pop("namespace")
    with pytest.raises(ValueError, match=re.escape(argument)):
        ko.make_engine_deployment(namespace, **arguments)


def test_make_engine_service_spark_literal():
    service = ko.make_engine_service(NS, engine="spark")
    assert service == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "spark-master",
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/managed-by": "clusterhub",
                "app.kubernetes.io/component": "spark-master",
                "clusterhub.io/space-member": "true",
                "clusterhub.io/engine": "spark",
                "clusterhub.io/role": "master",
            },
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"clusterhub.io/engine": "spark", "clusterhub.io/role": "master"},
            "ports": [
                {"name": "spark", "port": 7077, "targetPort": 7077, "protocol": "TCP"},
                {"name": "http-ui", "port": 8080, "targetPort": 8080, "protocol": "TCP"},
            ],
        },
    }
    validate(service)


def test_engine_services_match_connection_info():
    ipp = ko.make_engine_service(NS, engine="ipyparallel")
    ports = {p["name"]: p["port"] for p in ipp["spec"]["ports"]}
    assert ports == ko.IPYPARALLEL_PORTS
    assert sorted(ports.values()) == list(range(10101, 10116))
    files = ko.make_ipyparallel_connection_files(NS, key="k" * 32)
    used = set()
    for info in files.values():
        for field in ["registration", "control", "mux", "task", "iopub", "hb_ping", "hb_pong"]:
            if field in info:
                used.add(info[field])
        used.update(info.get("broadcast") if isinstance(info.get("broadcast"), list) else [])
        if isinstance(info.get("broadcast"), int):
            used.add(info["broadcast"])
        if "notification" in info:
            used.add(info["notification"])
    assert used == set(ports.values())
    dask = ko.make_engine_service(NS, engine="dask")
    assert [(p["name"], p["port"]) for p in dask["spec"]["ports"]] == [
        ("tcp-comm", 8786),
        ("http-dashboard", 8787),
    ]
    assert ko.engine_service_name("ipyparallel") == "ipcontroller"
    with pytest.raises(ValueError, match="engine"):
        ko.make_engine_service(NS, engine="flink")


def test_ipyparallel_connection_files():
    files = ko.make_ipyparallel_connection_files(NS, key="0123456789abcdef")
    assert files["ipcontroller-engine.json"] == {
        "key": "0123456789abcdef",
        "signature_scheme": "hmac-sha256",
        "pack": "json",
        "unpack": "json",
        "location": "ipcontroller.clusterhub-alice.svc",
        "ssh": "",
        "curve_serverkey": None,
        "interface": "tcp://*",
        "registration": 10101,
        "control": 10102,
        "mux": 10103,
        "task": 10104,
        "iopub": 10105,
        "hb_ping": 10106,
        "hb_pong": 10107,
        "broadcast": [10108, 10109],
    }
    client = files["ipcontroller-client.json"]
    assert client["task_scheme"] == "leastload"
    assert (client["control"], client["notification"], client["broadcast"]) == (10110, 10114, 10115)
    with pytest.raises(ValueError, match="key"):
        ko.make_ipyparallel_connection_files(NS, key="short")


def test_ipyparallel_controller_accepts_the_files(tmp_path, monkeypatch):
    """The real ipcontroller loads our files with --reuse (ports, key, bind address)."""
    from ipyparallel.controller.app import IPController

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    files = ko.make_ipyparallel_connection_files(NS, key="0123456789abcdef")
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    app = IPController(
        reuse_files=True,
        engine_json_file=str(tmp_path / ko.IPYPARALLEL_ENGINE_FILE),
        client_json_file=str(tmp_path / ko.IPYPARALLEL_CLIENT_FILE),
    )
    app.load_config_from_json()
    assert app.engine_info["registration"] == 10101
    assert app.client_info["notification"] == 10114
    assert app.config.Session.key == b"0123456789abcdef"
    assert app.config.IPController.engine_ip == "*"


def test_make_ipyparallel_secret_literal():
    secret = ko.make_ipyparallel_secret(
        NS, "ipyparallel-connection", {"ipcontroller-client.json": {"b": 2, "a": 1}}
    )
    assert secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "ipyparallel-connection", "namespace": NS, "labels": MANAGED},
        "type": "Opaque",
        "stringData": {"ipcontroller-client.json": '{\n "a": 1,\n "b": 2\n}'},
    }
    validate(secret)
    with pytest.raises(ValueError, match="connection_files"):
        ko.make_ipyparallel_secret(NS, "x", {"../evil": "{}"})
    with pytest.raises(ValueError, match="connection_files"):
        ko.make_ipyparallel_secret(NS, "x", {})


def test_ipyparallel_notebook_volume():
    volume, mount = ko.make_ipyparallel_notebook_volume()
    assert volume == {
        "name": "ipyparallel-connection",
        "secret": {
            "secretName": "ipyparallel-connection",
            "items": [{"key": "ipcontroller-client.json", "path": "ipcontroller-client.json"}],
            "optional": True,
        },
    }
    assert (
        mount["mountPath"] + "/ipcontroller-client.json"
        == (ko.make_notebook_env(NS)["CLUSTERHUB_IPP_CLIENT_FILE"])
    )


def test_the_client_file_is_where_a_bare_ipp_client_looks():
    assert ko.notebook_ipython_dir() == "/home/jovyan/.ipython"
    assert ko.ipython_security_dir("/srv/u") == "/srv/u/.ipython/profile_default/security"
    assert ko.make_ipython_security_mount() == {
        "name": "ipyparallel-connection",
        "mountPath": "/home/jovyan/.ipython/profile_default/security",
        "readOnly": True,
    }
    for bad in ("home", "/", "/home/jovyan/", "/home/../etc", ""):
        with pytest.raises(ValueError, match="home must be"):
            ko.make_ipython_security_mount(bad)
    env = ko.make_notebook_env(NS, engines=["ipyparallel"], ipython_dir="/home/jovyan/.ipython")
    assert env == {
        "CLUSTERHUB_NAMESPACE": NS,
        "CLUSTERHUB_ENGINES": "ipyparallel",
        "CLUSTERHUB_IPP_CLIENT_FILE": "/etc/clusterhub/ipyparallel/ipcontroller-client.json",
        "IPYTHONDIR": "/home/jovyan/.ipython",
    }
    # IPYTHONDIR only matters to IPyParallel: other spaces keep IPython's own default.
    assert "IPYTHONDIR" not in ko.make_notebook_env(NS, engines=["dask"], ipython_dir="/x/.ipython")
    with pytest.raises(ValueError, match="ipython_dir"):
        ko.make_notebook_env(NS, engines=["ipyparallel"], ipython_dir=".ipython")
    # IPython's lookup itself: IPYTHONDIR's default profile's security dir, nothing else.
    from IPython.core.profiledir import ProfileDir

    location = ProfileDir(location="/home/jovyan/.ipython/profile_default").security_dir
    assert location == ko.ipython_security_dir()


def test_ipython_dirs_init_container():
    home_mount = {"name": "home", "mountPath": "/home/jovyan"}
    security = {"runAsUser": 1000, "allowPrivilegeEscalation": False}
    init = ko.make_ipython_dirs_init_container(
        "notebook:1.0",
        volume_mounts=[home_mount],
        security_context=security,
        image_pull_policy="IfNotPresent",
    )
    assert init == {
        "name": "ipython-dirs",
        "image": "notebook:1.0",
        "imagePullPolicy": "IfNotPresent",
        "command": ["mkdir", "-p", "/home/jovyan/.ipython/profile_default/security"],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "volumeMounts": [home_mount],
        "securityContext": security,
    }
    assert ko.make_ipython_dirs_init_container("notebook:1.0") == {
        "name": "ipython-dirs",
        "image": "notebook:1.0",
        "command": ["mkdir", "-p", "/home/jovyan/.ipython/profile_default/security"],
        "resources": init["resources"],
    }
    volume, mount = ko.make_ipyparallel_notebook_volume()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "jupyter-alice", "namespace": NS},
        "spec": {
            "initContainers": [init],
            "containers": [
                {
                    "name": "notebook",
                    "image": "notebook:1.0",
                    "volumeMounts": [home_mount, mount, ko.make_ipython_security_mount()],
                }
            ],
            "volumes": [
                {"name": "home", "persistentVolumeClaim": {"claimName": "claim-alice"}},
                volume,
            ],
        },
    }
    validate(pod)
    with pytest.raises(ValueError, match="image"):
        ko.make_ipython_dirs_init_container("")
    with pytest.raises(ValueError, match="home must be"):
        ko.make_ipython_dirs_init_container("notebook:1.0", "relative")


def test_make_notebook_env():
    assert ko.make_notebook_env(NS) == {
        "CLUSTERHUB_NAMESPACE": NS,
        "CLUSTERHUB_ENGINES": "spark,ipyparallel,dask",
        "SPARK_MASTER_URL": "spark://spark-master.clusterhub-alice.svc:7077",
        "MASTER": "spark://spark-master.clusterhub-alice.svc:7077",
        "CLUSTERHUB_IPP_CLIENT_FILE": "/etc/clusterhub/ipyparallel/ipcontroller-client.json",
        "DASK_SCHEDULER_ADDRESS": "tcp://dask-scheduler.clusterhub-alice.svc:8786",
    }
    gateway = ko.make_notebook_env(
        NS,
        engines=["dask"],
        gateway_address="http://proxy-public.clusterhub.svc/services/dask-gateway",
        gateway_proxy_address="gateway://dask-gateway.clusterhub.svc:8000",
    )
    assert gateway == {
        "CLUSTERHUB_NAMESPACE": NS,
        "CLUSTERHUB_ENGINES": "dask",
        "DASK_GATEWAY__ADDRESS": "http://proxy-public.clusterhub.svc/services/dask-gateway",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        "DASK_GATEWAY__PROXY_ADDRESS": "gateway://dask-gateway.clusterhub.svc:8000",
    }
    with pytest.raises(ValueError, match="engines"):
        ko.make_notebook_env(NS, engines=["flink"])
    with pytest.raises(ValueError, match="engines"):
        ko.make_notebook_env(NS, engines="spark")
    with pytest.raises(ValueError, match="namespace"):
        ko.make_notebook_env("")


# ------------------------------------------------------------------------------------------
# A whole space, validated against the Kubernetes 1.34 schemas in strict mode
# ------------------------------------------------------------------------------------------


def build_space(hub_name: str, username: str) -> list[dict]:
    namespace = ko.make_namespace_name("clusterhub-", username)
    labels = ko.space_labels(hub_name, username)
    objects = [
        ko.make_namespace(namespace, labels, ko.space_annotations(hub_name, username)),
        ko.make_resource_quota(
            namespace, cpu_limit="8", memory_limit="16Gi", max_pods=20, labels=labels
        ),
        ko.make_limit_range(
            namespace,
            default_cpu_request="250m",
            default_memory_request="512Mi",
            default_cpu_limit="1",
            default_memory_limit="2Gi",
            max_cpu="4",
            max_memory="8Gi",
            labels=labels,
        ),
        *ko.make_network_policies(
            namespace,
            hub_namespace=HUB_NS,
            allow={"private_ips": True, "cloud_metadata": True},
            labels=labels,
        ),
        ko.make_service_account(namespace, "notebook", labels=labels),
        ko.make_role(namespace, "clusterhub-notebook", labels=labels),
        ko.make_role_binding(namespace, "clusterhub-notebook", "notebook", labels=labels),
        ko.make_ipyparallel_secret(
            namespace,
            ko.IPYPARALLEL_SECRET_NAME,
            ko.make_ipyparallel_connection_files(namespace, key="f" * 64),
            labels=labels,
        ),
    ]
    for engine, (leader, follower) in ko.ENGINE_ROLES.items():
        objects.append(ko.make_engine_service(namespace, engine=engine, labels=labels))
        for role, replicas in ((leader, 1), (follower, 3)):
            objects.append(
                ko.make_engine_deployment(
                    namespace,
                    engine=engine,
                    role=role,
                    image=IMAGE,
                    replicas=replicas,
                    resources=SMALL,
                    env={"EXTRA": "1"},
                    labels=labels,
                )
            )
    return objects


@pytest.mark.parametrize("username", ["alice", "Zoë-ñandú", "x" * 200, "a.b@example.org"])
def test_full_space_validates(username):
    objects = build_space("workshop", username)
    kinds = [o["kind"] for o in objects]
    assert kinds.count("Deployment") == 6 and kinds.count("Service") == 3
    assert kinds.count("NetworkPolicy") == 11
    namespace = objects[0]["metadata"]["name"]
    for obj in objects:
        validate(obj)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace
        assert obj["metadata"]["labels"]["hub.clusterhub.io/name"] == "workshop"
        json.dumps(obj)  # plain data only
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names))
    hub = [
        ko.make_hub_cluster_role("clusterhub-hub", space_roles=["clusterhub-hub-in-space"]),
        ko.make_hub_cluster_role_binding(
            "clusterhub-hub",
            cluster_role="clusterhub-hub",
            service_account="hub",
            service_account_namespace=HUB_NS,
        ),
    ]
    for obj in hub:
        validate(obj)


def test_strict_validation_catches_mistakes():
    """The schema check is not vacuous: an unknown field fails in strict mode."""
    deployment = build_space("workshop", "alice")[-1]
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_builders_are_deterministic_and_return_fresh_objects():
    first = build_space("workshop", "Zoë")
    second = build_space("workshop", "Zoë")
    assert first == second
    first[0]["metadata"]["labels"]["mutated"] = "yes"
    first[-1]["spec"]["template"]["spec"]["containers"][0]["env"].clear()
    assert build_space("workshop", "Zoë") == second
