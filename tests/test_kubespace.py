import kubernetes_validate
import pytest

from clusterhub.profiles import DEFAULT_PROFILES, validate_options, validate_profiles
from clusterhub.spawner.kubeobjects import parse_quantity, read_space_record
from clusterhub.spawner.kubespace import (
    make_space_objects,
    notebook_limits_env,
    notebook_resources,
    quota_for,
)

PROFILES = {p["slug"]: p for p in validate_profiles(DEFAULT_PROFILES)}


def objects_for(slug, **kwargs):
    options = validate_options(list(PROFILES.values()), {"profile": slug})
    return make_space_objects(
        "clusterhub-alice",
        hub_namespace="hub",
        profile=PROFILES[slug],
        options=options,
        cluster_image="registry.example/cluster:1",
        ipyparallel_key="ab" * 32,
        **kwargs,
    )


@pytest.mark.parametrize("slug", sorted(PROFILES))
def test_every_object_of_every_profile_is_valid_kubernetes(slug):
    for obj in objects_for(slug):
        kubernetes_validate.validate(obj, "1.34.0", strict=True)
        assert obj["metadata"]["namespace"] == "clusterhub-alice"


def test_engines_are_deployments_named_by_mode():
    deployments = {
        o["metadata"]["name"]: o["spec"]["replicas"]
        for o in objects_for("dask-spark")
        if o["kind"] == "Deployment"
    }
    assert deployments == {"spark-master": 1, "spark-worker": 2}
    assert not [o for o in objects_for("dask") if o["kind"] == "Deployment"]


def test_engines_pull_with_the_spaces_pull_secrets():
    objects = objects_for("dask-spark", image_pull_secrets=["registry-credentials"])
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert len(deployments) == 2
    for deployment in deployments:
        spec = deployment["spec"]["template"]["spec"]
        assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
        kubernetes_validate.validate(deployment, "1.34.0", strict=True)
    spec = next(o for o in objects_for("dask-spark") if o["kind"] == "Deployment")
    assert "imagePullSecrets" not in spec["spec"]["template"]["spec"], "none: none listed"
    with pytest.raises(ValueError, match="image_pull_secrets"):
        objects_for("dask-spark", image_pull_secrets=["Not A Name"])


