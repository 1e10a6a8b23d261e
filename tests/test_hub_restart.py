"""The hub dies (SIGKILL) in the middle of a workshop: `clusterhub up` restarts it, and every
attendee keeps their server, kernel (and its variables) and Dask cluster. A hub that fails at
every start makes `up` give up after the restart limit, stop everything and say why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from hubclient import (
    BrowserUser,
    ipp_engines,
    marked_processes,
    running_platform,
    space_processes,
    started_user,
)

from clusterhub.procs import process_exited, wait_until
from clusterhub.up import INTERNAL_PORTS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def hub_pid(platform) -> int:
    with open(os.path.join(platform.data_dir, "hub", "jupyterhub.pid")) as f:
        return int(f.read().strip())


def internal_ports(platform) -> dict[str, int]:
    with open(os.path.join(platform.data_dir, "run", "settings.json")) as f:
        settings = json.load(f)
    return {name: settings[name] for name in INTERNAL_PORTS}


def hub_answers(platform) -> bool:
    try:
        return requests.get(f"{platform.url}/hub/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def started(platform, name: str, **form) -> BrowserUser:
    return started_user(platform, name, timeout=240, **{"profile": "dask", **form})


def engine_pids(platform, name: str) -> set[int]:
    return {p.pid for p in ipp_engines(platform, name)}


def test_a_killed_hub_comes_back_and_every_session_goes_on(tmp_path):
    with running_platform(str(tmp_path)) as platform:
        alice = started(platform, "alice", profile="dask-ipyparallel", workers=2)
        assert wait_until(lambda: len(engine_pids(platform, "alice")) == 2, 180, 0.5), (
            "alice's engines"
        )
        engines = engine_pids(platform, "alice")
        started(platform, "carol")
        carol_server = platform.admin_api("GET", "/users/carol").json()["servers"][""]["state"]
        kernel = alice.kernel()
        out = kernel.execute(
            "from dask_gateway import Gateway\n"
            "x = 42\n"
            "gateway = Gateway()\n"
            "cluster = gateway.new_cluster()\n"
            "cluster.scale(2)\n"
            "client = cluster.get_client()\n"
            "client.wait_for_workers(2, timeout=180)\n"
            "print(cluster.name)\n",
            timeout=300,
        )
        cluster_name = out.strip().splitlines()[-1]
        server_pid = platform.admin_api("GET", "/users/alice").json()["servers"][""]["state"]["pid"]
        old_hub = hub_pid(platform)

        os.kill(old_hub, signal.SIGKILL)
        killed_at = time.monotonic()
        # carol's server dies while there is no hub to notice.
        os.kill(carol_server["pid"], signal.SIGKILL)
        while not (hub_answers(platform) and hub_pid(platform) != old_hub):
            assert time.monotonic() - killed_at < 30, "the hub answers again within 30 s"
            time.sleep(0.5)
        said = "".join(platform.output)
        assert "the hub exited unexpectedly (exit status -9); restarting it" in said, said

        # alice: the same server process, the same kernel (a new websocket, through the
        # proxy the new hub started), its variables, and her cluster.
        model = platform.admin_api("GET", "/users/alice").json()
        assert model["servers"][""]["ready"], model
        assert model["servers"][""]["state"]["pid"] == server_pid
        kernel.reconnect()  # the proxy in between is the new hub's
        try:
            assert kernel.execute("print(x)").strip() == "42"
            mapped = kernel.execute(
                "print(sum(client.gather(client.map(lambda i: i * i, range(20)))), "
                "cluster.name, len(client.scheduler_info()['workers']))\n",
                timeout=180,
            )
            assert mapped.split() == [str(sum(i * i for i in range(20))), cluster_name, "2"]
        finally:
            kernel.close()

        assert engine_pids(platform, "alice") == engines, "her engines ran on, untouched"

        # carol's server is recorded as stopped, and her space cleaned up as on a stop.
        assert wait_until(
            lambda: not platform.admin_api("GET", "/users/carol").json()["servers"], 60, 0.5
        ), "carol's dead server recorded as stopped"
        assert wait_until(lambda: not space_processes(platform, "carol"), 60, 0.5), (
            "carol's space stopped"
        )

        # A newcomer gets a server from the restarted hub.
        bob = started(platform, "bob")
        assert bob.server_api("GET", "api/status").status_code == 200


def test_a_hub_that_fails_at_every_start_makes_up_stop_everything_and_say_why(tmp_path):
    config = tmp_path / "extra.py"
    config.write_text("c.JupyterHub.concurrent_spawn_limit = 50\n")
    with running_platform(str(tmp_path), extra_args=["--config", str(config)]) as platform:
        # From now on the hub cannot start: its config file raises.
        config.write_text("raise RuntimeError('this config is broken on purpose')\n")
        os.kill(hub_pid(platform), signal.SIGKILL)
        code = platform.proc.wait(timeout=180)
        platform._drain.join(10)  # what it printed last
        said = "".join(platform.output)
        assert code == 1, said
        assert "the hub exited 6 times within 5 minutes" in said, said
        assert "broken on purpose" in said, "the log's last lines say why"
        assert said.count("restarting it in") == 5, said
        assert not marked_processes("CLUSTERHUB_PLATFORM", platform.data_dir), "all stopped"


def test_an_up_started_again_after_its_predecessor_died_takes_over_every_session(tmp_path):
    with running_platform(str(tmp_path)) as platform:
        alice = started(platform, "alice")
        kernel = alice.kernel()
        kernel.execute(
            "from dask_gateway import Gateway\n"
            "x = 42\n"
            "gateway = Gateway()\n"
            "cluster = gateway.new_cluster()\n"
            "cluster.scale(1)\n"
            "client = cluster.get_client()\n"
            "client.wait_for_workers(1, timeout=180)\n",
            timeout=300,
        )
        server_pid = platform.admin_api("GET", "/users/alice").json()["servers"][""]["state"]["pid"]
        first_up = platform.proc.pid

        # While it runs, a second `up` on the same data dir is refused, naming the first.
        second = subprocess.run(
            [sys.executable, "-m", "clusterhub.cli", "up", "--ip", "127.0.0.1", "--port",
             "1", "--data-dir", platform.data_dir],
            env=platform.env(), capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert f"in use by a running platform (clusterhub up pid {first_up})" in second.stderr

        # `clusterhub up` itself dies; the hub, the proxy and the gateway it started run on.
        ports = internal_ports(platform)
        old_hub = hub_pid(platform)
        platform.proc.kill()
        platform.proc.wait()
        assert hub_answers(platform), "nothing stopped the hub"

        platform.start()  # the organiser runs it again
        said = "".join(platform.output)
        assert "taking over (attendees' servers, kernels and clusters are kept)" in said, said
        # On the same ports (the kernel's client has the gateway's scheduler port), once the
        # stopped processes and the gateway's proxy let go of them.
        assert internal_ports(platform) == ports
        assert "warning" not in said, said
        assert hub_pid(platform) != old_hub
        assert process_exited(old_hub), "the old hub was stopped"
        model = platform.admin_api("GET", "/users/alice").json()
        assert model["servers"][""]["ready"] and model["servers"][""]["state"]["pid"] == server_pid

        kernel.reconnect()
        try:
            assert kernel.execute("print(x)").strip() == "42"
            # The kernel's client reaches its scheduler through the gateway's proxy, which the
            # new `up` started anew: the client reconnects on its own (what it had submitted
            # before is lost, as Dask does on any reconnection); work sent once it is back runs.
            total = kernel.execute(
                "import time\n"
                "deadline = time.time() + 120\n"
                "while client.status != 'running' and time.time() < deadline:\n"
                "    time.sleep(0.2)\n"
                "print(sum(client.gather(client.map(lambda i: i + 1, range(20)))))",
                timeout=180,
            )
            assert total.strip() == str(sum(range(1, 21)))
        finally:
            kernel.close()
