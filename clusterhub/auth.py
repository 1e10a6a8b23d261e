"""Login for a workshop: any name (by the rule in :mod:`clusterhub.names`) plus the code.

JupyterHub's own check of a name only answers "Invalid username or password"; an attendee
who typed "Ana María" must learn which rule the name broke. So a name that breaks it is
refused before the code is looked at, with the rule named, and nothing is created.
"""

from __future__ import annotations

from jupyterhub.authenticators.shared import SharedPasswordAuthenticator
from tornado import web

from .names import InvalidName, check_name, normalize_name


class WorkshopAuthenticator(SharedPasswordAuthenticator):
    def normalize_username(self, username: str) -> str:
        return normalize_name(username)

    def validate_username(self, username: str) -> bool:
        try:
            check_name(username)
        except InvalidName:
            return False
        return super().validate_username(username)

    async def authenticate(self, handler, data):
        try:
            check_name(data.get("username", ""))
        except InvalidName as exc:
            # A 400 on the login form re-renders the form with this message.
            raise web.HTTPError(400, str(exc)) from None
        return await super().authenticate(handler, data)
