"""Per-user subdomains (JupyterHub's subdomain_host): the dashboards' login and links cross
from the hub's origin to the gateway's own subdomain and back."""

from __future__ import annotations

import logging
import urllib.parse
from types import SimpleNamespace

from aiohttp.test_utils import make_mocked_request
from jupyterhub.utils import subdomain_hook_idna

from clusterhub.gateway.dashboards import DashboardGate
from clusterhub.settings import GATEWAY_PREFIX, gateway_origin
from clusterhub.spawner.options import SpaceSpawnerMixin

HUB = "https://hub.example.org"
GATEWAY = "https://dask-gateway--service.hub.example.org"


def login_redirect(gate: DashboardGate) -> tuple[str, dict[str, str]]:
    request = make_mocked_request(
        "GET",
        "/clusterhub/dashboards/c1/status",
        match_info={"name": "c1", "rest": "/status"},
    )
    location = gate._login(request).headers["Location"]
    url, _, query = location.partition("?")
    return url, dict(urllib.parse.parse_qsl(query))


def test_the_gateways_origin_is_jupyterhubs_name_for_the_service():
    assert gateway_origin(HUB) == GATEWAY
    assert gateway_origin("http://hub.test:8000") == "http://dask-gateway--service.hub.test:8000"
    assert gateway_origin("") == ""
    # A hub configured with another subdomain hook names it that way.
    assert gateway_origin(HUB, subdomain_hook_idna) == GATEWAY


def test_with_subdomains_the_login_goes_to_the_hubs_origin_and_back_to_the_gateways():
    gate = DashboardGate("secret", "http://hub:8081/hub/api", logging.getLogger(), HUB)
    url, query = login_redirect(gate)
    assert url == f"{HUB}/hub/api/oauth2/authorize"
    # What JupyterHub registers for the service: its host + prefix + oauth_callback.
    assert query["redirect_uri"] == f"{GATEWAY}{GATEWAY_PREFIX}/oauth_callback"
    assert query["client_id"] == "service-dask-gateway"


def test_without_subdomains_the_login_stays_on_the_hubs_origin():
    gate = DashboardGate("secret", "http://hub:8081/hub/api", logging.getLogger())
    url, query = login_redirect(gate)
    assert url == "/hub/api/oauth2/authorize"
    assert query["redirect_uri"] == f"{GATEWAY_PREFIX}/oauth_callback"


def spawner_with(settings: dict) -> SimpleNamespace:
    return SimpleNamespace(
        gateway_url="http://gateway:8000/services/dask-gateway",
        gateway_proxy_address="gateway://gateway:8786",
        user=SimpleNamespace(settings=settings),
    )


def test_a_notebooks_dashboard_links_lead_to_the_gateways_subdomain():
    env = SpaceSpawnerMixin.gateway_env(
        spawner_with({"subdomain_host": HUB, "subdomain_hook": subdomain_hook_idna})
    )
    assert env["DASK_GATEWAY__PUBLIC_ADDRESS"] == GATEWAY + GATEWAY_PREFIX
    # Kernels still reach the gateway directly, inside the cluster.
    assert env["DASK_GATEWAY__ADDRESS"] == "http://gateway:8000/services/dask-gateway"
    plain = SpaceSpawnerMixin.gateway_env(spawner_with({}))
    assert plain["DASK_GATEWAY__PUBLIC_ADDRESS"] == GATEWAY_PREFIX
