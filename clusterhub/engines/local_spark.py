"""A user's Spark standalone cluster as local processes.

The master and workers are started with pyspark's bundled ``sbin/spark-daemon.sh``
(pyspark from PyPI has no start-master.sh / start-worker.sh), which detaches
them, writes a pid file per daemon and rotates their logs. Each worker is an
*instance number* of the Worker daemon, so scaling is starting or stopping
instances. The kernel finds the master through ``SPARK_CONF_DIR``'s
``spark-defaults.conf``, so ``SparkSession.builder.getOrCreate()`` needs no
arguments.

Where the machine allows it (see :mod:`clusterhub.hostnames`), each worker is a host of its
own, ``<space>-spark-<instance>``: it and its executors run in a UTS namespace of that name,
and Spark knows the worker (and so each task's executor) by it. Every JVM of the space, the
master, the workers, their executors and the kernel's driver, resolves those names through a
hosts file of the space's (the machine's own plus the worker names, at 127.0.0.1), mounted
as its ``/etc/hosts``; the driver's is started through a ``spark-submit`` of the space's
that adds the mount. Elsewhere every worker is ``127.0.0.1``.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from .. import procs
from ..hostnames import hosts_text, launcher, worker_hostname
from ..ports import free_port
from ..space import LocalSpace, read_json, write_json_atomic
from ..usererror import CONFLICT, UserError
from .base import EngineStatus, SerialisedEngine

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
IDENT = "clusterhub"
# The most workers a space may have (the profiles' bound): all are named in its hosts file
# from the start, since a file mounted in a running JVM's namespace is not replaced.
MAX_WORKERS = 64


def spark_home() -> str:
    try:
        from pyspark.find_spark_home import _find_spark_home
    except ImportError as exc:
        raise UserError(
            "Spark is not installed: install clusterhub with the 'spark' extra (pyspark)",
            status=CONFLICT,
        ) from exc
    return _find_spark_home()


def java_missing_reason() -> str | None:
    """Why Spark cannot run here, or None when Java is available."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(os.path.join(java_home, "bin", "java"), os.X_OK):
        return None
    if shutil.which("java"):
        return None
    return (
        "Java is not installed: install a JDK "
        "(Debian/Ubuntu: apt-get install -y default-jdk-headless)"
    )


