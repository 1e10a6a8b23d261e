"""A scheduler preload: the dashboard answers only what the gateway's gate forwarded.

On one machine every scheduler's dashboard listens on 127.0.0.1, where every account of the
machine can reach it: another attendee who found the port would see, and could drive, the
dashboard without the hub's login (the gate in ``gateway/dashboards.py`` only guards the
route under the hub's address). So the gate sends each request it forwards with this
cluster's key in a header, the scheduler has the same key in its environment (which only its
owner and root can read), and anything without it gets 403. Workers load it too: their own
dashboards are on loopback as well, and the gate never forwards to them.

Loaded with ``--preload clusterhub.gateway.dashboard_lock``; without the key in the
environment it changes nothing.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from tornado import web

KEY_ENV = "CLUSTERHUB_DASHBOARD_KEY"
KEY_HEADER = "X-Clusterhub-Dashboard-Key"


class Refused(web.RequestHandler):
    def prepare(self) -> None:
        self.set_status(403)
        self.set_header("Content-Type", "text/plain")
        self.finish("Open this dashboard through the hub: the Clusters sidebar has its link.\n")


def lock(app: web.Application, key: str) -> None:
    """Route every request to ``app`` without ``key`` in :data:`KEY_HEADER` to 403."""
    route = app.find_handler
    expected = key.encode()

    def find_handler(request: Any, **kwargs: Any):
        given = request.headers.get(KEY_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            return app.get_handler_delegate(request, Refused)
        return route(request, **kwargs)

    app.find_handler = find_handler


def dask_setup(server: Any) -> None:
    """A scheduler's or a worker's preload hook."""
    key = os.environ.get(KEY_ENV, "")
    application = getattr(server, "http_application", None)
    if key and application is not None:
        lock(application, key)
