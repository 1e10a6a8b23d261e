"""A Dask Gateway backend whose clusters run as local processes in their owner's space.

Built on dask-gateway-server's database-backed local backend: the gateway's
database checkpoints every cluster and worker, so a gateway restart resumes
them. On top of it:

- a cluster's working directory lives in the owner's space, and every process
  carries the space's marker, so stopping the space finds them all;
- clusters of a user whose server is not running are reaped (a cluster must
  never outlive the notebook that made it);
- the user's profile bounds what a cluster may ask for;
- each scheduler and worker start waits for its turn in the machine's start queue (see
  :mod:`clusterhub.admission`), and its start timeout counts from that turn, not from when
  it was asked for: 30 attendees asking at once must not time each other out.

With per-user accounts (the hub runs as root, see ``clusterhub.accounts``), a cluster's
scheduler and workers run as their owner's account, in the owner's control group, as the
spawner recorded them in the space. The cluster's directory is laid out so that the gateway
(root) only ever writes where the user cannot: the directory itself, ``certs/`` and
``logs/`` are the platform's and readable by the owner's group only; ``work/`` (working
directory and HOME of the processes) is the owner's.

It derives from ``UnsafeLocalBackend`` and does the switching itself: ``LocalBackend``'s
setuid path is broken in dask-gateway-server 2026.3 (it chowns every character of a path)
and assumes the hub user name is the Unix name.
"""

from __future__ import annotations

import asyncio
import os
import signal

from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.backends.local import UnsafeLocalBackend, is_running, wait_is_shutdown
from dask_gateway_server.utils import timestamp
from traitlets import Bool, Float, Unicode, default

from clusterhub import admission
from clusterhub.accounts import identity_of
from clusterhub.forkserver import take_identity
from clusterhub.hostnames import can_have_own_hostnames, worker_hostname
from clusterhub.procs import is_process, process_start_time
from clusterhub.space import LocalSpace

from .dashboards import DashboardRoutes
from .warm_pool import DaskForkServer

# How much likelier than other processes a worker is to be the OOM killer's choice (-1000
# to 1000; 0 for everything else of a space).
WORKER_OOM_SCORE_ADJ = 500


def is_same_process(state: dict) -> bool:
    """Whether the process a cluster's or worker's state records still runs: its pid, with
    the start time recorded beside it (the machine's pids wrap at 32768 by default, and a
    gateway running for days would otherwise signal, or wait on, whatever took the pid).
    A state from before start times were recorded is judged by its pid."""
    pid = state.get("pid")
    if pid is None:
        return False
    if "started" not in state:
        return is_running(pid)
    return is_process(pid, state["started"])


def _with_start_time(state: dict) -> dict:
    if "pid" in state:
        return {**state, "started": process_start_time(state["pid"])}
    return state


