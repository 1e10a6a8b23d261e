"""Starts take turns: a room arriving at once queues by the machine's cores instead of thrashing.

Starting a notebook server, a kernel, a Dask scheduler or worker costs a few CPU-seconds of
imports. When 30 attendees arrive at once, 150 such starts share two cores: each takes
minutes, timeouts written for one start fire everywhere, and what they kill is started
again, which costs more. Taking turns, every start runs at nearly full speed, one after
another, and a timeout only counts from when a start's turn came.

The queue is a small server on a Unix socket, run by ``clusterhub up`` beside the hub (so a
hub restart keeps it), that every starter asks for a turn:

- the hub's spawner before it starts a notebook server, each notebook server's kernel
  provisioner before it starts a kernel (as the attendee's account), and the gateway before
  it starts a scheduler or worker;
- a turn is held until what was started listens (it has done its imports), it exits, or
  :data:`HOLD_MAX` passes, and is given back when the connection closes, so a starter that
  dies gives its turn back;
- while waiting, the starter hears its position (how many starts are ahead), which the
  spawn page and the sidebar show;
- turns go in arrival order, but no owner holds more than ``per_owner`` at once, so one
  attendee's burst cannot take every core. Who the owner is comes from the connection's
  peer credentials: an attendee's process always counts as its own account; only the
  platform's account may name the attendee it starts something for (by their account's
  uid when they have one, so that an attendee's kernels and clusters are one owner).

Where no queue runs (Kubernetes, where the scheduler places pods, or a component started
on its own), asking for a turn returns at once.

Protocol, one JSON object per line: the starter sends ``{"kind", "owner", "uid"}`` and
receives ``{"position": n}`` each time its position changes, then ``{"admitted": true}``; it
keeps the connection open while its start runs. ``{"query": "queue"}`` answers
``{"slots", "busy", "waiting", "mine"}`` (the asker's own waiting starts and positions) and
closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from . import kernel_sockets

SOCKET_ENV = "CLUSTERHUB_ADMISSION_SOCKET"
SOCKET_NAME = "admission.sock"
KINDS = ("server", "kernel", "scheduler", "worker")
# A start that has not listened by then gives its turn back anyway: a slow or stuck start
# must not hold the room up (its own timeout still applies to it).
HOLD_MAX = 45.0
# The most starts one owner may have waiting; more are refused (a loop that asks forever).
WAITING_PER_OWNER_MAX = 64
POLL_PERIOD = 0.2

log = logging.getLogger("clusterhub.admission")


def socket_path(platform_id: str) -> str:
    return os.path.join(kernel_sockets.runtime_root(platform_id), SOCKET_NAME)


def default_slots() -> int:
    """One start per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# -- the queue ----------------------------------------------------------------------------
@dataclass(eq=False)
class Ticket:
    kind: str
    owner: str
    number: int
    admitted_at: float | None = None
    released: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def admitted(self) -> bool:
        return self.admitted_at is not None


