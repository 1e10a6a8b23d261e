"""The local spawner: each user's space is a home, a runtime directory and a set of processes.

Two modes, chosen by ``user_accounts`` (on when the hub runs as root):

- **per-user accounts**: each hub user gets a system account (see
  :mod:`clusterhub.accounts`) and a control group (see :mod:`clusterhub.fences`). The
  notebook, its kernels and the engines run as that account inside that group; whatever the
  hub does in the user's directories (content, engine files) it does as the account too
  (see :mod:`clusterhub.owner_tasks`). This is the boundary between strangers in a workshop.
- **single account** (the hub is not root): everyone runs as the platform's account, like
  JupyterHub's SimpleLocalProcessSpawner, which this extends; not a security boundary.

On start: create the space, record which Python environment it runs in (the current
``clusterhub build``, else the platform's own: the notebook, its kernels, its gateway
clusters and engines all use it until the server restarts, even if a new build becomes
current meanwhile), merge that build's workshop content into the home, prepare
the profile's engines so the notebook's environment already points at them,
start the notebook, then start the engines in the background (a slow Spark
worker must not delay the notebook). On stop: mark the space inactive, stop the
user's gateway clusters, the engines, the notebook, and finally any process
still carrying the space's marker.
"""

from __future__ import annotations

import asyncio
import os
import time

from jupyterhub.spawner import SimpleLocalProcessSpawner
from tornado import web
from traitlets import Bool, CaselessStrEnum, Integer, Unicode, default

from clusterhub import admission, kernel_provisioner, kernel_sockets, singleuser
from clusterhub import profiles as profile_rules
from clusterhub.accounts import (
    Account,
    AccountError,
    AccountPolicy,
    ensure_account,
    identity_of,
)
from clusterhub.build.environments import (
    Environment,
    current_environment,
    platform_environment,
)
from clusterhub.content import workshop_source
from clusterhub.fences import Fence, platform_id, unavailable_reason
from clusterhub.gateway.client import stop_user_clusters
from clusterhub.owner_tasks import run_as_owner_async
from clusterhub.ports import accepts
from clusterhub.procs import is_process, process_exited, process_start_time
from clusterhub.space import LocalSpace
from clusterhub.usererror import UserError

from .options import SpaceSpawnerMixin


