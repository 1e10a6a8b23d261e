"""A process-kubelet: runs the pods of a (emulated) Kubernetes cluster as local processes.

It talks to the API server only over HTTP, like a real kubelet: it registers a Node, watches
all pods, binds unscheduled ones to itself (doubling as the scheduler; only ``nodeSelector`` is
honoured), and for each pod bound to its node starts every container's ``command`` + ``args``
as a real process, then reports status through ``pods/<name>/status``.

* The argv is ``command + args``; with no ``command`` it is ``image_entrypoints[image] + args``
  if the test mapped the image, else ``args`` alone. ``$(VAR)`` references are expanded.
* The environment is a small base (PATH, LANG, HOME and TMPDIR inside the pod's directory,
  plus ``base_env``) and the container's ``env``/``envFrom``: plain values, ``fieldRef``
  (metadata.name/namespace/uid/labels/annotations, spec.nodeName/serviceAccountName,
  status.podIP/hostIP), ``resourceFieldRef``, ``secretKeyRef``/``configMapKeyRef`` read from
  the API server (a missing one leaves the container Waiting with
  CreateContainerConfigError, as a real kubelet does).
* Every process gets its own session (so its own process group), a working directory in a
  per-pod temp dir, and stdout+stderr in a log file served on the kubelet's HTTP endpoint for
  ``pods/log``. With ``uts=True`` each runs in ``unshare --uts`` with the hostname set to the
  pod's hostname (``spec.hostname`` or the pod name), so a task's hostname names its pod.
* Pod IP and host IP are 127.0.0.1 for every pod (host networking, in effect).
* Cluster DNS for Services (``service_dns=True``, the default): each container runs in a
  private mount namespace (``unshare --mount --propagation private``) in which a hosts file
  the kubelet generates per pod is bind-mounted over ``/etc/hosts``. It holds the usual
  localhost lines, the pod's hostname (with ``spec.subdomain`` also its FQDN; with
  ``uts=False`` also the machine's hostname, which is what the process sees), ``hostAliases``,
  and every Service of the cluster as ``<svc>.<ns>.svc.cluster.local``, ``<svc>.<ns>.svc`` and
  ``<svc>.<ns>``, plus the bare ``<svc>`` for the pod's own namespace, all at 127.0.0.1. The
  kubelet watches Services and rewrites the file in place (same inode, so the bind mount
  sees it): a Service created after the pod started resolves within a watch round trip.
  Unlike a real cluster every Service name means loopback: there is no kube-proxy and no
  clusterIP routing, so a Service only works if its ``port`` equals its ``targetPort`` and
  the pod behind it listens on 127.0.0.1 (or all interfaces); two namespaces whose pods use
  the same fixed ports collide, so one test must not run two such spaces at once.
  Pods with ``hostNetwork: true`` keep the machine's ``/etc/hosts``, as on a real node. Names
  not in the file go to the machine's resolver; there is no search path, no SRV records and
  no per-pod A records. Needs root (or CAP_SYS_ADMIN) and util-linux; without them the
  kubelet logs a warning and runs pods with the machine's ``/etc/hosts``.
* Volumes (same mount namespace): ``secret`` and ``configMap`` volumes are written into a
  per-pod directory (``items`` with ``key``/``path``/``mode``, ``defaultMode``, ``optional``;
  a missing non-optional one leaves the container Waiting in ContainerCreating with a
  FailedMount event), ``emptyDir`` is a per-pod directory that survives container restarts,
  ``hostPath`` is the host path itself. Each ``volumeMount`` (``subPath``, ``readOnly``) is a
  bind mount of that directory onto ``mountPath``, outer mounts first. A mount point inside
  another mount is looked up in that volume; a missing one is created in it (as a runtime
  does: it then stays in the volume), except in a read-only one, which fails the container
  with a FailedMount-style error. A mount point missing on the machine (say
  ``/etc/clusterhub/...``) is created inside the pod only: its deepest existing ancestor gets
  a copy-on-write overlay (tmpfs upper layer, the ancestor's own submounts bound back), so the
  machine's filesystem is never touched. Contents are written at each container start, not
  refreshed while it runs. A ``persistentVolumeClaim`` of an existing claim is a disk of
  its own (a directory per claim), empty and owned by root with mode 0755 the first time, as
  a freshly formatted cloud disk; it outlives its pods. Other volume kinds (projected,
  downward API) are not mounted: their mountPath shows the machine's filesystem. Each pod
  has its own ``/dev/shm`` (a per-pod directory, removed with the pod), unless ``hostIPC``
  or a volume is mounted there.
* Users (``podsecurity.py``): each container runs as its ``runAsUser``/``runAsGroup``
  (container over pod over the image's USER from ``image_users``; unmapped images run as
  root) with ``fsGroup`` and ``supplementalGroups`` as supplementary groups, through
  ``setpriv`` after the namespace setup. ``runAsNonRoot`` with root refuses the container
  (CreateContainerConfigError, the real message). With ``fsGroup`` every volume but a
  hostPath belongs to that group at each container start (group read, and write unless it
  is a Secret, ConfigMap or token; set-group-ID directories). HOME and TMPDIR are shared by
  the pod's containers (mode 1777).
* Images (``registry.py``): nothing is pulled, but an image from one of
  ``private_registries`` needs one of the pod's ``imagePullSecrets`` (an existing
  dockerconfigjson Secret with credentials for that registry); without, the container waits
  in ErrImagePull, then ImagePullBackOff, with a Failed event, and is tried again.
* Init containers run to completion in order; then the containers start. Readiness probes
  (tcpSocket, httpGet, exec) gate ``ready``; without one a running container is ready. exec
  probes run inside the container's mount (and UTS) namespace, through ``nsenter``, and so
  do ``pods/exec`` commands (the kubelet's ``/exec`` endpoint, which the API server calls).
  ``periodSeconds`` is capped at ``max_probe_period`` to keep tests fast.
* Exit -> restart with ``restartCount`` + 1 (Always, or OnFailure with a non-zero code) after
  a short back-off (0.2 s doubling to 5 s instead of 10 s to 5 min), else the container is
  terminated and the pod becomes Succeeded/Failed.
* Deletion: SIGTERM to the process group, up to ``terminationGracePeriodSeconds`` (capped at
  ``max_grace_seconds``), SIGKILL, final status, then a zero-grace DELETE that lets the API
  server remove the pod. A pod removed outright (grace 0) is killed within 2 s.
* Every process also carries ``PROCESS_KUBELET_TAG`` in its environment, inherited by all its
  descendants; a container's processes are its process group plus everything with its tag.
  When a container's main process exits the rest of the container is killed, as a runtime
  does when PID 1 of the container exits.
* ``stop()`` kills every process it ever started (process groups and tagged descendants, also
  ones that called setsid) and removes its directory, whatever state the pods are in.

* In-cluster API access (see ``incluster.py``): every container gets the ``kubernetes``
  Service variables (``KUBERNETES_SERVICE_HOST``/``_PORT``...) pointing at an HTTPS front of
  the API server that this kubelet runs, and, unless ``automountServiceAccountToken`` is
  false (pod first, then its ServiceAccount), ``token``, ``ca.crt`` and ``namespace`` mounted
  read-only at ``/var/run/secrets/kubernetes.io/serviceaccount`` (mount namespaces needed), so
  ``load_incluster_config()`` works in a pod. The token is the pod's own ServiceAccount's,
  from the TokenRequest API: a pod may do what RBAC grants its account.

Not emulated: images (nothing is pulled; the host's filesystem is the container's, apart from
the mounts above), volume kinds other than the five above, workingDir, capabilities and
seccomp (a container that changes user loses every capability, one that runs as root keeps
them), resource limits, liveness and startup probes, lifecycle hooks, network isolation
between pods.

Here: the kubelet and its pod workers (their main loop, containers, status). A container's
setting-up (pull check, user, hosts file, volumes, command and environment) is in
``podsetup.py``, probes and exec in ``podprobes.py``, the process plumbing in
``podprocess.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiohttp import web

from .base import BackgroundLoop, Obj, now_iso
from .incluster import ApiTlsFront
from .podprobes import PodProbes
from .podprocess import (
    _HOSTS_HEAD,
    CLUSTER_DOMAIN,
    KUBELET_USER_AGENT,
    POD_IP,
    TAG_VARIABLE,
    _ConfigError,
    _Container,
    _MountError,
    _tool,
    _until_closed,
    launch,
    log,
    mount_namespaces_work,
    poll_until,
    read_from,
)
from .podsetup import PodSetup


class _PodWorker(PodSetup, PodProbes):
    """Owns one pod on this node: its processes, its status, its termination."""

    def __init__(self, kubelet: ProcessKubelet, pod: Obj) -> None:
        self.k = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.dir = kubelet.workdir / "pods" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.work = self.dir / "work"
        self.hosts_path = self.dir / "hosts"
        self.shm = self.dir / "shm"
        self.volumes_dir = self.dir / "volumes"
        spec = pod["spec"]
        self.init_containers = [
            _Container(c, self.dir, True) for c in spec.get("initContainers") or []
        ]
        self.containers = [_Container(c, self.dir, False) for c in spec.get("containers") or []]
        self.wake = asyncio.Event()
        self.dirty = True
        self.removed = False
        self.initialized = not self.init_containers
        self.init_failed = False
        self.start_time = now_iso()
        self.transitions: dict[str, tuple[str, str]] = {}
        self.task = asyncio.get_running_loop().create_task(self.run())

    # -------------------------------------------------------------- inputs

    def update(self, pod: Obj) -> None:
        self.pod = pod
        self.wake.set()

    def on_removed(self) -> None:
        self.removed = True
        self.wake.set()

    def mark_dirty(self) -> None:
        self.dirty = True
        self.wake.set()

    def _terminating(self) -> bool:
        return self.removed or bool(self.pod["metadata"].get("deletionTimestamp"))

    @property
    def all_containers(self) -> list[_Container]:
        return self.init_containers + self.containers

    # -------------------------------------------------------------- main loop

    async def run(self) -> None:
        supervisor: asyncio.Task[None] | None = None
        try:
            if not self._terminating():
                (self.work / "tmp").mkdir(parents=True, exist_ok=True)
                # HOME and TMPDIR of every container, whichever user each runs as (the
                # image's home and /tmp, in a real runtime).
                self.shm.mkdir(exist_ok=True)
                for place in (self.work, self.work / "tmp", self.shm):
                    place.chmod(0o1777)
                supervisor = asyncio.get_running_loop().create_task(self._supervise())
            while not self._terminating():
                if self.dirty:
                    self.dirty = False
                    await self._push_status()
                    continue
                await self.wake.wait()
                self.wake.clear()
        except asyncio.CancelledError:
            self._hard_kill()
            raise
        finally:
            if supervisor is not None:
                supervisor.cancel()
                await asyncio.gather(supervisor, return_exceptions=True)
        try:
            await self._terminate()
        finally:
            self._hard_kill()
            self.k._finished(self)
            shutil.rmtree(self.dir, ignore_errors=True)

    async def _terminate(self) -> None:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        if self.removed:
            grace = min(2.0, self.k.max_grace_seconds)
        else:
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = spec.get("terminationGracePeriodSeconds", 30)
            grace = min(float(grace), self.k.max_grace_seconds)
        running = [c for c in self.all_containers if c.proc is not None and c.proc.poll() is None]
        if running:
            for c in running:
                if not self.removed:
                    self.k._event(
                        self.pod, "Normal", "Killing", f"Stopping container {c.name}", c.name
                    )
                self.k._signal(c, signal.SIGTERM)

            def all_exited() -> bool:
                return all(c.proc.poll() is not None for c in running if c.proc)

            await poll_until(all_exited, grace)
            for c in running:
                # Also when the leader exited: the rest of its group may still be alive.
                self.k._signal(c, signal.SIGKILL)
            await poll_until(all_exited, 2, 0.02)
            for c in running:
                self._record_exit(c)
        for c in self.all_containers:
            if c.probe_task:
                c.probe_task.cancel()
        if self.removed:
            return
        for c in self.all_containers:
            c.ready = False
            c.done = True
        await self._push_status(final=True)
        if not self.removed:
            await self.k._api(
                "DELETE",
                f"/api/v1/namespaces/{self.ns}/pods/{self.name}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": self.uid},
                },
            )

    def _hard_kill(self) -> None:
        for c in self.all_containers:
            if c.proc is not None:
                self.k._signal(c, signal.SIGKILL)

    # -------------------------------------------------------------- containers

    async def _supervise(self) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if self.k.dns_active:
            # The hosts file must list the Services that exist before the first process reads it.
            await self.k._services_synced.wait()
            self.write_hosts()
        for c in self.init_containers:
            backoff = 0.2
            while True:
                code = await self._run_once(c)
                if code is None:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5)
                    continue
                if code == 0:
                    c.done = True
                    self.mark_dirty()
                    break
                if policy == "Never":
                    c.done = True
                    self.init_failed = True
                    self.mark_dirty()
                    return
                c.state = {"waiting": {"reason": "CrashLoopBackOff"}}
                self.mark_dirty()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5)
        self.initialized = True
        self.mark_dirty()
        await asyncio.gather(*(self._keep_running(c, policy) for c in self.containers))

    async def _keep_running(self, c: _Container, policy: str) -> None:
        backoff = 0.2
        while True:
            code = await self._run_once(c)
            if code is None:  # could not be created yet (config error): retry
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5)
                continue
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                c.done = True
                self.mark_dirty()
                return
            self.k._event(
                self.pod, "Warning", "BackOff", "Back-off restarting failed container", c.name
            )
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off restarting failed container={c.name}",
                }
            }
            self.mark_dirty()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5)

    async def _run_once(self, c: _Container) -> int | None:
        """Start a container and wait for it: its exit code, or None if not created."""
        if await self._start(c):
            return await self._wait_exit(c)
        return c.exit_code  # 128 after a StartError, None while Waiting

    async def _start(self, c: _Container) -> bool:
        try:
            identity = self._identity(c)
            volumes = await self._prepare_volumes()
            env, pod_env = await self._environment(c)
            wrapper = self._wrapper(c, volumes)
        except _ConfigError as exc:
            if isinstance(exc, _MountError):
                # A real kubelet keeps retrying the mount, with the pod still creating.
                c.state = {"waiting": {"reason": "ContainerCreating", "message": str(exc)}}
                self.k._event(self.pod, "Warning", "FailedMount", str(exc))
            else:
                reason = "CreateContainerConfigError"
                c.state = {"waiting": {"reason": reason, "message": str(exc)}}
            self.mark_dirty()
            return False
        if not await self._pulled(c):
            return False
        c.exit_code = None
        argv = self._argv(c, pod_env)
        if not argv:
            c.state = {
                "waiting": {
                    "reason": "CreateContainerError",
                    "message": "no command specified (set command/args, or map the image)",
                }
            }
            self.mark_dirty()
            return False
        argv = [*wrapper, *identity.setpriv(_tool("setpriv")), *argv]
        c.tag = f"{self.k.tag_prefix}{self.uid}/{c.name}/{c.restart_count + (c.proc is not None)}"
        env[TAG_VARIABLE] = c.tag
        if c.log_path.exists():
            c.log_path.replace(c.previous_log_path)
        if c.proc is not None:
            # A restart: the previous run becomes lastState.
            c.last_state = c.state if "terminated" in c.state else c.last_state
            c.restart_count += 1
        # With a namespace wrapper, the container runs only once the wrapper has exec'd its
        # command (as a runtime reports it after setting the container up): the wrapper gets
        # the write end of a pipe as stdin and swaps it for /dev/null just before the exec.
        setup_read, setup_write = os.pipe() if wrapper else (None, None)
        try:
            proc = launch(argv, self.work, env, c.log_path, stdin=setup_write)
        except OSError as exc:
            if setup_read is not None:
                os.close(setup_read)
            c.exit_code = 128
            c.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": str(exc),
                    "startedAt": "1970-01-01T00:00:00Z",
                    "finishedAt": now_iso(),
                }
            }
            self.k._event(self.pod, "Warning", "Failed", f"Error: {exc}", c.name)
            self.mark_dirty()
            return False
        finally:
            if setup_write is not None:
                os.close(setup_write)
        self.k._track(proc)
        c.proc = proc
        c.env = env
        if setup_read is not None:
            await _until_closed(setup_read)
        c.exit_code = None
        c.started = True
        c.state = {"running": {"startedAt": now_iso()}}
        probe = c.spec.get("readinessProbe")
        c.ready = not probe
        if probe and not c.init:
            c.probe_task = asyncio.get_running_loop().create_task(
                self._probe_loop(c, proc, probe, env)
            )
        self.k._event(self.pod, "Normal", "Created", f"Created container {c.name}", c.name)
        self.k._event(self.pod, "Normal", "Started", f"Started container {c.name}", c.name)
        self.mark_dirty()
        return True

    async def _wait_exit(self, c: _Container) -> int:
        assert c.proc is not None
        proc = c.proc
        await poll_until(lambda: proc.poll() is not None, math.inf, 0.1)
        if c.probe_task:
            c.probe_task.cancel()
        return self._record_exit(c)

    def _record_exit(self, c: _Container) -> int:
        assert c.proc is not None
        rc = c.proc.poll()
        if rc is None:
            return -1
        code = 128 - rc if rc < 0 else rc  # killed by signal N -> 128 + N, like a runtime
        if c.exit_code is None:
            # When a container's main process exits the runtime kills the rest of it (PID 1
            # of its PID namespace is gone): leftover children must not outlive it here either.
            self.k._signal(c, signal.SIGKILL)
            c.exit_code = code
            started = (c.state.get("running") or {}).get("startedAt", now_iso())
            c.state = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started,
                    "finishedAt": now_iso(),
                    "containerID": f"process://{c.proc.pid}",
                }
            }
            c.ready = False
            self.mark_dirty()
        return c.exit_code

    @property
    def hostname(self) -> str:
        return (self.pod["spec"].get("hostname") or self.name)[:63]

    # -------------------------------------------------------------- status

    def _phase(self) -> str:
        if self.init_failed:
            return "Failed"
        if not self.initialized:
            return "Pending"
        if any(c.proc is not None and c.proc.poll() is None for c in self.containers):
            return "Running"
        if self.containers and all(c.done for c in self.containers):
            return "Succeeded" if all(c.exit_code == 0 for c in self.containers) else "Failed"
        if any(c.restart_count > 0 or c.exit_code is not None for c in self.containers):
            return "Running"
        return "Pending"

    def _condition(self, ctype: str, ok: bool) -> Obj:
        status = "True" if ok else "False"
        prev = self.transitions.get(ctype)
        if prev is None or prev[0] != status:
            self.transitions[ctype] = (status, now_iso())
        return {
            "type": ctype,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": self.transitions[ctype][1],
        }

    async def _push_status(self, final: bool = False) -> None:
        ready = bool(self.containers) and all(c.ready for c in self.containers)
        phase = self._phase()
        if final and phase in ("Running", "Pending"):
            # Since Kubernetes 1.27 a deleted pod ends in a terminal phase.
            phase = "Succeeded" if all(c.exit_code == 0 for c in self.containers) else "Failed"
        status: Obj = {
            "phase": phase,
            "conditions": [
                self._condition("PodReadyToStartContainers", True),
                self._condition("Initialized", self.initialized),
                self._condition("Ready", ready and not final),
                self._condition("ContainersReady", ready and not final),
                self._condition("PodScheduled", True),
            ],
            "hostIP": POD_IP,
            "hostIPs": [{"ip": POD_IP}],
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        code, _ = await self.k._api(
            "PATCH",
            f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status",
            {"metadata": {"uid": self.uid}, "status": status},
            content_type="application/merge-patch+json",
        )
        if code in (404, 409):
            self.on_removed()  # gone, or replaced by a new pod with the same name


class ProcessKubelet:
    """Runs the pods of one node as local processes (see the module docstring)."""

    def __init__(
        self,
        api_url: str,
        token: str,
        workdir: str | Path,
        *,
        node_name: str = "process-node",
        uts: bool = False,
        service_dns: bool = True,
        image_entrypoints: dict[str, list[str]] | None = None,
        image_users: dict[str, int | str] | None = None,
        private_registries: Collection[str] = (),
        base_env: dict[str, str] | None = None,
        max_grace_seconds: float = 5.0,
        max_probe_period: float = 1.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.workdir = Path(workdir)
        self.node_name = node_name
        self.uts = uts
        self.service_dns = service_dns
        self.mount_ns = False  # probed in start(): can containers get a mount namespace?
        self._services: dict[tuple[str, str], Obj] = {}
        self._services_synced = asyncio.Event()
        self.image_entrypoints = dict(image_entrypoints or {})
        # image -> its Dockerfile USER ("1000" or "1000:1000"); unmapped images run as root
        self.image_users = dict(image_users or {})
        # registries whose images need a pull secret (see registry.py)
        self.private_registries = set(private_registries)
        self.base_env = dict(base_env or {})
        self.max_grace_seconds = max_grace_seconds
        self.max_probe_period = max_probe_period
        self._bg = BackgroundLoop("process-kubelet")
        self._session: aiohttp.ClientSession | None = None
        self._log_runner: web.AppRunner | None = None
        self._workers: dict[str, _PodWorker] = {}
        self._finished_uids: set[str] = set()
        self._binding: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        # Every process of this kubelet carries PROCESS_KUBELET_TAG=<tag_prefix><pod>/<ctr>/<n>.
        self.tag_prefix = f"{node_name}/{secrets.token_hex(4)}/"
        self._procs_lock = threading.Lock()
        self._synced = asyncio.Event()
        # The API server as pods reach it (HTTPS, in-cluster credentials); made in _start.
        self.api_front: ApiTlsFront | None = None

    # -------------------------------------------------------------- lifecycle (test thread)

    @property
    def dns_active(self) -> bool:
        """Whether pods get the generated hosts file (asked for, and mounts are possible)."""
        return self.service_dns and self.mount_ns

    def start(self) -> ProcessKubelet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Containers that run as another user pass through to their pod's directory.
        self.workdir.chmod(0o711)
        self.mount_ns = mount_namespaces_work()
        if self.service_dns and not self.mount_ns:
            log.warning(
                "process-kubelet: no mount namespaces here (needs root and util-linux): pods "
                "get the machine's /etc/hosts, so Service names will not resolve"
            )
        self._bg.start()
        self._bg.run(self._start())
        return self

    def stop(self) -> None:
        """Stop watching and kill every process this kubelet started; never raises."""
        try:
            self._bg.run(self._shutdown(), timeout=20)
        except Exception:
            log.exception("kubelet shutdown failed")
        finally:
            self._kill_everything()
            self._bg.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def pod_pids(self, namespace: str, name: str) -> list[int]:
        """PIDs of the running container processes of a pod (harness introspection)."""

        def _collect() -> list[int]:
            return [
                c.proc.pid
                for w in self._workers.values()
                if w.ns == namespace and w.name == name
                for c in w.all_containers
                if c.proc is not None and c.proc.poll() is None
            ]

        return self._bg.call(_collect)

    def all_pids(self) -> list[int]:
        """PIDs of every process this kubelet started that has not been reaped yet."""
        with self._procs_lock:
            return [pid for pid, p in self._procs.items() if p.poll() is None]

    # -------------------------------------------------------------- loop side

    async def _start(self) -> None:
        self._synced = asyncio.Event()
        self._services_synced = asyncio.Event()
        self._session = aiohttp.ClientSession(
            base_url=self.api_url,
            # The user agent lets the emulator's request counts leave kubelet traffic out.
            headers={"Authorization": f"Bearer {self.token}", "User-Agent": KUBELET_USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=None, connect=5),
        )
        port = await self._start_log_server()
        self.api_front = ApiTlsFront(self.api_url, self.workdir / "apiserver-front")
        await self.api_front.start()
        await self._register_node(port)
        if self.dns_active:
            self._spawn(self._list_watch("/api/v1/services", self._on_services, self._on_service))
            await asyncio.wait_for(self._services_synced.wait(), 10)
        self._spawn(self._list_watch("/api/v1/pods", self._on_pods, self._on_pod))
        await asyncio.wait_for(self._synced.wait(), 10)

    async def _shutdown(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        workers = list(self._workers.values())
        for w in workers:
            w.task.cancel()
        await asyncio.gather(*(w.task for w in workers), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._api(
                "PATCH",
                f"/api/v1/nodes/{self.node_name}/status",
                {"status": {"conditions": [self._ready_condition("Unknown")]}},
                content_type="application/strategic-merge-patch+json",
            )
        if self._session is not None:
            await self._session.close()
        if self._log_runner is not None:
            await self._log_runner.cleanup()
        if self.api_front is not None:
            await self.api_front.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _api(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        assert self._session is not None
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        try:
            async with self._session.request(
                method, path, data=data, headers=headers, params=params
            ) as resp:
                text = await resp.text()
                try:
                    return resp.status, json.loads(text) if text else None
                except ValueError:
                    return resp.status, text
        except aiohttp.ClientError as exc:
            log.warning("kubelet %s %s failed: %s", method, path, exc)
            return 0, None

    async def _get_json(self, path: str) -> Obj | None:
        code, body = await self._api("GET", path)
        if code == 404:
            return None
        if code != 200:
            raise _ConfigError(f"GET {path}: HTTP {code}")
        return body

    def _event(
        self,
        pod: Obj,
        etype: str,
        reason: str,
        message: str,
        container: str | None = None,
        component: str = "kubelet",
    ) -> None:
        meta = pod["metadata"]
        ref: Obj = {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": "v1",
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if container:
            ref["fieldPath"] = f"spec.containers{{{container}}}"
        ts = now_iso()
        body = {
            "metadata": {
                "name": f"{meta['name']}.{time.time_ns():x}",
                "namespace": meta["namespace"],
            },
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "source": {
                "component": component,
                **({"host": self.node_name} if component == "kubelet" else {}),
            },
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
            "type": etype,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": self.node_name if component == "kubelet" else "",
        }
        # Fire and forget, like the real event recorder: events are best effort.
        self._spawn(self._api("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body))

    def _ready_condition(self, status: str) -> Obj:
        ts = now_iso()
        return {
            "type": "Ready",
            "status": status,
            "lastHeartbeatTime": ts,
            "lastTransitionTime": ts,
            "reason": "KubeletReady" if status == "True" else "NodeStatusUnknown",
            "message": "kubelet is posting ready status"
            if status == "True"
            else "Kubelet stopped posting node status.",
        }

    async def _register_node(self, port: int) -> None:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": arch,
                    "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": arch,
                },
            },
            "spec": {},
        }
        code, body = await self._api("POST", "/api/v1/nodes", node)
        if code not in (201, 409):
            raise RuntimeError(f"registering node failed: HTTP {code}: {body}")
        mem = psutil.virtual_memory().total // 1024
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem}Ki", "pods": "110"}
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [self._ready_condition("True")],
            "addresses": [
                {"type": "InternalIP", "address": POD_IP},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "nodeInfo": {
                "architecture": arch,
                "operatingSystem": "linux",
                "kernelVersion": platform.release(),
                "osImage": "process-kubelet",
                "containerRuntimeVersion": "process://1.0",
                "kubeletVersion": "v1.33.0",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
        code, body = await self._api(
            "PATCH",
            f"/api/v1/nodes/{self.node_name}/status",
            {"status": status},
            content_type="application/merge-patch+json",
        )
        if code != 200:
            raise RuntimeError(f"node status update failed: HTTP {code}: {body}")
        self._node_labels = node["metadata"]["labels"]

    # -------------------------------------------------------------- pod watch

    async def _list_watch(
        self,
        path: str,
        on_list: Callable[[list[Obj]], None],
        on_event: Callable[[str, Obj], None],
    ) -> None:
        """List, then watch from the list's resourceVersion; relist when the watch expires."""
        rv: str | None = None
        assert self._session is not None
        while True:
            try:
                if rv is None:
                    code, body = await self._api("GET", path)
                    if code != 200:
                        raise RuntimeError(f"listing {path} failed: HTTP {code}")
                    rv = body["metadata"]["resourceVersion"]
                    on_list(body["items"])
                params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "60"}
                async with self._session.get(path, params=params) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"watching {path} failed: HTTP {resp.status}")
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        if ev["type"] == "ERROR":
                            rv = None  # expired: relist
                            break
                        if ev["type"] != "BOOKMARK":
                            on_event(ev["type"], ev["object"])
                        rv = ev["object"]["metadata"]["resourceVersion"]
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kubelet watch of %s failed; relisting", path)
                rv = None
                await asyncio.sleep(0.2)

    def _on_pods(self, pods: list[Obj]) -> None:
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self._on_pod("ADDED", pod)
        for uid, w in list(self._workers.items()):
            if uid not in seen:
                w.on_removed()
        self._synced.set()

    # -------------------------------------------------------------- service DNS

    def _on_services(self, services: list[Obj]) -> None:
        self._services = {}
        for svc in services:
            self._services[(svc["metadata"]["namespace"], svc["metadata"]["name"])] = svc
        self._services_synced.set()
        self._refresh_hosts()

    def _on_service(self, etype: str, svc: Obj) -> None:
        key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
        if etype == "DELETED":
            self._services.pop(key, None)
        else:
            self._services[key] = svc
        self._refresh_hosts()

    def _refresh_hosts(self) -> None:
        for w in list(self._workers.values()):
            if w.hosts_path.exists():  # not before the pod's first container starts
                w.write_hosts()

    def _hosts_text(self, w: _PodWorker) -> str:
        """What /etc/hosts says in pod ``w``: localhost, itself, every Service (loopback)."""
        spec = w.pod["spec"]
        own = [w.hostname]
        if spec.get("subdomain"):
            own.insert(0, f"{w.hostname}.{spec['subdomain']}.{w.ns}.svc.{CLUSTER_DOMAIN}")
        if not self.uts:
            # Without a UTS namespace the process sees the machine's hostname; Java resolves
            # it at startup (InetAddress.getLocalHost) and fails if it is unknown.
            machine = socket.gethostname()
            if machine not in own:
                own.append(machine)
        lines = [*_HOSTS_HEAD, f"{POD_IP}\t{' '.join(own)}"]
        aliases = spec.get("hostAliases") or []
        if aliases:
            lines.append("")
            lines.append("# Entries added by HostAliases.")
            lines += [f"{a['ip']}\t{' '.join(a.get('hostnames') or [])}" for a in aliases]
        lines.append("")
        lines.append("# Services of the cluster (process-kubelet: all on loopback).")
        for (ns, name), svc in sorted(self._services.items()):
            if (svc.get("spec") or {}).get("type") == "ExternalName":
                continue  # a CNAME in real cluster DNS; a hosts file cannot say that
            names = [f"{name}.{ns}.svc.{CLUSTER_DOMAIN}", f"{name}.{ns}.svc", f"{name}.{ns}"]
            if ns == w.ns:
                names.append(name)
            lines.append(f"{POD_IP}\t{' '.join(names)}")
        return "\n".join(lines) + "\n"

    # -------------------------------------------------------------- pods

    def _on_pod(self, etype: str, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid = meta["uid"]
        worker = self._workers.get(uid)
        if etype == "DELETED":
            if worker is not None:
                worker.on_removed()
            return
        if uid in self._finished_uids:
            return
        node = spec.get("nodeName")
        if not node:
            if (
                spec.get("schedulerName", "default-scheduler") == "default-scheduler"
                and not meta.get("deletionTimestamp")
                and uid not in self._binding
            ):
                self._binding.add(uid)
                self._spawn(self._bind(pod))
            return
        if node != self.node_name:
            return
        if worker is None:
            self._workers[uid] = _PodWorker(self, pod)
        else:
            worker.update(pod)

    async def _bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        try:
            selector = pod["spec"].get("nodeSelector") or {}
            if any(self._node_labels.get(k) != v for k, v in selector.items()):
                self._event(
                    pod,
                    "Warning",
                    "FailedScheduling",
                    "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.",
                    component="default-scheduler",
                )
                return
            code, _ = await self._api(
                "POST",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "uid": meta["uid"],
                    },
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
                },
            )
            if code == 201:
                self._event(
                    pod,
                    "Normal",
                    "Scheduled",
                    f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.node_name}",
                    component="default-scheduler",
                )
        finally:
            self._binding.discard(meta["uid"])

    def _finished(self, worker: _PodWorker) -> None:
        self._finished_uids.add(worker.uid)
        self._workers.pop(worker.uid, None)

    # -------------------------------------------------------------- processes

    def _track(self, proc: subprocess.Popen[bytes]) -> None:
        with self._procs_lock:
            self._procs[proc.pid] = proc

    def _tagged(self, prefix: str) -> list[psutil.Process]:
        """Live processes whose environment carries a tag starting with ``prefix``.

        The tag is inherited by every descendant, so this also finds processes that started
        their own session or were re-parented to init after their parent exited.
        """
        found = []
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if p.environ().get(TAG_VARIABLE, "").startswith(prefix):
                    found.append(p)
        return found

    def _signal(self, c: _Container, sig: int) -> None:
        """Signal a container: its process group and every process carrying its tag."""
        if c.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(c.proc.pid, sig)
        for p in self._tagged(c.tag):
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)
        c.proc.poll()

    def _kill_everything(self) -> None:
        """Last line of defence at teardown: nothing the kubelet started may survive."""
        with self._procs_lock:
            procs = list(self._procs.values())
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in procs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, sig)
            for tagged in self._tagged(self.tag_prefix):
                with contextlib.suppress(psutil.Error):
                    tagged.send_signal(sig)
            deadline = time.monotonic() + (1.0 if sig == signal.SIGTERM else 3.0)
            while time.monotonic() < deadline and (
                any(p.poll() is None for p in procs) or self._tagged(self.tag_prefix)
            ):
                time.sleep(0.02)
        for p in procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=1)

    # -------------------------------------------------------------- log endpoint

    async def _start_log_server(self) -> int:
        app = web.Application()
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self._serve_log)
        app.router.add_post("/exec/{ns}/{pod}/{container}", self._serve_exec)
        self._log_runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._log_runner.setup()
        site = web.TCPSite(self._log_runner, "127.0.0.1", 0)
        await site.start()
        return int(self._log_runner.addresses[0][1])

    async def _serve_exec(self, request: web.Request) -> web.Response:
        """Run a command in a running container (no stdin, no tty): the API server's
        pods/exec relays the result to its client."""
        ns, pod, cname = (request.match_info[k] for k in ("ns", "pod", "container"))
        worker = next((w for w in self._workers.values() if w.ns == ns and w.name == pod), None)
        running = worker.containers if worker is not None else []
        c = next((x for x in running if x.name == cname), None)
        if worker is None or c is None:
            return web.Response(status=404, text=f'container "{cname}" in pod "{pod}" not found')
        if c.proc is None or c.proc.poll() is not None:
            return web.Response(
                status=400, text=f'container "{cname}" in pod "{pod}" is not running'
            )
        argv = (await request.json()).get("command") or []
        try:
            out, err, code = await worker.exec_in(c, [str(a) for a in argv])
        except OSError as exc:  # no such executable, as a runtime reports it
            return web.json_response({"stdout": "", "stderr": "", "code": 126, "error": str(exc)})
        return web.json_response(
            {
                "stdout": base64.b64encode(out).decode(),
                "stderr": base64.b64encode(err).decode(),
                "code": code,
            }
        )

    async def _serve_log(self, request: web.Request) -> web.StreamResponse:
        ns, pod, cname = (request.match_info[k] for k in ("ns", "pod", "container"))
        worker = next((w for w in self._workers.values() if w.ns == ns and w.name == pod), None)
        if worker is None:
            return web.Response(status=404, text=f'pods "{pod}" not found')
        c = next((x for x in worker.all_containers if x.name == cname), None)
        if c is None:
            return web.Response(status=404, text=f'container "{cname}" not found')
        q = request.query
        previous = q.get("previous", "").lower() in ("1", "true")
        path = c.previous_log_path if previous else c.log_path
        if not path.exists():
            if previous:
                return web.Response(
                    status=400,
                    text=f'previous terminated container "{cname}" in pod "{pod}" not found',
                )
            return web.Response(text="")
        data = path.read_bytes()
        if q.get("tailLines"):
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(q["tailLines"]) :]) if int(q["tailLines"]) > 0 else b""
        if q.get("limitBytes"):
            data = data[: int(q["limitBytes"])]
        follow = q.get("follow", "").lower() in ("1", "true") and not previous
        if not follow:
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(data)
        offset = path.stat().st_size
        proc = c.proc
        while True:
            await asyncio.sleep(0.1)
            chunk = read_from(path, offset)
            if chunk:
                offset += len(chunk)
                await resp.write(chunk)
            if proc is None or proc.poll() is not None or c.proc is not proc:
                break
        await resp.write(read_from(path, offset))  # what was written just before the exit
        await resp.write_eof()
        return resp
