"""A warm parent that forks ready-made Python processes: Dask schedulers and workers.

On a small machine most of a Python process's start is importing, and most of its memory is
what it imported: a cold ``dask worker`` spends about a second of a core and holds about
63 MB of its own before it does anything. A fork server imports once; each request forks a
child that already has everything imported and shares those pages with its parent until it
writes to them. Measured on the 2-core build machine, a forked scheduler held 43 MB of its
own (cold: 64 MB) and a forked worker 40 MB (cold: 63 MB), ready at once.

The fork server is the requester's child and talks to it alone, over its standard input
(requests) and output (answers), one JSON line each way. A request::

    {"argv": ["dask", "worker", ...], "env": {...}, "cwd": "...", "log": "..." or null,
     "account": {...} or null, "fence": {...} or null, "oom_score_adj": N or null,
     "hostname": "..." or null}

forks a child that becomes that command as an ``exec`` would: a session of its own, the log
file (made new, never followed through a link) as its output, ``/dev/null`` as its input,
its OOM score adjustment, a hostname of its own (a UTS namespace), the user's control
group, then the user's account (before it touches anything the user controls), the working
directory and the environment; then it runs the console script ``argv[0]`` names, and exits
as that script's process would (``atexit`` handlers, threads joined). The answer is
``{"pid": N}``, or ``{"error": "..."}`` when it could not fork. Without a log the child
writes where the fork server's standard error goes.

The fork server reaps its children at once, so a pid that answers signal 0 is alive. When
its requester closes the pipe it exits; children it forked run on, adopted by init.

It only serves commands of its own Python environment (see ``gateway.warm_pool``): what
was imported at its start is what every child runs.

Run as ``python -m clusterhub.forkserver MODULE...`` (the modules to import ahead).
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping

# Signals a fresh process starts with at their defaults (the fork server changes SIGCHLD).
_RESET_SIGNALS = (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)


def _reap(_signum=None, _frame=None) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _console_script(name: str):
    """The function a console script of this environment runs (``dask`` -> dask.cli:run_cli)."""
    from importlib.metadata import entry_points

    found = entry_points(group="console_scripts", name=os.path.basename(name))
    for entry in found:
        return entry.load()
    raise LookupError(f"no console script {name!r} in this environment")


def set_oom_score_adj(value: int) -> None:
    """This process's OOM score adjustment (-1000 to 1000; raising it needs no privilege)."""
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(value))


def take_identity(identity: Mapping, oom_score_adj: int | None, hostname: str | None) -> None:
    """In a new process, still root, before it runs anything of the user's: its OOM score
    adjustment, a hostname of its own, the owner's control group, then the owner's account
    (``identity``: ``{"account": ..., "fence": ...}``, either may be missing)."""
    if oom_score_adj is not None:
        set_oom_score_adj(int(oom_score_adj))
    if hostname:
        from clusterhub.hostnames import enter_own_host

        enter_own_host(hostname)
    from clusterhub.accounts import identity_of

    account, fence = identity_of(dict(identity))
    if fence is not None:
        fence.join()
    if account is not None:
        account.become()


def exit_status(result: object) -> int:
    """The exit status of a process whose ``main()`` returned (or passed to ``sys.exit``)
    ``result``, as Python gives it: None is 0, a number itself, anything else 1, said on
    standard error."""
    if result is None:
        return 0
    if isinstance(result, int):
        return result
    print(result, file=sys.stderr)
    return 1


def _take_on(job: dict) -> None:
    """In the child: the request's files, session, groups, account, directory, environment."""
    for signum in _RESET_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    os.setsid()
    if job.get("log"):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        log = os.open(job["log"], flags, 0o640)
    else:
        log = os.dup(2)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    take_identity(job, job.get("oom_score_adj"), job.get("hostname"))
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    import tempfile

    tempfile.tempdir = None  # found again under the request's TMPDIR
    if "dask.config" in sys.modules:
        import dask.config

        # Dask read its config files and DASK_* variables at import, under the fork
        # server's environment: read them again under the request's (HOME, and so
        # ~/.config/dask, differs per user).
        dask.config.paths[:] = dask.config._get_paths()
        dask.config.refresh()
    sys.argv = list(job["argv"])


def _run(job: dict) -> int:
    """In the child, after the fork: become the request and run it; its exit status."""
    try:
        _take_on(job)
        main = _console_script(job["argv"][0])
    except BaseException as exc:  # nothing of the request ran: say why in its log
        os.write(2, f"clusterhub fork server: cannot start {job['argv'][:2]}: {exc}\n".encode())
        return 127
    try:
        return exit_status(main())
    except SystemExit as exc:
        return exit_status(exc.code)


def serve(requests, answers) -> dict | None:
    """Fork a child per request until ``requests`` ends. Returns the child's request in the
    child (which then runs it), None in the fork server when it is done."""
    signal.signal(signal.SIGCHLD, _reap)
    for line in requests:
        if not line.strip():
            continue
        try:
            job = json.loads(line)
            if threading.active_count() > 1:
                # A fork copies one thread: locks held by the others would stay held.
                raise RuntimeError("the fork server has started threads")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            if pid == 0:
                requests.close()
                answers.close()
                return job
            answer = {"pid": pid}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    return None


def main(preload: list[str]) -> int:
    for name in preload:
        importlib.import_module(name)
    # Objects from the imports are never collected: the collector then never touches (and
    # so copies) the pages children share with us.
    gc.collect()
    gc.freeze()
    requests = os.fdopen(os.dup(0), "r")
    answers = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    job = serve(requests, answers)
    if job is None:
        return 0
    return _run(job)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
