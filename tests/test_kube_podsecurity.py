"""Who a pod runs as, and who owns its volumes, on the process-kubelet as on a real node.

The rules first (``tests/kube/podsecurity.py``, against literal pod specs), then real pods:
a process that runs as uid 1000 cannot write a fresh disk (a PersistentVolumeClaim, root's
with mode 0755) or read a 0440 Secret until the pod's ``fsGroup`` hands both to its group;
``runAsNonRoot`` refuses root with the real kubelet's message; a claim that does not exist
keeps the pod waiting on its mount.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.kube import kube_options
from tests.kube import wait_for_async as wait_for
from tests.kube.http import EmulatorHttp
from tests.kube.podsecurity import (
    Identity,
    RunAsRefused,
    container_identity,
    set_volume_ownership,
)

MOUNTS = "/etc/clusterhub-test"
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="changes users and file owners")


def pod(name: str, security: dict[str, Any] | None = None, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            **({"securityContext": security} if security is not None else {}),
            "containers": [{"name": "main", "image": "notebook:test", **container}],
        },
    }


def identity(spec: dict[str, Any], users: dict[str, int | str] | None = None) -> Identity:
    return container_identity(spec, spec["spec"]["containers"][0], users or {})


# -- the rules ----------------------------------------------------------------------------


def test_the_container_setting_wins_over_the_pods_and_the_pods_over_the_images_user():
    users = {"notebook:test": "1000:100"}
    assert identity(pod("p"), users) == Identity(1000, 100, ())
    assert identity(pod("p"), {}) == Identity(0, 0, ())
    spec = pod(
        "p",
        {"runAsUser": 2000, "runAsGroup": 3000, "fsGroup": 4000, "supplementalGroups": [5, 4000]},
        securityContext={"runAsUser": 6000},
    )
    assert identity(spec, users) == Identity(6000, 3000, (4000, 5))
    # A user without a group: the image's group only for the image's own user, else root's.
    assert identity(pod("p", {"runAsUser": 1000}), users) == Identity(1000, 100, ())
    assert identity(pod("p", {"runAsUser": 7}), users) == Identity(7, 0, ())


def test_run_as_non_root_refuses_root_from_the_spec_or_the_image():
    with pytest.raises(RunAsRefused) as refused:
        identity(pod("p", {"runAsNonRoot": True, "runAsUser": 0}))
    assert str(refused.value) == (
        'container\'s runAsUser breaks non-root policy (pod: "p_ns", container: main)'
    )
    with pytest.raises(RunAsRefused) as refused:
        identity(pod("p", securityContext={"runAsNonRoot": True}))
    assert "container has runAsNonRoot and image will run as root" in str(refused.value)
    # The control: a non-root user, or an image whose USER is not root.
    assert identity(pod("p", {"runAsNonRoot": True, "runAsUser": 1000})).uid == 1000
    assert identity(pod("p", {"runAsNonRoot": True}), {"notebook:test": 1000}).uid == 1000


def test_setpriv_drops_to_the_identity_and_plain_root_needs_nothing():
    assert Identity(0, 0, ()).setpriv("setpriv") == []
    assert Identity(1000, 1000, (100, 5)).setpriv("setpriv") == [
        "setpriv",
        "--reuid=1000",
        "--regid=1000",
        "--groups=100,5",
        "--",
    ]
    assert Identity(1000, 1000, ()).setpriv("setpriv")[3] == "--clear-groups"


@NEEDS_ROOT
def test_fs_group_gives_the_volume_to_the_group_and_leaves_links_alone(tmp_path):
    volume = tmp_path / "volume"
    (volume / "sub").mkdir(parents=True)
    (volume / "sub" / "file").write_text("x")
    (volume / "sub" / "file").chmod(0o600)
    outside = tmp_path / "outside"
    outside.write_text("not the volume's")
    outside.chmod(0o600)
    (volume / "link").symlink_to(outside)
    set_volume_ownership(volume, 4242, read_only=False)
    for path, mode in (
        (volume, 0o2775),
        (volume / "sub", 0o2775),
        (volume / "sub" / "file", 0o660),
    ):
        info = path.stat()
        assert (info.st_gid, stat.S_IMODE(info.st_mode)) == (4242, mode), path
    assert (outside.stat().st_gid, stat.S_IMODE(outside.stat().st_mode)) == (0, 0o600)
    # Read-only volumes (Secrets, ConfigMaps) get group read, never write.
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("k")
    (secret / "key").chmod(0o400)
    set_volume_ownership(secret, 4242, read_only=True)
    assert stat.S_IMODE((secret / "key").stat().st_mode) == 0o440


# -- real pods ------------------------------------------------------------------------------

# Runs in the pod: who it is, and what it can do with its volumes.
PROBE = f"""
import json, os
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
def write(path):
    try:
        with open(path, "w") as f:
            f.write("mine")
        return "written"
    except OSError as exc:
        return exc.strerror
