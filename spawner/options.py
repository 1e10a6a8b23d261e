"""What the local and the Kubernetes spawner share: profiles, the spawn form and its checks,
and the way a notebook reaches the Dask Gateway.

Both spawners list :class:`SpaceSpawnerMixin` before their JupyterHub base class, so a
profile means the same thing, and a bad choice gets the same message, whichever runs. It is
a traitlets mixin, not a Spawner: JupyterHub refuses Spawner subclasses without start/stop.
"""

from __future__ import annotations

from tornado import web
from traitlets import HasTraits, List, Unicode, default, validate

from clusterhub import profiles as profile_rules
from clusterhub.settings import GATEWAY_PREFIX, gateway_origin
from clusterhub.usererror import UserError


def _user_error(exc: UserError) -> web.HTTPError:
    error = web.HTTPError(400, str(exc))
    error.jupyterhub_message = str(exc)  # JupyterHub shows it above the re-rendered form
    return error


class SpaceSpawnerMixin(HasTraits):
    gateway_url = Unicode(
        config=True,
        help="The Dask Gateway's address as seen from notebooks, including its prefix.",
    )

    gateway_proxy_address = Unicode(
        config=True,
        help="The gateway's scheduler proxy (gateway://host:port) as seen from notebooks.",
    )

    profiles = List(
        config=True,
        help="""The profiles users choose from on the spawn form.

        Each is a dict: ``slug``, ``display_name``, ``description``, ``default``,
        ``engines`` (a list drawn from "spark", "ipyparallel"; Dask is always there),
        and for ``workers``, ``worker_cores`` and ``worker_memory_gib`` a dict
        ``{"default": N, "max": M}``. Users can never exceed a profile's maxima, nor
        choose anything (an image, a command) a profile does not offer.
        """,
    )

    @default("profiles")
    def _default_profiles(self):
        return profile_rules.validate_profiles(profile_rules.DEFAULT_PROFILES)

    @validate("profiles")
    def _validate_profiles(self, proposal):
        return profile_rules.validate_profiles(proposal.value)

    @default("options_form")
    def _default_options_form(self):
        return profile_rules.render_form(self.profiles)

    def options_from_form(self, formdata):
        try:
            return profile_rules.options_from_form(self.profiles, formdata).to_dict()
        except UserError as exc:
            raise _user_error(exc) from None

    def space_options(self) -> profile_rules.SpaceOptions:
        """The validated options of this spawn; API spawns are checked like form spawns."""
        try:
            return profile_rules.validate_options(self.profiles, self.user_options or {})
        except UserError as exc:
            raise _user_error(exc) from None

    def space_profile(self, options: profile_rules.SpaceOptions) -> dict:
        return profile_rules.find_profile(self.profiles, options.profile)

    def profile_limits(self, options: profile_rules.SpaceOptions) -> dict[str, int]:
        return profile_rules.profile_maxima(self.space_profile(options))

    def gateway_env(self) -> dict[str, str]:
        """What makes ``Gateway()`` in a kernel work with no arguments."""
        if not self.gateway_url:
            return {}
        # Dashboard links: under the hub's address, or, with per-user subdomains, on the
        # gateway's own subdomain (the user's has no route to the gateway).
        settings = getattr(getattr(self, "user", None), "settings", None) or {}
        origin = gateway_origin(settings.get("subdomain_host", ""), settings.get("subdomain_hook"))
        env = {
            "DASK_GATEWAY__ADDRESS": self.gateway_url,
            "DASK_GATEWAY__PUBLIC_ADDRESS": origin + GATEWAY_PREFIX,
            "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        }
        if self.gateway_proxy_address:
            env["DASK_GATEWAY__PROXY_ADDRESS"] = self.gateway_proxy_address
        return env
