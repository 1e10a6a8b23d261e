import os
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


def test_a_record_does_not_match_a_reused_pid():
    me = procs.ProcessRecord.of(os.getpid())
    assert me.is_running()
    impostor = procs.ProcessRecord(pid=me.pid, create_time=me.create_time - 100)
    assert not impostor.is_running()