def read(path):
    try:
        return open(path).read()
    except OSError as exc:
        return exc.strerror
disk = "{MOUNTS}/disk"
wrote = write(disk + "/notes.txt")
print("RESULT " + json.dumps({{
    "uid": status["Uid"].split(),
    "gid": status["Gid"].split(),
    "groups": status["Groups"].split(),
    "disk": wrote,
    "disk_dir": [os.stat(disk).st_gid, oct(os.stat(disk).st_mode & 0o7777)],
    "file_gid": os.stat(disk + "/notes.txt").st_gid if wrote == "written" else None,
    "secret": read("{MOUNTS}/secret/key"),
    "home": write(os.path.join(os.environ["HOME"], "home.txt")),
}}))
"""


class Api(EmulatorHttp):
    async def create(self, path: str, body: dict[str, Any]) -> None:
        status, answer = await self.request("POST", path, body)
        assert status == 201, answer

    async def container_state(self, ns: str, name: str) -> dict[str, Any]:
        status, got = await self.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}")
        assert status == 200, got
        statuses = got["status"].get("containerStatuses") or [{}]
        return statuses[0].get("state") or {}

    async def result(self, ns: str, name: str) -> dict[str, Any]:
        async def finished() -> str | None:
            status, got = await self.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}")
            phase = got["status"].get("phase")
            return phase if phase in ("Succeeded", "Failed") else None

        phase = await wait_for(finished, 30, f"pod {name} to finish")
        _, log = await self.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}/log")
        assert phase == "Succeeded", log
        (line,) = [x for x in str(log).splitlines() if x.startswith("RESULT ")]
        return json.loads(line[len("RESULT ") :])


@pytest_asyncio.fixture
async def api(kube_api) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield Api(kube_api, session)


def probe_pod(name: str, security: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": security,
            "volumes": [
                {"name": "disk", "persistentVolumeClaim": {"claimName": "home"}},
                {"name": "secret", "secret": {"secretName": "key", "defaultMode": 0o440}},
            ],
            "containers": [
                {
                    "name": "probe",
                    "image": "notebook:test",
                    "command": [sys.executable, "-c", PROBE],
                    "volumeMounts": [
                        {"name": "disk", "mountPath": f"{MOUNTS}/disk"},
                        {"name": "secret", "mountPath": f"{MOUNTS}/secret", "readOnly": True},
                    ],
                }
            ],
        },
    }


@NEEDS_ROOT
@pytest.mark.asyncio
@kube_options(image_users={"notebook:test": "1000:1000"})
async def test_a_fresh_disk_is_roots_until_fs_group_gives_it_to_the_pods_group(
    kube_api, api: Api
) -> None:
    await api.create("/api/v1/namespaces", {"metadata": {"name": "disks"}})
    await api.create(
        "/api/v1/namespaces/disks/persistentvolumeclaims",
        {
            "metadata": {"name": "home"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    await api.create(
        "/api/v1/namespaces/disks/secrets",
        {"metadata": {"name": "key"}, "stringData": {"key": "k"}},
    )
    user = {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}

    # Without fsGroup: the image's user on a root-owned disk, as on a fresh cloud volume.
    await api.create("/api/v1/namespaces/disks/pods", probe_pod("before", user))
    before = await api.result("disks", "before")
    assert before["uid"] == ["1000"] * 4, "real, effective, saved and filesystem uid"
    assert before["gid"] == ["1000"] * 4 and before["groups"] == []
    assert before["disk"] == "Permission denied"
    assert before["disk_dir"] == [0, "0o755"]
    assert before["secret"] == "Permission denied"
    assert before["home"] == "written", "HOME is the container's own"

    # With fsGroup: the same disk and Secret now belong to the pod's group.
    await api.create("/api/v1/namespaces/disks/pods", probe_pod("after", {**user, "fsGroup": 1000}))
    after = await api.result("disks", "after")
    assert after["groups"] == ["1000"]
    assert after["disk"] == "written"
    assert after["disk_dir"] == [1000, "0o2775"] and after["file_gid"] == 1000
    assert after["secret"] == "k"


@NEEDS_ROOT
@pytest.mark.asyncio
@kube_options(image_entrypoints={"plain:test": [sys.executable, "-c", "print('ran')"]})
async def test_run_as_non_root_keeps_a_root_container_from_starting(kube_api, api: Api) -> None:
    await api.create("/api/v1/namespaces", {"metadata": {"name": "strict"}})

    def spec(name: str, security: dict[str, Any]) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, **security},
                "containers": [{"name": "main", "image": "plain:test"}],
            },
        }

    for name, security, message in (
        ("as-root", {"runAsUser": 0}, "container's runAsUser breaks non-root policy"),
        ("image-root", {}, "container has runAsNonRoot and image will run as root"),
    ):
        await api.create("/api/v1/namespaces/strict/pods", spec(name, security))

        async def refused(name: str = name) -> dict[str, Any] | None:
            waiting = (await api.container_state("strict", name)).get("waiting") or {}
            return waiting if waiting.get("reason") == "CreateContainerConfigError" else None

        waiting = await wait_for(refused, 15, f"{name} to be refused")
        assert waiting["message"] == f'{message} (pod: "{name}_strict", container: main)'
        assert kube_api.kubelet.pod_pids("strict", name) == []

    # The control: the same pod as a user of its own runs.
    await api.create("/api/v1/namespaces/strict/pods", spec("as-user", {"runAsUser": 1000}))

    async def succeeded() -> bool:
        return "terminated" in await api.container_state("strict", "as-user")

    await wait_for(succeeded, 15, "the non-root pod to run")
    state = await api.container_state("strict", "as-user")
    assert state["terminated"]["exitCode"] == 0


@NEEDS_ROOT
@pytest.mark.asyncio
@kube_options(image_entrypoints={"plain:test": [sys.executable, "-c", "print('ran')"]})
async def test_a_claim_that_does_not_exist_keeps_the_pod_waiting_on_its_mount(api: Api) -> None:
    await api.create("/api/v1/namespaces", {"metadata": {"name": "unclaimed"}})
    await api.create(
        "/api/v1/namespaces/unclaimed/pods",
        {
            "metadata": {"name": "p"},
            "spec": {
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "missing"}}],
                "containers": [
                    {
                        "name": "main",
                        "image": "plain:test",
                        "volumeMounts": [{"name": "d", "mountPath": f"{MOUNTS}/d"}],
                    }
                ],
            },
        },
    )

    async def waiting() -> str | None:
        return ((await api.container_state("unclaimed", "p")).get("waiting") or {}).get("message")

    message = await wait_for(waiting, 15, "the pod to wait for its claim")
    assert message == (
        'MountVolume.SetUp failed for volume "d" : persistentvolumeclaim "missing" not found'
    )


# Leaves a POSIX semaphore in /dev/shm, as a Python process killed before its multiprocessing
# resource tracker could unlink one does, and reports what it sees there.
SHM_PROBE = """
import _multiprocessing, json, os, sys
if sys.argv[1] == "leave":
    _multiprocessing.SemLock(1, 1, 1, "/clusterhub-left-" + sys.argv[2], False)
