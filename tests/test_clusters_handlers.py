"""The Clusters REST API on a real jupyter server (pytest-jupyter), with authentication on.

The extension is enabled the way the installed config file enables it and finds
the space through ``CLUSTERHUB_SPACE``, as in a user's server. The happy path
runs against a real IPyParallel controller of that space (the fastest engine to
start), shared by the module. The tests are plain functions that drive
pytest-jupyter's loop themselves, so pytest-asyncio (strict mode) is not involved.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.parse
from collections import Counter
from http.cookies import SimpleCookie

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (its fixtures, for this module only)
from waiting import wait_for

from clusterhub import procs
from clusterhub.engines import local_engine
from clusterhub.hostnames import worker_hostname
from clusterhub.space import LocalSpace

pytestmark = [pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMITS = {"workers": 3, "worker_cores": 2, "worker_memory_gib": 2}


# -- the space and its IPyParallel engine (one for the module) --------------------------------
@pytest.fixture(scope="module")
def space(tmp_path_factory):
    root = tmp_path_factory.mktemp("clusters-handlers")
    space = LocalSpace(str(root / "data"), "webuser")
    space.create()
    space.write_state(active=True, limits=LIMITS, engines={"ipyparallel": "running"})
    engine = local_engine("ipyparallel", space)
    try:
        engine.start(1)
        wait_for(lambda: engine.status().state == "running", 60, "the IPyParallel engine")
        yield space
    finally:
        engine.stop()
        leftovers = [" ".join(p.cmdline())[:200] for p in space.processes()]
        space.sweep()
        assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture
def jp_server_config():
    # What jupyter-config/jupyter_server_config.d/clusterhub.json installs.
    with open(
        os.path.join(ROOT, "jupyter-config", "jupyter_server_config.d", "clusterhub.json")
    ) as f:
        return json.load(f)


@pytest.fixture
def server(space, monkeypatch, jp_serverapp):
    """The user's server, with the space in its environment as the spawner sets it."""
    from clusterhub.labextension.handlers import SETTINGS_KEY

    monkeypatch.setenv(procs.SPACE_MARKER, space.root)
    try:
        yield jp_serverapp
    finally:
        jp_serverapp.web_app.settings[SETTINGS_KEY].close()


@pytest.fixture
def api(server, jp_fetch, jp_asyncio_loop):
    """``api(method, *path, body=..., raw=..., params=...)`` -> (status, JSON answer)."""

    def call(method, *path, body=None, raw=None, params=None):
        # Stopping an engine waits for its processes (up to 10 s each): a busy machine needs
        # longer than the client's default 20 s.
        kwargs = {"method": method, "raise_error": False, "request_timeout": 120}
        if body is not None:
            kwargs["body"] = json.dumps(body)
        elif raw is not None:
            kwargs["body"] = raw
        elif method in ("POST", "PUT", "PATCH"):
            kwargs["body"] = ""
        response = jp_asyncio_loop.run_until_complete(
            jp_fetch("clusterhub", "api", *path, params=params, **kwargs)
        )
        return response.code, json.loads(response.body) if response.body else None

    return call


def requested_workers(space) -> int:
    return local_engine("ipyparallel", space).status().details["requested_workers"]


def ipp_entry(api) -> dict:
    status, answer = api("GET", "clusters")
    assert status == 200, answer
    return next(c for c in answer["clusters"] if c["engine"] == "ipyparallel")


# -- the extension and its authentication -----------------------------------------------------
def test_the_config_file_enables_the_extension(server):
    import clusterhub.labextension as extension

    points = extension._jupyter_server_extension_points()
    assert points == [{"module": "clusterhub.labextension"}]
    assert server.extension_manager.extensions["clusterhub.labextension"].enabled


URLS = [
    ("GET", "clusters"),
    ("POST", "clusters"),
    ("PUT", "clusters/ipyparallel/default"),
    ("PATCH", "clusters/ipyparallel/default"),
    ("DELETE", "clusters/ipyparallel/default"),
    ("GET", "clusters/ipyparallel/default/tasks"),
]


def test_requests_without_login_are_refused(
    space, server, http_server_client, jp_base_url, jp_asyncio_loop
):
    loop = jp_asyncio_loop
    before = requested_workers(space)
    for method, path in URLS:
        body = json.dumps({"workers": 0}) if method in ("POST", "PUT", "PATCH") else None
        response = loop.run_until_complete(
            http_server_client.fetch(
                f"{jp_base_url}clusterhub/api/{path}", method=method, body=body, raise_error=False
            )
        )
        assert response.code == 403, (method, path, response.code)
    assert requested_workers(space) == before
    assert ipp_state(space) == "running", "DELETE without login stopped nothing"


def ipp_state(space) -> str:
    return local_engine("ipyparallel", space).status().state