class LocalSparkEngine(SerialisedEngine):
    kind = "spark"

    def __init__(
        self,
        space: LocalSpace,
        *,
        worker_cores: int = 1,
        worker_memory_gib: int = 1,
        host: str = "127.0.0.1",
    ):
        self.space = space
        self.worker_cores = worker_cores
        self.worker_memory_gib = worker_memory_gib
        self.host = host

    # -- files -------------------------------------------------------------------------------
    def _dir(self, *parts: str) -> str:
        return self.space.path("spark", *parts)

    @property
    def _state_file(self) -> str:
        return self._dir("state.json")

    def _state(self) -> dict:
        return read_json(self._state_file, default={}) or {}

    def _pid_file(self, cls: str, instance: int) -> str:
        return self._dir("pids", f"spark-{IDENT}-{cls}-{instance}.pid")

    def _record(self, cls: str, instance: int) -> procs.ProcessRecord | None:
        try:
            with open(self._pid_file(cls, instance)) as f:
                pid = int(f.read().strip())
            return procs.ProcessRecord.of(pid)
        except (FileNotFoundError, ValueError, procs.psutil.Error):
            return None

    @property
    def _hosts_file(self) -> str:
        return self._dir("conf", "hosts")

    def _worker_host(self, state: dict, instance: int) -> str:
        if state.get("hostnames"):
            return worker_hostname(self.space.name, "spark", instance)
        return self.host

    def _hostnames_refused(self) -> str | None:
        """Why the workers cannot be hosts of their own here (None: they can), tried the
        way they are started: the launcher, as this process's user."""
        names = [worker_hostname(self.space.name, "spark", n) for n in range(1, MAX_WORKERS + 1)]
        fd = os.open(self._hosts_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(hosts_text(names))
        probe = [*launcher(self.launcher_python, names[0], self._hosts_file)]
        probe += ["getent", "hosts", names[0]]
        try:
            done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        if done.returncode != 0 or done.stderr.strip():
            return (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        return None

    @property
    def launcher_python(self) -> str:
        """The Python that runs :mod:`clusterhub.hostnames`: this process's own, which has
        clusterhub (a space's built environment need not)."""
        return sys.executable

    def _write_driver_home(self) -> str:
        """A SPARK_HOME for the kernel: Spark's own, but whose ``bin/spark-submit`` starts
        the driver with the space's hosts file as its ``/etc/hosts``, so that the driver
        resolves the executors it fetches blocks from."""
        real, home = spark_home(), self._dir("driver-home")
        os.makedirs(os.path.join(home, "bin"), mode=0o700, exist_ok=True)
        for parent, names in ((real, os.listdir(real)), (os.path.join(real, "bin"), None)):
            for name in names if names is not None else os.listdir(parent):
                if parent == real and name == "bin":
                    continue
                if parent != real and name == "spark-submit":
                    continue
                link = os.path.join(home, os.path.relpath(os.path.join(parent, name), real))
                if not os.path.lexists(link):
                    os.symlink(os.path.join(parent, name), link)
        prefix = " ".join(
            shlex.quote(a) for a in launcher(self.launcher_python, None, self._hosts_file)
        )
        script = (
            "#!/bin/sh\n"
            f"SPARK_HOME={shlex.quote(real)}; export SPARK_HOME\n"
            f'exec {prefix} "$SPARK_HOME/bin/spark-submit" "$@"\n'
        )
        path = os.path.join(home, "bin", "spark-submit")
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(script)
        os.replace(path + ".tmp", path)
        return home

    @property
    def python(self) -> str:
        """The Python of the space's environment: executors run the driver's Python."""
        return self.space.environment().python

    @property
    def _java_options(self) -> str:
        return f"-Djava.io.tmpdir={self._dir('tmp')} -XX:-UsePerfData"

    def _env(self) -> dict[str, str]:
        env = {key: os.environ[key] for key in ("LANG", "LC_ALL", "JAVA_HOME") if key in os.environ}
        env.update(self.space.environment().process_env())
        env.update(self.space.marker_env())
        env.update(
            {
                "HOME": self._dir(),
                "SPARK_HOME": spark_home(),
                "SPARK_LOG_DIR": self._dir("logs"),
                "SPARK_PID_DIR": self._dir("pids"),
                "SPARK_WORKER_DIR": self._dir("work"),
                "SPARK_CONF_DIR": self._dir("conf"),
                "SPARK_IDENT_STRING": IDENT,
                "SPARK_LOCAL_IP": self.host,
                "SPARK_DAEMON_MEMORY": "256m",
                # JVMs write scratch files to java.io.tmpdir (/tmp) and leave them when killed:
                # keep them inside the space, which is removed with it.
                # No /tmp/hsperfdata_<user> left behind by every JVM.
                "SPARK_DAEMON_JAVA_OPTS": self._java_options,
                # spark-class's own launcher JVM, which builds every command line.
                "SPARK_LAUNCHER_OPTS": self._java_options,
                "SPARK_LOCAL_DIRS": self._dir("tmp"),
                "PYSPARK_PYTHON": self.python,
            }
        )
        return env

    def _daemon(self, cls: str, instance: int, *args: str, hostname: str | None = None) -> None:
        """Start a daemon; with the space's hostnames, in namespaces of its own (named
        ``hostname``, or the machine's name) that spark-daemon.sh's detached JVM keeps."""
        script = os.path.join(spark_home(), "sbin", "spark-daemon.sh")
        command = ["bash", script, "start", cls, str(instance), *args]
        env = self._env()
        if self._state().get("hostnames"):
            command = [*launcher(self.launcher_python, hostname, self._hosts_file), *command]
            if hostname:
                env["SPARK_LOCAL_HOSTNAME"] = hostname
        result = subprocess.run(
            command,
            env=env,
            cwd=self._dir(),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or "failed to launch" in result.stdout:
            raise UserError(
                f"Spark {cls.rsplit('.', 1)[-1]} {instance} failed to start: "
                f"{(result.stdout + result.stderr).strip()[-800:]}",
                status=CONFLICT,
            )

    def _write_client_conf(self, state: dict) -> None:
        # Read by the daemons too (SPARK_CONF_DIR): the master, the workers, their executors
        # and the owner's driver share the space's secret; without it, nobody else on the
        # machine can register a worker, submit an application or run code on executors.
        # The REST submission server would accept drivers without it: off.
        lines = {
            "spark.authenticate": "true",
            "spark.authenticate.secret": state["secret"],
            "spark.master.rest.enabled": "false",
            "spark.master": state["master_url"],
            "spark.driver.host": self.host,
            "spark.driver.bindAddress": self.host,
            "spark.executor.cores": str(state["worker_cores"]),
            "spark.executor.memory": f"{max(1, state['worker_memory_gib']) * 1024 - 384}m",
            "spark.pyspark.python": self.python,
            "spark.ui.showConsoleProgress": "false",
            "spark.local.dir": self._dir("tmp"),
            "spark.driver.extraJavaOptions": self._java_options,
            "spark.executor.extraJavaOptions": self._java_options,
        }
        os.makedirs(self._dir("conf"), mode=0o700, exist_ok=True)
        path = self._dir("conf", "spark-defaults.conf")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{key} {value}\n" for key, value in lines.items())

    # -- the Engine interface ----------------------------------------------------------------
    def prepare(self) -> None:
        if self._state() and self._record(MASTER_CLASS, 1) is not None:
            return
        for sub in ("logs", "pids", "work", "conf", "tmp"):
            os.makedirs(self._dir(sub), exist_ok=True)
        port, webui = free_port(self.host), free_port(self.host)
        state = {
            "master_url": f"spark://{self.host}:{port}",
            "master_port": port,
            "master_webui": f"http://{self.host}:{webui}",
            "master_webui_port": webui,
            "worker_cores": self.worker_cores,
            "worker_memory_gib": self.worker_memory_gib,
            "workers": 0,
            "secret": secrets.token_hex(32),
        }
        refused = self._hostnames_refused()
        state["hostnames"] = refused is None
        state["hostnames_refused"] = refused
        if refused is None:
            self._write_driver_home()
        write_json_atomic(self._state_file, state)
        self._write_client_conf(state)

    @property
    def _lock(self) -> str:
        return self._dir(".lock")

    def _start(self, workers: int) -> None:
        reason = java_missing_reason()
        if reason:
            raise UserError(reason, status=CONFLICT)
        self.prepare()
        if self._record(MASTER_CLASS, 1) is None:
            state = self._state()
            self._daemon(
                MASTER_CLASS,
                1,
                "--host",
                self.host,
                "--port",
                str(state["master_port"]),
                "--webui-port",
                str(state["master_webui_port"]),
            )
        self._scale(workers)

    def _running_instances(self) -> list[int]:
        pids = self._dir("pids")
        prefix = f"spark-{IDENT}-{WORKER_CLASS}-"
        found = []
        for name in os.listdir(pids) if os.path.isdir(pids) else []:
            if name.startswith(prefix) and name.endswith(".pid"):
                instance = int(name[len(prefix) : -len(".pid")])
                if self._record(WORKER_CLASS, instance) is not None:
                    found.append(instance)
        return sorted(found)

    def _scale(self, workers: int) -> None:
        state = self._state()
        if not state or self._record(MASTER_CLASS, 1) is None:
            raise UserError("Spark is not running in this space; start it first", status=CONFLICT)
        running = self._running_instances()
        if len(running) < workers:
            free = [i for i in range(1, workers + len(running) + 1) if i not in running]
            new = free[: workers - len(running)]
            args = [
                "--cores",
                str(state["worker_cores"]),
                "--memory",
                f"{state['worker_memory_gib']}g",
                state["master_url"],
            ]
            # spark-daemon.sh waits ~2.5 s per daemon to see it alive: start them side by side.
            with ThreadPoolExecutor(max_workers=max(1, len(new))) as pool:
                jobs = [
                    pool.submit(
                        self._daemon,
                        WORKER_CLASS,
                        i,
                        "--host",
                        self._worker_host(state, i),
                        "--webui-port",
                        str(free_port(self.host)),
                        *args,
                        hostname=self._worker_host(state, i) if state.get("hostnames") else None,
                    )
                    for i in new
                ]
                for job in jobs:
                    job.result()
        elif len(running) > workers:
            self._stop_daemons(WORKER_CLASS, running[workers:])
        state["workers"] = workers
        write_json_atomic(self._state_file, state)

    def _stop_daemons(self, cls: str, instances: list[int]) -> None:
        """Stop these daemons (with their executors) side by side: each JVM takes a few
        seconds to exit, and one after the other that adds up for every worker."""
        records = [r for r in (self._record(cls, i) for i in instances) if r is not None]
        if records:
            procs.terminate(records, timeout=10)
        for instance in instances:
            try:
                os.unlink(self._pid_file(cls, instance))
            except FileNotFoundError:
                pass

    def _stop(self) -> None:
        self._stop_daemons(WORKER_CLASS, self._running_instances())
        self._stop_daemons(MASTER_CLASS, [1])
        state = self._state()
        if state:
            state["workers"] = 0
            write_json_atomic(self._state_file, state)

    def alive_workers(self) -> list[dict]:
        """Workers the master knows as ALIVE, from the master's JSON status page."""
        state = self._state()
        try:
            with urllib.request.urlopen(f"{state['master_webui']}/json/", timeout=3) as response:
                data = json.load(response)
        except (OSError, KeyError, ValueError):
            return []
        return [w for w in data.get("workers", []) if w.get("state") == "ALIVE"]

    def status(self) -> EngineStatus:
        state = self._state()
        if not state:
            return EngineStatus(engine=self.kind, state="stopped", workers=0)
        if self._record(MASTER_CLASS, 1) is None:
            running = bool(state.get("workers"))
            return EngineStatus(
                engine=self.kind, state="failed" if running else "stopped", workers=0
            )
        alive = self.alive_workers()
        wanted = state.get("workers", 0)
        return EngineStatus(
            engine=self.kind,
            state="running" if len(alive) >= wanted else "starting",
            workers=len(alive),
            address=state["master_url"],
            dashboard=state["master_webui"],
            details={"requested_workers": wanted},
        )

    def client_env(self) -> dict[str, str]:
        state = self._state()
        env = {
            "SPARK_CONF_DIR": self._dir("conf"),
            "SPARK_LOCAL_IP": self.host,
            "PYSPARK_PYTHON": self.python,
            # The kernel's spark-submit starts a launcher JVM before the driver's (whose
            # options come from the conf dir's spark-defaults.conf).
            "SPARK_LAUNCHER_OPTS": self._java_options,
        }
        if state:
            env["SPARK_MASTER_URL"] = state["master_url"]
            if state.get("hostnames"):
                env["SPARK_HOME"] = self._dir("driver-home")
        return env