print("RESULT " + json.dumps(sorted(os.listdir("/dev/shm"))))
"""


@NEEDS_ROOT
@pytest.mark.asyncio
@kube_options(image_users={"notebook:test": "1000:1000"})
async def test_each_pod_has_a_dev_shm_of_its_own_that_goes_with_it(kube_api, api: Api) -> None:
    token = os.urandom(4).hex()
    left = f"sem.clusterhub-left-{token}"
    await api.create("/api/v1/namespaces", {"metadata": {"name": "shm"}})

    def shm_pod(name: str, action: str) -> dict[str, Any]:
        command = [sys.executable, "-c", SHM_PROBE, action, token]
        return {
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "notebook:test", "command": command}],
            },
        }

    await api.create("/api/v1/namespaces/shm/pods", shm_pod("leaver", "leave"))
    assert await api.result("shm", "leaver") == [left], "the pod sees what it left"
    on_machine = await asyncio.to_thread(os.listdir, "/dev/shm")
    assert left not in on_machine, "the machine's /dev/shm is not the pod's"
    await api.create("/api/v1/namespaces/shm/pods", shm_pod("neighbour", "look"))
    assert await api.result("shm", "neighbour") == [], "another pod's /dev/shm starts empty"

    pod_dirs = kube_api.kubelet.workdir / "pods"
    (leaver_dir,) = pod_dirs.glob("shm_leaver_*")
    assert (leaver_dir / "shm" / left).exists()
    status, answer = await api.request("DELETE", "/api/v1/namespaces/shm/pods/leaver")
    assert status == 200, answer

    async def gone() -> bool:
        return not leaver_dir.exists()

    await wait_for(gone, 15, "the deleted pod's directory, its /dev/shm with it, to go")
