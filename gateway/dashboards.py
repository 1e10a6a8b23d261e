"""Dask dashboards for their owner only, and never with the hub's origin.

Upstream, the gateway's proxy sends ``/services/dask-gateway/clusters/<name>/...`` straight
to the owner's scheduler: no login, and whatever the scheduler serves (a user can add
handlers to it from a kernel) runs with the hub's origin. Here each cluster's dashboard
route leads to this gate instead, inside the gateway process:

- A request without the cluster's *view key* (the sidebar's link, a bookmark) needs the
  hub login: an anonymous visitor is sent to log in (OAuth, as the ``dask-gateway``
  service), the owner and hub admins are redirected to the same page under the view key,
  ``.../clusters/<name>/~<key>/status``, anyone else gets 403.
- A request under the view key is forwarded: the dashboard's pages, scripts and its
  WebSocket use relative URLs, so they stay under the key. They must, because the page is
  sandboxed (below) and so has an opaque origin: its own requests carry no cookies. The key
  is a per-cluster HMAC under the gateway's secret, unguessable without it, and it is only
  ever handed to the owner or an admin, after the login.
- Every answer carries ``Content-Security-Policy: sandbox`` (scripts run, but never with
  the hub's origin: no cookies, no storage, no requests as the hub's user) and
  ``X-Content-Type-Options: nosniff``. These are set here, a hop the user does not control.
- The scheduler never sees the visitor's ``Cookie`` or ``Authorization`` header (Bokeh
  copies both into the page it serves).
- Each forwarded request carries the cluster's scheduler key, which a local scheduler
  demands (``dashboard_lock``): its port on 127.0.0.1 is no way around this gate.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from typing import Any

import aiohttp
from aiohttp import web

from clusterhub.settings import GATEWAY_PREFIX, GATEWAY_SERVICE, gateway_origin

from .dashboard_lock import KEY_ENV, KEY_HEADER

# Where the gateway's proxy sends a cluster's dashboard route (the gateway app's own path).
GATE_ROUTE = "/clusterhub/dashboards"
CALLBACK_ROUTE = "/oauth_callback"
SANDBOX = (
    "sandbox allow-scripts allow-forms allow-popups allow-popups-to-escape-sandbox allow-downloads"
)
SESSION_COOKIE = "clusterhub-dashboards"
STATE_COOKIE = "clusterhub-dashboards-state"
SESSION_SECONDS = 8 * 3600
KEY_PREFIX = "~"
# Hop-by-hop headers (RFC 9110 7.6.1), and what must not reach the scheduler or come back.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
NOT_UPSTREAM = HOP_BY_HOP | {
    "host",
    "cookie",
    "authorization",
    "content-length",
    KEY_HEADER.lower(),
}
# Where the gate waits for the backend on the gateway's app (the authenticator sets up first).
GATE_APP_KEY = "clusterhub_dashboard_gate"
NOT_DOWNSTREAM = HOP_BY_HOP | {
    "content-length",
    "set-cookie",
    "content-security-policy",
    "x-content-type-options",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


class DashboardGate:
    """The gate's routes on the gateway's aiohttp app (see the module's docstring)."""

    def __init__(self, secret: str, hub_api_url: str, log: Any, subdomain_host: str = ""):
        if not secret:
            raise ValueError("the dashboard gate needs the gateway's hub API token")
        root = hashlib.sha256(b"clusterhub dashboards\0" + secret.encode()).digest()
        self._view_root = _mac(root, b"view")
        self._cookie_root = _mac(root, b"cookie")
        self._scheduler_root = _mac(root, b"scheduler")
        self.hub_api_url = hub_api_url.rstrip("/")
        # Under per-user subdomains the hub and this service are origins of their own: the
        # login goes to the hub's and the hub sends it back to ours (the redirect URI it
        # registered for the service). Without them both are paths on one origin.
        self.hub_origin = subdomain_host.rstrip("/")
        self.redirect_uri = gateway_origin(subdomain_host) + GATEWAY_PREFIX + CALLBACK_ROUTE
        self.client_secret = secret
        self.log = log
        self.session: aiohttp.ClientSession | None = None

    # -- setup ----------------------------------------------------------------------------
    def install(self, app: web.Application) -> None:
        app[GATE_APP_KEY] = self
        app.router.add_route("*", GATE_ROUTE + "/{name}{rest:.*}", self.dashboard)
        app.router.add_get(CALLBACK_ROUTE, self.oauth_callback)
        app.on_cleanup.append(self._close)

    async def _client(self) -> aiohttp.ClientSession:
        if self.session is None:
            # Bytes pass through as the scheduler sent them (compressed or not).
            self.session = aiohttp.ClientSession(auto_decompress=False)
        return self.session

    async def _close(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    # -- keys and signed cookies ----------------------------------------------------------
    def view_key(self, cluster: str) -> str:
        return _b64(_mac(self._view_root, cluster.encode()))

    def scheduler_key(self, cluster: str) -> str:
        """What the gate sends to the cluster's scheduler, and what it demands."""
        return _b64(_mac(self._scheduler_root, cluster.encode()))

    def _sign(self, payload: dict[str, Any]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{_b64(_mac(self._cookie_root, body.encode()))}"

    def _unsign(self, value: str | None) -> dict[str, Any] | None:
        if not value or "." not in value:
            return None
        body, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(mac, _b64(_mac(self._cookie_root, body.encode()))):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        if not isinstance(payload, dict) or payload.get("expires", 0) < time.time():
            return None
        return payload

    @staticmethod
    def _secure(request: web.Request) -> bool:
        return request.headers.get("X-Forwarded-Proto", request.scheme) == "https"

    # -- the dashboard ---------------------------------------------------------------------
    async def dashboard(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        rest = request.match_info["rest"].removeprefix("/")
        cluster = request.app["backend"].db.get_cluster(name)
        address = getattr(cluster, "dashboard_address", "") if cluster is not None else ""
        key, _, inner = rest.partition("/")
        if key.startswith(KEY_PREFIX):
            if not hmac.compare_digest(key[len(KEY_PREFIX) :], self.view_key(name)):
                return self._refuse(403, "This dashboard link is not valid.")
            if not address:
                return self._refuse(404, f"The cluster {name} has no dashboard (any more).")
            public = self._public(name, key)
            return await self._forward(request, address, inner, public, self.scheduler_key(name))
        # No view key: who is asking?
        user = self._unsign(request.cookies.get(SESSION_COOKIE))
        if user is None:
            if request.method not in ("GET", "HEAD"):
                return self._refuse(403, "Log in to the hub to see this dashboard.")
            return self._login(request)
        if cluster is None or not (user["admin"] or cluster.username == user["name"]):
            # The same answer whether or not the cluster exists: names are not for probing.
            return self._refuse(403, f"{user['name']} may not see the dashboard of {name}.")
        target = f"{self._public(name, KEY_PREFIX + self.view_key(name))}/{rest}"
        if request.query_string:
            target += "?" + request.query_string
        return self._redirect(target)

    @staticmethod
    def _public(name: str, key: str) -> str:
        return f"{GATEWAY_PREFIX}/clusters/{urllib.parse.quote(name)}/{key}"

    def _refuse(self, status: int, message: str) -> web.Response:
        return self._sandboxed(
            web.Response(status=status, text=message + "\n", content_type="text/plain")
        )

    def _redirect(self, target: str) -> web.Response:
        return self._sandboxed(web.Response(status=302, headers={"Location": target}))

    @staticmethod
    def _sandboxed(response: web.StreamResponse) -> web.StreamResponse:
        response.headers["Content-Security-Policy"] = SANDBOX
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    # -- the hub login (OAuth, as the gateway's service) -----------------------------------
    def _login(self, request: web.Request) -> web.StreamResponse:
        state = secrets.token_urlsafe(16)
        query = urllib.parse.urlencode(
            {
                "client_id": f"service-{GATEWAY_SERVICE}",
                "redirect_uri": self.redirect_uri,
                "response_type": "code",
                "state": state,
            }
        )
        response = self._redirect(f"{self.hub_origin}/hub/api/oauth2/authorize?{query}")
        back = f"{GATEWAY_PREFIX}/clusters/{request.match_info['name']}/"
        back += request.match_info["rest"].removeprefix("/")
        if request.query_string:
            back += "?" + request.query_string
        cookie = self._sign({"state": state, "next": back, "expires": time.time() + 600})
        response.set_cookie(
            STATE_COOKIE,
            cookie,
            max_age=600,
            path=f"{GATEWAY_PREFIX}{CALLBACK_ROUTE}",
            httponly=True,
            samesite="Lax",
            secure=self._secure(request),
        )
        return response

    async def oauth_callback(self, request: web.Request) -> web.StreamResponse:
        pending = self._unsign(request.cookies.get(STATE_COOKIE))
        state = request.query.get("state", "")
        code = request.query.get("code", "")
        if pending is None or not code or not hmac.compare_digest(state, pending["state"]):
            return self._refuse(400, "The login did not complete; open the dashboard again.")
        user = await self._user_for(code)
        if user is None:
            return self._refuse(403, "The hub did not confirm the login.")
        response = self._redirect(pending["next"])
        session = {**user, "expires": time.time() + SESSION_SECONDS}
        secure = self._secure(request)
        response.set_cookie(
            SESSION_COOKIE,
            self._sign(session),
            max_age=SESSION_SECONDS,
            path=f"{GATEWAY_PREFIX}/clusters/",
            httponly=True,
            samesite="Lax",
            secure=secure,
        )
        response.del_cookie(STATE_COOKIE, path=f"{GATEWAY_PREFIX}{CALLBACK_ROUTE}")
        return response

    async def _user_for(self, code: str) -> dict[str, Any] | None:
        """The hub user an OAuth code stands for: ``{"name", "admin"}``, or None."""
        client = await self._client()
        form = {
            "client_id": f"service-{GATEWAY_SERVICE}",
            "client_secret": self.client_secret,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
        }
        timeout = aiohttp.ClientTimeout(total=30)
        async with client.post(
            f"{self.hub_api_url}/oauth2/token", data=form, timeout=timeout
        ) as answer:
            if answer.status != 200:
                self.log.warning("OAuth token exchange refused: %s", answer.status)
                return None
            token = (await answer.json())["access_token"]
        headers = {"Authorization": f"token {token}"}
        async with client.get(
            f"{self.hub_api_url}/user", headers=headers, timeout=timeout
        ) as answer:
            if answer.status != 200:
                return None
            model = await answer.json()
        if model.get("kind") != "user":
            return None
        return {"name": model["name"], "admin": bool(model.get("admin"))}

    # -- forwarding ------------------------------------------------------------------------
    async def _forward(
        self, request: web.Request, address: str, path: str, public: str, scheduler_key: str
    ) -> web.StreamResponse:
        url = f"{address.rstrip('/')}/{path}"
        if request.query_string:
            url += "?" + request.query_string
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_UPSTREAM}
        headers[KEY_HEADER] = scheduler_key
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._forward_websocket(request, url, headers)
        client = await self._client()
        body = await request.read() if request.can_read_body else None
        try:
            upstream = await client.request(
                request.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return self._refuse(502, f"The cluster's scheduler did not answer: {exc}")
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() in NOT_DOWNSTREAM:
                    continue
                if key.lower() == "location" and value.startswith("/"):
                    value = public + value  # the scheduler knows no prefix
                response.headers.add(key, value)
            self._sandboxed(response)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _forward_websocket(
        self, request: web.Request, url: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        protocols = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        # The handshake is the client session's own, made again upstream.
        for key in list(headers):
            if key.lower().startswith("sec-websocket-"):
                del headers[key]
        client = await self._client()
        try:
            upstream = await client.ws_connect(
                url.replace("http", "ws", 1), protocols=protocols, headers=headers
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return self._refuse(502, f"The cluster's scheduler did not answer: {exc}")
        downstream = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else ()
        )
        await downstream.prepare(request)

        async def pump(source, sink) -> None:
            async for message in source:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await sink.send_str(message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
                else:
                    break

        tasks = [
            asyncio.ensure_future(pump(upstream, downstream)),
            asyncio.ensure_future(pump(downstream, upstream)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream.close()
            await downstream.close()
        return downstream


class DashboardRoutes:
    """For a ``DBBackendBase`` backend: each cluster's dashboard route leads to the gate.

    Upstream's ``_check_cluster_proxied`` (dask-gateway-server 2026.3.0) with one change:
    the PATH route's target is the gate on the gateway's own app, not the scheduler."""

    async def setup(self, app: web.Application) -> None:
        self.dashboard_gate: DashboardGate | None = app.get(GATE_APP_KEY)
        await super().setup(app)

    def dashboard_lock_env(self, cluster) -> dict[str, str]:
        """The scheduler's key (see ``dashboard_lock``), for the scheduler's environment."""
        gate = getattr(self, "dashboard_gate", None)
        return {KEY_ENV: gate.scheduler_key(cluster.name)} if gate is not None else {}

    async def _check_cluster_proxied(self, cluster) -> None:
        if cluster.added_to_proxies:
            return
        self.log.info("Adding cluster %s routes to proxies", cluster.name)
        if cluster.dashboard_address:
            await self.proxy.add_route(
                kind="PATH",
                path=f"/clusters/{cluster.name}",
                target=f"{self.proxy.gateway_url}{GATE_ROUTE}/{cluster.name}",
            )
        await self.proxy.add_route(kind="SNI", sni=cluster.name, target=cluster.scheduler_address)
        cluster.added_to_proxies = True
