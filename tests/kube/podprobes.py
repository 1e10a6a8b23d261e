"""A pod's readiness probes and ``pods/exec``, for the process-kubelet's pod worker (see
:mod:`tests.kube.kubelet`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
from typing import Any

import aiohttp

from .base import Obj
from .podprocess import (
    EXEC_TIMEOUT,
    POD_IP,
    _Container,
    _tool,
)


class PodProbes:
    """Probes and exec into a running container, for ``_PodWorker`` (which mixes it in)."""

    # -------------------------------------------------------------- probes

    async def _probe_loop(
        self, c: _Container, proc: subprocess.Popen[bytes], probe: Obj, env: dict[str, str]
    ) -> None:
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        period = min(float(probe.get("periodSeconds", 10)), self.k.max_probe_period)
        success_needed = int(probe.get("successThreshold", 1))
        failure_needed = int(probe.get("failureThreshold", 3))
        successes = failures = 0
        while proc.poll() is None:
            ok = await self._probe_once(c, probe, env)
            if ok:
                successes, failures = successes + 1, 0
                if not c.ready and successes >= success_needed:
                    c.ready = True
                    self.mark_dirty()
            else:
                successes, failures = 0, failures + 1
                if c.ready and failures >= failure_needed:
                    c.ready = False
                    self.mark_dirty()
            await asyncio.sleep(period)

    def _in_container(self, c: _Container, argv: list[str]) -> list[str]:
        """``argv`` run where container ``c`` runs: as its user, in its mount namespace (its
        hosts file and volumes) and UTS namespace."""
        argv = [*self._identity(c).setpriv(_tool("setpriv")), *argv]
        if self.k.mount_ns and c.proc is not None:
            ns_flags = ["--mount", *(["--uts"] if self.k.uts else [])]
            argv = [_tool("nsenter"), f"--target={c.proc.pid}", *ns_flags, "--", *argv]
        return argv

    async def exec_in(
        self, c: _Container, argv: list[str], timeout: float = EXEC_TIMEOUT
    ) -> tuple[bytes, bytes, int]:
        """Run ``argv`` in running container ``c`` as ``kubectl exec`` does: its user, its
        environment, its mount (and UTS) namespace. Returns stdout, stderr, exit code."""
        proc = await asyncio.create_subprocess_exec(
            *self._in_container(c, argv),
            cwd=self.work,
            env=c.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            return out, err + b"\nexec: timed out\n", 124
        return out, err, proc.returncode or 0

    def _port(self, c: _Container, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"unknown named port {port!r}")

    async def _probe_once(self, c: _Container, probe: Obj, env: dict[str, str]) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "tcpSocket" in probe:
                t = probe["tcpSocket"]
                host, port = t.get("host") or POD_IP, self._port(c, t.get("port"))
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                return True
            if "httpGet" in probe:
                h = probe["httpGet"]
                scheme = h.get("scheme", "HTTP").lower()
                host, port = h.get("host") or POD_IP, self._port(c, h.get("port"))
                url = f"{scheme}://{host}:{port}{h.get('path', '/')}"
                headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
                    async with s.get(url, headers=headers, ssl=False, allow_redirects=False) as r:
                        return 200 <= r.status < 400
            if "exec" in probe:
                argv = self._in_container(c, probe["exec"].get("command") or [])
                run = functools.partial(
                    subprocess.run,
                    argv,
                    cwd=self.work,
                    env=env,
                    timeout=timeout,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                result = await asyncio.get_running_loop().run_in_executor(None, run)
                return result.returncode == 0
        except (
            OSError,
            asyncio.TimeoutError,
            aiohttp.ClientError,
            ValueError,
            subprocess.SubprocessError,
        ):
            return False
        return False
