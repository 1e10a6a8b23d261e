"""Engines a user's space can hold besides Dask: Spark and IPyParallel.

One small interface (:class:`~clusterhub.engines.base.Engine`), one module per substrate:
``local_spark`` and ``local_ipyparallel`` run processes on this machine, ``kube`` scales
the Deployments in the user's namespace. ``spark_records`` and ``ipyparallel_records`` read
which host ran each task, whichever substrate ran it; ``dask_records`` does the same for the
Dask clusters, which the gateway runs.
"""

from ..usererror import NOT_FOUND, UserError
from .base import Engine, EngineStatus

__all__ = ["ENGINES", "OPTIONAL_ENGINES", "Engine", "EngineStatus", "local_engine"]

# What a profile may add to a space (Dask is always there), and every kind of cluster.
OPTIONAL_ENGINES = ("spark", "ipyparallel")
ENGINES = ("dask", *OPTIONAL_ENGINES)


def unknown_engine(kind: str) -> UserError:
    """The refusal of an engine kind that is not one of OPTIONAL_ENGINES."""
    return UserError(
        f"engine: unknown engine {kind!r}; choose {' or '.join(OPTIONAL_ENGINES)}",
        field="engine",
        status=NOT_FOUND,
    )


def local_engine(kind: str, space, **kwargs) -> Engine:
    """The local implementation of engine ``kind`` for ``space``."""
    if kind == "spark":
        from .local_spark import LocalSparkEngine

        return LocalSparkEngine(space, **kwargs)
    if kind == "ipyparallel":
        from .local_ipyparallel import LocalIPyParallelEngine

        return LocalIPyParallelEngine(space, **kwargs)
    raise unknown_engine(kind)