def login_cookies(server, http_server_client, jp_base_url, loop) -> dict[str, str]:
    """Log in through the login form as a browser does; returns the cookies it set."""
    cookies: dict[str, str] = {}

    def keep(response):
        for header in response.headers.get_list("Set-Cookie"):
            for morsel in SimpleCookie(header).values():
                cookies[morsel.key] = morsel.value

    keep(loop.run_until_complete(http_server_client.fetch(f"{jp_base_url}login")))
    form = urllib.parse.urlencode(
        {"password": server.identity_provider.token, "_xsrf": cookies["_xsrf"]}
    )
    keep(
        loop.run_until_complete(
            http_server_client.fetch(
                f"{jp_base_url}login",
                method="POST",
                body=form,
                headers={"Cookie": cookie_header(cookies)},
                follow_redirects=False,
                raise_error=False,
            )
        )
    )
    return cookies


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def test_a_cookie_login_needs_the_xsrf_token_for_changes(
    space, server, http_server_client, jp_base_url, jp_asyncio_loop
):
    loop = jp_asyncio_loop
    cookies = login_cookies(server, http_server_client, jp_base_url, loop)
    assert any(name.startswith("username-") for name in cookies), cookies
    url = f"{jp_base_url}clusterhub/api/clusters/ipyparallel/default"

    def fetch(method, headers, body=None):
        return loop.run_until_complete(
            http_server_client.fetch(
                url, method=method, body=body, headers=headers, raise_error=False
            )
        )

    listed = loop.run_until_complete(
        http_server_client.fetch(
            f"{jp_base_url}clusterhub/api/clusters",
            headers={"Cookie": cookie_header(cookies)},
            raise_error=False,
        )
    )
    assert listed.code == 200, "reading with the login cookie needs no XSRF token"

    before = requested_workers(space)
    body = json.dumps({"workers": before})
    no_xsrf = fetch("PATCH", {"Cookie": cookie_header(cookies)}, body)
    assert no_xsrf.code == 403
    assert fetch("DELETE", {"Cookie": cookie_header(cookies)}).code == 403
    assert ipp_state(space) == "running"
    wrong = fetch("PATCH", {"Cookie": cookie_header(cookies), "X-XSRFToken": "forged"}, body)
    assert wrong.code == 403
    with_xsrf = fetch(
        "PATCH", {"Cookie": cookie_header(cookies), "X-XSRFToken": cookies["_xsrf"]}, body
    )
    assert with_xsrf.code == 200, with_xsrf.body
    assert requested_workers(space) == before


# -- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, field, fragment",
    [
        ({"workers": -1}, "workers", "from 0 to 3, not -1"),
        ({"workers": 10**9}, "workers", "not 1000000000"),
        ({"workers": "three"}, "workers", "not 'three'"),
        ({"workers": True}, "workers", "not True"),
        ({"workers": 2.5}, "workers", "not 2.5"),
        ({"workers": None}, "workers", "not None"),
        ({}, "workers", "give either"),
        ({"workers": 1, "colour": "red"}, "workers", "give either"),
        ({"adapt": {"minimum": 0, "maximum": 2}}, "adapt", "only Dask"),
        (None, "body", "got nothing"),
        ("{not json", "body", "invalid JSON"),
        ("[1]", "body", "must be a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "body", "nested too deeply"),
        ('{"workers": ' + "[" * 100_000 + "]" * 100_000 + "}", "body", "nested too deeply"),
    ],
)
def test_bad_scale_requests_are_400_and_change_nothing(space, api, raw, field, fragment):
    before = requested_workers(space)
    text = raw if isinstance(raw, str) else None
    body = raw if isinstance(raw, dict) else None
    for method in ("PUT", "PATCH"):
        status, answer = api(method, "clusters", "ipyparallel", "default", body=body, raw=text)
        assert status == 400, answer
        assert answer["field"] == field
        assert fragment in answer["message"], answer["message"]
    assert requested_workers(space) == before


def test_over_the_profile_limit_is_422_with_the_limit(space, api):
    before = requested_workers(space)
    status, answer = api("PATCH", "clusters", "ipyparallel", "default", body={"workers": 4})
    assert status == 422
    assert answer["field"] == "workers"
    assert "limit of 3" in answer["message"]
    assert requested_workers(space) == before


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("PATCH", ("clusters", "flink", "default"), {"workers": 1}),
        ("PATCH", ("clusters", "spark", "default"), {"workers": 1}),
        ("PATCH", ("clusters", "ipyparallel", "other"), {"workers": 1}),
        ("DELETE", ("clusters", "flink", "default"), None),
        ("DELETE", ("clusters", "spark", "default"), None),
        ("GET", ("clusters", "ipyparallel", "other", "tasks"), None),
        ("GET", ("clusters", "flink", "x", "tasks"), None),
    ],
)
def test_unknown_engines_and_clusters_are_404(space, api, method, path, body):
    status, answer = api(method, *path, body=body)
    assert status == 404, answer
    assert answer["field"] in ("engine", "cluster")
    assert ipp_state(space) == "running"


