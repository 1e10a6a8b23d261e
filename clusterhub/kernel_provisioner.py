"""A kernel provisioner whose kernels take turns with every other start on the machine.

jupyter_client's local provisioner, plus: before a kernel is launched it waits for a turn in
the platform's start queue (see :mod:`clusterhub.admission`), and gives the turn back once the
kernel listens on its shell channel (its imports are done) or exits. The notebook server
uses it for every kernel whose kernelspec names no provisioner of its own (the spawner sets
``KernelProvisionerFactory.default_provisioner_name``); without a queue it is the local
provisioner.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from jupyter_client.provisioning import LocalProvisioner

from . import admission
from .ports import accepts

NAME = "clusterhub-queued-provisioner"


def kernel_listens(connection_info: dict) -> bool:
    """Whether a kernel has bound its shell channel (a socket file, or a TCP port)."""
    ip, port = connection_info.get("ip", ""), connection_info.get("shell_port", 0)
    if connection_info.get("transport") == "ipc":
        return os.path.exists(f"{ip}-{port}")
    return accepts(ip, int(port), timeout=0.5)


class QueuedLocalProvisioner(LocalProvisioner):
    _turn: admission.Turn | None = None
    _watch: asyncio.Task | None = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        self._turn = admission.Turn("kernel")
        await self._turn.wait()
        if self._turn.waited > 1:
            self.log.info("Kernel waited %.0f s for its turn to start", self._turn.waited)
        try:
            return await super().pre_launch(**kwargs)
        except BaseException:
            self._turn.release()
            raise

    async def post_launch(self, **kwargs: Any) -> None:
        await super().post_launch(**kwargs)
        if self._turn is not None:
            info = dict(self.connection_info)
            process = self.process

            def started() -> bool:
                exited = process is not None and process.poll() is not None
                return exited or kernel_listens(info)

            self._watch = self._turn.release_when(started)

    async def cleanup(self, restart: bool = False) -> None:
        if self._watch is not None:
            self._watch.cancel()
        elif self._turn is not None:
            self._turn.release()
        await super().cleanup(restart=restart)
