"""REST handlers of the Clusters sidebar, on the user's own jupyter server.

Every route is under ``<base_url>clusterhub/api/``, needs the user's login
(token or cookie) and, for changes made with a cookie, the ``X-XSRFToken``
header (jupyter-server's APIHandler checks it). Bodies and answers are JSON.

===========================================  =================================================
``GET    clusters``                          ``{"clusters": [cluster, ...], "limits": {...}}``
``POST   clusters``                          new Dask cluster; body: gateway options, e.g.
                                             ``{"worker_cores": 1, "worker_memory": 2,
                                             "workers": 2}`` (all optional) -> 201 cluster
``PUT|PATCH clusters/<engine>/<name>``       body ``{"workers": n}`` or (Dask only)
                                             ``{"adapt": {"minimum": a, "maximum": b}}``
                                             -> 200 cluster
``DELETE clusters/<engine>/<name>``          stop it -> 204
``GET    clusters/<engine>/<name>/tasks``    ``?since=<cursor>`` -> ``{"records": [...],
                                             "counts": {hostname: n}, "workers":
                                             {worker: hostname}, "cursor": c}``
===========================================  =================================================

``<engine>`` is ``dask``, ``spark`` or ``ipyparallel``; Spark and IPyParallel
have one cluster per space, named ``default``. A cluster is ``{"engine",
"name", "state", "workers", "cores", "memory" (bytes), "dashboard", ...}``; a
record is ``{"engine", "cluster", "task", "worker", "hostname", "started",
"finished", "state"}`` (times in seconds since the epoch).

Errors answer ``{"message", "field", "status"}``: 400 malformed (invalid
JSON, a missing or mistyped field, a number outside 0..64), 404 unknown engine
or cluster, 409 the engine is not running, 422 over the profile's limit (the
message names the limit), 503 the gateway or engine did not answer; and
jupyter-server itself answers 403 without a login, or without the XSRF token on
a change made with a cookie. A refused request changes nothing.

The core's calls block, so each runs in a worker thread: the server keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from clusterhub.usererror import UserError

from .core import Clusters

SETTINGS_KEY = "clusterhub_clusters"
ROUTE_PREFIX = "clusterhub/api"
_NAME = r"(?P<engine>[^/]+)/(?P<name>[^/]+)"


def refusals_as_json(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """The one place a :class:`UserError` becomes an answer: its status, and its
    ``{"message", "field", "status"}`` as the body. Any other exception stays a 500."""

    @functools.wraps(method)
    async def answer(self: ClustersAPIHandler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except UserError as error:
            self.set_status(error.status)
            self.finish(json.dumps(error.to_dict()))

    return answer


class ClustersAPIHandler(APIHandler):
    """Shared parts: the core, JSON bodies, errors as JSON, blocking calls off the loop."""

    @property
    def clusters(self) -> Clusters:
        return self.settings[SETTINGS_KEY]

    async def call(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(func, *args, **kwargs)

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object; a 400 UserError otherwise."""
        raw = self.request.body
        if not raw or not raw.strip():
            raise UserError("body: must be a JSON object, got nothing", field="body")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"body: invalid JSON ({exc})", field="body") from exc
        except RecursionError:
            # json's decoder recurses once per level: a body a few thousand levels deep
            # would otherwise end as a 500.
            raise UserError(
                "body: JSON nested too deeply (no option nests at all)", field="body"
            ) from None
        if not isinstance(body, dict):
            raise UserError("body: must be a JSON object", field="body")
        return body

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))


class ClustersHandler(ClustersAPIHandler):
    @web.authenticated
    @refusals_as_json
    async def get(self) -> None:
        clusters = await self.call(self.clusters.list_engines)
        limits = await self.call(self.clusters.limits)
        self.reply({"clusters": clusters, "limits": limits})

    @web.authenticated
    @refusals_as_json
    async def post(self) -> None:
        options = self.json_body()
        created = await self.call(self.clusters.new_dask_cluster, **options)
        self.reply(created, status=201)


class ClusterHandler(ClustersAPIHandler):
    @web.authenticated
    @refusals_as_json
    async def put(self, engine: str, name: str) -> None:
        body = self.json_body()
        changed = await self.call(self.clusters.update, engine, name, body)
        self.reply(changed)

    patch = put

    @web.authenticated
    @refusals_as_json
    async def delete(self, engine: str, name: str) -> None:
        await self.call(self.clusters.stop, engine, name)
        self.set_status(204)
        self.finish()


class TasksHandler(ClustersAPIHandler):
    @web.authenticated
    @refusals_as_json
    async def get(self, engine: str, name: str) -> None:
        since = self.get_query_argument("since", None)
        records = await self.call(self.clusters.task_records, engine, name, since)
        self.reply(records)


def setup_handlers(web_app: Any, clusters: Clusters | None = None) -> None:
    """Register the routes on a jupyter-server web app (``clusters``: for tests)."""
    web_app.settings[SETTINGS_KEY] = clusters if clusters is not None else Clusters()
    base = url_path_join(web_app.settings["base_url"], ROUTE_PREFIX)
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "clusters"), ClustersHandler),
            (url_path_join(base, "clusters", _NAME), ClusterHandler),
            (url_path_join(base, "clusters", _NAME, "tasks"), TasksHandler),
        ],
    )
