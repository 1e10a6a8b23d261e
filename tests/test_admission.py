"""The machine's start queue (clusterhub.admission): the queue's rules, then the real server
on a Unix socket, asked by real processes of other accounts (the attacker's side)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import pytest_asyncio

from clusterhub import admission
from clusterhub.admission import AdmissionQueue, AdmissionServer, Turn


# -- the queue's rules ------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_turns_go_in_arrival_order_as_many_at_once_as_slots():
    queue = AdmissionQueue(slots=2)
    a, b, c, d = (queue.enter("worker", f"user{i}") for i in range(4))
    assert [t.admitted for t in (a, b, c, d)] == [True, True, False, False]
    assert [queue.position(t) for t in (a, b, c, d)] == [0, 0, 1, 2]
    queue.release(b)
    assert c.admitted and not d.admitted and queue.position(d) == 1
    queue.release(a)
    assert d.admitted


@pytest.mark.asyncio
async def test_one_owner_holds_at_most_per_owner_turns_so_others_go_first():
    queue = AdmissionQueue(slots=2, per_owner=1)
    first = queue.enter("kernel", "alice")
    burst = [queue.enter("worker", "alice") for _ in range(3)]
    bob = queue.enter("server", "bob")
    # bob arrived after alice's burst but takes the free slot: alice already holds one.
    assert first.admitted and bob.admitted and not any(t.admitted for t in burst)
    queue.release(first)
    assert burst[0].admitted and not burst[1].admitted


@pytest.mark.asyncio
async def test_a_turn_held_too_long_goes_to_the_next_and_a_late_release_is_harmless():
    queue = AdmissionQueue(slots=1, hold_max=10)
    stuck, next_one = queue.enter("worker", "a"), queue.enter("worker", "b")
    assert queue.expire(now=stuck.admitted_at + 5) == []
    assert queue.expire(now=stuck.admitted_at + 11) == [stuck]
    assert next_one.admitted
    queue.release(stuck)  # the stuck start ends later: it must not free someone else's slot
    assert queue.active == [next_one]


@pytest.mark.asyncio
async def test_a_starter_that_leaves_while_waiting_leaves_the_queue():
    queue = AdmissionQueue(slots=1)
    holder, leaver, last = (queue.enter("kernel", n) for n in "abc")
    queue.release(leaver)
    assert queue.position(last) == 1
    queue.release(holder)
    assert last.admitted


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: AdmissionQueue(slots=0), "slots: 0 is not a whole number of at least 1"),
        (lambda: AdmissionQueue(slots=1, per_owner=0), "per_owner: 0"),
        (lambda: AdmissionQueue(slots=1).enter("miner", "a"), "kind: 'miner' is not one of"),
    ],
)
def test_bad_input_names_the_field_and_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        call()


@pytest.mark.asyncio
async def test_an_owner_cannot_queue_without_end():
    queue = AdmissionQueue(slots=1)
    for _ in range(admission.WAITING_PER_OWNER_MAX + 1):
        queue.enter("kernel", "greedy")
    with pytest.raises(ValueError, match="already has 64 starts waiting"):
        queue.enter("kernel", "greedy")
    assert queue.enter("kernel", "other")  # others still get in line


def test_positions_read_as_an_attendee_reads_them():
    assert admission.describe_position(1).endswith("yours is next on this machine")
    assert "3 starts ahead of yours" in admission.describe_position(4)


# -- the server, over its socket -------------------------------------------------------------
@pytest_asyncio.fixture
async def server(tmp_path):
    # A short directory others may enter: the socket path must fit, and other accounts
    # (the attacker) must reach it.
    directory = f"/tmp/adm-test-{os.getpid()}"
    running = AdmissionServer(os.path.join(directory, "q.sock"), slots=1)
    await running.start()
    os.chmod(directory, 0o711)
    try:
        yield running
    finally:
        await running.close()
        os.rmdir(directory)


@pytest.mark.asyncio
async def test_a_starter_hears_its_position_then_its_turn_and_gives_it_back_by_closing(server):
    first = Turn("worker", "alice", path=server.path)
    await first.wait()
    heard: list[int] = []
    second = Turn("server", "bob", on_position=heard.append, path=server.path)
    waiting = asyncio.ensure_future(second.wait())
    await asyncio.sleep(0.3)
    assert not waiting.done() and heard == [1]
    summary = await asyncio.to_thread(admission.queue_of, "bob", server.path)
    assert summary == {
        "slots": 1,
        "busy": 1,
        "waiting": 1,
        "mine": [{"kind": "server", "position": 1}],
    }
    assert admission.waiting_note(summary, ("server",)).endswith("yours is next on this machine")
    assert admission.waiting_note(summary, ("worker",)) is None
    first.release()
    await asyncio.wait_for(waiting, 5)
    assert second.waited > 0.2
    second.release()
    await asyncio.sleep(0.1)
    assert server.queue.active == [] and server.queue.waiting == []


@pytest.mark.asyncio
async def test_a_starter_that_dies_gives_its_turn_back(server):
    code = f"""
    import socket, json, time
    s = socket.socket(socket.AF_UNIX); s.connect({server.path!r})
    s.sendall(json.dumps({{"kind": "kernel", "owner": "x"}}).encode() + b"\\n")
    print(s.makefile().readline(), flush=True)
    time.sleep(60)
    """
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(code), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert json.loads(await child.stdout.readline()) == {"admitted": True}
        assert len(server.queue.active) == 1
    finally:
        child.kill()
        await child.wait()
    nxt = Turn("kernel", "y", path=server.path)
    await asyncio.wait_for(nxt.wait(), 5)
    nxt.release()


@pytest.mark.asyncio
async def test_without_a_queue_a_turn_comes_at_once(tmp_path):
    turn = Turn("worker", "alice", path=str(tmp_path / "none.sock"))
    await turn.wait()
    assert turn.waited == 0.0
    assert admission.queue_of(path=str(tmp_path / "none.sock")) is None


@pytest.mark.asyncio
async def test_a_bad_request_is_answered_with_the_field_and_changes_nothing(server):
    reader, writer = await asyncio.open_unix_connection(server.path)
    writer.write(b'{"kind": "miner"}\n')
    answer = json.loads(await reader.readline())
    writer.close()
    assert "kind: 'miner' is not one of server, kernel, scheduler, worker" in answer["error"]
    assert server.queue.waiting == [] and server.queue.active == []


@pytest.mark.skipif(os.geteuid() != 0, reason="another account's process needs root")
@pytest.mark.asyncio
async def test_an_attendee_cannot_queue_as_someone_else(server):
    """A process of another account names alice, and a uid: it is queued as itself."""
    code = f"""
    import os, socket, json
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    s = socket.socket(socket.AF_UNIX); s.connect({server.path!r})
    s.sendall(json.dumps({{"kind": "kernel", "owner": "alice", "uid": 0}}).encode() + b"\\n")
    print(s.makefile().readline(), flush=True)
    import time; time.sleep(60)
    """
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(code), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert json.loads(await child.stdout.readline()) == {"admitted": True}
        assert [t.owner for t in server.queue.active] == ["uid:65534"]
    finally:
        child.kill()
        await child.wait()
    # Control: the platform's own account may name whom it starts something for.
    turn = Turn("worker", "alice", path=server.path, uid=20001)
    await turn.wait()
    assert [t.owner for t in server.queue.active] == ["uid:20001"]
    turn.release()


def test_the_socket_lets_every_account_connect_but_only_in_its_directory(tmp_path):
    # Attendees' kernels ask for turns: the socket is 0666, its directory 0711 (not listable).
    async def check():
        directory = f"/tmp/adm-perm-{os.getpid()}"
        running = AdmissionServer(os.path.join(directory, "q.sock"), slots=1)
        await running.start()
        try:
            assert os.stat(running.path).st_mode & 0o777 == 0o666
            assert os.stat(directory).st_mode & 0o777 == 0o711
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(running.path)
        finally:
            await running.close()
            os.rmdir(directory)
        return running.path

    assert not os.path.exists(asyncio.run(check()))


def test_a_queue_in_a_thread_serves_a_synchronous_program(tmp_path):
    path = f"/tmp/adm-thread-{os.getpid()}/q.sock"
    thread = admission.ServerThread(path, slots=2)
    thread.start()
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import asyncio; from clusterhub.admission import Turn;"
                f"t = Turn('worker', 'a', path={path!r}); asyncio.run(t.wait()); print('ok')",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.stdout.strip() == "ok", out.stderr
    finally:
        thread.stop()
        os.rmdir(os.path.dirname(path))


def test_a_worker_start_is_done_when_its_nanny_and_its_worker_both_listen(tmp_path):
    """A nanny listens before it starts its worker, which then imports everything again: the
    turn of a worker start is only given back once both listen."""
    code = textwrap.dedent(
        """
        import socket, subprocess, sys, time
        nanny = socket.socket(); nanny.bind(("127.0.0.1", 0)); nanny.listen()
        print("nanny", flush=True)
        time.sleep(1.5)
        worker = subprocess.Popen([sys.executable, "-c",
            "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
            "time.sleep(60)"])
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "nanny"
        assert admission.tree_listens(proc.pid, 1)
        assert not admission.tree_listens(proc.pid, 2)
        deadline = time.monotonic() + 30
        while not admission.tree_listens(proc.pid, 2):
            assert time.monotonic() < deadline, "the worker never counted"
            time.sleep(0.2)
    finally:
        import psutil

        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()
    assert admission.tree_listens(proc.pid, 2), "a process that is gone is not waited for"


@pytest.mark.asyncio
async def test_when_a_turn_is_given_back_exactly_one_waiter_goes_and_the_rest_keep_waiting(
    server,
):
    """Every waiter hears the queue move; only the next one may go (each connection reads
    its starter's end once: a second concurrent read would fail and let everyone in)."""
    holder = Turn("worker", "holder", path=server.path)
    await holder.wait()
    heard: dict[str, list[int]] = {name: [] for name in "abc"}
    waiters = {
        name: asyncio.ensure_future(
            Turn("kernel", name, on_position=heard[name].append, path=server.path).wait()
        )
        for name in "abc"
    }
    await asyncio.sleep(0.3)
    holder.release()
    await asyncio.sleep(0.5)
    done = [name for name, task in waiters.items() if task.done()]
    assert done == ["a"], done
    assert len(server.queue.waiting) == 2 and len(server.queue.active) == 1
    assert heard["c"] == [3, 2]  # c moved up when a went
    for task in waiters.values():
        task.cancel()
    await asyncio.gather(*waiters.values(), return_exceptions=True)
