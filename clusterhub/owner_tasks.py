"""What the hub does in a user's space, done as the space's owner.

Merging workshop content into the home, preparing, starting and stopping the engines: each
of these writes into directories the user controls. Done as root, a symbolic link planted
there would turn it into a write anywhere on the machine; and processes started by it must
be the user's anyway. So with per-user accounts the hub runs each task in a short-lived
process of the account (``python -m clusterhub.owner_tasks``, a JSON request on standard
input and the JSON result on standard output), inside the user's fence. In the
single-account mode the same functions run in the hub's own process.

A failure the user should see comes back as the same :class:`~clusterhub.usererror.UserError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from .accounts import Account
from .engines import local_engine
from .space import LocalSpace
from .usererror import UserError

# Variables an owner task keeps from the hub's environment: nothing secret, just enough to
# find programs (Java for Spark) and to keep the language settings.
KEPT_VARIABLES = ("PATH", "LANG", "LC_ALL", "JAVA_HOME", "TZ")
OWNER_TASK_TIMEOUT = 300


def _engines(space: LocalSpace, request: dict) -> list:
    sizes = request.get("sizes") or {}
    return [local_engine(kind, space, **sizes) for kind in request.get("kinds", [])]


def handle(request: dict) -> dict:
    """Run one task in this process (already the owner) and return its JSON result."""
    from .content import sync_content

    space = LocalSpace(request["data_dir"], request["username"])
    task = request["task"]
    if task == "sync_content":
        report = sync_content(
            request["source"],
            space.home,
            space.path("content", "content.json"),
            tuple(request.get("exclude", ())),
        )
        return {"report": dataclasses.asdict(report)}
    if task == "prepare_space":
        # A start's two tasks in one process: the content (when a source is given), then
        # the engines' configuration.
        answer = {}
        if request.get("source") is not None:
            answer.update(handle({**request, "task": "sync_content"}))
        answer.update(handle({**request, "task": "prepare_engines"}))
        return answer
    if task == "prepare_engines":
        env: dict[str, str] = {}
        for engine in _engines(space, request):
            engine.prepare()
            env.update(engine.client_env())
        return {"client_env": env}
    if task == "start_engine":
        (engine,) = _engines(space, request)
        engine.start(int(request["workers"]))
        return {}
    if task == "stop_engines":
        failed = {}
        for engine in _engines(space, request):
            try:
                engine.stop()
            except Exception as exc:  # the platform's sweep still stops its processes
                failed[engine.kind] = str(exc)
        return {"failed": failed}
    raise ValueError(f"task: unknown task {task!r}")


def _owner_env(space: LocalSpace) -> dict[str, str]:
    env = {k: os.environ[k] for k in KEPT_VARIABLES if k in os.environ}
    env.update(space.marker_env())
    env["HOME"] = space.home
    env["PYTHONSAFEPATH"] = "1"  # never import from the working directory
    return env


def run_as_owner(
    account: Account | None,
    request: dict,
    preexec: Callable[[], None] | None = None,
) -> dict:
    """Run ``request`` as ``account`` (None: in this process, the single-account mode).

    ``preexec`` runs in the child before it becomes the account (joining the user's fence:
    only root may move a process into a group, so this comes first).
    """
    if account is None or account.is_current():
        try:
            return handle(request)
        except UserError as exc:
            raise UserError(exc.message, field=exc.field, status=exc.status) from None
    space = LocalSpace(request["data_dir"], request["username"])
    result = subprocess.run(
        [sys.executable, "-m", "clusterhub.owner_tasks"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=space.home,
        env=_owner_env(space),
        timeout=OWNER_TASK_TIMEOUT,
        preexec_fn=account.preexec(first=preexec),
        start_new_session=True,
    )
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(
            f"owner task {request['task']} for {account.name} failed "
            f"(exit {result.returncode}): {result.stderr.strip()[-2000:]}"
        ) from None
    if "user_error" in answer:
        refusal = answer["user_error"]
        raise UserError(refusal["message"], field=refusal["field"], status=refusal["status"])
    if "error" in answer:
        raise RuntimeError(f"owner task {request['task']} for {account.name}: {answer['error']}")
    return answer["result"]


async def run_as_owner_async(
    account: Account | None, request: dict, preexec: Callable[[], None] | None = None
) -> dict:
    return await asyncio.to_thread(run_as_owner, account, request, preexec)


def main() -> int:
    request: dict[str, Any] = json.loads(sys.stdin.read())
    try:
        answer: dict[str, Any] = {"result": handle(request)}
    except UserError as exc:
        answer = {"user_error": exc.to_dict()}
    except Exception as exc:
        import traceback

        traceback.print_exc()
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
