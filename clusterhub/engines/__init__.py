"""Engines a user's space can hold besides Dask: Spark and IPyParallel.

One small interface (:class:`~clusterhub.engines.base.Engine`), with a local
implementation per engine here; the Kubernetes implementations scale
Deployments in the user's namespace instead of processes.
"""

from ..usererror import NOT_FOUND, UserError
from .base import Engine, EngineStatus

__all__ = ["ENGINES", "OPTIONAL_ENGINES", "Engine", "EngineStatus", "local_engine"]

# What a profile may add to a space (Dask is always there), and every kind of cluster.
OPTIONAL_ENGINES = ("spark", "ipyparallel")
ENGINES = ("dask", *OPTIONAL_ENGINES)


def local_engine(kind: str, space, **kwargs) -> Engine:
    """The local implementation of engine ``kind`` for ``space``."""
    if kind == "spark":
        from .local_spark import LocalSparkEngine

        return LocalSparkEngine(space, **kwargs)
    if kind == "ipyparallel":
        from .local_ipyparallel import LocalIPyParallelEngine

        return LocalIPyParallelEngine(space, **kwargs)
    raise UserError(
        f"engine: unknown engine {kind!r}; choose spark or ipyparallel",
        field="engine",
        status=NOT_FOUND,
    )
