"""Warm starts of Dask schedulers and workers: each forks from a parent that imported Dask.

A cold ``dask scheduler`` or ``dask worker`` spends about a second of a core importing
before it does anything, and holds what it imported on its own. The gateway instead keeps
one fork server (:mod:`clusterhub.forkserver`) per Python environment, which has imported
Dask once; every scheduler and worker of that environment forks from it, ready at once, and
shares the imported pages with it (a forked worker held 40 MB of its own on the build
machine, a cold one 63 MB). However many clusters a room asks for at once, every start is
warm: there is no pool to run dry.

The fork server only serves ``<env>/bin/dask scheduler|worker ...`` commands, and only for the
Python environment it imported: the first such command names the environment, and a command
from another environment (after ``clusterhub build``, a user still on the previous one) starts
cold and retargets it. Whatever it cannot serve, the caller starts the ordinary way.

The fork server starts with a minimal environment: only what decides how Python starts and
where Dask looks for configuration (the fingerprint below) plus the platform marker; each
child's own environment, secrets included, arrives with its request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping

from clusterhub import procs

# Variables read while Python starts or while Dask is imported, which a request cannot
# change afterwards: the fork server only serves commands that agree on them.
FINGERPRINT_VARIABLES = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSAFEPATH",
    "DASK_CONFIG",
    "DASK_ROOT_CONFIG",
)
# Enough to run an interpreter; kept so that locale-dependent output looks the same.
BASE_VARIABLES = ("PATH", "LANG", "LC_ALL", procs.PLATFORM_MARKER)
# What the fork server imports ahead: the dask command, the scheduler's and the worker's
# code (the dashboard included), and what a child needs to take on its user's identity.
DASK_PRELOAD = (
    "clusterhub.accounts",
    "clusterhub.hostnames",
    "dask.cli",
    "distributed.cli.dask_scheduler",
    "distributed.cli.dask_worker",
    "distributed.dashboard.scheduler",
    "dask_gateway.scheduler_preload",
    "clusterhub.engines.dask_records",
    "clusterhub.gateway.dashboard_lock",
)
# How long the fork server may take to import before starts go cold.
READY_TIMEOUT = 120.0

Fingerprint = tuple[str, tuple[str, ...]]


def fingerprint(cmd: list[str], env: Mapping[str, str]) -> Fingerprint | None:
    """The environment a fork server needs to run ``cmd``, or None if it cannot serve it."""
    if len(cmd) < 2 or os.path.basename(cmd[0]) != "dask" or cmd[1] not in ("scheduler", "worker"):
        return None
    python = os.path.join(os.path.dirname(cmd[0]), "python")
    if not os.path.isabs(python) or not os.access(python, os.X_OK):
        return None
    if os.geteuid() == 0 and os.path.dirname(cmd[0]) != os.path.join(sys.prefix, "bin"):
        # The fork server imports as root before its children become the user: only the
        # platform's own environment, never one built from a repository (whose packages,
        # .pth files included, are the repository's code), is imported by root.
        return None
    return python, tuple(env.get(name, "") for name in FINGERPRINT_VARIABLES)


class DaskForkServer:
    """Forks Dask schedulers and workers for one environment (see the module's docstring).

    ``enabled=False`` starts everything cold."""

    def __init__(self, enabled: bool, workdir: str, log: logging.Logger | None = None) -> None:
        self.enabled = enabled
        self.workdir = workdir
        self.log = log or logging.getLogger(__name__)
        self._target: Fingerprint | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._ready = False
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The fork server's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def warm(self, cmd: list[str], env: Mapping[str, str]) -> None:
        """Aim at the environment of ``cmd``; return once the fork server has imported Dask."""
        target = fingerprint(cmd, env)
        if self.enabled and target is not None:
            async with self._lock:
                await self._retarget(target)

    async def start(
        self,
        cmd: list[str],
        env: Mapping[str, str],
        cwd: str,
        log_path: str,
        identity: Mapping | None = None,
        oom_score_adj: int | None = None,
        hostname: str | None = None,
    ) -> int | None:
        """Fork ``cmd`` and return its pid; None if the fork server cannot serve it.

        ``identity``: ``{"account": ..., "fence": ...}`` of the user it runs for, or None to
        stay the gateway's account; ``oom_score_adj``: the child's, if not the default;
        ``hostname``: a UTS namespace of its own with that name (as root)."""
        if self._closed or not self.enabled:
            return None
        target = fingerprint(cmd, env)
        if target is None:
            return None
        async with self._lock:
            if target != self._target:
                # The new one is no further along than a cold start: this one goes cold.
                asyncio.ensure_future(self.warm(cmd, env))
                return None
            if not self._ready or self._proc is None or self._proc.returncode is not None:
                self._ready = False
                await self._start_server(target)  # it died: the next start is warm again
                return None
            job = {
                "argv": ["dask", *cmd[1:]],
                "env": dict(env),
                "cwd": cwd,
                "log": log_path,
                "account": (identity or {}).get("account"),
                "fence": (identity or {}).get("fence"),
                "oom_score_adj": oom_score_adj,
                "hostname": hostname,
            }
            answer = await self._ask(job)
        if answer is None or "pid" not in answer:
            why = answer.get("error") if answer else "it exited"
            self.log.warning("The Dask fork server could not fork (%s); starting cold", why)
            return None
        return int(answer["pid"])

    async def close(self) -> None:
        """Stop the fork server (what it forked runs on)."""
        self._closed = True
        async with self._lock:
            await self._stop_server()

    async def _ask(self, job: dict) -> dict | None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(job).encode() + b"\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
        except (BrokenPipeError, ConnectionResetError, asyncio.TimeoutError):
            return None
        return json.loads(line) if line else None

    async def _retarget(self, target: Fingerprint) -> None:
        if target == self._target and self._proc is not None and self._proc.returncode is None:
            return
        await self._stop_server()
        self._target = target
        await self._start_server(target)

    async def _start_server(self, target: Fingerprint) -> None:
        if self._closed:
            return
        python, values = target
        env = {name: os.environ[name] for name in BASE_VARIABLES if name in os.environ}
        env.update({k: v for k, v in zip(FINGERPRINT_VARIABLES, values, strict=True) if v})
        try:
            self._proc = await asyncio.create_subprocess_exec(
                python,
                "-m",
                "clusterhub.forkserver",
                *DASK_PRELOAD,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
            assert self._proc.stdout is not None
            line = await asyncio.wait_for(self._proc.stdout.readline(), READY_TIMEOUT)
            self._ready = bool(line) and json.loads(line).get("ready") is True
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            self.log.warning("Cannot start the Dask fork server (%s); starting cold", exc)
            self._ready = False
            return
        if not self._ready:
            self.log.warning("The Dask fork server exited while importing; starting cold")

    async def _stop_server(self) -> None:
        proc, self._proc, self._ready = self._proc, None, False
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # no more requests: it exits on its own
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
