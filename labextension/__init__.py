"""The Clusters sidebar, its jupyter-server extension and the notebook widget.

The server extension adds the REST routes of :mod:`.handlers` (on top of the
Jupyter-free core in :mod:`.core`). It is enabled by the
``jupyter_server_config.d/clusterhub.json`` file the package installs.
"""

from __future__ import annotations

import os
from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "clusterhub.labextension"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    # Imported here: importing the package (e.g. for the core, in a kernel) needs no server.
    from .handlers import setup_handlers

    setup_handlers(serverapp.web_app)
    if os.environ.get("JUPYTERHUB_API_URL"):
        # A user's server behind the hub shares the hub's origin: like the hub's own pages,
        # JupyterLab keeps no opener relation with windows other pages open.
        headers = serverapp.web_app.settings.setdefault("headers", {})
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    serverapp.log.info("clusterhub: Clusters API at %sclusterhub/api/", serverapp.base_url)