class AdmissionQueue:
    """Turns in arrival order, ``slots`` at once, at most ``per_owner`` per owner (one loop)."""

    def __init__(self, slots: int, per_owner: int = 1, hold_max: float = HOLD_MAX):
        if slots < 1:
            raise ValueError(f"slots: {slots} is not a whole number of at least 1")
        if per_owner < 1:
            raise ValueError(f"per_owner: {per_owner} is not a whole number of at least 1")
        self.slots = slots
        self.per_owner = per_owner
        self.hold_max = hold_max
        self.waiting: list[Ticket] = []
        self.active: list[Ticket] = []
        self._numbers = itertools.count(1)

    def enter(self, kind: str, owner: str) -> Ticket:
        if kind not in KINDS:
            raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
        if sum(t.owner == owner for t in self.waiting) >= WAITING_PER_OWNER_MAX:
            raise ValueError(
                f"owner {owner!r} already has {WAITING_PER_OWNER_MAX} starts waiting (the most)"
            )
        ticket = Ticket(kind, owner, next(self._numbers))
        self.waiting.append(ticket)
        self._admit()
        return ticket

    def release(self, ticket: Ticket) -> None:
        if ticket.released:
            return
        ticket.released = True
        if ticket in self.waiting:
            self.waiting.remove(ticket)
        if ticket in self.active:
            self.active.remove(ticket)
        self._admit()

    def expire(self, now: float | None = None) -> list[Ticket]:
        """Take back turns held longer than ``hold_max``; returns them."""
        now = time.monotonic() if now is None else now
        expired = [t for t in self.active if now - (t.admitted_at or now) > self.hold_max]
        for ticket in expired:
            self.active.remove(ticket)
        if expired:
            self._admit()
        return expired

    def position(self, ticket: Ticket) -> int:
        """0 once admitted; else 1 + how many waiting starts are ahead of it."""
        if ticket.admitted or ticket not in self.waiting:
            return 0
        return self.waiting.index(ticket) + 1

    def _admit(self) -> None:
        for ticket in list(self.waiting):
            if len(self.active) >= self.slots:
                break
            if sum(t.owner == ticket.owner for t in self.active) >= self.per_owner:
                continue
            self.waiting.remove(ticket)
            self.active.append(ticket)
            ticket.admitted_at = time.monotonic()
        for ticket in [*self.waiting, *self.active]:
            ticket.changed.set()  # positions moved for everyone behind

    def summary(self, owner: str) -> dict:
        return {
            "slots": self.slots,
            "busy": len(self.active),
            "waiting": len(self.waiting),
            "mine": [
                {"kind": t.kind, "position": self.position(t)}
                for t in self.waiting
                if t.owner == owner
            ],
        }


def describe_position(position: int) -> str:
    """What an attendee reads while a start of theirs waits (spawn page, sidebar)."""
    if position <= 1:
        return "Waiting for a turn to start: yours is next on this machine"
    return f"Waiting for a turn to start: {position - 1} starts ahead of yours on this machine"