class LocalSpaceSpawner(SpaceSpawnerMixin, SimpleLocalProcessSpawner):
    data_dir = Unicode(
        config=True,
        help="The platform's data dir. Homes are in <data_dir>/homes, spaces in <data_dir>/spaces.",
    )

    workshop_content = Unicode(
        "",
        config=True,
        help="""A directory merged into every home on each start (new files arrive,
        a user's edits are never overwritten). Empty (the default): the repository of the
        current `clusterhub build`, else the workshop shipped with clusterhub.""",
    )

    deliver_workshop_content = Bool(
        True,
        config=True,
        help="Whether to merge workshop content into homes at all.",
    )

    user_accounts = Bool(
        config=True,
        help="""Run each user as a system account of their own, in a control group of their
        own. On by default when the hub runs as root (it needs root); off, every user runs as
        the hub's account.""",
    )

    @default("user_accounts")
    def _default_user_accounts(self):
        return os.geteuid() == 0

    account_prefix = Unicode(
        "ch-",
        config=True,
        help="Prefix of the system accounts made for users (``ch-alice``).",
    )

    account_uid_min = Integer(
        20000, config=True, help="Lowest uid (and gid) given to a user's account."
    )

    account_uid_max = Integer(
        29999, config=True, help="Highest uid (and gid) given to a user's account."
    )

    max_accounts = Integer(
        0,
        min=0,
        config=True,
        help="""How many user accounts this platform may make (0: as many as the uid range
        holds). A new user past it is refused with a page that says the room is full.""",
    )

    fences = Bool(
        True,
        config=True,
        help="""With user accounts: put each user's processes into a control group of their
        own (memory limit, equal CPU weight, pids limit). Where no control group can be made
        the platform says so at start and runs unfenced.""",
    )

    pids_max = Integer(
        2048,
        min=64,
        config=True,
        help="""Most processes and threads one user may have at once (a fork bomb stops
        here). Java and Dask use many threads: keep it in the thousands.""",
    )

    platform_id = Unicode(
        config=True,
        help="Names this platform's control groups (default: derived from data_dir).",
    )

    @default("platform_id")
    def _default_platform_id(self):
        return platform_id(self.data_dir)

    launch_timeout = Integer(
        300,
        min=1,
        config=True,
        help="""Seconds a server's start may take once its turn in the machine's start queue
        has come (see clusterhub.admission); then JupyterHub's ``http_timeout`` applies.

        JupyterHub's ``start_timeout`` also counts the wait for a turn, so the platform sets
        it to cover a full room's queue.""",
    )

    kernel_transport = CaselessStrEnum(
        ["ipc", "tcp"],
        "ipc",
        config=True,
        help="""How a notebook server talks to its kernels: ``ipc`` (Unix sockets in a
        runtime directory private to the user) or ``tcp`` (loopback ports).

        ``ipc`` (the default) cannot fail the way TCP does when many kernels start at once
        (jupyter_client chooses a kernel's ports before the kernel binds them, so another
        server's kernel may take one; see clusterhub.kernel_sockets), and no other account
        can connect to a kernel. Where the runtime directory's path is too long for a Unix
        socket, kernels use TCP and the hub says why.""",
    )

    @default("options_form")
    def _default_options_form(self):
        fenced = bool(self.user_accounts and self.fences)
        return profile_rules.render_form(self.profiles, show_memory_limit=fenced)

    @default("home_dir")
    def _default_home_dir(self):
        return self.space.home

    @property
    def space(self) -> LocalSpace:
        if not self.data_dir:
            raise RuntimeError("LocalSpaceSpawner.data_dir is not configured")
        return LocalSpace(self.data_dir, self.user.name)

    # -- who the space runs as ------------------------------------------------------------
    @property
    def account_policy(self) -> AccountPolicy:
        return AccountPolicy(
            prefix=self.account_prefix,
            uid_min=self.account_uid_min,
            uid_max=self.account_uid_max,
            max_accounts=self.max_accounts,
        ).check()

    async def space_account(self) -> Account | None:
        """The user's account (made on their first start); None in the single-account mode."""
        if not self.user_accounts:
            return None
        try:
            return await asyncio.to_thread(
                ensure_account,
                self.account_policy,
                self.user.name,
                self.space.home,
            )
        except AccountError as exc:
            error = web.HTTPError(403, str(exc))
            error.jupyterhub_message = str(exc)
            raise error from None

    def space_fence(self) -> Fence | None:
        if not (self.user_accounts and self.fences) or unavailable_reason() is not None:
            return None
        return Fence(self.platform_id, self.space.name)

    def memory_budget_bytes(self, options: profile_rules.SpaceOptions) -> int:
        profile = self.space_profile(options)
        return int(profile_rules.memory_budget_gib(profile) * 2**30)

    async def as_owner(self, task: str, **request) -> dict:
        """Run an owner task (see clusterhub.owner_tasks) for this space, as its owner."""
        account, fence = identity_of(self.space.read_state())
        request.update(task=task, data_dir=self.data_dir, username=self.user.name)
        return await run_as_owner_async(account, request, fence.preexec() if fence else None)

    def engine_request(self, options: profile_rules.SpaceOptions) -> dict:
        return {
            "kinds": list(self.space_profile(options)["engines"]),
            "sizes": {
                "worker_cores": options.worker_cores,
                "worker_memory_gib": options.worker_memory_gib,
            },
        }

    # -- environment --------------------------------------------------------------------------
    def spawn_environment(self) -> Environment:
        """The environment a server starting now gets: the current build's, read once."""
        return current_environment(self.data_dir) or platform_environment()

    def content_source(self, environment: Environment) -> tuple[str, tuple[str, ...]]:
        """The directory merged into the home, and its top-level folders that are not content."""
        if self.workshop_content:
            return self.workshop_content, ()
        if environment.content:
            return environment.content, environment.content_exclude
        return workshop_source(), ()

    def notebook_command(self, environment: Environment) -> list[str]:
        """``cmd`` from the environment's bin/, wrapped by the repository's ``start`` script
        if it has one (repo2docker runs the server as ``start <command>`` too)."""
        if not hasattr(self, "_configured_cmd"):
            self._configured_cmd = list(self.cmd)
        command = singleuser.server_command(self._configured_cmd, environment)
        return [environment.start, *command] if environment.start else command

    # -- kernels ------------------------------------------------------------------------------
    @property
    def kernel_runtime_dir(self) -> str:
        """The notebook server's runtime directory, where its kernels' sockets are."""
        root = kernel_sockets.runtime_root(self.platform_id)
        return kernel_sockets.space_runtime_dir(root, self.space.name)

    def kernels_use_ipc(self) -> bool:
        if self.kernel_transport != "ipc":
            return False
        reason = kernel_sockets.too_long_reason(self.kernel_runtime_dir)
        if reason:
            self.log.warning("Kernels of %s use TCP: %s", self.user.name, reason)
        return reason is None

    def get_env(self):
        env = super().get_env()
        space = self.space
        if getattr(self, "_kernels_ipc", False):
            env["JUPYTER_RUNTIME_DIR"] = self.kernel_runtime_dir
        if os.environ.get(admission.SOCKET_ENV):
            # Its kernels take turns with every other start on the machine.
            env[admission.SOCKET_ENV] = os.environ[admission.SOCKET_ENV]
        env.update(space.marker_env())
        env.update(space.environment().process_env(env.get("PATH", "")))
        env.update(self.gateway_env())
        env.update(getattr(self, "_engine_client_env", {}))
        return env

    def user_env(self, env):
        env = super().user_env(env)
        account = getattr(self, "_account", None)
        if account is not None:
            env["USER"] = env["LOGNAME"] = account.name
        return env

    def make_preexec_fn(self, name):
        """Join the user's fence, become their account, work in their home."""
        home = self.home_dir
        account = getattr(self, "_account", None)
        fence = getattr(self, "_fence", None)

        def preexec():
            if fence is not None:
                fence.join()
            if account is not None:
                account.become()
            os.chdir(home)

        return preexec

    def get_args(self):
        args = super().get_args()
        if os.geteuid() == 0 and getattr(self, "_account", None) is None:
            args.append("--ServerApp.allow_root=True")
        if getattr(self, "_kernels_ipc", False):
            args.append("--KernelManager.transport=ipc")
        if os.environ.get(admission.SOCKET_ENV):
            # Kernels wait for their turn to start (clusterhub.kernel_provisioner).
            args.append(
                f"--KernelProvisionerFactory.default_provisioner_name={kernel_provisioner.NAME}"
            )
        return args

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self):
        # The start's turn in the machine's queue (see clusterhub.admission); held until
        # the server listens. JupyterHub's http_timeout only counts after start() returns.
        self._queue_position = None
        turn = admission.Turn("server", self.user.name, on_position=self._on_queue_position)
        try:
            await turn.wait()
        finally:
            self._queue_position = 0
        if turn.waited > 1:
            self.log.info("Server of %s waited %.0f s for its turn", self.user.name, turn.waited)
        try:
            ip, port = await asyncio.wait_for(self._start_space(), self.launch_timeout)
        except BaseException:
            turn.release()
            raise
        # Loopback: a connect is answered (or refused) at once.
        self._turn_watch = turn.release_when(lambda: accepts(ip or "127.0.0.1", port, 0.5))
        return ip, port

    def _on_queue_position(self, position: int) -> None:
        self._queue_position = position

    async def progress(self):
        """While the server waits for its turn, its place in the queue (the spawn page)."""
        shown = None
        while getattr(self, "_queue_position", None) != 0:
            position = getattr(self, "_queue_position", None)
            if position and position != shown:
                shown = position
                yield {"progress": 5, "message": admission.describe_position(position)}
            await asyncio.sleep(0.5)
        yield {"progress": 50, "message": "Starting your server"}

    async def _start_space(self) -> tuple[str, int]:
        options = self.space_options()
        space = self.space
        self._account = account = await self.space_account()
        await asyncio.to_thread(space.create, account)
        self._fence = fence = self.space_fence()
        if fence is not None:
            await asyncio.to_thread(fence.create, self.memory_budget_bytes(options), self.pids_max)
        environment = self.spawn_environment()
        # Recorded first: the engines, the gateway and get_env() read it from the space.
        space.write_state(
            environment=environment.to_dict(),
            account=account.to_dict() if account else None,
            fence={"platform_id": fence.platform_id, "name": fence.name} if fence else None,
        )
        self.cmd = self.notebook_command(environment)
        self._kernels_ipc = self.kernels_use_ipc()
        if self._kernels_ipc:
            await asyncio.to_thread(
                kernel_sockets.prepare,
                self.kernel_runtime_dir,
                account.uid if account else None,
                account.gid if account else None,
            )
        self.log.info(
            "Server of %s uses environment %s, runs as %s%s",
            self.user.name,
            environment.name,
            account.name if account else "the platform's account",
            f", memory limit {self.memory_budget_bytes(options) >> 30} GiB" if fence else "",
        )
        # One process of the owner for both (each owner task is a Python start-up).
        engines = self.engine_request(options)
        content = {}
        if self.deliver_workshop_content:
            source, exclude = self.content_source(environment)
            content = {"source": source, "exclude": list(exclude)}
        prepared = await self.as_owner("prepare_space", **content, **engines)
        report = prepared.get("report")
        if report is not None:
            self.log.info(
                "Workshop content for %s: %d added, %d updated, %d kept as the user's",
                self.user.name,
                len(report["added"]),
                len(report["updated"]),
                len(report["kept"]),
            )
            if report["refused"]:
                self.log.warning(
                    "Workshop content for %s: links out of the repository refused: %s",
                    self.user.name,
                    ", ".join(report["refused"]),
                )
        self._engine_client_env = prepared["client_env"]
        space.write_state(
            active=True,
            options=options.to_dict(),
            limits=self.profile_limits(options),
            engines={kind: "starting" for kind in engines["kinds"]},
        )
        address = await super().start()
        if engines["kinds"]:
            self._engines_task = asyncio.ensure_future(
                self._start_engines(engines, options.workers)
            )
        return address

    async def _start_engines(self, engines: dict, workers: int) -> None:
        """Start engines one by one; a failing engine is recorded, never fatal to the notebook."""
        for kind in engines["kinds"]:
            try:
                await self.as_owner(
                    "start_engine", kinds=[kind], sizes=engines["sizes"], workers=workers
                )
                state = "running"
            except UserError as exc:
                self.log.error("%s for %s failed to start: %s", kind, self.user.name, exc)
                state = f"failed: {exc}"
            except Exception:
                self.log.exception("%s for %s failed to start", kind, self.user.name)
                state = "failed: internal error, see the hub's log"
            engines_state = self.space.read_state().get("engines", {})
            engines_state[kind] = state
            self.space.write_state(engines=engines_state)

    # -- after a restart of the hub ------------------------------------------------------------
    # JupyterHub keeps get_state() in its database and, when it starts again, hands it to
    # load_state() and poll()s the server, which kept running. A pid alone could by then
    # name another program (pids are reused): the server's start time goes with it, and a
    # pid whose process started at another time is never signalled.
    def get_state(self):
        state = super().get_state()
        if self.pid:
            started = process_start_time(self.pid)
            if started is not None:
                state["pid_started"] = started
        return state

    def load_state(self, state):
        super().load_state(state)
        self._pid_started = state.get("pid_started")

    def clear_state(self):
        super().clear_state()
        self._pid_started = None

    async def poll(self):
        if self.proc is None and self.pid:
            recorded = getattr(self, "_pid_started", None)
            started = process_start_time(self.pid)
            if started is not None and not is_process(self.pid, recorded):
                self.log.warning(
                    "Server of %s: pid %d is no longer its process; recorded as stopped",
                    self.user.name,
                    self.pid,
                )
                self.clear_state()
                return 0
            if started is not None and process_exited(self.pid):
                # Its parent (the hub before the restart) is gone, and whoever inherited it
                # has not waited for it yet: it exited, though its pid still answers.
                self.clear_state()
                return 0
        return await super().poll()

    async def wait_for_death(self, timeout=10):
        """Wait up to ``timeout`` s for the server to exit, looking every ``death_interval``.

        JupyterHub's own wait backs off exponentially (0.1, 0.3, 0.7, 1.5, 3.1 s ...): a
        server that exits after 3.2 s was noticed at 6.3. Here a look is one waitpid (or,
        for a server re-attached after a hub restart, one /proc read), cheap enough to repeat.
        """
        deadline = time.monotonic() + timeout
        while await self.poll() is None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.death_interval)
        return True

    async def stop(self, now=False):
        watch = getattr(self, "_turn_watch", None)
        if watch is not None:
            watch.cancel()  # gives the start's turn back
        space = self.space
        # First, so that the gateway refuses new clusters and reaps any it still has.
        space.write_state(active=False)
        task = getattr(self, "_engines_task", None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.api_token and self.gateway_url:
            try:
                stopped = await stop_user_clusters(self.gateway_url, self.api_token)
                if stopped:
                    self.log.info("Stopped gateway clusters of %s: %s", self.user.name, stopped)
            except Exception as exc:
                # The reaper and the sweep below still stop them; say so in the log.
                self.log.warning("Could not stop gateway clusters of %s: %s", self.user.name, exc)
        state = space.read_state()
        kinds = list(state.get("engines", {}))
        if kinds:
            try:
                answer = await self.as_owner("stop_engines", kinds=kinds)
                for kind, why in answer["failed"].items():
                    self.log.error("Stopping %s of %s failed: %s", kind, self.user.name, why)
            except Exception:
                self.log.exception("Stopping the engines of %s failed", self.user.name)
        # Straight to SIGTERM: without a terminal, jupyter-server answers SIGINT by asking for
        # confirmation on its standard input, finds none and carries on, so JupyterHub's
        # SIGINT first would only add interrupt_timeout to every stop. On SIGTERM it shuts its
        # kernels down and exits; term_timeout later it is killed, and the sweep below
        # stops anything of the space still running.
        await super().stop(now=True)
        account, fence = identity_of(state)
        left = await asyncio.to_thread(space.sweep, account.uid if account else None)
        if left:
            self.log.info("Stopped %d leftover processes of %s", left, self.user.name)
        # After the sweep: no kernel of the space is left to use its sockets.
        await asyncio.to_thread(kernel_sockets.remove, self.kernel_runtime_dir)
        if fence is not None:
            # Whatever is still in the user's group (a process that escaped the markers).
            await asyncio.to_thread(fence.remove)
