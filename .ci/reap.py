"""Run a command as a child subreaper; afterwards, fail if any process it started is left.

    python3 .ci/reap.py COMMAND [ARGS...]

Every process the command starts, however it detaches (setsid, double fork, daemons), is
re-parented to this process instead of init when its parent exits (Linux's
PR_SET_CHILD_SUBREAPER). So once the command has exited, whatever is still a descendant of
this process is a leftover. They are listed (pid, age, command line), killed, and the exit
status is non-zero, even if the command passed.

The same holds for what the command leaves in the machine's shared places: new entries in
the temporary directories, attendee accounts the platform made, and its control groups.
They are listed and the exit status is non-zero (they are not removed: they are evidence).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
# Orphans may take a moment to be re-parented after their parent exits.
SETTLE_SECONDS = 2.0


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return found


def descendants(pid: int) -> list[int]:
    result, todo = [], _children(pid)
    while todo:
        child = todo.pop()
        result.append(child)
        todo += _children(child)
    return result


def describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return f"{pid} (gone)"
    if state == "Z":
        return f"{pid} (zombie)"
    return f"{pid} {cmdline[:300] or '[no command line]'}"


# /run/clusterhub: the platforms' short runtime dirs (kernel sockets, the start queue).
TEMPORARY_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/clusterhub")
# Kept on purpose across platforms: the lock that serialises making accounts.
MACHINE_WIDE = {"/run/clusterhub/accounts.lock"}
# clusterhub.accounts writes "clusterhub user <name>" and "clusterhub build account".
ACCOUNT_GECOS = "clusterhub "
CGROUP_ROOT = "/sys/fs/cgroup"


def shared_state() -> set[str]:
    """What is in the machine's shared places now, one line per thing."""
    found: set[str] = set()
    for top in TEMPORARY_DIRS:
        try:
            found.update(
                os.path.join(top, name)
                for name in os.listdir(top)
                if os.path.join(top, name) not in MACHINE_WIDE
                and not name.startswith("pytest-of-")  # pytest's own, it keeps the last 3
            )
        except OSError:
            pass
    try:
        with open("/etc/passwd") as f:
            for line in f:
                fields = line.split(":")
                if len(fields) > 4 and fields[4].startswith(ACCOUNT_GECOS):
                    found.add(f"account {fields[0]}")
    except OSError:
        pass
    for dirpath, dirnames, _ in os.walk(CGROUP_ROOT):
        for name in dirnames:
            if name.startswith("clusterhub-"):
                found.add(f"cgroup {os.path.join(dirpath, name)}")
        if dirpath.count("/") >= 5:
            dirnames.clear()  # controller/group/group is as deep as the platform goes
    return found


def reap_exited_orphans(keep: int) -> None:
    """Wait for the orphans that exited, as init does at once: until then each is a zombie
    that still holds its pid, and a program that checks whether that pid is alive (as
    JupyterHub does with its proxy's pid file) takes it for running. Never ``keep`` (the
    command: its exit status is Popen's)."""
    for pid in _children(os.getpid()):
        if pid == keep:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def reap_zombies() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("reap.py: cannot become a child subreaper; leftovers go unchecked", file=sys.stderr)
    before = shared_state()
    command = subprocess.Popen(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: command.send_signal(s))
    while command.poll() is None:
        reap_exited_orphans(keep=command.pid)
        time.sleep(0.5)
    code = command.returncode
    deadline = time.monotonic() + SETTLE_SECONDS
    left: list[int] = []
    while time.monotonic() < deadline:
        reap_zombies()
        left = descendants(os.getpid())
        if not left:
            break
        time.sleep(0.2)
    leftovers = sorted(shared_state() - before)
    if leftovers:
        print(f"\nreap.py: {len(leftovers)} things were left behind by the tests:", file=sys.stderr)
        for line in leftovers:
            print(f"  {line}", file=sys.stderr)
        code = code or 1
    if not left:
        return code
    print(f"\nreap.py: {len(left)} processes were left behind by the tests:", file=sys.stderr)
    for pid in left:
        print(f"  {describe(pid)}", file=sys.stderr)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    reap_zombies()
    return code or 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
