"""Talking to the gateway's REST API on behalf of a user, from the hub.

The spawner stops a user's clusters when their server stops, using the server's
own API token (still valid while ``Spawner.stop`` runs), so the gateway applies
exactly the user's rights: it can only ever stop that user's clusters.
"""

from __future__ import annotations

import asyncio
import json
import time

from tornado.httpclient import AsyncHTTPClient, HTTPRequest


async def _call(url: str, token: str, method: str = "GET"):
    request = HTTPRequest(
        url,
        method=method,
        headers={"Authorization": f"jupyterhub {token}"},
        request_timeout=20,
    )
    response = await AsyncHTTPClient().fetch(request)
    return json.loads(response.body) if response.body else None


async def user_clusters(gateway_url: str, token: str) -> list[dict]:
    """The active (pending or running) clusters of the token's owner."""
    data = await _call(f"{gateway_url}/api/v1/clusters/", token)
    return list(data.values())


async def stop_user_clusters(gateway_url: str, token: str, timeout: float = 30) -> list[str]:
    """Stop every cluster of the token's owner and wait until the gateway reports them stopped."""
    names = [c["name"] for c in await user_clusters(gateway_url, token)]
    for name in names:
        await _call(f"{gateway_url}/api/v1/clusters/{name}", token, method="DELETE")
    deadline = time.monotonic() + timeout
    while names and time.monotonic() < deadline:
        running = {c["name"] for c in await user_clusters(gateway_url, token)}
        if not running & set(names):
            break
        await asyncio.sleep(0.3)
    return names