def test_the_notebooks_api_egress_goes_only_to_the_api_servers_cidrs():
    def api_rules(objects):
        policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        return [
            rule
            for policy in policies
            for rule in policy["spec"].get("egress", [])
            if {p["port"] for p in rule.get("ports", [])} == {443, 6443}
        ]

    (anywhere,) = api_rules(objects_for("dask"))
    assert "to" not in anywhere
    (pinned,) = api_rules(objects_for("dask", kube_api_cidrs=["10.0.0.1/32"]))
    assert pinned["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]


def test_spark_daemons_are_sized_to_their_pods():
    workers = next(o for o in objects_for("dask-spark") if o["metadata"]["name"] == "spark-worker")
    env = {
        e["name"]: e.get("value")
        for e in workers["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SPARK_WORKER_CORES"] == "1"
    assert env["SPARK_WORKER_MEMORY"] == "512m"  # a 1 GiB pod less the daemon and overheads
    assert env["SPARK_DAEMON_MEMORY"] == "256m"
    assert env["SPARK_WORKER_DIR"] == "spark-work"


def test_the_quota_covers_notebook_and_every_engine_at_the_profiles_maxima():
    # dask + spark, 4 workers of 2 cores and 4 GiB each, plus a coordinator per engine, plus
    # the notebook's limits (1 core, 3 GiB: the Spark driver's JVM runs in it).
    assert quota_for(PROFILES["dask-spark"]) == {
        "cpu_limit": "19",
        "memory_limit": "37Gi",
        "max_pods": 11,
    }
    small = validate_profiles(
        [
            {
                "slug": "small",
                "notebook": {
                    "cpu": {"guarantee": 0.2, "limit": 0.5},
                    "memory_gib": {"guarantee": 0.5, "limit": 1.5},
                },
                "workers": {"default": 1, "max": 1},
                "worker_cores": {"default": 1, "max": 1},
                "worker_memory_gib": {"default": 1, "max": 1},
            }
        ]
    )[0]
    # dask: coordinator 1 core + 1 GiB, one worker 1 core + 1 GiB
    assert quota_for(small) == {"cpu_limit": "2500m", "memory_limit": "3584Mi", "max_pods": 3}


def test_the_notebook_gets_the_profiles_guarantees_and_limits():
    assert notebook_resources(PROFILES["dask"]) == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    assert notebook_resources(PROFILES["dask-spark"]) == {
        "requests": {"cpu": "500m", "memory": "1536Mi"},
        "limits": {"cpu": "1", "memory": "3Gi"},
    }


def test_no_container_of_the_space_is_larger_than_the_limit_range_allows():
    for slug in PROFILES:
        (limits,) = [o for o in objects_for(slug) if o["kind"] == "LimitRange"]
        largest = limits["spec"]["limits"][0]["max"]
        notebook = notebook_resources(PROFILES[slug])["limits"]
        assert parse_quantity(notebook["cpu"]) <= parse_quantity(largest["cpu"])
        assert parse_quantity(notebook["memory"]) <= parse_quantity(largest["memory"])


def test_notebooks_may_reach_both_gateway_ports():
    policies = {o["metadata"]["name"]: o for o in objects_for("dask", gateway_ports=(8000, 8786))}
    egress = policies["notebook-to-hub"]["spec"]["egress"]
    ports = {port["port"] for rule in egress for port in rule.get("ports", [])}
    assert {8000, 8786} <= ports


def test_ipyparallel_needs_a_key():
    options = validate_options(list(PROFILES.values()), {"profile": "dask-ipyparallel"})
    with pytest.raises(ValueError, match="ipyparallel_key"):
        make_space_objects(
            "ns",
            hub_namespace="hub",
            profile=PROFILES["dask-ipyparallel"],
            options=options,
            cluster_image="c:1",
        )


def test_the_notebook_learns_its_profiles_maxima():
    # The Clusters panel in the notebook refuses to scale past them, naming the limit.
    assert notebook_limits_env(PROFILES["dask-spark"]) == {
        "CLUSTERHUB_LIMITS": '{"worker_cores": 2, "worker_memory_gib": 4, "workers": 4}'
    }


def test_the_hub_binds_its_own_rights_first_then_the_gateways():
    roles = {
        "gateway": {"cluster_role": "hub-ch-gateway-in-space", "service_account": "ch-gateway"},
        "hub": {"cluster_role": "hub-ch-hub-in-space", "service_account": "ch-hub"},
    }
    first, second, third = objects_for("dask", space_roles=roles)[:3]
    assert (first["kind"], first["metadata"]["name"]) == ("RoleBinding", "clusterhub-hub")
    assert first["roleRef"]["name"] == "hub-ch-hub-in-space"
    assert first["subjects"] == [{"kind": "ServiceAccount", "name": "ch-hub", "namespace": "hub"}]
    assert (second["metadata"]["name"], second["roleRef"]["name"]) == (
        "clusterhub-dask-gateway",
        "hub-ch-gateway-in-space",
    )
    assert third["kind"] == "ResourceQuota"
    # Without space roles (a hub given its rights otherwise): no bindings at all.
    assert objects_for("dask")[0]["kind"] == "ResourceQuota"


def test_the_space_records_its_profiles_maxima_and_the_sizes_chosen_on_the_form():
    options = validate_options(
        list(PROFILES.values()),
        {"profile": "dask-spark", "worker_cores": 2, "worker_memory_gib": 3},
    )
    objects = make_space_objects(
        "clusterhub-alice",
        hub_namespace="hub",
        profile=PROFILES["dask-spark"],
        options=options,
        cluster_image="registry.example/cluster:1",
    )
    (record,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert read_space_record(record["data"]) == (
        {"workers": 4, "worker_cores": 2, "worker_memory_gib": 4},
        options.to_dict(),
    )
    assert options.to_dict()["worker_memory_gib"] == 3