def test_a_bad_cursor_is_400(api):
    for since in ("yesterday", "-5", "nan"):
        status, answer = api(
            "GET", "clusters", "ipyparallel", "default", "tasks", params={"since": since}
        )
        assert status == 400, (since, answer)
        assert answer["field"] == "since"


def test_new_dask_cluster_requests_are_checked_first(api):
    assert api("POST", "clusters", raw="{oops")[0] == 400
    assert api("POST", "clusters", raw="3")[0] == 400
    status, answer = api("POST", "clusters", body={"workers": -1})
    assert (status, answer["field"]) == (400, "workers")
    status, answer = api("POST", "clusters", body={"workers": 5})
    assert status == 422 and "limit of 3" in answer["message"]
    status, answer = api("POST", "clusters", raw="[" * 100_000 + "]" * 100_000)
    assert (status, answer["field"]) == (400, "body") and "nested" in answer["message"]
    # Option names are the caller's: none may clash with the core's own arguments (they
    # reach the gateway's option check, here the missing gateway, never a TypeError's 500).
    for name in ("self", "func", "options"):
        status, answer = api("POST", "clusters", body={name: 1})
        assert status == 503 and "not configured" in answer["message"], answer
    # This server has no gateway configured (no DASK_GATEWAY__ADDRESS): said so, not a 500.
    status, answer = api("POST", "clusters", body={})
    assert status == 503 and "not configured" in answer["message"]


def test_listing_shows_the_space_and_its_limits(api):
    status, answer = api("GET", "clusters")
    assert status == 200
    assert answer["limits"] == LIMITS
    assert [c["engine"] for c in answer["clusters"]] == ["ipyparallel"], "no gateway, no Dask"


# -- the happy path -----------------------------------------------------------------------------
def test_scale_run_tasks_and_read_their_hostnames(space, api):
    import ipyparallel as ipp

    status, answer = api("PATCH", "clusters", "ipyparallel", "default", body={"workers": 2})
    assert status == 200, answer
    assert answer["requested_workers"] == 2
    wait_for(lambda: ipp_entry(api)["workers"] == 2, 60, "2 engines")

    engine = local_engine("ipyparallel", space)
    client = ipp.Client(engine.status().address, timeout=10)
    try:
        client[:].use_cloudpickle()  # functions of a test module are not importable there

        def where(i):
            time.sleep(0.05)
            return socket.gethostname()

        # Each engine is a host of its own (clusterhub.hostnames), named after it.
        hosts = {worker_hostname(space.name, "ipp", n) for n in (1, 2)}
        assert set(client[:].apply_sync(socket.gethostname)) == hosts
        result = client.load_balanced_view().map_async(where, range(8))
        assert set(result.get(60)) <= hosts
        msg_ids = set(result.msg_ids)
    finally:
        client.close()

    status, answer = api("GET", "clusters", "ipyparallel", "default", "tasks")
    assert status == 200, answer
    mine = [r for r in answer["records"] if r["task"] in msg_ids]
    assert len(mine) == 8
    # Each task is placed on the host that ran it (engines sharing the machine's hostname
    # would be named by engine instead: tests/test_task_places.py).
    assert answer["place"] == "host"
    assert {r["hostname"] for r in mine} <= hosts
    assert {r["worker"] for r in mine} <= set(answer["workers"])
    assert answer["counts"] == dict(Counter(r["hostname"] for r in answer["records"]))

    status, later = api(
        "GET", "clusters", "ipyparallel", "default", "tasks", params={"since": answer["cursor"]}
    )
    assert status == 200 and later["records"] == []

    status, answer = api("PUT", "clusters", "ipyparallel", "default", body={"workers": 1})
    assert status == 200 and answer["requested_workers"] == 1


def test_the_server_keeps_serving_while_the_core_works(server, jp_fetch, jp_asyncio_loop):
    """Core calls run in threads: a slow one does not hold up other requests."""
    from clusterhub.labextension.handlers import SETTINGS_KEY

    clusters = server.web_app.settings[SETTINGS_KEY]
    real = clusters.list_engines

    def slow_list():
        time.sleep(2)
        return real()

    clusters.list_engines = slow_list

    async def both():
        slow = asyncio.ensure_future(jp_fetch("clusterhub", "api", "clusters"))
        await asyncio.sleep(0.2)
        start = time.monotonic()
        await jp_fetch("api", "status")
        quick = time.monotonic() - start
        assert (await slow).code == 200
        return quick

    assert jp_asyncio_loop.run_until_complete(both()) < 1.0


def test_delete_stops_the_engine(space, api):
    status, answer = api("DELETE", "clusters", "ipyparallel", "default")
    assert status == 204 and answer is None
    assert ipp_entry(api)["state"] == "stopped"
    status, answer = api("GET", "clusters", "ipyparallel", "default", "tasks")
    assert status == 409 and "stopped" in answer["message"]
    status, answer = api("PATCH", "clusters", "ipyparallel", "default", body={"workers": 1})
    assert status == 409 and "not running" in answer["message"]