# -- the server ---------------------------------------------------------------------------
def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class AdmissionServer:
    """The queue on a Unix socket that every account may connect to."""

    def __init__(self, path: str, slots: int, per_owner: int = 1, hold_max: float = HOLD_MAX):
        self.path = path
        self.queue = AdmissionQueue(slots, per_owner, hold_max)
        self._server: asyncio.AbstractServer | None = None
        self._expiry: asyncio.Task | None = None

    async def start(self) -> None:
        kernel_sockets.make_root(os.path.dirname(self.path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        # Attendees' kernels ask too; who they are comes from the peer credentials.
        os.chmod(self.path, 0o666)
        self._expiry = asyncio.ensure_future(self._expire_loop())

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def owner_of(self, peer: int, request: dict) -> str:
        """``uid:N`` for an account, ``name:X`` for an attendee without one (single-account
        mode); only the platform's own account may say whom it asks for."""
        if peer == os.geteuid():
            uid, name = request.get("uid"), request.get("owner")
            if isinstance(uid, int) and not isinstance(uid, bool) and uid >= 0:
                return f"uid:{uid}"
            if isinstance(name, str) and name:
                return f"name:{name}"
        return f"uid:{peer}"

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(1)
            for ticket in self.queue.expire():
                log.info(
                    "A %s start of %s held its turn over %.0f s; given to the next",
                    ticket.kind,
                    ticket.owner,
                    self.queue.hold_max,
                )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ticket = None
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
            line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
                owner = self.owner_of(uid, request)
                if request.get("query") == "queue":
                    await _send(writer, self.queue.summary(owner))
                    return
                ticket = self.queue.enter(str(request.get("kind")), owner)
            except ValueError as exc:
                await _send(writer, {"error": str(exc)})
                return
            last = None
            # One read for the whole wait: a stream allows one reader at a time, and a
            # cancelled read may not have let go yet when the next one would start.
            gone = asyncio.ensure_future(_closed(reader))
            try:
                while not ticket.admitted:
                    position = self.queue.position(ticket)
                    if position != last:
                        await _send(writer, {"position": position})
                        last = position
                    ticket.changed.clear()
                    waiting = asyncio.ensure_future(ticket.changed.wait())
                    done, _ = await asyncio.wait(
                        {waiting, gone}, return_when=asyncio.FIRST_COMPLETED
                    )
                    waiting.cancel()
                    if gone in done:
                        return  # the starter gave up while waiting
                await _send(writer, {"admitted": True})
                await gone  # held until the starter closes
            finally:
                gone.cancel()
        except (ConnectionError, OSError):
            pass
        finally:
            if ticket is not None:
                self.queue.release(ticket)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _closed(reader: asyncio.StreamReader) -> None:
    """Returns when the starter closes its end (or it breaks)."""
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(4096):
            pass  # a starter has nothing more to say; whatever it sends is ignored


async def _send(writer: asyncio.StreamWriter, message: dict) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()


class ServerThread:
    """An :class:`AdmissionServer` on a loop of its own, for a synchronous program."""

    def __init__(self, path: str, slots: int):
        self.server = AdmissionServer(path, slots)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# -- asking for a turn --------------------------------------------------------------------
class Turn:
    """One start's turn: ``await turn.wait()``, start, then ``turn.release()`` (or use
    :meth:`release_when`). Without a queue (``path`` missing) it is admitted at once."""

    def __init__(
        self,
        kind: str,
        owner: str = "",
        on_position: Callable[[int], None] | None = None,
        path: str | None = None,
        uid: int | None = None,
    ):
        self.kind = kind
        self.owner = owner
        self.uid = uid
        self.on_position = on_position
        self.path = os.environ.get(SOCKET_ENV, "") if path is None else path
        self.waited = 0.0
        self._writer: asyncio.StreamWriter | None = None

    async def wait(self) -> None:
        if not self.path:
            return
        start = time.monotonic()
        try:
            reader, self._writer = await asyncio.open_unix_connection(self.path)
        except (FileNotFoundError, ConnectionRefusedError):
            return  # no queue runs (a component on its own, or the platform is stopping)
        except OSError as exc:
            log.warning("No turn for a %s start, starting at once: %s", self.kind, exc)
            return
        request = {"kind": self.kind, "owner": self.owner}
        if self.uid is not None:
            request["uid"] = self.uid
        await _send(self._writer, request)
        while True:
            line = await reader.readline()
            if not line:
                log.warning("The start queue closed; starting a %s at once", self.kind)
                break
            message = json.loads(line)
            if "error" in message:
                self.release()
                raise ValueError(message["error"])
            if message.get("admitted"):
                break
            if self.on_position is not None:
                self.on_position(int(message["position"]))
        self.waited = time.monotonic() - start

    def release(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def release_when(
        self, ready: Callable[[], Awaitable[bool] | bool], timeout: float = HOLD_MAX
    ) -> asyncio.Task:
        """Give the turn back once ``ready()`` is true (what started listens, or is gone)."""

        async def watch() -> None:
            deadline = time.monotonic() + timeout
            try:
                while time.monotonic() < deadline:
                    result = ready()
                    if not isinstance(result, bool):
                        result = await result
                    if result:
                        return
                    await asyncio.sleep(POLL_PERIOD)
            finally:
                self.release()

        return asyncio.ensure_future(watch())


def queue_of(owner: str = "", path: str | None = None, uid: int | None = None) -> dict | None:
    """The queue as the asker sees it, their own waiting starts included (None without a
    queue). Blocking, but answered at once: a sidebar's listing asks it."""
    path = os.environ.get(SOCKET_ENV, "") if path is None else path
    if not path:
        return None
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        request: dict = {"query": "queue", "owner": owner}
        if uid is not None:
            request["uid"] = uid
        sock.sendall(json.dumps(request).encode() + b"\n")
        line = sock.makefile("rb").readline()
    return json.loads(line) if line else None


def waiting_note(summary: dict | None, kinds: tuple[str, ...]) -> str | None:
    """What to tell an attendee whose starts of ``kinds`` wait (None: none waits)."""
    positions = [m["position"] for m in (summary or {}).get("mine", []) if m["kind"] in kinds]
    return describe_position(min(positions)) if positions else None


def tree_listens(pid: int, processes: int = 1) -> bool:
    """Whether ``processes`` processes of ``pid``'s tree listen on TCP ports (or ``pid`` is
    gone: no use waiting for it). A Dask worker needs 2: its nanny listens first, then
    starts the worker, which imports everything again before it listens."""
    import psutil

    try:
        root = psutil.Process(pid)
        if root.status() == psutil.STATUS_ZOMBIE:
            return True
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False
    listening = 0
    for proc in tree:
        try:
            if any(c.status == psutil.CONN_LISTEN for c in proc.net_connections("tcp")):
                listening += 1
        except psutil.Error:
            continue
    return listening >= processes
