"""Preloaded into a warm interpreter's fork server: it becomes whoever its parent becomes.

A warm interpreter (see ``warm_interpreter``) starts as the gateway's account, with a fork
server that has already imported Dask, and only later learns which user's worker it will
be. The fork server must not fork that user's worker while it is still the gateway's
account: the worker would run as root, and the requests it serves come from the user's
nanny. So, imported last in the fork server's preload (after Dask, while the interpreter
waits for its assignment), this module blocks until the parent has taken on its
assignment: the parent joins the user's control group and becomes their account before it
changes into the assignment's directory, so a changed working directory of the parent means
its identity is final. The fork server then joins the same groups and takes the same uid,
gid and groups, before it accepts a single request. If the parent exits instead, so does
the fork server.
"""

from __future__ import annotations

import os
import time

# Set by the warm interpreter to its working directory while it starts the fork server.
WAIT_VARIABLE = "CLUSTERHUB_FORK_IDENTITY"
POLL_SECONDS = 0.02


def _credentials(pid: int) -> tuple[int, int, list[int]]:
    uid = gid = -1
    groups: list[int] = []
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "Uid":
                uid = int(value.split()[1])  # effective
            elif key == "Gid":
                gid = int(value.split()[1])
            elif key == "Groups":
                groups = [int(g) for g in value.split()]
    return uid, gid, groups


def follow_parent(start_dir: str) -> None:
    """Wait until the parent leaves ``start_dir`` (where it was when it started us; the
    parent may well have left it before this runs), then become what it became."""
    parent = os.getppid()
    while True:
        if os.getppid() != parent:
            os._exit(0)  # the warm interpreter is gone: nobody will ask us to fork
        try:
            if os.readlink(f"/proc/{parent}/cwd") != start_dir:
                break
        except OSError:
            os._exit(0)
        time.sleep(POLL_SECONDS)
    uid, gid, groups = _credentials(parent)
    from clusterhub.fences import cgroup_version, join_groups_of

    if cgroup_version():
        join_groups_of(parent)
    if uid != os.geteuid():
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)


_start_dir = os.environ.pop(WAIT_VARIABLE, "")
if _start_dir and os.geteuid() == 0:
    follow_parent(_start_dir)
