"""Dask Gateway configuration and backends whose clusters live in the owner's space."""

from __future__ import annotations

import os
import sys

# The dask-gateway-server config file of a clusterhub platform (reads $CLUSTERHUB_SETTINGS).
CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dask_gateway_config.py")


def server_command() -> list[str]:
    """This environment's dask-gateway-server with the platform's config file: how both
    `clusterhub up` and a hub on its own start the gateway."""
    return [os.path.join(os.path.dirname(sys.executable), "dask-gateway-server"), "-f", CONFIG_FILE]
