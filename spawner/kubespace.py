"""A user's whole space on Kubernetes, as data: from a profile and choices to object dicts.

Pure, like :mod:`clusterhub.spawner.kubeobjects` whose builders it composes: the spawner
creates what this returns, the tests compare it with literal expectations and validate it
against the Kubernetes schemas.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from clusterhub.profiles import SIZE_FIELDS, SpaceOptions, profile_maxima

from . import kubeobjects as k

NOTEBOOK_SERVICE_ACCOUNT = "notebook"
NOTEBOOK_ROLE = "notebook"
# The profile's maxima, as JSON, in the notebook's environment (see notebook_limits_env).
LIMITS_ENV = "CLUSTERHUB_LIMITS"

# A coordinator (Spark master, IPyParallel controller, Dask scheduler).
COORDINATOR_CORES = 1
COORDINATOR_MEMORY_GIB = 1


def space_engines(profile: Mapping[str, Any]) -> list[str]:
    """The engines of a space: Dask always, then the profile's."""
    return ["dask", *profile["engines"]]


def _cpu(cores: float) -> str:
    """Cores as a Kubernetes quantity: whole cores bare, fractions in millicores."""
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def _memory(gib: float) -> str:
    """GiB as a Kubernetes quantity: whole GiB as Gi, fractions in Mi."""
    mebibytes = round(gib * 1024)
    return f"{mebibytes // 1024}Gi" if mebibytes % 1024 == 0 else f"{mebibytes}Mi"


