"""A Python interpreter that imports Dask before it knows which scheduler or worker it will be.

Most of the time a personal cluster takes to start on a small machine is interpreters
importing ``distributed`` (about a second each, and the scheduler and the worker nannies
each need one). The gateway keeps a few of these interpreters ready (see ``warm_pool``).
Each imports the code, then reads one assignment from stdin, a JSON line::

    {"argv": ["dask", "worker", ...], "env": {...}, "cwd": "...", "log": "...",
     "account": {...} or null, "fence": {...} or null}

and becomes that ``dask`` command: same arguments, environment, working directory, log
file, account and control group as a freshly started process would have. It opens the log
(in a directory only the platform writes), joins the user's control group and becomes the
user's account before it touches anything the user controls (the working directory, the
user's Dask configuration). It serves one assignment and no other; with no assignment
(stdin closed) it exits.

A worker's nanny starts the worker in a child process, which would import everything again
(multiprocessing's "spawn"). So while it waits, a warm interpreter also starts a
multiprocessing fork server that imports Dask too, in the environment a nanny gives its
worker before it starts (``distributed.nanny.pre-spawn-environ``, with Dask's fixed hash
seed); a worker then forks from it at once. The nanny hands the worker its whole assigned
environment (``distributed.nanny.environ``), and the worker works in the assigned directory.
If the assignment asks for another pre-spawn environment, the worker is spawned as usual.
The fork server follows this interpreter into the user's account before it forks anything
(see ``fork_identity``).

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


def _pre_spawn_environment() -> dict[str, str]:
    """What a nanny sets before it starts its worker (as distributed.nanny.Nanny does)."""
    import dask.config

    wanted = dask.config.get("distributed.nanny.pre-spawn-environ")
    env = {k: os.environ.get(k, str(v)) for k, v in wanted.items() if v is not None}
    if env.get("PYTHONHASHSEED") in (None, "0"):
        env["PYTHONHASHSEED"] = "6640"  # Dask's: the same hashes in every worker
    return env


def _start_fork_server() -> tuple[dict[str, str], int]:
    """A fork server that has imported Dask, for a nanny's worker.

    Returns its pre-spawn environment and the read end of a pipe that is its (and so the
    worker's) stdout and stderr: the log file is not known yet, so the nanny copies the
    worker's output into it once it is (see :func:`_relay_worker_output`).
    """
    import multiprocessing
    import multiprocessing.forkserver

    env = _pre_spawn_environment()
    os.environ.update(env)
    output, write_end = os.pipe()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    from clusterhub.gateway.fork_identity import WAIT_VARIABLE

    multiprocessing.get_context("forkserver").set_forkserver_preload(
        ["distributed", "clusterhub.gateway.fork_identity"]
    )
    os.environ[WAIT_VARIABLE] = os.getcwd()
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        del os.environ[WAIT_VARIABLE]
    return env, output


def _relay_worker_output(output: int) -> None:
    """Copy the worker's output (from the fork server's pipe) into our log, until it ends."""
    import threading

    def relay() -> None:
        with os.fdopen(output, "rb", buffering=0) as source:
            while chunk := source.read(65536):
                os.write(2, chunk)

    threading.Thread(target=relay, name="worker-output", daemon=True).start()


def _stop_fork_server() -> None:
    import multiprocessing.forkserver

    server = multiprocessing.forkserver._forkserver
    if hasattr(server, "_stop"):  # no public way; a scheduler has no use for it
        server._stop()


def _use_fork_server(job: dict, fork_server_env: dict[str, str], output: int) -> None:
    import dask.config

    _relay_worker_output(output)
    if job["argv"][1:2] != ["worker"]:
        _stop_fork_server()
        return
    if _pre_spawn_environment() != fork_server_env:
        return  # the assignment wants another environment at process start: spawn
    nanny_env = dict(dask.config.get("distributed.nanny.environ") or {})
    nanny_env.update(job["env"])
    dask.config.set(
        {
            "distributed.worker.multiprocessing-method": "forkserver",
            "distributed.nanny.environ": nanny_env,
        }
    )


def _hand_over_fork_server_files(account) -> None:
    """The fork server listens on a socket in multiprocessing's private temporary directory,
    made by us (still root) in a fresh directory: the user's nanny must reach, and at exit
    remove, it."""
    import multiprocessing.util

    tempdir = multiprocessing.util.get_temp_dir()
    for root, dirs, files in os.walk(tempdir):
        for name in dirs + files:
            os.chown(os.path.join(root, name), account.uid, account.gid, follow_symlinks=False)
    os.chown(tempdir, account.uid, account.gid, follow_symlinks=False)


def _become(job: dict) -> None:
    """Take on the assignment's files, account, directory and environment, as exec would."""
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    from clusterhub.accounts import identity_of

    account, fence = identity_of(job)
    if fence is not None:
        fence.join()
    if account is not None:
        _hand_over_fork_server_files(account)
        account.become()
    # Last: the fork server takes a changed directory as the sign that we are final.
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    import tempfile

    tempfile.tempdir = None  # found again under the assigned TMPDIR

    import dask.config

    # Dask read its config files and DASK_* variables at import, under the environment
    # this interpreter started with: read them again under the assigned one (HOME, and so
    # ~/.config/dask, differs per cluster).
    dask.config.paths[:] = dask.config._get_paths()
    dask.config.refresh()
    sys.argv = list(job["argv"])


def main() -> int:
    _import_ahead()
    fork_server_env, output = _start_fork_server()
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the gateway closed the pool without using us
    job = json.loads(line)
    _become(job)
    _use_fork_server(job, fork_server_env, output)

    from dask.cli import run_cli

    run_cli()
    return 0


if __name__ == "__main__":
    sys.exit(main())
