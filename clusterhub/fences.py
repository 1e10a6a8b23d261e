"""Per-user control groups: memory, CPU weight and a process limit for each attendee.

Every process of a user's space (notebook, kernels, Dask scheduler and workers, Spark and
IPyParallel processes) joins the user's group before it runs any of the user's code, so:

- memory: the group's limit is the profile's budget; a kernel or worker that goes past it
  is killed by the kernel's OOM killer inside the group, and nothing outside it is touched;
- CPU: every user's group has the same weight, so under contention each gets an equal share;
- pids: a fork bomb stops at the group's process limit.

cgroup v2 (``/sys/fs/cgroup/cgroup.controllers``) is used where it is mounted, v1 (one
hierarchy per controller) otherwise. Groups live below one group per platform
(``clusterhub-<id>``), so two platforms on one machine never touch each other's. Making a
group needs root; where none can be made, :func:`unavailable_reason` says why and the
platform runs unfenced.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import time
from dataclasses import dataclass

CGROUP_ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("memory", "cpu", "pids")
# cgroup v2's default weight and v1's default shares: equal for every user.
CPU_WEIGHT = 100
CPU_SHARES = 1024


def platform_id(data_dir: str) -> str:
    """Names one platform's groups: its data dir, so a restart finds the same groups."""
    return hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:10]


