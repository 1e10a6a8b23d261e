"""Cluster options a user may set, bounded by the profile of their space.

``Gateway().new_cluster()`` with no arguments takes the defaults; explicit options outside
the profile's bounds are refused (the gateway answers 422 with the option's name and the
allowed range) and nothing is created.
"""

from __future__ import annotations

from collections.abc import Callable

from dask_gateway_server.options import Float, Integer, Options

from clusterhub.space import LocalSpace
from clusterhub.usererror import CONFLICT, UserError

GIB = 2**30


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
        raise UserError(
            f"user {space.username!r} has no running server: start your server, then create "
            "a cluster from it",
            status=CONFLICT,
        )
    return state["limits"]


def profile_choices(space: LocalSpace) -> dict:
    """The worker sizes the user chose for their space (the spawn form), if recorded."""
    return space.read_state().get("options") or {}


def bounded_options(limits: dict, chosen: dict | None = None) -> Options:
    """The Options a user may set, bounded by their profile's ``limits`` (its maxima).

    Their defaults are the worker sizes the user ``chosen`` for their space: a cluster made
    with no arguments has the workers they asked for on the spawn form."""
    max_workers = int(limits["workers"])
    chosen = chosen or {}
    max_cores = int(limits["worker_cores"])
    max_memory = float(limits["worker_memory_gib"])
    default_cores = min(max(_number(chosen.get("worker_cores"), 1), 1), max_cores)
    default_memory = min(max(_number(chosen.get("worker_memory_gib"), 1.0), 0.5), max_memory)

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
            default=int(default_cores),
            min=1,
            max=max_cores,
            label="Worker cores",
        ),
        BoundedFloat(
            "worker_memory",
            default=float(default_memory),
            min=0.5,
            max=max_memory,
            label="Worker memory (GiB)",
        ),
        handler=handler,
    )


def make_cluster_options(space_for: Callable[[str], LocalSpace]) -> Callable:
    """A ``cluster_options`` callable for the gateway: per-user Options from their profile."""

    def cluster_options(user) -> Options:
        space = space_for(user.name)
        return bounded_options(profile_limits(space), profile_choices(space))

    return cluster_options


def _number(value, fallback):
    """A recorded size as a number, or ``fallback`` (never a bool, never text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return fallback
    return value