async def kill_process(state: dict, timeout: float = 5.0) -> None:
    """SIGKILL the process ``state`` records (gone already, or another one by now: nothing)
    and wait until it is gone."""
    if not is_same_process(state):
        return
    try:
        os.kill(state["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return
    await wait_is_shutdown(state["pid"], timeout)


class LocalSpaceBackend(DashboardRoutes, UnsafeLocalBackend):
    data_dir = Unicode(
        config=True,
        help="The platform's data dir; each user's space is below it (see clusterhub.space).",
    )

    reap_period = Float(
        10.0,
        config=True,
        help="""Seconds between checks for clusters whose owner has no running server.

        Such clusters are stopped: they would otherwise hold resources nobody can use.
        """,
    )

    fork_server = Bool(
        True,
        config=True,
        help="""Fork every scheduler and worker from a process that has imported Dask already
        (see clusterhub.gateway.warm_pool), instead of starting a new interpreter for each.

        A forked start is ready at once and shares the imported code with its parent: on a
        2-core machine a cold worker spends about a second of a core importing and holds
        63 MB of its own, a forked one 40 MB. False starts every process cold.
        """,
    )

    nanny = Bool(
        False,
        config=True,
        help="""Start each worker under a Dask nanny (a second process per worker).

        On one machine a worker is already fenced by its owner's control group, and the
        gateway replaces a worker that dies (the cluster keeps its requested count), so the
        nanny's restarts and memory watch cost a process per worker for little. Without it,
        a worker over its memory limit stops taking tasks (Dask's pause threshold) and,
        past the owner's fence, is the one the kernel's OOM killer ends (its OOM score is
        raised), not the user's notebook; ``client.restart()`` needs nannies.
        """,
    )

    worker_hostnames = Bool(
        True,
        config=True,
        help="""As root, run each worker in a UTS namespace of its own, with a hostname that
        names it (``alice-dask-3``: the owner's space, the engine, the worker's number in its
        cluster), so that the hostnames view shows workers as the hosts they would be on a
        real cluster. Only the hostname differs; network and files are the machine's.""",
    )

    # A start's timeout counts from its turn (see _turn_then), when it gets most of a core;
    # a machine busy with a room's kernels and clients still slows it, so keep slack.
    @default("cluster_start_timeout")
    def _default_cluster_start_timeout(self):
        return 300.0

    @default("worker_start_timeout")
    def _default_worker_start_timeout(self):
        return 300.0

    # A scheduler that is late to heartbeat on a busy machine is not dead: a dead one is
    # found by its pid (cluster_status_period). Only a scheduler hung this long is stopped.
    @default("cluster_heartbeat_timeout")
    def _default_cluster_heartbeat_timeout(self):
        return 600.0

    # Starts waiting for their turn each hold a handler: enough for a full room's clusters,
    # so that a stop is never stuck behind them.
    @default("parallelism")
    def _default_parallelism(self):
        return 200

    def space(self, username: str) -> LocalSpace:
        return LocalSpace(self.data_dir, username)

    def identity(self, username: str) -> dict:
        """The owner's account and control group, as their spawner recorded them ({} in the
        single-account mode)."""
        state = self.space(username).read_state()
        return {key: state[key] for key in ("account", "fence") if state.get(key)}

    def setup_working_directory(self, cluster) -> str:
        space = self.space(cluster.username)
        workdir = space.path("dask-gateway", cluster.name)
        account, _ = identity_of(self.identity(cluster.username))
        # Platform-owned, readable by the owner's group only (with an account), made fresh:
        # nothing below it can be a link the user planted.
        group = account.gid if account else -1
        mode = 0o750 if account else 0o700
        for path in (
            space.path("dask-gateway"),
            workdir,
            self.get_certs_directory(workdir),
            self.get_logs_directory(workdir),
        ):
            os.makedirs(path, mode, exist_ok=True)
            os.chown(path, -1, group, follow_symlinks=False)
            os.chmod(path, mode)
        work = os.path.join(workdir, "work")
        os.makedirs(work, 0o700, exist_ok=True)
        if account:
            os.chown(work, account.uid, account.gid, follow_symlinks=False)
        cert_path, key_path = self._get_tls_paths(workdir)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        for path, data in [(cert_path, cluster.tls_cert), (key_path, cluster.tls_key)]:
            with os.fdopen(os.open(path, flags, 0o640 if account else 0o600), "wb") as f:
                os.fchown(f.fileno(), -1, group)
                f.write(data)
        return workdir

    def get_scheduler_command(self, cluster) -> list[str]:
        # The owner's environment (recorded when their server started): the scheduler and
        # workers run the same packages as the notebook that talks to them.
        command = super().get_scheduler_command(cluster)
        # Its dashboard listens on loopback, which every account reaches: it answers only
        # what the gateway's gate forwards (see dashboard_lock).
        command = [*command, "--preload", "clusterhub.gateway.dashboard_lock"]
        return self.space(cluster.username).environment().rebase_command(command)

    def get_scheduler_env(self, cluster) -> dict:
        return {**super().get_scheduler_env(cluster), **self.dashboard_lock_env(cluster)}

    def get_worker_command(self, cluster, worker_name, scheduler_address=None) -> list[str]:
        # dask-gateway gives workers no --host, so they would listen on every interface; on
        # one machine only loopback is needed (and only the proxy's port may be public).
        command = super().get_worker_command(cluster, worker_name, scheduler_address)
        environment = self.space(cluster.username).environment()
        command = [*environment.rebase_command(command), "--host", self.default_host]
        # Its own dashboard is on loopback too: locked like the scheduler's (the gate only
        # forwards to schedulers, so nobody opens it).
        command += ["--preload", "clusterhub.gateway.dashboard_lock"]
        return command if self.nanny else [*command, "--no-nanny"]

    def get_worker_env(self, cluster) -> dict:
        return {**super().get_worker_env(cluster), **self.dashboard_lock_env(cluster)}

    def get_env(self, cluster) -> dict:
        env = super().get_env(cluster)
        space = self.space(cluster.username)
        env.update(space.marker_env())
        env.update(space.environment().process_env(env.get("PATH", "")))
        workdir = cluster.state.get("workdir")
        env["HOME"] = os.path.join(workdir, "work") if workdir else space.root
        if workdir:
            # Dask's scratch space and any other temporary files go with the cluster.
            env["TMPDIR"] = os.path.join(workdir, "work")
        return env

    # -- turns ------------------------------------------------------------------------------
    async def _turn_then(self, start, record, key: tuple[str, str], owner: str, kind: str):
        """Wait for a turn, restart the start's clock (``record``), run ``start``; the
        turn goes back once the process listens (see start_process) or the start failed."""
        account, _ = identity_of(self.identity(owner))
        turn = admission.Turn(kind, owner, uid=account.uid if account else None)
        await turn.wait()
        record(start_time=timestamp())
        self._turns[key] = turn
        try:
            await start()
        finally:
            left = self._turns.pop(key, None)
            if left is not None:  # the start failed before a process existed
                left.release()

    async def _cluster_to_submitted(self, cluster):
        await self._turn_then(
            lambda: super(LocalSpaceBackend, self)._cluster_to_submitted(cluster),
            lambda **changes: self.db.update_cluster(cluster, **changes),
            (cluster.name, "scheduler"),
            cluster.username,
            "scheduler",
        )

    async def _worker_to_submitted(self, worker):
        await self._turn_then(
            lambda: super(LocalSpaceBackend, self)._worker_to_submitted(worker),
            lambda **changes: self.db.update_worker(worker, **changes),
            (worker.cluster.name, f"worker-{worker.name}"),
            worker.cluster.username,
            "worker",
        )

    async def start_process(self, cluster, cmd, env, name) -> int:
        workdir = cluster.state["workdir"]
        log_path = os.path.join(self.get_logs_directory(workdir), name + ".log")
        work = os.path.join(workdir, "work")
        identity = self.identity(cluster.username)
        # Past its owner's fence, the kernel's OOM killer ends a worker (whose results the
        # scheduler can compute again), not the notebook or the kernel with the user's work.
        oom_score_adj = WORKER_OOM_SCORE_ADJ if name != "scheduler" else None
        hostname = self.hostname_of(cluster, name)
        pid = await self._fork_server.start(
            cmd, env, work, log_path, identity, oom_score_adj, hostname
        )
        if pid is None:
            pid = await self._start_cold(
                cmd, env, work, log_path, identity, oom_score_adj, hostname
            )
        turn = self._turns.pop((cluster.name, name), None)
        if turn is not None:
            # Its imports are done once it listens (a worker under a nanny: once the nanny
            # and the worker it starts both do); a forked one is there almost at once.
            listeners = 2 if name != "scheduler" and self.nanny else 1
            turn.release_when(lambda: admission.tree_listens(pid, listeners))
        return pid

    # -- stops -----------------------------------------------------------------------------
    # A cluster that is stopping keeps nothing: its results go with it and its directory is
    # removed after. So its scheduler and workers are killed at once, where upstream asks
    # each to close (SIGINT, up to 10 s, then SIGTERM): a room stopping at once would
    # otherwise be dozens of Dask processes closing gracefully on a few cores, which took
    # most of a 30-attendee platform stop. A worker stopped while its cluster runs on (a
    # scale-down) still closes gracefully.
    async def do_stop_worker(self, worker):
        if worker.cluster.target < JobStatus.STOPPED:
            if is_same_process(worker.state):
                await self.stop_process(worker.state["pid"])
            return
        await kill_process(worker.state)

    async def do_stop_cluster(self, cluster):
        await kill_process(cluster.state)
        workdir = cluster.state.get("workdir")
        if workdir is not None:
            self.cleanup_working_directory(workdir)

    # -- the processes, by pid and start time -----------------------------------------------
    async def do_start_cluster(self, cluster):
        async for state in super().do_start_cluster(cluster):
            yield _with_start_time(state)

    async def do_start_worker(self, worker):
        async for state in super().do_start_worker(worker):
            yield _with_start_time(state)

    def _check_status(self, o) -> bool:
        return is_same_process(o.state)

    def hostname_of(self, cluster, process_name: str) -> str | None:
        """The hostname of a worker process (``worker-<name>``), or None to keep the
        machine's (a scheduler, not root, or ``worker_hostnames`` off)."""
        worker = process_name.removeprefix("worker-")
        if worker == process_name or not self.worker_hostnames or not can_have_own_hostnames():
            return None
        names = list(cluster.workers)
        number = names.index(worker) + 1 if worker in names else len(names) + 1
        return worker_hostname(self.space(cluster.username).name, "dask", number)

    async def _start_cold(
        self,
        cmd,
        env,
        cwd: str,
        log_path: str,
        identity: dict,
        oom_score_adj: int | None,
        hostname: str | None = None,
    ) -> int:
        def preexec() -> None:  # in the child, as the fork server's children do
            take_identity(identity, oom_score_adj, hostname)
            os.chdir(cwd)

        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(log_path, flags, 0o640)
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                preexec_fn=preexec,
                start_new_session=True,
                env=env,
                stdout=fd,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            os.close(fd)
        return proc.pid

    async def do_setup(self) -> None:
        self._turns: dict[tuple[str, str], admission.Turn] = {}
        await super().do_setup()
        self._fork_server = DaskForkServer(self.fork_server, self.data_dir or os.getcwd(), self.log)
        # Aim at the platform's own environment; a cluster in another one retargets it.
        inherited = {k: os.environ[k] for k in self.inherited_environment if k in os.environ}
        await self._fork_server.warm(
            self.cluster_config_class(parent=self).scheduler_cmd, inherited
        )
        self._reaper = asyncio.ensure_future(self._reap_loop())

    async def do_cleanup(self) -> None:
        reaper = getattr(self, "_reaper", None)
        if reaper is not None:
            reaper.cancel()
        await self._fork_server.close()
        await super().do_cleanup()

    async def reap_orphans(self) -> list[str]:
        """Stop every active cluster whose owner's space is not active; return their names."""
        reaped = []
        for cluster in list(self.db.active_clusters()):
            if not self.space(cluster.username).is_active():
                self.log.info(
                    "Stopping cluster %s: its owner %s has no running server",
                    cluster.name,
                    cluster.username,
                )
                await self.stop_cluster(cluster.name)
                reaped.append(cluster.name)
        return reaped

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reap_period)
            try:
                await self.reap_orphans()
            except Exception:
                self.log.exception("Reaping clusters of stopped spaces failed")
