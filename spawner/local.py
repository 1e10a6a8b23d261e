"""The local spawner: each user's space is a home, a runtime directory and a set of processes.

All users run as the platform's own account (like JupyterHub's
SimpleLocalProcessSpawner, which this extends): this is the "one machine is all
you need" mode for a workshop, not a multi-tenant security boundary.

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

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Bool, Unicode, default

from clusterhub import profiles as profile_rules
from clusterhub.build.environments import (
    Environment,
    current_environment,
    platform_environment,
)
from clusterhub.content import sync_content, workshop_source
from clusterhub.engines import Engine, EngineError, local_engine
from clusterhub.gateway.client import stop_user_clusters
from clusterhub.space import LocalSpace

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

    @default("home_dir")
    def _default_home_dir(self):
        return self.space.home

    @property
    def space(self) -> LocalSpace:
        if not self.data_dir:
            raise RuntimeError("LocalSpaceSpawner.data_dir is not configured")
        return LocalSpace(self.data_dir, self.user.name)

    # -- engines ----------------------------------------------------------------------------
    def engines(self, options: profile_rules.SpaceOptions) -> list[Engine]:
        profile = self.space_profile(options)
        return [
            local_engine(
                kind,
                self.space,
                worker_cores=options.worker_cores,
                worker_memory_gib=options.worker_memory_gib,
            )
            for kind in profile["engines"]
        ]

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
        command = environment.rebase_command(self._configured_cmd)
        return [environment.start, *command] if environment.start else command

    def get_env(self):
        env = super().get_env()
        space = self.space
        env.update(space.marker_env())
        env.update(space.environment().process_env(env.get("PATH", "")))
        env.update(self.gateway_env())
        for engine in self.engines(self.space_options()):
            env.update(engine.client_env())
        return env

    def get_args(self):
        args = super().get_args()
        if os.geteuid() == 0:
            args.append("--ServerApp.allow_root=True")
        return args

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self):
        options = self.space_options()
        space = self.space
        space.create()
        environment = self.spawn_environment()
        # Recorded first: the engines, the gateway and get_env() read it from the space.
        space.write_state(environment=environment.to_dict())
        self.cmd = self.notebook_command(environment)
        self.log.info("Server of %s uses environment %s", self.user.name, environment.name)
        if self.deliver_workshop_content:
            source, exclude = self.content_source(environment)
            report = await asyncio.to_thread(
                sync_content, source, space.home, space.path("content.json"), exclude
            )
            self.log.info(
                "Workshop content for %s: %d added, %d updated, %d kept as the user's",
                self.user.name,
                len(report.added),
                len(report.updated),
                len(report.kept),
            )
        engines = self.engines(options)
        for engine in engines:
            await asyncio.to_thread(engine.prepare)
        space.write_state(
            active=True,
            options=options.to_dict(),
            limits=self.profile_limits(options),
            engines={engine.kind: "starting" for engine in engines},
        )
        address = await super().start()
        if engines:
            self._engines_task = asyncio.ensure_future(
                self._start_engines(engines, options.workers)
            )
        return address

    async def _start_engines(self, engines: list[Engine], workers: int) -> None:
        """Start engines one by one; a failing engine is recorded, never fatal to the notebook."""
        for engine in engines:
            try:
                await asyncio.to_thread(engine.start, workers)
                state = "running"
            except EngineError as exc:
                self.log.error("%s for %s failed to start: %s", engine.kind, self.user.name, exc)
                state = f"failed: {exc}"
            except Exception:
                self.log.exception("%s for %s failed to start", engine.kind, self.user.name)
                state = "failed: internal error, see the hub's log"
            engines_state = self.space.read_state().get("engines", {})
            engines_state[engine.kind] = state
            self.space.write_state(engines=engines_state)

    async def stop(self, now=False):
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
        for kind in space.read_state().get("engines", {}):
            try:
                await asyncio.to_thread(local_engine(kind, space).stop)
            except Exception:
                self.log.exception("Stopping %s of %s failed", kind, self.user.name)
        await super().stop(now=now)
        left = await asyncio.to_thread(space.sweep)
        if left:
            self.log.info("Stopped %d leftover processes of %s", left, self.user.name)
