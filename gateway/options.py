"""Cluster options a user may set, bounded by the profile of their space.

``Gateway().new_cluster()`` with no arguments takes the defaults; explicit options outside
the profile's bounds are refused (the gateway answers 422 with the option's name and the
allowed range) and nothing is created.
"""

from __future__ import annotations

from collections.abc import Callable

from dask_gateway_server.options import Float, Integer, Options

from clusterhub.space import LocalSpace

GIB = 2**30


class NoActiveSpace(ValueError):
    pass


class _RangeMessage:
    """Refusals that name the option and its whole allowed range (upstream names one bound)."""

    def validate(self, x):
        if isinstance(x, bool):
            raise TypeError(f"{self.field}: must be a number from {self.min:g} to {self.max:g}")
        try:
            return super().validate(x)
        except (TypeError, ValueError):
            raise ValueError(
                f"{self.field}: must be a number from {self.min:g} to {self.max:g}, not {x!r}"
            ) from None


class BoundedInteger(_RangeMessage, Integer):
    pass


class BoundedFloat(_RangeMessage, Float):
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


def bounded_options(limits: dict) -> Options:
    """The Options a user may set, bounded by their profile's ``limits`` (its maxima)."""
    max_workers = int(limits["workers"])

    def handler(options):
        return {
            "worker_cores": options.worker_cores,
            "worker_threads": options.worker_cores,
            "worker_memory": int(options.worker_memory * GIB),
            "cluster_max_workers": max_workers,
        }

    return Options(
        BoundedInteger(
            "worker_cores",
            default=1,
            min=1,
            max=int(limits["worker_cores"]),
            label="Worker cores",
        ),
        BoundedFloat(
            "worker_memory",
            default=1.0,
            min=0.5,
            max=float(limits["worker_memory_gib"]),
            label="Worker memory (GiB)",
        ),
        handler=handler,
    )


def make_cluster_options(space_for: Callable[[str], LocalSpace]) -> Callable:
    """A ``cluster_options`` callable for the gateway: per-user Options from their profile."""

    def cluster_options(user) -> Options:
        return bounded_options(profile_limits(space_for(user.name)))

    return cluster_options
