"""Supervision by `clusterhub up` (restart with backoff, give up when it keeps failing), and
the local spawner re-attaching after a hub restart without ever signalling a reused pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace

from clusterhub.procs import process_exited, process_start_time
from clusterhub.supervise import RestartPolicy, Supervised


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_restarts_back_off_and_give_up_after_five_within_five_minutes():
    clock = Clock()
    policy = RestartPolicy(clock=clock)
    delays = []
    for _ in range(5):
        delays.append(policy.delay_after_exit())
        clock.now += 10
    assert delays == [1.0, 2.0, 4.0, 8.0, 15.0]
    assert policy.delay_after_exit() is None, "the sixth exit within 5 minutes: give up"


def test_restarts_spread_over_time_go_on_for_ever():
    clock = Clock()
    policy = RestartPolicy(clock=clock)
    for _ in range(50):
        assert policy.delay_after_exit() == 1.0
        clock.now += 301  # each restart has left the window before the next exit
    assert policy.recent_restarts == 1


def exiting(code: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])


def test_a_supervised_process_is_restarted_after_its_backoff_then_given_up():
    clock = Clock()
    started = []
    cleared = []

    def start():
        proc = exiting(3)
        started.append(proc)
        return proc

    child = Supervised("hub", start, before_restart=lambda: cleared.append(1), clock=clock)
    child.start()
    said = []
    for attempt in range(5):
        started[-1].wait()
        assert child.check(said.append) is None
        assert said[-1] == (
            "clusterhub: the hub exited unexpectedly (exit status 3); restarting it in "
            f"{RestartPolicy().backoff[attempt]:.0f} s"
        )
        count = len(started)
        assert child.check(said.append) is None and len(started) == count, "not before its time"
        clock.now += 20
        assert child.check(said.append) is None
        assert len(started) == count + 1 and len(cleared) == attempt + 1
    started[-1].wait()
    reason = child.check(said.append)
    assert reason == "the hub exited 6 times within 5 minutes (last exit status 3)"
    assert len(started) == 6


def test_a_running_process_is_left_alone():
    child = Supervised("gateway", lambda: subprocess.Popen(["sleep", "30"]))
    child.start()
    try:
        said = []
        assert child.check(said.append) is None and not said and child.running()
    finally:
        child.proc.kill()
        child.proc.wait()


def test_after_a_hub_restart_a_reused_pid_is_never_signalled(tmp_path):
    from clusterhub.spawner.local import LocalSpaceSpawner

    other_program = subprocess.Popen(["sleep", "60"])
    try:
        started = process_start_time(other_program.pid)
        spawner = LocalSpaceSpawner(user=SimpleNamespace(name="alice"), data_dir=str(tmp_path))

        # Control: the state names this very process (same pid, same start time).
        spawner.load_state({"pid": other_program.pid, "pid_started": started})
        assert asyncio.run(spawner.poll()) is None, "its server runs: re-attached"
        # So does a state an earlier release wrote, with the wall-clock start time.
        import psutil

        wall_clock = psutil.Process(other_program.pid).create_time()
        spawner.load_state({"pid": other_program.pid, "pid_started": wall_clock})
        assert asyncio.run(spawner.poll()) is None, "re-attached after an upgrade"
        assert spawner.get_state()["pid_started"] == started, "recorded anew, since boot"

        # The state's pid now belongs to a process that started at another time.
        spawner.load_state({"pid": other_program.pid, "pid_started": started - 100})
        assert asyncio.run(spawner.poll()) == 0, "recorded as stopped"
        assert spawner.pid == 0, "nothing left to signal"
        assert other_program.poll() is None, "the other program was not signalled"
        assert spawner.get_state().get("pid") is None
    finally:
        other_program.kill()
        other_program.wait()


# -- one `up` per data dir, and taking over from one that died ------------------------------


def test_the_platforms_own_processes_are_told_from_attendees_by_their_command():
    from clusterhub.takeover import platform_role

    venv = "/opt/clusterhub/bin"
    cases = {
        "hub": [f"{venv}/python", f"{venv}/jupyterhub", "-f", "/x/jupyterhub_config.py"],
        "proxy": ["node", "/x/node_modules/.bin/configurable-http-proxy", "--ip", "127.0.0.1"],
        "gateway": [f"{venv}/python", f"{venv}/dask-gateway-server", "-f", "/x/config.py"],
        "gateway-proxy": [f"{venv}/lib/dask_gateway_server/proxy/dask-gateway-proxy", "-address"],
        "culler": [f"{venv}/python", "-m", "jupyterhub_idle_culler", "--timeout=3600"],
    }
    for role, cmdline in cases.items():
        assert platform_role(cmdline) == role
    attendees = [
        [f"{venv}/python", f"{venv}/jupyterhub-singleuser", "--ip=127.0.0.1"],
        [f"{venv}/python", f"{venv}/clusterhub-singleuser", "--ip=127.0.0.1"],
        [f"{venv}/python", "-m", "clusterhub.forkserver", "dask.cli"],
        [f"{venv}/python", "-m", "ipykernel_launcher", "-f", "/x/kernel-1.json"],
        [f"{venv}/python", "-m", "distributed.cli.dask_scheduler", "--dashboard-address", ":0"],
        [f"{venv}/python", "-c", "import jupyterhub"],
        ["/usr/bin/java", "-cp", "/x/jupyterhub/*", "org.apache.spark.deploy.worker.Worker"],
    ]
    for cmdline in attendees:
        assert platform_role(cmdline) is None, cmdline


# A platform process listening on a port, whose socket outlives it for LINGER seconds in a
# child: as the last threads of a killed process hold its sockets for a moment, or as the
# gateway's proxy holds the gateway's ports until it notices its parent is gone.
LINGERING_LISTENER = """
import os, socket, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen()
child = os.fork()
if child == 0:
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.02)
    time.sleep(float(sys.argv[1]))
    os._exit(0)