def notebook_resources(profile: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The notebook container's requests (the profile's guarantees) and limits."""
    sizes = profile["notebook"]
    return {
        kind: {
            "cpu": _cpu(sizes["cpu"][bound]),
            "memory": _memory(sizes["memory_gib"][bound]),
        }
        for kind, bound in (("requests", "guarantee"), ("limits", "limit"))
    }


def quota_for(profile: Mapping[str, Any]) -> dict[str, Any]:
    """The ceiling of a space: the notebook's limits plus every engine at the profile's
    maxima, so a space can always grow to what its profile offers."""
    engines = space_engines(profile)
    workers = profile["workers"]["max"]
    cores = profile["worker_cores"]["max"]
    memory = profile["worker_memory_gib"]["max"]
    notebook = profile["notebook"]
    engine_cores = len(engines) * (COORDINATOR_CORES + workers * cores)
    engine_gib = len(engines) * (COORDINATOR_MEMORY_GIB + workers * memory)
    return {
        "cpu_limit": _cpu(notebook["cpu"]["limit"] + engine_cores),
        "memory_limit": _memory(notebook["memory_gib"]["limit"] + engine_gib),
        "max_pods": 1 + len(engines) * (1 + workers),
    }


def worker_resources(options: SpaceOptions) -> dict[str, dict[str, str]]:
    size = {"cpu": str(options.worker_cores), "memory": f"{options.worker_memory_gib}Gi"}
    return {"requests": dict(size), "limits": dict(size)}


def spark_worker_memory(options: SpaceOptions) -> str:
    """What a Spark worker offers (and so one executor's heap): the pod's memory less room for
    the worker daemon's own JVM (256 MiB heap) and the executor's off-heap overhead."""
    return f"{max(512, options.worker_memory_gib * 1024 - 512)}m"


def engine_env(engine: str, role: str, options: SpaceOptions) -> dict[str, str]:
    """Sizes for the engine's daemons: Spark otherwise offers the whole node, not the pod."""
    if engine != "spark":
        return {}
    env = {"SPARK_DAEMON_MEMORY": "256m"}
    if role == "worker":
        env.update(
            SPARK_WORKER_CORES=str(options.worker_cores),
            SPARK_WORKER_MEMORY=spark_worker_memory(options),
            # Relative to the container's working directory (the image's WORKDIR, writable by
            # the unprivileged engine user); the default, inside SPARK_HOME, is read-only.
            SPARK_WORKER_DIR="spark-work",
        )
    return env


def notebook_limits_env(profile: Mapping[str, Any]) -> dict[str, str]:
    """The profile's maxima for the notebook's Clusters panel, which refuses to scale past
    them with a message naming the limit (the ResourceQuota is what enforces them)."""
    limits = {field: profile[field]["max"] for field in SIZE_FIELDS}
    return {LIMITS_ENV: json.dumps(limits, sort_keys=True)}


COORDINATOR_RESOURCES = {
    "requests": {"cpu": "250m", "memory": "512Mi"},
    "limits": {"cpu": str(COORDINATOR_CORES), "memory": f"{COORDINATOR_MEMORY_GIB}Gi"},
}


def make_space_objects(
    namespace: str,
    *,
    hub_namespace: str,
    profile: Mapping[str, Any],
    options: SpaceOptions,
    cluster_image: str,
    image_pull_policy: str = "IfNotPresent",
    network_allow: Mapping[str, bool] | None = None,
    kube_api_cidrs: Sequence[str] = (),
    gateway_ports: Sequence[int] = k.GATEWAY_PORTS,
    ipyparallel_key: str = "",
    image_pull_secrets: Sequence[str] = (),
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    space_roles: Mapping[str, Mapping[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Every object of a space but the namespace and the notebook pod, in creation order.

    ``space_roles`` (see ``KubeSpaceSpawner.space_roles``) come first: the hub's binding is
    what lets it create the rest.

    ``ipyparallel_key`` signs IPyParallel messages; the caller passes a fresh secret (this
    module stays deterministic).
    """
    quota = quota_for(profile)
    bindings = [
        k.make_space_role_binding(
            namespace,
            k.SPACE_BINDINGS[purpose],
            cluster_role=role["cluster_role"],
            service_account=role["service_account"],
            service_account_namespace=hub_namespace,
        )
        for purpose, role in sorted((space_roles or {}).items(), key=lambda item: item[0] != "hub")
    ]
    objects: list[dict[str, Any]] = [
        *bindings,
        k.make_resource_quota(namespace, **quota),
        k.make_limit_range(
            namespace,
            default_cpu_request="250m",
            default_memory_request="512Mi",
            default_cpu_limit="1",
            default_memory_limit="1Gi",
            # No container may be larger than the largest the profile makes.
            max_cpu=_cpu(
                max(profile["worker_cores"]["max"], profile["notebook"]["cpu"]["limit"], 1)
            ),
            max_memory=_memory(
                max(
                    profile["worker_memory_gib"]["max"],
                    profile["notebook"]["memory_gib"]["limit"],
                    COORDINATOR_MEMORY_GIB,
                )
            ),
        ),
        *k.make_network_policies(
            namespace,
            hub_namespace=hub_namespace,
            allow=network_allow,
            kube_api_cidrs=kube_api_cidrs,
            gateway_ports=gateway_ports,
        ),
        k.make_service_account(namespace, NOTEBOOK_SERVICE_ACCOUNT),
        k.make_role(namespace, NOTEBOOK_ROLE),
        k.make_role_binding(namespace, NOTEBOOK_ROLE, NOTEBOOK_SERVICE_ACCOUNT),
        k.make_space_record(namespace, limits=profile_maxima(profile), options=options.to_dict()),
    ]
    for engine in profile["engines"]:
        if engine == "ipyparallel":
            if not ipyparallel_key:
                raise ValueError("ipyparallel_key: a secret key is needed for IPyParallel")
            files = k.make_ipyparallel_connection_files(namespace, key=ipyparallel_key)
            objects.append(k.make_ipyparallel_secret(namespace, connection_files=files))
        objects.append(k.make_engine_service(namespace, engine=engine))
        leader, follower = k.ENGINE_ROLES[engine]
        for role, replicas, resources in (
            (leader, 1, COORDINATOR_RESOURCES),
            (follower, options.workers, worker_resources(options)),
        ):
            objects.append(
                k.make_engine_deployment(
                    namespace,
                    engine=engine,
                    role=role,
                    image=cluster_image,
                    replicas=replicas,
                    resources=resources,
                    env=engine_env(engine, role, options),
                    image_pull_policy=image_pull_policy,
                    image_pull_secrets=image_pull_secrets,
                    node_selector=node_selector,
                    tolerations=tolerations,
                )
            )
    return objects
