"""Interpreters kept ready to become Dask schedulers and workers (see ``warm_interpreter``).

A cold ``dask scheduler`` or ``dask worker`` spends about a second importing before it
does anything; a warm interpreter has done that already, so handing it the command saves
that second for the scheduler and for every worker's nanny, which is most of the time a
personal cluster takes to be ready.

The pool only serves ``<env>/bin/dask scheduler|worker ...`` commands, and only for the
Python environment it was warmed for: the first such command names the environment, and a
command from another environment (after ``clusterhub build``, a user still on the previous
one) starts cold and retargets the pool. Whatever the pool cannot serve, the caller starts
the ordinary way.

Warm interpreters start with a minimal environment: only what decides how Python starts and
where Dask looks for configuration (the fingerprint below) plus the platform marker; the
rest of the command's environment, secrets included, arrives with the assignment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping

import psutil

from clusterhub import procs
from clusterhub.ports import SOCKET_PATH_MAX

# Variables read while Python starts or while Dask is imported, which the assignment cannot
# change afterwards: a warm interpreter only serves commands that agree on them.
FINGERPRINT_VARIABLES = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSAFEPATH",
    "DASK_CONFIG",
    "DASK_ROOT_CONFIG",
)
# Enough to run an interpreter; kept so that locale-dependent output looks the same.
BASE_VARIABLES = ("PATH", "LANG", "LC_ALL", procs.PLATFORM_MARKER)

Fingerprint = tuple[str, tuple[str, ...]]
# Where warm interpreters keep temporary files, under the pool's directory.
WARM_TMP = "warm-tmp"
# multiprocessing puts the fork server's socket at <TMPDIR>/pymp-XXXXXXXX/listener-XXXXXXXX
# (32 more bytes); past SOCKET_PATH_MAX it cannot listen at all.
FORK_SERVER_SOCKET_SUFFIX = len("/pymp-XXXXXXXX/listener-XXXXXXXX")
# Refills wait until less than this share of the machine's CPU was busy over a delay.
QUIET_CPU_FRACTION = 0.5
# What a quiet platform keeps warm: a new cluster's scheduler and two workers' nannies.
WARM_PER_CLUSTER = 3
# The unique memory one warm interpreter holds while it waits, its fork server included
# (measured on this project's environment), and the share of the memory available at start
# a pre-warm (``clusterhub up --expect``) may take.
WARM_INTERPRETER_BYTES = 160 * 2**20
PREWARM_MEMORY_SHARE = 0.25


def prewarm_plan(expect: int, available_bytes: int) -> tuple[int, int]:
    """How many interpreters to warm for ``expect`` attendees' first clusters, and the
    memory they hold: three per cluster, within a quarter of ``available_bytes``, never
    fewer than a quiet platform's three."""
    wanted = max(WARM_PER_CLUSTER, expect * WARM_PER_CLUSTER)
    affordable = int(available_bytes * PREWARM_MEMORY_SHARE) // WARM_INTERPRETER_BYTES
    count = max(WARM_PER_CLUSTER, min(wanted, affordable))
    return count, count * WARM_INTERPRETER_BYTES


def _busy_fraction(before, after) -> float:
    total = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0)) - (before.idle + getattr(before, "iowait", 0))
    return 1.0 - idle / total if total > 0 else 0.0


def fingerprint(cmd: list[str], env: Mapping[str, str]) -> Fingerprint | None:
    """The environment a warm interpreter needs to run ``cmd``, or None if it cannot serve it."""
    if len(cmd) < 2 or os.path.basename(cmd[0]) != "dask" or cmd[1] not in ("scheduler", "worker"):
        return None
    python = os.path.join(os.path.dirname(cmd[0]), "python")
    if not os.path.isabs(python) or not os.access(python, os.X_OK):
        return None
    if os.geteuid() == 0 and os.path.dirname(cmd[0]) != os.path.join(sys.prefix, "bin"):
        # A warm interpreter imports as root before it becomes the user: only the platform's
        # own environment, never one built from a repository (whose packages, .pth files
        # included, are the repository's code), is imported by root.
        return None
    return python, tuple(env.get(name, "") for name in FINGERPRINT_VARIABLES)