print(sock.getsockname()[1], child, flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def lingering_listener(linger: float) -> Iterator[tuple[subprocess.Popen, int, int]]:
    """(the listener, its port, the child holding its socket), both killed afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LINGERING_LISTENER, str(linger)],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = None
    try:
        port, child = (int(x) for x in proc.stdout.readline().split())
        yield proc, port, child
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, 9)


def test_a_takeover_returns_once_the_ports_of_what_it_stopped_are_free(tmp_path):
    import psutil

    from clusterhub import takeover
    from clusterhub.ports import port_is_free

    with lingering_listener(1.0) as (proc, port, child):
        assert not port_is_free("127.0.0.1", port)
        taken = takeover.stop([psutil.Process(proc.pid)], str(tmp_path))
        assert proc.poll() is not None, "stopped by force"
        assert taken == set()
        # Its successor binds the same port at once, though the socket outlived the process.
        assert port_is_free("127.0.0.1", port)
        assert process_exited(child)


def test_a_takeover_names_the_ports_still_taken_when_its_wait_runs_out(tmp_path):
    import psutil

    from clusterhub import takeover

    with lingering_listener(600) as (proc, port, _):
        taken = takeover.stop([psutil.Process(proc.pid)], str(tmp_path), timeout=1)
        assert taken == {("127.0.0.1", port)}


def test_a_new_up_keeps_the_previous_ports_and_says_which_it_could_not(tmp_path, capsys):
    import json
    import socket

    from clusterhub import up
    from clusterhub.ports import free_port

    previous = {name: free_port() for name in up.INTERNAL_PORTS}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "settings.json").write_text(json.dumps(previous))
    with socket.socket() as holder:  # another program took the gateway's scheduler port
        holder.bind(("127.0.0.1", previous["gateway_tcp_port"]))
        holder.listen()
        ports = up._internal_ports(str(tmp_path))
    said = capsys.readouterr().out
    assert ports["gateway_tcp_port"] != previous["gateway_tcp_port"]
    assert {k: v for k, v in ports.items() if k != "gateway_tcp_port"} == {
        k: v for k, v in previous.items() if k != "gateway_tcp_port"
    }
    assert (
        f"the previous run's gateway_tcp_port {previous['gateway_tcp_port']} is taken by "
        f"another program, so {ports['gateway_tcp_port']} is used"
    ) in said
    assert said.count("warning") == 1, said


def test_a_second_up_on_one_data_dir_is_refused_with_the_first_ones_pid(tmp_path):
    from clusterhub.takeover import InUse, PlatformLock

    first = PlatformLock(str(tmp_path))
    first.acquire()
    holder = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from clusterhub.takeover import PlatformLock, InUse\n"
            "try:\n"
            f"    PlatformLock({str(tmp_path)!r}).acquire()\n"
            "except InUse as exc:\n"
            "    print(exc.pid)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert holder.stdout.strip() == str(os.getpid()), holder.stderr
    first.release()
    again = PlatformLock(str(tmp_path))
    again.acquire()  # free once its holder is gone
    again.release()
    assert InUse(None).pid is None


def test_after_a_hub_restart_a_server_that_exited_unwaited_for_is_recorded_as_stopped(tmp_path):
    from clusterhub.spawner.local import LocalSpaceSpawner

    # A child of this test that exits and is not waited for: a zombie, as a server is
    # when the hub that started it died and its new parent has not reaped it yet.
    exited = subprocess.Popen(["true"])
    while open(f"/proc/{exited.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        pass
    try:
        spawner = LocalSpaceSpawner(user=SimpleNamespace(name="alice"), data_dir=str(tmp_path))
        spawner.load_state({"pid": exited.pid, "pid_started": process_start_time(exited.pid)})
        assert asyncio.run(spawner.poll()) == 0
        assert spawner.pid == 0
    finally:
        exited.wait()
