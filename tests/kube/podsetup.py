"""What a process-kubelet pod worker does before a container's process starts (see
:mod:`tests.kube.kubelet`): the image pull check, the container's user, the pod's hosts
file, its volumes written and bind-mounted in the container's mount namespace, and the
container's command line and environment."""

from __future__ import annotations

import base64
import math
import os
import re
import shlex
import shutil
from pathlib import Path

import psutil

from .admission import quantity
from .base import Obj
from .incluster import SERVICE_ACCOUNT_DIR, SERVICE_ACCOUNT_VOLUME, automount_token
from .podprocess import (
    POD_IP,
    _ConfigError,
    _Container,
    _MountError,
    _tool,
    expand_vars,
    mount_points,
)
from .podsecurity import (
    Identity,
    RunAsRefused,
    closed_ancestor,
    container_identity,
    new_disk,
    set_volume_ownership,
)
from .registry import pull_refusal


class PodSetup:
    """A container's setting-up, for ``_PodWorker`` (which mixes it in)."""

    # -------------------------------------------------------------- DNS and volumes

    def write_hosts(self) -> None:
        """(Re)write this pod's hosts file in place: the bind mount pins the inode, so a new
        file renamed over it would stay invisible to the running processes."""
        if not self.k.dns_active or self.removed:
            return
        data = self.k._hosts_text(self).encode()
        try:
            with open(self.hosts_path, "r+b") as f:
                if f.read() == data:
                    return
                # Overwrite, then cut (not truncate, then write): a resolver reading in
                # between never finds an empty file; at worst stale lines at the end.
                f.seek(0)
                f.write(data)
                f.truncate()
        except FileNotFoundError:
            if not self.dir.exists():
                return  # the pod is being torn down
            with open(self.hosts_path, "wb") as f:
                f.write(data)

    async def _pulled(self, c: _Container) -> bool:
        """Whether the container's image can be "pulled": a private registry's needs one of
        the pod's pull secrets with credentials for it. If not, the container waits in
        ErrImagePull, then ImagePullBackOff, and is tried again, as on a node."""
        image = c.spec.get("image", "")
        named = [ref.get("name", "") for ref in self.pod["spec"].get("imagePullSecrets") or []]
        found = [
            s
            for s in [
                await self.k._get_json(f"/api/v1/namespaces/{self.ns}/secrets/{n}") for n in named
            ]
            if s is not None
        ]
        refusal = pull_refusal(image, found, self.k.private_registries)
        if refusal is None:
            return True
        pulling = (c.state.get("waiting") or {}).get("reason") in (
            "ErrImagePull",
            "ImagePullBackOff",
        )
        c.state = {
            "waiting": {
                "reason": "ImagePullBackOff" if pulling else "ErrImagePull",
                "message": f'Back-off pulling image "{image}"' if pulling else refusal,
            }
        }
        self.k._event(
            self.pod, "Warning", "Failed", f'Failed to pull image "{image}": {refusal}', c.name
        )
        self.mark_dirty()
        return False

    def _identity(self, c: _Container) -> Identity:
        try:
            identity = container_identity(self.pod, c.spec, self.k.image_users)
        except RunAsRefused as exc:
            raise _ConfigError(str(exc)) from None
        closed = None if identity.is_plain_root else closed_ancestor(self.dir)
        if closed is not None:
            # (a test set-up mistake, not something a cluster does)
            raise _ConfigError(
                f"process-kubelet: {closed} is closed to other users, so a container running "
                f"as uid {identity.uid} cannot reach its pod's directory {self.dir}; give the "
                "kubelet a workdir others can pass through"
            )
        return identity

    async def _prepare_volumes(self) -> dict[str, Path]:
        """Materialise the pod's emulated volumes: volume name -> directory on this machine.
        With the pod's ``fsGroup`` each volume but a hostPath is then owned by that group."""
        if not self.k.mount_ns:
            return {}
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        result: dict[str, Path] = {}
        read_only: set[str] = set()
        host_paths: set[str] = set()  # the node's own directories: never changed
        for vol in self.pod["spec"].get("volumes") or []:
            name = vol["name"]
            target = self.volumes_dir / name
            if "hostPath" in vol:
                result[name] = Path(vol["hostPath"]["path"])
                host_paths.add(name)
            elif "emptyDir" in vol:
                if not target.exists():  # kept across container restarts
                    target.mkdir(parents=True)
                    target.chmod(0o777)  # as a real kubelet makes it
                result[name] = target
            elif "persistentVolumeClaim" in vol:
                result[name] = await self._claimed_disk(name, vol["persistentVolumeClaim"])
            elif "secret" in vol or "configMap" in vol:
                files = await self._volume_files(name, vol)
                self._write_volume(target, files, vol)
                result[name] = target
                read_only.add(name)
        account = await self._service_account_files()
        if account is not None:
            target = self.volumes_dir / SERVICE_ACCOUNT_VOLUME
            self._write_volume(target, account, {"secret": {"defaultMode": 0o644}})
            result[SERVICE_ACCOUNT_VOLUME] = target
            read_only.add(SERVICE_ACCOUNT_VOLUME)
        if fs_group is not None:
            for name, path in result.items():
                if name not in host_paths:
                    set_volume_ownership(path, int(fs_group), name in read_only)
        return result

    async def _claimed_disk(self, name: str, source: Obj) -> Path:
        """The disk behind a PersistentVolumeClaim: one directory per claim (by its uid), new
        and owned by root, mode 0755, the first time a pod mounts it, as a freshly formatted
        cloud disk is; kept for the next pod until the kubelet stops."""
        claim = source.get("claimName", "")
        obj = await self.k._get_json(f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{claim}")
        if obj is None:
            raise _MountError(
                f'MountVolume.SetUp failed for volume "{name}" : '
                f'persistentvolumeclaim "{claim}" not found'
            )
        return new_disk(self.k.workdir / "disks" / obj["metadata"]["uid"])

    async def _service_account_files(self) -> dict[str, bytes] | None:
        """The projected token volume's files, or None when the pod opts out."""
        front = self.k.api_front
        if front is None:
            return None
        setting = self.pod["spec"].get("automountServiceAccountToken")
        name = self.pod["spec"].get("serviceAccountName") or "default"
        account = None
        if setting is None:
            account = await self.k._get_json(f"/api/v1/namespaces/{self.ns}/serviceaccounts/{name}")
            if account is None:
                # A real kubelet cannot request a token for a missing account either.
                raise _MountError(
                    f'MountVolume.SetUp failed for volume "{SERVICE_ACCOUNT_VOLUME}" : failed '
                    f'to fetch token: serviceaccounts "{name}" not found'
                )
        if not automount_token(self.pod, account):
            return None
        # The pod's own ServiceAccount token, from the TokenRequest API as a real kubelet
        # gets it: what the pod may do is what RBAC grants that account.
        code, answer = await self.k._api(
            "POST",
            f"/api/v1/namespaces/{self.ns}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        )
        if code != 201:
            raise _MountError(
                f'MountVolume.SetUp failed for volume "{SERVICE_ACCOUNT_VOLUME}" : failed to '
                f"fetch token: HTTP {code}"
            )
        return front.service_account_files(answer["status"]["token"], self.ns)

    async def _volume_files(self, name: str, vol: Obj) -> dict[str, bytes]:
        if "secret" in vol:
            src, plural, kind = vol["secret"], "secrets", "secret"
            ref = src.get("secretName", "")
        else:
            src, plural, kind = vol["configMap"], "configmaps", "configmap"
            ref = src.get("name", "")
        obj = await self.k._get_json(f"/api/v1/namespaces/{self.ns}/{plural}/{ref}")
        if obj is None:
            if src.get("optional"):
                return {}
            raise _MountError(
                f'MountVolume.SetUp failed for volume "{name}" : {kind} "{ref}" not found'
            )
        data: dict[str, bytes] = {}
        if plural == "secrets":
            for key, value in (obj.get("data") or {}).items():
                data[key] = base64.b64decode(value)
        else:
            for key, value in (obj.get("data") or {}).items():
                data[key] = value.encode()
            for key, value in (obj.get("binaryData") or {}).items():
                data[key] = base64.b64decode(value)
        items = src.get("items")
        if not items:
            return data
        files: dict[str, bytes] = {}
        for item in items:
            if item["key"] not in data:
                if src.get("optional"):
                    continue
                raise _MountError(
                    f'MountVolume.SetUp failed for volume "{name}" : '
                    f"configmap references non-existent config key: {item['key']}"
                    if kind == "configmap"
                    else f'MountVolume.SetUp failed for volume "{name}" : '
                    f"references non-existent secret key: {item['key']}"
                )
            files[item["path"]] = data[item["key"]]
        return files

    def _write_volume(self, target: Path, files: dict[str, bytes], vol: Obj) -> None:
        src = vol.get("secret") or vol.get("configMap") or {}
        default_mode = int(src.get("defaultMode", 0o644))
        modes = {i["path"]: int(i["mode"]) for i in src.get("items") or [] if "mode" in i}
        target.mkdir(parents=True, exist_ok=True)
        # In place (not a fresh directory): another container of the pod may have it mounted.
        for old in target.rglob("*"):
            if old.is_file() and str(old.relative_to(target)) not in files:
                old.unlink()
        for rel, content in files.items():
            path = target / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise _MountError(f"invalid volume item path {rel!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(modes.get(rel, default_mode))

    def _wrapper(self, c: _Container, volumes: dict[str, Path]) -> list[str]:
        """The argv prefix that sets up the container's namespaces before exec'ing it."""
        steps = self._mount_steps(c, volumes) if self.k.mount_ns else []
        flags: list[str] = []
        if steps:
            flags += ["--mount", "--propagation", "private"]
        if self.k.uts:
            flags.append("--uts")
            steps.append(f"{_tool('hostname')} {shlex.quote(self.hostname)}")
        if not flags:
            return []
        # set -e: a failed mount ends the container with the error in its log, loudly.
        # Closing stdin (the write end of the kubelet's pipe) tells it the setup is done.
        script = "\n".join(["set -e", *steps, "exec </dev/null", 'exec "$@"'])
        return [_tool("unshare"), *flags, _tool("sh"), "-c", script, "sh"]

    def _mount_steps(self, c: _Container, volumes: dict[str, Path]) -> list[str]:
        binds: list[tuple[Path, str, bool]] = []  # (source, mountPath, read-only)
        for m in c.spec.get("volumeMounts") or []:
            source = volumes.get(m["name"])
            if source is None:
                continue  # a volume kind this kubelet does not emulate
            if m.get("subPath"):
                source = source / m["subPath"]
            binds.append((source, os.path.normpath(m["mountPath"]), bool(m.get("readOnly"))))
        account = volumes.get(SERVICE_ACCOUNT_VOLUME)
        if account is not None and SERVICE_ACCOUNT_DIR not in {target for _, target, _ in binds}:
            # At the real path of /var/run (a symlink to /run on most systems), so that the
            # overlay for the new mount point sits on /run itself, with /run's submounts.
            parent, rest = SERVICE_ACCOUNT_DIR.split("/secrets/", 1)
            target = os.path.join(os.path.realpath(parent), "secrets", rest)
            binds.append((account, target, True))
        if not self.pod["spec"].get("hostIPC") and "/dev/shm" not in {t for _, t, _ in binds}:
            # The pod's own /dev/shm, as a runtime gives each pod sandbox: what its processes
            # leave there (a SIGKILLed process's POSIX semaphores) goes with the pod.
            binds.append((self.shm, "/dev/shm", False))
        binds.sort(key=lambda b: b[1].count("/"))  # parents before children
        if self.k.dns_active and not self.pod["spec"].get("hostNetwork"):
            binds.append((self.hosts_path, "/etc/hosts", False))  # last: above any overlay
        if not binds:
            return []
        q = shlex.quote
        mount, mkdir, touch = _tool("mount"), _tool("mkdir"), _tool("touch")
        steps: list[str] = []
        ancestors: list[str] = []
        # A mount point inside an earlier mount (a Secret at ~/.ipython/... in a home volume)
        # is looked up in that volume, and a missing one is created there once the volume is
        # mounted, as a container runtime does (a real one as root; here as the kubelet's
        # user); in a read-only volume it cannot be, and the container fails to start.
        nested: dict[str, Path] = {}  # mountPath -> where it is on this machine
        for i, (_, target, _) in enumerate(binds):
            for source, outer, read_only in reversed(binds[:i]):
                if target != outer and target.startswith(outer.rstrip("/") + "/"):
                    inside = source / os.path.relpath(target, outer)
                    if read_only and not os.path.lexists(inside):
                        raise _MountError(
                            f"cannot create mount point {target}: {outer} is mounted read-only"
                        )
                    nested[target] = inside
                    break
        for _, target, _ in binds:
            if target in nested or os.path.lexists(target):
                continue
            parent = os.path.dirname(target)
            while not os.path.isdir(parent):
                parent = os.path.dirname(parent)
            if parent == "/" or self.dir.is_relative_to(parent):
                # An overlay there would hide the machine's mounts, or the kubelet's own files.
                raise _MountError(
                    f"cannot create mount point {target}: {parent} cannot be overlaid"
                )
            if any(ch in parent for ch in ",:\\"):
                raise _MountError(f"cannot overlay {parent!r} (',', ':' or '\\' in the path)")
            if parent not in ancestors:
                ancestors.append(parent)
        if ancestors:
            # Mount points the machine lacks are created in a copy-on-write layer over their
            # deepest existing ancestor; the upper layer is a tmpfs private to this namespace.
            layers = self.dir / "ns"
            steps.append(f"{mount} -t tmpfs tmpfs {q(str(layers))}")
            points = mount_points()
            for i, parent in enumerate(sorted(ancestors, key=lambda a: a.count("/"))):
                stash, upper, work = (layers / f"{kind}{i}" for kind in ("stash", "up", "work"))
                steps.append(f"{mkdir} -p {q(str(stash))} {q(str(upper))} {q(str(work))}")
                # Submounts of the ancestor would be hidden by the overlay: keep them reachable
                # through a recursive bind and put them back on top of it.
                steps.append(f"{mount} --rbind {q(parent)} {q(str(stash))}")
                options = f"lowerdir={parent},upperdir={upper},workdir={work}"
                steps.append(f"{mount} -t overlay overlay -o {q(options)} {q(parent)}")
                for point in points:
                    if point.startswith(parent.rstrip("/") + "/"):
                        rel = os.path.relpath(point, parent)
                        steps.append(f"{mount} --bind {q(str(stash / rel))} {q(point)}")
            layers.mkdir(parents=True, exist_ok=True)
        for source, target, _ in binds:
            if not os.path.lexists(nested.get(target, target)):
                if source.is_dir():
                    steps.append(f"{mkdir} -p {q(target)}")
                else:
                    steps.append(f"{mkdir} -p {q(os.path.dirname(target))} && {touch} {q(target)}")
            steps.append(f"{mount} --bind {q(str(source))} {q(target)}")
        # Read-only last: a mount point nested in a read-only mount exists by now.
        for _, target, read_only in binds:
            if read_only:
                steps.append(f"{mount} -o remount,bind,ro {q(target)}")
        return steps

    def _argv(self, c: _Container, pod_env: dict[str, str]) -> list[str]:
        command = c.spec.get("command")
        args = c.spec.get("args") or []
        if not command:
            command = self.k.image_entrypoints.get(c.spec.get("image", ""), [])
        return [expand_vars(str(a), pod_env) for a in [*(command or []), *args]]

    async def _environment(self, c: _Container) -> tuple[dict[str, str], dict[str, str]]:
        """Return (process env, the pod-defined part used for $(VAR) expansion)."""
        pod_env: dict[str, str] = {}
        for src in c.spec.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                ref = src["configMapRef"]
                obj = await self._lookup("configmaps", ref.get("name", ""), ref.get("optional"))
                for k, v in ((obj or {}).get("data") or {}).items():
                    pod_env[prefix + k] = v
            if "secretRef" in src:
                ref = src["secretRef"]
                obj = await self._lookup("secrets", ref.get("name", ""), ref.get("optional"))
                for k, v in ((obj or {}).get("data") or {}).items():
                    pod_env[prefix + k] = base64.b64decode(v).decode(errors="replace")
        for e in c.spec.get("env") or []:
            name = e["name"]
            if "valueFrom" in e:
                value = await self._value_from(c, e["valueFrom"])
                if value is None:
                    continue
                pod_env[name] = value
            else:
                pod_env[name] = expand_vars(str(e.get("value", "")), pod_env)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.work),
            "TMPDIR": str(self.work / "tmp"),
        }
        if self.k.uts:
            env["HOSTNAME"] = self.hostname  # a container runtime sets it to the pod hostname
        if self.k.api_front is not None:
            env.update(self.k.api_front.service_env())
        env.update(self.k.base_env)
        env.update(pod_env)
        return env, pod_env

    async def _lookup(self, plural: str, name: str, optional: bool | None) -> Obj | None:
        obj = await self.k._get_json(f"/api/v1/namespaces/{self.ns}/{plural}/{name}")
        if obj is None and not optional:
            kind = "secret" if plural == "secrets" else "configmap"
            raise _ConfigError(f'{kind} "{name}" not found')
        return obj

    async def _value_from(self, c: _Container, vf: Obj) -> str | None:
        if "fieldRef" in vf:
            path = vf["fieldRef"].get("fieldPath", "")
            meta = self.pod["metadata"]
            m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
            if m:
                return (meta.get(m.group(1)) or {}).get(m.group(2), "")
            simple = {
                "metadata.name": meta["name"],
                "metadata.namespace": meta["namespace"],
                "metadata.uid": meta["uid"],
                "spec.nodeName": self.k.node_name,
                "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", ""),
                "status.podIP": POD_IP,
                "status.podIPs": POD_IP,
                "status.hostIP": POD_IP,
                "status.hostIPs": POD_IP,
            }
            if path not in simple:
                raise _ConfigError(f"unsupported fieldPath {path!r}")
            return simple[path]
        if "resourceFieldRef" in vf:
            ref = vf["resourceFieldRef"]
            target = c
            if ref.get("containerName"):
                target = next((x for x in self.all_containers if x.name == ref["containerName"]), c)
            res = target.spec.get("resources") or {}
            kind, _, resource = ref.get("resource", "").partition(".")
            value = (res.get(kind) or {}).get(resource)
            if value is None and kind == "requests":
                value = (res.get("limits") or {}).get(resource, "0")
            if value is None:  # an unset limit is the node's allocatable amount
                value = {
                    "cpu": str(os.cpu_count() or 1),
                    "memory": str(psutil.virtual_memory().total),
                    "ephemeral-storage": str(shutil.disk_usage(self.k.workdir).total),
                }.get(resource, "0")
            divisor = quantity(ref.get("divisor", "1"))
            return str(math.ceil(quantity(value) / divisor))
        for key, plural in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            if key in vf:
                ref = vf[key]
                obj = await self._lookup(plural, ref.get("name", ""), ref.get("optional"))
                if obj is None:
                    return None
                data = obj.get("data") or {}
                if ref.get("key") not in data:
                    if ref.get("optional"):
                        return None
                    kind = "Secret" if plural == "secrets" else "ConfigMap"
                    raise _ConfigError(
                        f"couldn't find key {ref.get('key')} in {kind} {self.ns}/{ref.get('name')}"
                    )
                value = data[ref["key"]]
                if plural == "secrets":
                    value = base64.b64decode(value).decode(errors="replace")
                return value
        return ""
