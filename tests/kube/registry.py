"""Private registries, as a node's container runtime meets them: an image from a registry
that needs credentials is pulled only with a pod's ``imagePullSecrets`` naming an existing
``kubernetes.io/dockerconfigjson`` Secret with an entry for that registry; otherwise the
container stays Waiting (ErrImagePull, then ImagePullBackOff), as on a real node.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Iterable
from typing import Any

Obj = dict[str, Any]
DOCKER_CONFIG_TYPE = "kubernetes.io/dockerconfigjson"


def registry_of(image: str) -> str:
    """The registry host of an image reference (Docker's rule: the first path component,
    if it looks like a host; else Docker Hub)."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _registries_in(secret: Obj) -> set[str]:
    if secret.get("type") != DOCKER_CONFIG_TYPE:
        return set()
    try:
        config = json.loads(base64.b64decode((secret.get("data") or {})[".dockerconfigjson"]))
    except (KeyError, ValueError, TypeError):
        return set()
    # An auths key may be a URL ("https://reg.example/v1/"): its host is what counts.
    hosts = set()
    for key in (config.get("auths") or {}) if isinstance(config, dict) else {}:
        host = key.split("://", 1)[-1].split("/", 1)[0]
        hosts.add(host)
    return hosts


def pull_refusal(image: str, secrets: Iterable[Obj], private: Collection[str]) -> str | None:
    """Why the runtime cannot pull ``image`` with these Secrets (the ones the pod names that
    exist), or None. Only registries in ``private`` need credentials."""
    registry = registry_of(image)
    if registry not in private:
        return None
    if any(registry in _registries_in(secret) for secret in secrets):
        return None
    return (
        f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": '
        "pull access denied, repository does not exist or may require authorization: "
        "authorization failed: no basic auth credentials"
    )
