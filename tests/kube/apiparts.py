"""What the emulator's parts share: who is calling, the watch events, small helpers."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from dataclasses import dataclass, field

from .base import Obj
from .rbac import ADMIN, Identity

log = logging.getLogger(__name__)

_NAMED_VERBS = {
    "GET": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
    "POST": "create",
}
# Who the request being handled comes from (set once its token is checked). Built-in
# controllers act as the admin.
_CALLER: contextvars.ContextVar[Identity] = contextvars.ContextVar("caller", default=ADMIN)


@dataclass
class _Event:
    rv: int
    rt_key: str
    type: str
    obj: Obj
    old: Obj | None = None


@dataclass(eq=False)
class _Watcher:
    rt_key: str
    queue: asyncio.Queue[_Event | None] = field(default_factory=asyncio.Queue)


# What kubectl and the Kubernetes clients offer for exec; v4 and later carry the exit code.
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


def _exec_status(command: list[str], result: dict) -> Obj:
    """The Status that ends an exec stream (what the real kubelet sends on channel 3)."""
    code = int(result["code"])
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    if result.get("error"):
        return {"metadata": {}, "status": "Failure", "message": result["error"]}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            f"command terminated with non-zero exit code: error executing command "
            f"[{' '.join(command)}], exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


class _PageNotFound(Exception):
    pass


def _strip_rv(obj: Obj) -> Obj:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return out


def _event_line(etype: str, obj: Obj) -> bytes:
    return (json.dumps({"type": etype, "object": obj}, separators=(",", ":")) + "\n").encode()
