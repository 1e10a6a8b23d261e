"""Login for a workshop: any name (by the rule in :mod:`clusterhub.names`) plus the code.

JupyterHub's own check of a name only answers "Invalid username or password"; an attendee
who typed "Ana María" must learn which rule the name broke. So a name that breaks it is
refused before the code is looked at, with the rule named, and nothing is created.

Everyone shares one code, so guessing it is throttled (:mod:`clusterhub.login_throttle`):
too many failures for a name, or from a client address, within a window answer 429 with
``Retry-After`` until the window lets them go.
"""

from __future__ import annotations

from jupyterhub.authenticators.shared import SharedPasswordAuthenticator
from tornado import web
from traitlets import Float, Instance, Integer, default

from .login_throttle import LoginThrottle, TooManyFailures
from .names import InvalidName, check_name, normalize_name


class WorkshopAuthenticator(SharedPasswordAuthenticator):
    failed_logins_per_name = Integer(
        5,
        min=1,
        config=True,
        help="""Failed logins for one name, within failed_login_window, after which that
        name is refused (429, with Retry-After) until the oldest of them leaves the window.""",
    )
    failed_logins_per_address = Integer(
        20,
        min=1,
        config=True,
        help="""Failed logins from one client address (for every name together), within
        failed_login_window, after which that address is refused. A room behind one NAT
        address shares this budget: raise it for a large room.""",
    )
    failed_login_window = Float(
        60.0,
        min=1.0,
        config=True,
        help="Seconds over which failed logins are counted.",
    )

    login_throttle = Instance(LoginThrottle)

    @default("login_throttle")
    def _default_throttle(self) -> LoginThrottle:
        return LoginThrottle(
            self.failed_logins_per_name,
            self.failed_logins_per_address,
            self.failed_login_window,
        )

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
        name = self.normalize_username(data["username"])
        # Behind the proxy, the hub takes the client's address from X-Forwarded-For, the
        # last hop the proxy added (a client cannot forge that one).
        address = handler.request.remote_ip if handler is not None else "-"
        try:
            self.login_throttle.check(name, address)
        except TooManyFailures as exc:
            error = web.HTTPError(429, str(exc))
            # JupyterHub's error page copies an HTTPError's `headers` into the answer.
            error.headers = {"Retry-After": str(exc.retry_after)}
            self.log.warning("login refused for %s from %s: %s", name, address, exc)
            raise error from None
        user = await super().authenticate(handler, data)
        if user is None:
            count = self.login_throttle.failed(name, address)
            # Never the tried code: logs are read by more people than the code is meant for.
            self.log.warning(
                "failed login for %s from %s (%d in the last %.0f s)",
                name,
                address,
                count,
                self.failed_login_window,
            )
        return user
