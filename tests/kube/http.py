"""Plain HTTP to the emulator, as kubectl or a notebook's own client would send it (for
tests that want the API server's exact answers, not a client library's objects)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp


class EmulatorHttp:
    def __init__(self, cluster: Any, session: aiohttp.ClientSession) -> None:
        self.base = cluster.url
        self.session = session
        self.headers = {"Authorization": f"Bearer {cluster.token}"}

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        """The status and the decoded body (text when it is not JSON)."""
        headers = dict(self.headers)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with self.session.request(
            method, self.base + path, data=data, headers=headers
        ) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def get(self, path: str) -> Any:
        status, body = await self.request("GET", path)
        assert status == 200, (path, status, body)
        return body