class WarmInterpreterPool:
    """Up to ``size`` interpreters importing (or done importing) Dask, for one environment.

    ``refill_size``: what refills go back up to (default ``size``). A pre-warm for a room
    fills ``size`` once; once the room has arrived a few are enough again."""

    def __init__(
        self,
        size: int,
        workdir: str,
        log: logging.Logger | None = None,
        refill_delay: float = 1.0,
        refill_size: int | None = None,
    ) -> None:
        self.size = size
        self.refill_size = size if refill_size is None else min(refill_size, size)
        self.workdir = workdir
        self.log = log or logging.getLogger(__name__)
        # Refilling imports Dask in new interpreters: on a small machine that would take the
        # cores from the schedulers and workers just handed out, so it waits until the
        # machine is quiet again (see _refill_when_quiet).
        self.refill_delay = refill_delay
        self._target: Fingerprint | None = None
        self._idle: list[asyncio.subprocess.Process] = []
        self._closed = False
        self._refill: asyncio.Future | None = None

    async def warm(self, cmd: list[str], env: Mapping[str, str]) -> None:
        """Aim the pool at the environment of ``cmd`` and fill it."""
        target = fingerprint(cmd, env)
        if target is not None:
            await self._retarget(target)
            await self._fill()

    async def start(
        self,
        cmd: list[str],
        env: Mapping[str, str],
        cwd: str,
        log_path: str,
        identity: Mapping | None = None,
    ) -> int | None:
        """Run ``cmd`` in a warm interpreter and return its pid; None if none can serve it.

        ``identity``: ``{"account": ..., "fence": ...}`` of the user it runs for (see
        ``warm_interpreter``), or None to stay the gateway's account."""
        if self._closed or self.size <= 0:
            return None
        target = fingerprint(cmd, env)
        if target is None:
            return None
        if target != self._target:
            await self._retarget(target)
            await self._fill()
            return None  # the new ones are no further along than a cold start
        pid = None
        while self._idle and pid is None:
            proc = self._idle.pop(0)
            pid = await self._assign(proc, cmd, env, cwd, log_path, identity or {})
        self._schedule_refill()
        return pid

    def _schedule_refill(self) -> None:
        if self._refill is not None and not self._refill.done():
            self._refill.cancel()
        self._refill = asyncio.ensure_future(self._refill_when_quiet())

    async def _refill_when_quiet(self, give_up_after: float = 60.0) -> None:
        """Refill once the machine is mostly idle (the processes just handed out have done
        their own starting), or after ``give_up_after`` seconds whatever the load."""
        waited = 0.0
        before = psutil.cpu_times()
        while waited < give_up_after:
            await asyncio.sleep(self.refill_delay)
            waited += self.refill_delay
            after = psutil.cpu_times()
            busy = _busy_fraction(before, after)
            before = after
            if busy < QUIET_CPU_FRACTION:
                break
        await self._fill(self.refill_size)

    async def close(self) -> None:
        """Stop every interpreter still waiting for an assignment."""
        self._closed = True
        if self._refill is not None and not self._refill.done():
            self._refill.cancel()
        await self._stop_idle()

    async def _assign(
        self,
        proc: asyncio.subprocess.Process,
        cmd: list[str],
        env: Mapping[str, str],
        cwd: str,
        log_path: str,
        identity: Mapping,
    ) -> int | None:
        job = {
            "argv": ["dask", *cmd[1:]],
            "env": dict(env),
            "cwd": cwd,
            "log": log_path,
            "account": identity.get("account"),
            "fence": identity.get("fence"),
        }
        if proc.returncode is not None or proc.stdin is None:
            return None
        try:
            proc.stdin.write(json.dumps(job).encode() + b"\n")
            await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            # It died while importing (a broken environment): the cold start will say why.
            return None
        return proc.pid

    async def _retarget(self, target: Fingerprint) -> None:
        if target != self._target:
            await self._stop_idle()
            self._target = target

    async def _fill(self, size: int | None = None) -> None:
        if self._closed or self._target is None:
            return
        self._idle = [p for p in self._idle if p.returncode is None]
        while len(self._idle) < (self.size if size is None else size):
            try:
                self._idle.append(await self._spawn(self._target))
            except OSError as exc:
                self.log.warning("Cannot start a warm interpreter (%s); starting cold", exc)
                return

    async def _spawn(self, target: Fingerprint) -> asyncio.subprocess.Process:
        python, values = target
        env = {name: os.environ[name] for name in BASE_VARIABLES if name in os.environ}
        env.update({k: v for k, v in zip(FINGERPRINT_VARIABLES, values, strict=True) if v})
        # Its fork server's socket directory is made before any assignment: in the
        # platform's own directory, not /tmp, where a killed interpreter would leave it. It
        # must stay passable (0711): the directory is handed to the user whose nanny uses it.
        tmpdir = os.path.join(self.workdir, WARM_TMP)
        if len(os.fsencode(tmpdir)) + FORK_SERVER_SOCKET_SUFFIX > SOCKET_PATH_MAX:
            raise OSError(
                f"the data dir's path is too long for a fork server's socket ({tmpdir} is "
                f"{len(os.fsencode(tmpdir))} bytes, at most "
                f"{SOCKET_PATH_MAX - FORK_SERVER_SOCKET_SUFFIX}); choose a shorter --data-dir"
            )
        os.makedirs(tmpdir, exist_ok=True)
        os.chmod(tmpdir, 0o711)
        env["TMPDIR"] = tmpdir
        return await asyncio.create_subprocess_exec(
            python,
            "-m",
            "clusterhub.gateway.warm_interpreter",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
            cwd=self.workdir,
            start_new_session=True,
        )

    async def _stop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for proc in idle:
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.close()  # no assignment: it exits on its own
        for proc in idle:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
