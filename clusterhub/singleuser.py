"""A local space's notebook server: ``jupyterhub-singleuser`` that skips interpreter teardown.

Once jupyter-server has shut its kernels, sessions and extensions down (on SIGTERM), what is
left of the process is Python's finalization: tearing down some 1200 modules and everything
they hold. Alone that takes a fraction of a second; with a room's 30 servers stopping at once
on 2 cores it took about 12 s of the platform's stop (py-spy: the main thread busy, no Python
frame left). It has nothing to save, so once the server returns, the exit handlers run
(logging flushes its files) and the process ends without it.

Run as ``clusterhub-singleuser`` with ``jupyterhub-singleuser``'s arguments.
"""

from __future__ import annotations

import atexit
import os
import sys

from .forkserver import exit_status

COMMAND = "clusterhub-singleuser"
# What an environment built before this command existed runs instead.
PLAIN_COMMAND = "jupyterhub-singleuser"


def server_command(configured: list[str], environment) -> list[str]:
    """``configured`` (the spawner's ``cmd``) run from ``environment`` (a
    :class:`clusterhub.build.environments.Environment`): an environment built before
    clusterhub had this command runs ``jupyterhub-singleuser`` instead."""
    if (
        configured
        and os.path.basename(configured[0]) == COMMAND
        and environment.executable(COMMAND) == COMMAND
    ):
        configured = [PLAIN_COMMAND, *configured[1:]]
    return environment.rebase_command(configured)


def main() -> None:
    from jupyterhub.singleuser import main as singleuser_main

    try:
        status = exit_status(singleuser_main())
    except SystemExit as exc:
        status = exit_status(exc.code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
