"""Starts take turns on a busy machine (clusterhub.admission), end to end on a real platform.

The platform runs with one start at a time (``--start-slots 1``), and the test holds that
one turn itself, as a long start of someone else would. Then alice's server, her kernel,
her cluster's scheduler and its workers each wait, say where they are in the queue (the
spawn page, the sidebar's listing), and start once the turn is given back; a start's
timeout counts from its turn, not from its request.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import textwrap
import threading
import time

import pytest
from hubclient import BrowserUser, marked_processes, running_platform

from clusterhub import admission
from clusterhub.fences import platform_id
from clusterhub.space import safe_name

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    root = tmp_path_factory.mktemp("turns")
    with running_platform(str(root), extra_args=["--start-slots", "1"]) as running:
        yield running


@pytest.fixture(scope="module")
def queue_path(platform) -> str:
    return admission.socket_path(platform_id(platform.data_dir))


@contextlib.contextmanager
def someone_elses_start(path: str):
    """Hold the machine's one turn (as the platform's account, for "someone") until the
    block ends; yields when the turn is held."""
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.settimeout(120)
        sock.connect(path)
        sock.sendall(json.dumps({"kind": "worker", "owner": "someone"}).encode() + b"\n")
        reader = sock.makefile("rb")
        while True:
            message = json.loads(reader.readline())
            if message.get("admitted"):
                break
        yield
    finally:
        sock.close()


def space_processes(platform, name: str, part: str) -> list:
    space = os.path.join(platform.data_dir, "spaces", safe_name(name))
    found = []
    for proc in marked_processes("CLUSTERHUB_SPACE", space):
        with contextlib.suppress(Exception):
            if part in " ".join(proc.cmdline()):
                found.append(proc)
    return found


def uid_of(platform, name: str) -> int | None:
    path = os.path.join(platform.data_dir, "spaces", safe_name(name), "space.json")
    account = json.load(open(path)).get("account")
    return account["uid"] if account else None


def in_background(fn) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as exc:  # reported by the test that joins it
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def joined(thread: threading.Thread, result: dict, timeout: float = 240):
    thread.join(timeout)
    assert not thread.is_alive(), "still waiting after the turn was given back"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def first_progress_messages(user: BrowserUser, seconds: float) -> list[str]:
    """The spawn page's progress messages (its event stream) over a few seconds."""
    url = f"{user.base}/hub/api/users/{user.name}/server/progress"
    messages: list[str] = []
    deadline = time.monotonic() + seconds
    headers = {"X-XSRFToken": user.xsrf("/hub/")}
    while time.monotonic() < deadline:
        with user.session.get(url, headers=headers, stream=True, timeout=seconds + 10) as stream:
            if stream.status_code in (400, 404):  # the form's spawn has not begun yet
                time.sleep(0.2)
                continue
            stream.raise_for_status()
            for line in stream.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    messages.append(json.loads(line[len("data:") :]).get("message", ""))
                if time.monotonic() > deadline or any("yours is next" in m for m in messages):
                    return messages
    return messages


@pytest.fixture(scope="module")
def alice(platform, queue_path):
    user = BrowserUser(platform, "alice")
    user.login().raise_for_status()
    with someone_elses_start(queue_path):
        spawn, spawned = in_background(lambda: user.spawn(profile="dask"))
        messages = first_progress_messages(user, 30)
        # Nothing of hers runs while she waits: no server process has started.
        assert space_processes(platform, "alice", "clusterhub-singleuser") == []
    assert any(m.endswith("yours is next on this machine") for m in messages), messages
    assert joined(spawn, spawned).status_code == 302
    user.wait_ready(timeout=240)
    user.progress_messages = messages
    return user


def test_a_server_waits_for_its_turn_and_the_spawn_page_says_so(alice):
    assert alice.server_model()["servers"][""]["ready"]


def test_a_kernel_waits_for_its_turn_then_starts(platform, queue_path, alice):
    with someone_elses_start(queue_path):
        start, started = in_background(alice.kernel)
        time.sleep(3)
        assert start.is_alive(), "the kernel started without a turn"
        assert space_processes(platform, "alice", "ipykernel") == []
        summary = admission.queue_of(path=queue_path, uid=uid_of(platform, "alice"))
        assert admission.waiting_note(summary, ("kernel",)) is not None, summary
    kernel = joined(start, started)
    try:
        assert kernel.execute("print(6 * 7)").strip() == "42"
    finally:
        kernel.close()


def test_a_cluster_waits_for_its_turn_says_so_in_the_sidebar_and_its_clock_starts_then(
    platform, queue_path, alice
):
    kernel = alice.kernel()
    try:
        with someone_elses_start(queue_path):
            create, created = in_background(
                lambda: kernel.execute(
                    textwrap.dedent(
                        """
                        from dask_gateway import Gateway
                        cluster = Gateway().new_cluster()
                        cluster.scale(1)
                        client = cluster.get_client()
                        client.wait_for_workers(1)
                        print(sum(client.gather(client.map(lambda x: x + 1, range(10)))))
                        """
                    ),
                    timeout=300,
                )
            )
            deadline = time.monotonic() + 60
            listed: list = []
            while time.monotonic() < deadline:
                listed = alice.server_api("GET", "clusterhub/api/clusters").json()["clusters"]
                if any(c.get("waiting") for c in listed if c["engine"] == "dask"):
                    break
                time.sleep(0.5)
            dask = [c for c in listed if c["engine"] == "dask"]
            assert dask and dask[0]["state"] == "pending", listed
            assert dask[0]["waiting"].endswith("yours is next on this machine"), dask
            # Its scheduler has not even a directory yet: the start itself has not begun.
            clusters_dir = os.path.join(
                platform.data_dir, "spaces", safe_name("alice"), "dask-gateway"
            )
            assert not os.path.isdir(clusters_dir) or os.listdir(clusters_dir) == []
            time.sleep(2)
            given_back = time.time()
        assert joined(create, created).strip() == "55"
        started = kernel.execute(
            "print(Gateway().list_clusters()[0].start_time.timestamp())"
        ).strip()
        # The start's clock (and so its timeout) began at its turn, not at the request.
        assert float(started) >= given_back - 1, (started, given_back)
        kernel.execute("cluster.shutdown()")
    finally:
        kernel.close()


def test_a_room_expected_is_told_its_memory_and_finds_dask_warm(tmp_path):
    """--expect 2: when `clusterhub up` says it is ready, the Dask fork server has imported
    Dask already, and up has said what two attendees need of the memory."""
    with running_platform(str(tmp_path), extra_args=["--expect", "2"]) as running:
        output = "".join(running.output)
        ready = output.index("clusterhub is ready at")
        expected = output.index("expected:      2 attendees need about 0.6 GiB (300 MB each")
        assert expected > ready and "GiB available" in output[expected:], output
        assert "warning:" not in output[expected:], "two fit on any test machine"
        warm = [
            p
            for p in marked_processes("CLUSTERHUB_PLATFORM", running.data_dir)
            if "clusterhub.forkserver" in " ".join(p.cmdline())
        ]
        assert len(warm) == 1, "one fork server for the platform's environment"
        assert "distributed.cli.dask_worker" in warm[0].cmdline()


def test_a_room_too_large_for_the_memory_is_warned_about():
    from clusterhub.up import ATTENDEE_BYTES, describe_expected

    fits = describe_expected(10, 64 * 2**30)
    assert len(fits) == 1 and "10 attendees need about 2.9 GiB" in fits[0]
    tight = describe_expected(100, 10 * ATTENDEE_BYTES + 1)
    assert "warning:       about 10 of the 100 fit" in tight[1]