def cgroup_version(root: str = CGROUP_ROOT) -> int:
    """2 for the unified hierarchy, 1 for per-controller hierarchies, 0 for none."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return 2
    if all(os.path.isdir(os.path.join(root, c)) for c in V1_CONTROLLERS):
        return 1
    return 0


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


@dataclass(frozen=True)
class Fence:
    """One user's control group(s) on this machine."""

    platform_id: str
    name: str
    root: str = CGROUP_ROOT

    @property
    def version(self) -> int:
        return cgroup_version(self.root)

    def _platform_dirs(self) -> list[str]:
        group = f"clusterhub-{self.platform_id}"
        if self.version == 2:
            return [os.path.join(self.root, group)]
        return [os.path.join(self.root, c, group) for c in V1_CONTROLLERS]

    def dirs(self) -> list[str]:
        """The user's group directory in each hierarchy (one with v2, three with v1)."""
        return [os.path.join(d, self.name) for d in self._platform_dirs()]

    # -- making and sizing --------------------------------------------------------------------
    def create(self, memory_bytes: int, pids_max: int) -> None:
        """Make (or resize) the user's group: memory limit, equal CPU weight, pids limit."""
        for parent in self._platform_dirs():
            os.makedirs(parent, exist_ok=True)
        if self.version == 2:
            self._enable_v2_controllers()
            (group,) = self.dirs()
            os.makedirs(group, exist_ok=True)
            _write(os.path.join(group, "memory.max"), str(memory_bytes))
            # No swap: a user over their budget is stopped, not the machine slowed for all.
            if os.path.exists(os.path.join(group, "memory.swap.max")):
                _write(os.path.join(group, "memory.swap.max"), "0")
            _write(os.path.join(group, "cpu.weight"), str(CPU_WEIGHT))
            _write(os.path.join(group, "pids.max"), str(pids_max))
            return
        memory, cpu, pids = self.dirs()
        for group in (memory, cpu, pids):
            os.makedirs(group, exist_ok=True)
        _write(os.path.join(memory, "memory.limit_in_bytes"), str(memory_bytes))
        swap = os.path.join(memory, "memory.memsw.limit_in_bytes")
        if os.path.exists(swap):
            try:
                _write(swap, str(memory_bytes))
            except OSError:
                pass  # memsw must stay >= the memory limit while it is being lowered
        _write(os.path.join(cpu, "cpu.shares"), str(CPU_SHARES))
        _write(os.path.join(pids, "pids.max"), str(pids_max))

    def _enable_v2_controllers(self) -> None:
        # A child group only gets the controllers its parent hands down (subtree_control).
        (platform,) = self._platform_dirs()
        for parent in (self.root, platform):
            available = _read(os.path.join(parent, "cgroup.controllers")).split()
            wanted = [c for c in ("memory", "cpu", "pids") if c in available]
            try:
                control = os.path.join(parent, "cgroup.subtree_control")
                _write(control, " ".join(f"+{c}" for c in wanted))
            except OSError as exc:
                if exc.errno not in (errno.EBUSY,):
                    raise

    def memory_limit(self) -> int:
        group = self.dirs()[0]
        name = "memory.max" if self.version == 2 else "memory.limit_in_bytes"
        value = _read(os.path.join(group, name))
        return -1 if value == "max" else int(value)

    # -- processes ----------------------------------------------------------------------------
    def join(self, pid: int = 0) -> None:
        """Move ``pid`` (0: this process) into the user's group(s); children follow."""
        pid = pid or os.getpid()
        for group in self.dirs():
            _write(os.path.join(group, "cgroup.procs"), str(pid))

    def preexec(self, then=None):
        """A ``preexec_fn``: join the group, then run ``then`` (becoming the account)."""

        def preexec() -> None:
            self.join()
            if then is not None:
                then()

        return preexec

    def pids(self) -> set[int]:
        found: set[int] = set()
        for group in self.dirs():
            try:
                found |= {int(p) for p in _read(os.path.join(group, "cgroup.procs")).split()}
            except FileNotFoundError:
                pass
        return found

    def oom_kills(self) -> int:
        """How many processes the OOM killer stopped in this group (where the kernel says)."""
        group = self.dirs()[0]
        if self.version == 2:
            path = os.path.join(group, "memory.events")
        else:
            path = os.path.join(group, "memory.oom_control")
        try:
            for line in _read(path).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (FileNotFoundError, ValueError):
            pass
        return 0

    def remove(self, timeout: float = 5.0) -> None:
        """Kill whatever is still in the group, then remove it (and the platform's group
        once no user's is left)."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.pids()
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for group in self.dirs():
            try:
                os.rmdir(group)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
        remove_platform_groups(self.platform_id, self.root, only_if_empty=True)


def remove_platform_groups(platform_id: str, root: str = CGROUP_ROOT, only_if_empty=False) -> int:
    """Remove the platform's groups (killing what is left in users' groups unless
    ``only_if_empty``); returns how many user groups were removed."""
    removed = 0
    fence = Fence(platform_id, "_", root)
    for parent in fence._platform_dirs():
        if not os.path.isdir(parent):
            continue
        for name in os.listdir(parent):
            child = os.path.join(parent, name)
            if os.path.isdir(child) and not only_if_empty:
                Fence(platform_id, name, root).remove()
                removed += 1
        try:
            os.rmdir(parent)
        except OSError:
            pass
    return removed


def unavailable_reason(root: str = CGROUP_ROOT) -> str | None:
    """Why no per-user group can be made here, or None when they can."""
    version = cgroup_version(root)
    if version == 0:
        return f"no cgroup v2 or v1 memory/cpu/pids hierarchy is mounted at {root}"
    if os.geteuid() != 0:
        return "making control groups needs root"
    probe = Fence(f"probe{os.getpid()}", "probe", root)
    try:
        probe.create(memory_bytes=64 << 20, pids_max=16)
    except OSError as exc:
        return f"cannot make a control group under {root}: {exc.strerror}"
    finally:
        try:
            probe.remove()
            remove_platform_groups(probe.platform_id, root)
        except OSError:
            pass
    return None


def groups_of(pid: int, root: str = CGROUP_ROOT) -> list[str]:
    """The memory/cpu/pids group directories (v1) or the unified one (v2) ``pid`` is in."""
    version = cgroup_version(root)
    found = []
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        if version == 2 and controllers == "":
            found.append(os.path.join(root, path.lstrip("/")))
        elif version == 1:
            for controller in controllers.split(","):
                if controller in V1_CONTROLLERS:
                    found.append(os.path.join(root, controller, path.lstrip("/")))
    return found


def join_groups_of(pid: int, root: str = CGROUP_ROOT) -> None:
    """Move this process into the same groups as ``pid`` (where they differ)."""
    mine = set(groups_of(os.getpid(), root))
    for group in groups_of(pid, root):
        if group not in mine:
            _write(os.path.join(group, "cgroup.procs"), str(os.getpid()))
