"""Local processes that outlive the Python process that started them.

Engines (Spark daemons, IPyParallel controllers and engines) are started by the
hub's spawner but scaled later from the user's notebook server, so no single
Python process can stay their parent. They are launched detached and recorded by
pid *and* start time, so a recycled pid is never mistaken for ours.

Every process of a space carries marker variables in its environment
(:data:`PLATFORM_MARKER`, :data:`SPACE_MARKER`); :func:`sweep` finds stragglers
by those markers, which also catches kernels and other grandchildren that
started their own sessions and so escape a process-group kill.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass

import psutil

PLATFORM_MARKER = "CLUSTERHUB_PLATFORM"
SPACE_MARKER = "CLUSTERHUB_SPACE"


@dataclass(frozen=True)
class ProcessRecord:
    """A process we started: the pid plus its start time tells it apart from a reused pid."""

    pid: int
    create_time: float  # procs.process_start_time: seconds since boot (the epoch, if older)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> ProcessRecord:
        return cls(pid=int(data["pid"]), create_time=float(data["create_time"]))

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        started = process_start_time(pid)
        if started is None:
            raise psutil.NoSuchProcess(pid)
        return cls(pid=pid, create_time=started)

    def process(self) -> psutil.Process | None:
        """The live process, or None when it has exited (or the pid was reused)."""
        try:
            if not is_process(self.pid, self.create_time):
                return None
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    def is_running(self) -> bool:
        return self.process() is not None


def launch_detached(
    cmd: list[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    log_path: str,
) -> ProcessRecord:
    """Start ``cmd`` in its own session, reparented away from us, and return its record.

    A short-lived ``sh`` starts the command in the background and prints its pid,
    then exits: the command is adopted by init (or the nearest subreaper), so
    neither the hub nor a notebook server ever accumulates zombies from it.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    script = 'exec "$@" >>"$CLUSTERHUB_LOG" 2>&1 </dev/null &\necho $!'
    out = subprocess.run(
        ["sh", "-c", script, "clusterhub-launch", *cmd],
        env={**env, "CLUSTERHUB_LOG": log_path},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
    )
    pid = int(out.stdout.strip())
    try:
        return ProcessRecord.of(pid)
    except psutil.NoSuchProcess as exc:
        raise RuntimeError(f"{cmd[0]} exited at once; see {log_path}") from exc


def terminate(records: Iterable[ProcessRecord], timeout: float = 10.0) -> None:
    """SIGTERM each live process (and its children), then SIGKILL what is left after ``timeout``."""
    procs: list[psutil.Process] = []
    for record in records:
        proc = record.process()
        if proc is None:
            continue
        try:
            procs.extend(proc.children(recursive=True))
        except psutil.Error:
            pass
        procs.append(proc)
    _terminate_processes(procs, timeout)


def _terminate_processes(procs: list[psutil.Process], timeout: float) -> None:
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def find_marked(
    marker: str, value: str, cwd_under: str | None = None, uid: int | None = None
) -> list[psutil.Process]:
    """Every process (but this one) whose environment has ``marker=value``.

    With ``cwd_under``, also every process working inside that directory: a process that
    took on its environment after it started (a warm interpreter, see
    ``clusterhub.gateway.warm_pool``) shows the kernel its starting environment only, but
    its working directory is always current. With ``uid``, only processes whose real uid
    is ``uid``.
    """
    found = []
    me = os.getpid()
    inside = os.path.join(os.path.abspath(cwd_under), "") if cwd_under else None
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if uid is not None and proc.uids().real != uid:
                continue
            if proc.environ().get(marker) == value or (
                inside is not None and os.path.join(proc.cwd(), "").startswith(inside)
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def sweep(
    marker: str,
    value: str,
    timeout: float = 5.0,
    cwd_under: str | None = None,
    uid: int | None = None,
) -> int:
    """Stop every process marked ``marker=value`` (or working under ``cwd_under``), of
    ``uid`` if given; count them."""
    procs = find_marked(marker, value, cwd_under, uid)
    _terminate_processes(procs, timeout)
    return len(procs)


@contextlib.contextmanager
def exclusive(lock_path: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (made if missing) for the block.

    Engines are scaled from several places at once (the sidebar, the widget, a kernel, the
    hub stopping the space): each change reads what runs and starts or stops the
    difference, so two at once would both start it. The lock makes them take turns, across
    processes.
    """
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Start times that earlier releases recorded were wall-clock times (seconds since the epoch):
# no machine has been up for this many seconds since it booted.
_WALL_CLOCK_RECORDS = 1e9


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the machine booted, or None if there is
    no such process. With the pid, it names one process: a pid reused later has another.

    It is the kernel's tick count for the process, which never changes. Not psutil's
    ``create_time()``: that adds the boot time, which the kernel works out from the wall
    clock whenever it is read, so an adjustment of the clock (NTP, often in a machine's first
    minutes) moves it by a whole second, and every process would seem to be another one."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces and parentheses of its own.
    after_name = stat.rsplit(b")", 1)[1].split()
    return int(after_name[19]) / CLOCK_TICKS  # field 22 of proc(5), starttime


def is_process(pid: int, started: float | None) -> bool:
    """Whether ``pid`` still names the process that started at ``started`` (a value of
    :func:`process_start_time`), a zombie included."""
    if started is None:
        return False
    if started >= _WALL_CLOCK_RECORDS:
        return _started_at_wall_clock(pid, started)
    now = process_start_time(pid)
    return now is not None and abs(now - started) < 0.5 / CLOCK_TICKS


def _started_at_wall_clock(pid: int, started: float) -> bool:
    """The same, for a start time an earlier release recorded from psutil's wall-clock
    ``create_time()``: the boot time within it may have moved by whole seconds since."""
    try:
        drift = psutil.Process(pid).create_time() - started
    except psutil.Error:
        return False
    return abs(drift - round(drift)) < 0.01 and abs(round(drift)) <= 2


def process_exited(pid: int) -> bool:
    """Whether ``pid`` is gone or a zombie: exited, though not yet waited for (its pid
    still answers a signal 0)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
