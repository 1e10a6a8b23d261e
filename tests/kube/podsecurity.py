"""Who a container runs as, and who owns its volumes: the parts of a pod's ``securityContext``
a kubelet applies (``runAsUser``/``runAsGroup``/``runAsNonRoot``, ``fsGroup``,
``supplementalGroups``), with the real kubelet's refusals and volume ownership rules.

An image's own user (its Dockerfile ``USER``) is what a container runs as without
``runAsUser``; the process-kubelet knows it only from its ``image_users`` map (an unmapped
image runs as root, like an image without ``USER``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Obj = dict[str, Any]


class RunAsRefused(Exception):
    """The container may not be created as asked: a CreateContainerConfigError."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary: fsGroup and supplementalGroups

    @property
    def is_plain_root(self) -> bool:
        return self.uid == 0 and self.gid == 0 and not self.groups

    def setpriv(self, tool: str) -> list[str]:
        """The argv prefix that runs a command as this identity (every capability dropped
        with the change of user; saved ids follow, so root cannot be taken back)."""
        if self.is_plain_root:
            return []
        groups = f"--groups={','.join(map(str, self.groups))}" if self.groups else "--clear-groups"
        return [tool, f"--reuid={self.uid}", f"--regid={self.gid}", groups, "--"]


def parse_image_user(value: int | str) -> tuple[int, int]:
    """A Dockerfile ``USER`` in numbers: ``1000`` or ``1000:100`` (group 0 when omitted)."""
    text = str(value)
    user, _, group = text.partition(":")
    return int(user), int(group or 0)


def container_identity(pod: Obj, container: Obj, image_users: Mapping[str, int | str]) -> Identity:
    """The user, group and supplementary groups of one container, as a kubelet decides
    them: the container's securityContext over the pod's, over the image's ``USER``."""
    pod_sc = pod["spec"].get("securityContext") or {}
    own_sc = container.get("securityContext") or {}

    def setting(key: str) -> Any:
        return own_sc.get(key, pod_sc.get(key))

    image = container.get("image", "")
    image_uid, image_gid = parse_image_user(image_users.get(image, 0))
    uid = setting("runAsUser")
    gid = setting("runAsGroup")
    if setting("runAsNonRoot"):
        where = f'(pod: "{pod["metadata"]["name"]}_{pod["metadata"]["namespace"]}", ' + (
            f"container: {container['name']})"
        )
        if uid == 0:
            raise RunAsRefused(f"container's runAsUser breaks non-root policy {where}")
        if uid is None and image_uid == 0:
            raise RunAsRefused(f"container has runAsNonRoot and image will run as root {where}")
    if uid is None:
        uid = image_uid
    if gid is None:
        # the user's primary group in the image's /etc/passwd, of which only USER is known
        gid = image_gid if int(uid) == image_uid else 0
    groups: list[int] = []
    for extra in [pod_sc.get("fsGroup"), *(pod_sc.get("supplementalGroups") or [])]:
        if extra is not None and int(extra) not in groups:
            groups.append(int(extra))
    return Identity(int(uid), int(gid), tuple(groups))


def set_volume_ownership(root: Path, fs_group: int, read_only: bool) -> None:
    """What a kubelet does to a volume for ``fsGroup`` (recursively, as with
    ``fsGroupChangePolicy: Always``): group ``fs_group`` on everything; group read, and
    write unless the volume is read-only (Secrets, ConfigMaps, tokens); directories also
    group search and set-group-ID, so new files get the group. Links are left alone."""
    mask = 0o440 if read_only else 0o660
    # os.walk never enters a link to a directory: each directory is its own dirpath once
    for dirpath, _, filenames in os.walk(root):
        entries = [(dirpath, True)] + [(os.path.join(dirpath, n), False) for n in filenames]
        for path, is_dir in entries:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                continue
            os.chown(path, -1, fs_group)
            extra = mask | (0o110 | stat.S_ISGID if is_dir else 0)
            os.chmod(path, stat.S_IMODE(info.st_mode) | extra)


def new_disk(path: Path) -> Path:
    """A freshly formatted volume: an empty directory owned by root, mode 0755."""
    if not path.exists():
        path.mkdir(parents=True)
        os.chown(path, 0, 0)
        path.chmod(0o755)
    return path


def closed_ancestor(path: Path) -> Path | None:
    """The first of ``path`` and its parents that other users cannot pass through."""
    for place in [path, *path.parents]:
        if not os.stat(place).st_mode & stat.S_IXOTH:
            return place
    return None
