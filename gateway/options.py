"""Cluster options a user may set, bounded by the profile of their space.

``Gateway().new_cluster()`` with no arguments takes the defaults; explicit
options outside the profile's bounds are refused (the gateway answers 422 with
the option's name and allowed range) and nothing is created.
"""

from __future__ import annotations

from collections.abc import Callable

from dask_gateway_server.options import Float, Integer, Options

from clusterhub.space import LocalSpace

GIB = 2**30


class NoActiveSpace(ValueError):
    pass


def profile_limits(space: LocalSpace) -> dict:
    """The user's profile bounds, as written by the spawner when their server started."""
    state = space.read_state()
    if not state.get("active") or "limits" not in state:
        raise NoActiveSpace(
            f"user {space.username!r} has no running server: start your server, then create "
            "a cluster from it"
        )
    return state["limits"]


def make_cluster_options(space_for: Callable[[str], LocalSpace]) -> Callable:
    """A ``cluster_options`` callable for the gateway: per-user Options from their profile."""

    def cluster_options(user) -> Options:
        limits = profile_limits(space_for(user.name))
        max_cores = int(limits["worker_cores"])
        max_memory = float(limits["worker_memory_gib"])
        max_workers = int(limits["workers"])

        def handler(options, user):
            if not 1 <= options.worker_cores <= max_cores:
                raise ValueError(f"worker_cores: must be from 1 to {max_cores}")
            if not 0.5 <= options.worker_memory <= max_memory:
                raise ValueError(f"worker_memory: must be from 0.5 to {max_memory} GiB")
            return {
                "worker_cores": options.worker_cores,
                "worker_threads": options.worker_cores,
                "worker_memory": int(options.worker_memory * GIB),
                "cluster_max_workers": max_workers,
            }

        return Options(
            Integer("worker_cores", default=1, min=1, max=max_cores, label="Worker cores"),
            Float(
                "worker_memory", default=1.0, min=0.5, max=max_memory, label="Worker memory (GiB)"
            ),
            handler=handler,
        )

    return cluster_options
