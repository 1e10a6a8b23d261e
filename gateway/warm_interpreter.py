"""A Python interpreter that imports Dask before it knows which scheduler or worker it will be.

Most of the time a personal cluster takes to start on a small machine is interpreters
importing ``distributed`` (about a second each, and the scheduler and the worker nannies
each need one). The gateway keeps a few of these interpreters ready (see ``warm_pool``).
Each imports the code, then reads one assignment from stdin, a JSON line::

    {"argv": ["dask", "worker", ...], "env": {...}, "cwd": "...", "log": "..."}

and becomes that ``dask`` command: same arguments, environment, working directory and log
file as a freshly started process would have. It serves one assignment and no other; with
no assignment (stdin closed) it exits.

Run as ``python -m clusterhub.gateway.warm_interpreter``.
"""

from __future__ import annotations

import json
import os
import sys


def _import_ahead() -> None:
    import dask.cli  # noqa: F401
    import distributed.cli.dask_scheduler  # noqa: F401
    import distributed.cli.dask_worker  # noqa: F401

    try:
        # The gateway's scheduler preload; an environment without it still serves workers.
        import dask_gateway.scheduler_preload  # noqa: F401
    except ImportError:
        pass


def _become(job: dict) -> None:
    """Take on the assignment's files, directory and environment, as exec would have."""
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])

    import dask.config

    # Dask read its config files and DASK_* variables at import, under the environment
    # this interpreter started with: read them again under the assigned one (HOME, and so
    # ~/.config/dask, differs per cluster).
    dask.config.paths[:] = dask.config._get_paths()
    dask.config.refresh()
    sys.argv = list(job["argv"])


def main() -> int:
    _import_ahead()
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the gateway closed the pool without using us
    _become(json.loads(line))

    from dask.cli import run_cli

    run_cli()
    return 0


if __name__ == "__main__":
    sys.exit(main())
