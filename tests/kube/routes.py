"""The emulator's HTTP layer: authentication, RBAC, routing, list and watch (see
emulator.py)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from .apiparts import _CALLER, _NAMED_VERBS, _Event, _event_line, _PageNotFound, _Watcher, log
from .base import _STANDARD_VERBS, KUBE_VERSION, Obj
from .defaults import _strip_type
from .errors import (
    ApiError,
    _details,
    bad_request,
    method_not_allowed,
    resource_not_found,
)
from .patches import PATCH_TYPES
from .rbac import Request as RbacRequest
from .rbac import allowed as rbac_allowed
from .rbac import (
    escalation_refusal,
    forbidden_message,
    service_account_identity,
)
from .resources import (
    _BY_GV,
    _BY_KEY,
    _RBAC,
    RESOURCES,
    SERVICE_ACCOUNTS,
    ResourceType,
)
from .selectors import (
    LabelPredicate,
    parse_field_selector,
    parse_label_selector,
)


class ApiRoutes:
    """The HTTP side of :class:`~.emulator.KubeEmulator`."""

    # ---------------------------------------------------------------- HTTP layer

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        try:
            if path in ("/healthz", "/livez", "/readyz"):
                return web.Response(text="ok")
            if path == "/version":
                self._count(request, "get", "version")
                return web.json_response(KUBE_VERSION)
            self._check_auth(request)
            return await self._route(request, [s for s in path.split("/") if s])
        except ApiError as exc:
            return web.json_response(exc.status(), status=exc.code)
        except _PageNotFound:
            return web.Response(status=404, text="404 page not found\n")
        except Exception as exc:  # a bug in the emulator: answer like the real server would
            log.exception("emulator error on %s %s", request.method, request.path)
            err = ApiError(500, "InternalError", f"Internal error occurred: {exc!r}")
            return web.json_response(err.status(), status=500)

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        who = self._identities.get(token)
        if who is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        _CALLER.set(who)

    # ---------------------------------------------------------------- RBAC (see rbac.py)

    def _rbac_get(self, plural: str, ns: str, name: str) -> Obj | None:
        return self._get_obj(_BY_KEY[f"{_RBAC}/{plural}"], ns or None, name)

    def _rbac_list(self, plural: str, ns: str | None) -> list[Obj]:
        return self._objects_in(_BY_KEY[f"{_RBAC}/{plural}"], ns)

    def _authorize(
        self,
        request: web.Request,
        rt: ResourceType,
        ns: str | None,
        name: str | None,
        sub: str | None,
    ) -> None:
        method = request.method
        if name is None:
            if method == "GET":
                watch = request.query.get("watch", "").lower() in ("1", "true", "t")
                verb = "watch" if watch else "list"
            else:
                verb = {"POST": "create", "DELETE": "deletecollection"}.get(method, method.lower())
        elif sub == "exec":
            # A WebSocket upgrade is a GET, but exec needs create (Kubernetes 1.31 and later).
            verb = "create"
        else:
            verb = _NAMED_VERBS.get(method, method.lower())
        req = RbacRequest(verb, rt.group, rt.plural, sub or "", ns or "", name or "")
        who = _CALLER.get()
        if not rbac_allowed(who, req, self._rbac):
            details = {"name": name or "", "kind": rt.plural}
            if rt.group:
                details["group"] = rt.group
            raise ApiError(403, "Forbidden", forbidden_message(who, req), details)

    def _check_escalation(self, rt: ResourceType, obj: Obj, ns: str | None) -> None:
        if rt.group != _RBAC:
            return
        why = escalation_refusal(_CALLER.get(), rt.kind, obj, ns or "", self._rbac)
        if why:
            name = obj["metadata"].get("name", "")
            raise ApiError(403, "Forbidden", why, _details(rt, name))

    def _token_request(self, ns: str, name: str, body: Any) -> web.Response:
        """TokenRequest: a bearer token for the ServiceAccount (one per account, kept)."""
        self._get(SERVICE_ACCOUNTS, ns, name)  # 404 for a missing account
        who = service_account_identity(ns, name)
        token = next((t for t, i in self._identities.items() if i == who), None)
        if token is None:
            token = secrets.token_hex(16)
            self._identities[token] = who
        spec = (body or {}).get("spec") or {}
        return web.json_response(
            {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"audiences": spec.get("audiences") or [], **spec},
                "status": {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"},
            },
            status=201,
        )

    async def _route(self, request: web.Request, segs: list[str]) -> web.StreamResponse:
        if segs == ["api"]:
            self._count(request, "get", "discovery")
            host = request.host
            return web.json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": host}
                    ],
                }
            )
        if segs == ["apis"]:
            self._count(request, "get", "discovery")
            groups = sorted({(rt.group, rt.version) for rt in RESOURCES if rt.group})
            return web.json_response(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [self._api_group(g, v) for g, v in groups],
                }
            )
        if segs[0] == "api" and len(segs) >= 2:
            group, version, rest = "", segs[1], segs[2:]
        elif segs[0] == "apis" and len(segs) == 2:
            versions = [v for (g, v) in _BY_GV if g == segs[1]]
            if not versions:
                raise _PageNotFound()
            self._count(request, "get", "discovery")
            return web.json_response(
                {"kind": "APIGroup", "apiVersion": "v1", **self._api_group(segs[1], versions[0])}
            )
        elif segs[0] == "apis" and len(segs) >= 3:
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise _PageNotFound()
        kinds = _BY_GV.get((group, version))
        if kinds is None:
            raise _PageNotFound()
        if not rest:
            self._count(request, "get", "discovery")
            return web.json_response(self._resource_list(group, version, kinds))
        ns: str | None = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and rest[2] in kinds
            and kinds[rest[2]].namespaced
        ):
            ns, rest = rest[1], rest[2:]
        rt = kinds.get(rest[0])
        if rt is None or len(rest) > 3:
            raise resource_not_found()
        if rt.namespaced and ns is None and len(rest) > 1:
            raise resource_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in rt.subresources:
            raise resource_not_found()
        return await self._dispatch(request, rt, ns, name, sub)

    @staticmethod
    def _api_group(group: str, version: str) -> Obj:
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        return {"name": group, "versions": [gv], "preferredVersion": gv}

    @staticmethod
    def _resource_list(group: str, version: str, kinds: dict[str, ResourceType]) -> Obj:
        resources: list[Obj] = []
        for rt in kinds.values():
            entry: Obj = {
                "name": rt.plural,
                "singularName": rt.kind.lower(),
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(_STANDARD_VERBS),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            resources.append(entry)
            for sub in rt.subresources:
                s: Obj = {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                }
                if sub == "status":
                    s.update(kind=rt.kind, verbs=["get", "patch", "update"])
                elif sub == "scale":
                    s.update(
                        group="autoscaling",
                        version="v1",
                        kind="Scale",
                        verbs=["get", "patch", "update"],
                    )
                elif sub == "log":
                    s.update(kind="Pod", verbs=["get"])
                elif sub == "exec":
                    s.update(kind="PodExecOptions", verbs=["create", "get"])
                elif sub == "binding":
                    s.update(kind="Binding", verbs=["create"])
                resources.append(s)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    async def _read_body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None

    async def _dispatch(
        self,
        request: web.Request,
        rt: ResourceType,
        ns: str | None,
        name: str | None,
        sub: str | None,
    ) -> web.StreamResponse:
        q = request.query
        method = request.method
        resource = rt.plural + (f"/{sub}" if sub else "")
        self._authorize(request, rt, ns, name, sub)
        if "dryRun" in q:
            raise bad_request("dryRun is not supported by the test emulator")
        if name is None:
            if method == "GET":
                is_watch = q.get("watch", "").lower() in ("1", "true", "t")
                self._count(request, "watch" if is_watch else "list", resource)
                lsel, fsel = self._selectors(rt, q)
                if is_watch:
                    return await self._watch(request, rt, ns, lsel, fsel)
                return web.json_response(await self._list(rt, ns, lsel, fsel, q))
            if method == "POST":
                self._count(request, "create", resource)
                if rt.namespaced and ns is None:
                    raise method_not_allowed()
                body = await self._read_body(request)
                return web.json_response(self._create(rt, ns, body), status=201)
            if method == "DELETE":
                self._count(request, "deletecollection", resource)
                if rt.namespaced and ns is None:
                    raise method_not_allowed()
                lsel, fsel = self._selectors(rt, q)
                opts = self._delete_options(q, await self._read_body(request))
                items = []
                for obj in self._objects_in(rt, ns):
                    if lsel(obj["metadata"].get("labels") or {}) and fsel(obj):
                        out, _ = self._delete(rt, obj, opts["grace"], opts["propagation"])
                        items.append(_strip_type(out))
                return web.json_response(
                    {
                        "kind": f"{rt.kind}List",
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(self._rv)},
                        "items": items,
                    }
                )
            raise method_not_allowed()

        if sub == "log":
            if method != "GET":
                raise method_not_allowed()
            self._count(request, "get", resource)
            return await self._pod_log(request, ns, name)
        if sub == "exec":
            self._count(request, "create", resource)
            return await self._pod_exec(request, ns or "", name)
        if sub == "binding":
            if method != "POST":
                raise method_not_allowed()
            self._count(request, "create", resource)
            return self._bind(ns, name, await self._read_body(request))
        if sub == "scale":
            return await self._scale(request, rt, ns, name)
        if sub == "token":
            if method != "POST":
                raise method_not_allowed()
            self._count(request, "create", resource)
            return self._token_request(ns or "", name, await self._read_body(request))
        if method == "GET":
            self._count(request, "get", resource)
            return web.json_response(self._get(rt, ns, name))
        if method == "PUT":
            self._count(request, "update", resource)
            body = await self._read_body(request)
            existed = self._get_obj(rt, ns, name) is not None
            # 201 when the PUT created the object (the RBAC kinds allow create-on-update).
            return web.json_response(
                self._update(rt, ns, name, body, sub), status=200 if existed else 201
            )
        if method == "PATCH":
            self._count(request, "patch", resource)
            ctype = request.content_type
            if ctype not in PATCH_TYPES:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(PATCH_TYPES)}",
                )
            body = await self._read_body(request)
            return web.json_response(self._patch(rt, ns, name, body, ctype, sub))
        if method == "DELETE" and sub is None:
            self._count(request, "delete", resource)
            opts = self._delete_options(q, await self._read_body(request))
            obj = self._get(rt, ns, name)
            out, removed = self._delete(rt, obj, opts["grace"], opts["propagation"], opts["pre"])
            if removed and not rt.return_deleted_object:
                return web.json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": _details(rt, name, uid=out["metadata"]["uid"]),
                    }
                )
            return web.json_response(out)
        raise method_not_allowed()

    def _selectors(self, rt: ResourceType, q: Any) -> tuple[LabelPredicate, Callable[[Obj], bool]]:
        try:
            return (
                parse_label_selector(q.get("labelSelector")),
                parse_field_selector(q.get("fieldSelector"), rt),
            )
        except ValueError as exc:
            raise bad_request(str(exc)) from None

    @staticmethod
    def _delete_options(q: Any, body: Any) -> Obj:
        body = body if isinstance(body, dict) else {}
        grace = body.get("gracePeriodSeconds")
        if q.get("gracePeriodSeconds") is not None:
            grace = q.get("gracePeriodSeconds")
        propagation = q.get("propagationPolicy") or body.get("propagationPolicy")
        orphan = q.get("orphanDependents") or body.get("orphanDependents")
        if propagation is None and orphan in (True, "true"):
            propagation = "Orphan"
        try:
            grace = int(grace) if grace is not None else None
        except ValueError:
            raise bad_request(f"invalid gracePeriodSeconds {grace!r}") from None
        return {"grace": grace, "propagation": propagation, "pre": body.get("preconditions")}

    async def _list(
        self,
        rt: ResourceType,
        ns: str | None,
        lsel: LabelPredicate,
        fsel: Callable[[Obj], bool],
        q: Any,
    ) -> Obj:
        rv, match = q.get("resourceVersion"), q.get("resourceVersionMatch")
        if match and not rv:
            raise bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided"
            )
        if rv not in (None, "", "0"):
            try:
                wanted = int(rv)
            except ValueError:
                raise bad_request(f"invalid resource version {rv!r}") from None
            if match == "Exact" and wanted != self._rv:
                raise ApiError(
                    410, "Expired", "The resourceVersion for the provided list is too old."
                )
            for _ in range(30):  # the real server waits up to 3 s for a future version
                if wanted <= self._rv:
                    break
                await asyncio.sleep(0.1)
            else:
                raise ApiError(
                    504,
                    "Timeout",
                    f"Too large resource version: {wanted}, current: {self._rv}",
                    {
                        "causes": [
                            {
                                "reason": "ResourceVersionTooLarge",
                                "message": "Too large resource version",
                            }
                        ],
                        "retryAfterSeconds": 1,
                    },
                )
        items = [
            o
            for o in self._objects_in(rt, ns)
            if lsel(o["metadata"].get("labels") or {}) and fsel(o)
        ]
        meta: Obj = {"resourceVersion": str(self._rv)}
        cont = q.get("continue")
        if cont:
            try:
                start = json.loads(base64.urlsafe_b64decode(cont.encode()))["start"]
            except Exception:
                raise bad_request(
                    "continue key is not valid: incorrect encoded start resourceVersion "
                    "(version meta.k8s.io/v1)"
                ) from None
            items = [
                o
                for o in items
                if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > start
            ]
        limit = int(q.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            token = {"rv": self._rv, "start": [last.get("namespace", ""), last["name"]]}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": meta,
            "items": [_strip_type(o) for o in items],
        }

    async def _watch(
        self,
        request: web.Request,
        rt: ResourceType,
        ns: str | None,
        lsel: LabelPredicate,
        fsel: Callable[[Obj], bool],
    ) -> web.StreamResponse:
        q = request.query
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        except ValueError:
            raise bad_request(f"invalid timeoutSeconds {q.get('timeoutSeconds')!r}") from None
        rv = q.get("resourceVersion")

        def matches(o: Obj | None) -> bool:
            if o is None:
                return False
            meta = o["metadata"]
            return (
                (ns is None or meta.get("namespace") == ns)
                and lsel(meta.get("labels") or {})
                and fsel(o)
            )

        def translate(ev: _Event) -> tuple[str, Obj] | None:
            now, before = matches(ev.obj), matches(ev.old)
            if ev.type == "ADDED":
                return ("ADDED", ev.obj) if now else None
            if ev.type == "DELETED":
                return ("DELETED", ev.obj) if now or before else None
            if now and before:
                return ("MODIFIED", ev.obj)
            if now:
                return ("ADDED", ev.obj)
            if before and ev.old is not None:
                # The object left the selection: the real watch cache sends DELETED.
                gone = copy.deepcopy(ev.old)
                gone["metadata"]["resourceVersion"] = ev.obj["metadata"]["resourceVersion"]
                return ("DELETED", gone)
            return None

        initial: list[tuple[str, Obj]] = []
        send_initial = q.get("sendInitialEvents", "").lower() == "true"
        if send_initial and (
            q.get("resourceVersionMatch") != "NotOlderThan"
            or q.get("allowWatchBookmarks", "").lower() not in ("1", "true")
        ):
            raise ApiError(
                422,
                "Invalid",
                "sendInitialEvents requires allowWatchBookmarks=true and "
                "resourceVersionMatch=NotOlderThan",
            )
        if rv in (None, "", "0") or send_initial:
            initial = [("ADDED", o) for o in self._objects_in(rt, ns) if matches(o)]
            if send_initial:
                # The watch-list protocol: a bookmark marks the end of the initial state.
                bookmark = {
                    "kind": rt.kind,
                    "apiVersion": rt.api_version,
                    "metadata": {
                        "resourceVersion": str(self._rv),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }
                initial.append(("BOOKMARK", bookmark))
        else:
            try:
                start = int(rv)
            except ValueError:
                raise bad_request(f"invalid resource version {rv!r}") from None
            if start < self._history_floor:
                status = ApiError(
                    410, "Expired", f"too old resource version: {start} ({self._history_floor})"
                ).status()
                initial = [("ERROR", status)]
            else:
                for ev in self._history:
                    if ev.rv > start and ev.rt_key == rt.key:
                        t = translate(ev)
                        if t:
                            initial.append(t)
        # Registered synchronously with the snapshot above: nothing can slip in between.
        watcher = _Watcher(rt.key)
        expired = bool(initial) and initial[0][0] == "ERROR"
        if not expired:
            self._watchers.add(watcher)
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"},
        )
        resp.enable_chunked_encoding()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        try:
            await resp.prepare(request)
            if initial:
                await resp.write(b"".join(_event_line(t, o) for t, o in initial))
            while not expired:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(watcher.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if ev is None:
                    break
                t = translate(ev)
                if t:
                    await resp.write(_event_line(*t))
            await resp.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self._watchers.discard(watcher)
        return resp
