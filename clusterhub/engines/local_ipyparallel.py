"""A user's IPyParallel controller and engines as local processes.

The controller writes its connection files into the space's IPython profile;
the notebook gets ``IPYTHONDIR`` pointing at the same directory, so
``ipyparallel.Client()`` in a kernel connects with no arguments.
"""

from __future__ import annotations

import os

from .. import procs
from ..hostnames import launcher, worker_hostname
from ..space import LocalSpace, read_json, write_json_atomic
from ..usererror import CONFLICT, UserError
from .base import EngineStatus, SerialisedEngine

CONTROLLER_START_TIMEOUT = 60


class LocalIPyParallelEngine(SerialisedEngine):
    kind = "ipyparallel"

    def __init__(self, space: LocalSpace, *, host: str = "127.0.0.1", **_sizes):
        # Sizes (cores, memory) have no meaning for a local engine process; accept and ignore.
        self.space = space
        self.host = host

    @property
    def ipython_dir(self) -> str:
        return self.space.path("ipython")

    @property
    def profile_dir(self) -> str:
        return os.path.join(self.ipython_dir, "profile_default")

    def _security(self, name: str) -> str:
        return os.path.join(self.profile_dir, "security", name)

    @property
    def _state_file(self) -> str:
        return self.space.path("ipyparallel", "state.json")

    def _state(self) -> dict:
        return read_json(self._state_file, default={}) or {"controller": None, "engines": []}

    def _save(self, state: dict) -> None:
        write_json_atomic(self._state_file, state)

    def _env(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in ("LANG", "LC_ALL") if k in os.environ}
        env.update(self.space.environment().process_env())
        env.update(self.space.marker_env())
        env.update({"HOME": self.space.path("ipyparallel"), "IPYTHONDIR": self.ipython_dir})
        return env

    def _launch(
        self, args: list[str], log_name: str, hostname: str | None = None
    ) -> procs.ProcessRecord:
        # The space's environment (recorded at spawn), as the notebook's kernels use.
        python = self.space.environment().python
        command = [python, "-m", *args]
        if hostname:
            # A host of its own, as on a real cluster (see clusterhub.hostnames).
            command = [*launcher(python, hostname), *command]
        return procs.launch_detached(
            command,
            env=self._env(),
            cwd=self.space.path("ipyparallel"),
            log_path=self.space.path("ipyparallel", "logs", log_name),
        )

    def _controller(self, state: dict) -> procs.ProcessRecord | None:
        record = state.get("controller")
        if not record:
            return None
        rec = procs.ProcessRecord.from_dict(record)
        return rec if rec.is_running() else None

    @staticmethod
    def _live_entries(state: dict) -> list[dict]:
        """The state's entries of engines still running (each a record and its number)."""
        entries = state.get("engines", [])
        return [e for e in entries if procs.ProcessRecord.from_dict(e).is_running()]

    def _live_engines(self, state: dict) -> list[procs.ProcessRecord]:
        return [procs.ProcessRecord.from_dict(e) for e in self._live_entries(state)]

    def prepare(self) -> None:
        os.makedirs(os.path.join(self.profile_dir, "security"), exist_ok=True)
        os.makedirs(self.space.path("ipyparallel", "logs"), exist_ok=True)

    @property
    def _lock(self) -> str:
        return self.space.path("ipyparallel", ".lock")

    def _start(self, workers: int) -> None:
        self.prepare()
        state = self._state()
        if self._controller(state) is None:
            for name in ("ipcontroller-client.json", "ipcontroller-engine.json"):
                try:
                    os.unlink(self._security(name))
                except FileNotFoundError:
                    pass
            record = self._launch(
                [
                    "ipyparallel.controller",
                    f"--profile-dir={self.profile_dir}",
                    f"--ip={self.host}",
                    "--log-level=WARN",
                ],
                "controller.log",
            )
            state = {"controller": record.to_dict(), "engines": []}
            self._save(state)
            engine_file = self._security("ipcontroller-engine.json")
            ready = procs.wait_until(
                lambda: os.path.exists(engine_file) or not record.is_running(),
                CONTROLLER_START_TIMEOUT,
            )
            if not ready or not record.is_running():
                raise UserError(
                    "the IPyParallel controller did not start; see "
                    + self.space.path("ipyparallel", "logs", "controller.log"),
                    status=CONFLICT,
                )
        self._scale(workers)

    def _scale(self, workers: int) -> None:
        state = self._state()
        if self._controller(state) is None:
            raise UserError(
                "IPyParallel is not running in this space; start it first", status=CONFLICT
            )
        live = self._live_entries(state)
        engines = [procs.ProcessRecord.from_dict(e) for e in live]
        # Each engine's number names its host (alice-ipp-2); a new one takes the lowest free.
        numbers = [r.get("number") for r in live]
        if len(engines) < workers:
            for _ in range(workers - len(engines)):
                number = next(n for n in range(1, len(numbers) + 2) if n not in numbers)
                engines.append(
                    self._launch(
                        [
                            "ipyparallel.engine",
                            f"--profile-dir={self.profile_dir}",
                            "--log-level=WARN",
                        ],
                        "engines.log",
                        hostname=worker_hostname(self.space.name, "ipp", number),
                    )
                )
                numbers.append(number)
        elif len(engines) > workers:
            procs.terminate(engines[workers:], timeout=10)
            engines, numbers = engines[:workers], numbers[:workers]
        state["engines"] = [
            {**e.to_dict(), "number": n} for e, n in zip(engines, numbers, strict=True)
        ]
        state["requested"] = workers
        self._save(state)

    def _stop(self) -> None:
        state = self._state()
        records = self._live_engines(state)
        controller = self._controller(state)
        procs.terminate(records, timeout=10)
        if controller is not None:
            procs.terminate([controller], timeout=10)
        self._save({"controller": None, "engines": []})

    def registered_engines(self) -> int | None:
        """How many engines the controller has registered (None when it cannot be asked)."""
        try:
            import ipyparallel

            if not os.path.exists(self._security("ipcontroller-client.json")):
                return None
            client = ipyparallel.Client(profile_dir=self.profile_dir, timeout=5)
        except Exception:
            return None
        try:
            return len(client.ids)
        finally:
            client.close()

    def status(self) -> EngineStatus:
        state = self._state()
        if self._controller(state) is None:
            failed = bool(state.get("engines"))
            return EngineStatus(
                engine=self.kind, state="failed" if failed else "stopped", workers=0
            )
        registered = self.registered_engines()
        wanted = state.get("requested", 0)
        count = registered if registered is not None else 0
        return EngineStatus(
            engine=self.kind,
            state="running" if count >= wanted else "starting",
            workers=count,
            address=self._security("ipcontroller-client.json"),
            details={"requested_workers": wanted, "engine_processes": len(state["engines"])},
        )

    def client_env(self) -> dict[str, str]:
        return {"IPYTHONDIR": self.ipython_dir}
