"""JupyterHub authentication for the gateway, with hub admins able to see every cluster.

Upstream, ``User.has_permissions`` compares names only and ``GET /api/v1/clusters/``
lists the caller's clusters only, whatever their ``admin`` flag (which
``JupyterHubAuthenticator`` does read from the hub). Here:

- users see and control only their own clusters (another user's cluster answers 403);
- a hub admin may view, scale and stop any cluster by name;
- ``GET /api/v1/admin/clusters/`` (admins only, else 403) lists every user's clusters,
  with their owner and without credentials.
"""

from __future__ import annotations

from aiohttp import web
from dask_gateway_server import models
from dask_gateway_server.auth import JupyterHubAuthenticator
from dask_gateway_server.routes import api_handler
from traitlets import Unicode

from .dashboards import DashboardGate

ADMIN_CLUSTERS_ROUTE = "/api/v1/admin/clusters/"


class SpaceUser(models.User):
    def has_permissions(self, cluster) -> bool:
        return self.admin or super().has_permissions(cluster)


@api_handler(user_authenticated=True)
async def list_all_clusters(request: web.Request) -> web.Response:
    user = request["user"]
    if not user.admin:
        raise web.HTTPForbidden(reason=f"User {user.name} is not an admin")
    status = request.query.get("status")
    try:
        statuses = (
            None
            if status is None
            else [models.ClusterStatus.from_name(s) for s in status.split(",")]
        )
    except Exception as exc:
        raise web.HTTPUnprocessableEntity(reason=str(exc)) from None
    clusters = await request.app["backend"].list_clusters(username=None, statuses=statuses)
    return web.json_response(
        {c.name: {**c.to_dict(full=False), "username": c.username} for c in clusters}
    )


class HubAuthenticator(JupyterHubAuthenticator):
    """``JupyterHubAuthenticator`` whose users are :class:`SpaceUser` (admins see all)."""

    subdomain_host = Unicode(
        "",
        config=True,
        help="""The hub's ``JupyterHub.subdomain_host`` (e.g. ``https://hub.example.org``),
        when users and services are served on subdomains of their own: the dashboards'
        login then goes to the hub there and comes back to this service's subdomain.""",
    )

    async def setup(self, app: web.Application) -> None:
        await super().setup(app)
        app.router.add_get(ADMIN_CLUSTERS_ROUTE, list_all_clusters)
        # The dashboards' login is the hub's, as this service (see dashboards.py).
        DashboardGate(
            self.jupyterhub_api_token,
            self.jupyterhub_api_url,
            self.log,
            subdomain_host=self.subdomain_host,
        ).install(app)

    async def authenticate(self, request):
        user = await super().authenticate(request)
        return SpaceUser(user.name, groups=user.groups, admin=user.admin)
