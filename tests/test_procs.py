import os
import subprocess
import sys

from clusterhub import procs


def test_detached_processes_are_tracked_and_swept_by_marker(tmp_path):
    marker_value = str(tmp_path)
    env = {**os.environ, procs.SPACE_MARKER: marker_value}
    record = procs.launch_detached(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"],
        env=env,
        cwd=str(tmp_path),
        log_path=str(tmp_path / "logs" / "sleeper.log"),
    )
    try:
        assert record.is_running()
        assert record.process().ppid() != os.getpid(), "adopted away from us: no zombies here"
        assert procs.wait_until(lambda: "up" in (tmp_path / "logs" / "sleeper.log").read_text(), 10)
        assert [p.pid for p in procs.find_marked(procs.SPACE_MARKER, marker_value)] == [record.pid]
        assert procs.sweep(procs.SPACE_MARKER, marker_value) == 1
        assert not record.is_running()
    finally:
        procs.terminate([record], timeout=2)


def test_a_start_time_is_the_seconds_since_boot_and_the_same_for_every_reader():
    mine = procs.process_start_time(os.getpid())
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    assert 0 <= mine <= uptime
    seen = subprocess.run(
        [sys.executable, "-c",
         "import os; from clusterhub import procs; print(procs.process_start_time(os.getppid()))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert float(seen.stdout) == mine
    assert procs.is_process(os.getpid(), mine)
    assert procs.process_start_time(2**22 + 1) is None  # above any pid_max: no such process


def test_a_clock_adjustment_that_moves_the_boot_time_changes_no_identity(monkeypatch):
    """The kernel works the boot time out from the wall clock each time it is read, so NTP
    moves it by whole seconds; psutil's create_time() moves with it. A record made before
    still names its process, and a reused pid is still told apart."""
    import psutil._pslinux

    record = procs.ProcessRecord.of(os.getpid())
    wall_clock = psutil.Process(os.getpid()).create_time()
    booted = psutil._pslinux.boot_time()
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: booted + 1)
    assert psutil.Process(os.getpid()).create_time() == wall_clock + 1
    assert record.is_running()
    assert procs.ProcessRecord.of(os.getpid()) == record
    assert not procs.ProcessRecord(
        pid=record.pid, create_time=record.create_time - 0.5
    ).is_running()
    # A wall-clock start time recorded by an earlier release (before an upgrade and a
    # restart of the hub or the gateway) still names its process, the boot time moved or not.
    assert procs.is_process(os.getpid(), wall_clock)
    assert procs.is_process(os.getpid(), wall_clock + 1)
    assert not procs.is_process(os.getpid(), wall_clock - 100)
    assert not procs.is_process(os.getpid(), wall_clock + 0.5)


def test_a_record_does_not_match_a_reused_pid():
    me = procs.ProcessRecord.of(os.getpid())
    assert me.is_running()
    impostor = procs.ProcessRecord(pid=me.pid, create_time=me.create_time - 100)
    assert not impostor.is_running()
