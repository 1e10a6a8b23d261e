"""Dask dashboards under the hub's address: for their owner only, and sandboxed.

The whole platform runs (`clusterhub up`). alice creates a Dask Gateway cluster from a
kernel and, as a stranger might, adds a handler to her own scheduler that serves a page of
her choosing under her dashboard: its script tries to read the visitor's cookies and to
write into bob's home through bob's server. Then:

- anonymous visitors are sent to the hub's login, bob gets 403, alice (and an admin) get
  the dashboard, with ``Content-Security-Policy: sandbox`` and ``nosniff``;
- in real Chromium the dashboard works for alice, in a tab and in an iframe;
- bob, logged in, opens alice's page through a link she sent him (with its view key): the
  script runs, but sandboxed, with no origin: no cookie of bob's, and no write to his home.
  The control: the same write, made by bob himself, works.
- bob's kernel, on the same machine, tries every port alice's scheduler and worker listen
  on: their dashboards refuse him (the gate's forwarded requests are the control).
"""

from __future__ import annotations

import json
import urllib.parse

import pytest
from chromium import chromium
from hubclient import BrowserUser, running_platform, space_processes, started_user

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SLOW = 120_000  # ms: a dashboard's first load shares two cores with the platform

# alice's own page, served by her scheduler (she may add handlers to it from her kernel).
EVIL_PAGE = """<!doctype html><html><body><script>
const out = {};
try { out.cookie = document.cookie; } catch (e) { out.cookie = "blocked: " + e.name; }
try { localStorage.setItem("x", "1"); out.storage = "usable"; }
catch (e) { out.storage = "blocked: " + e.name; }
const body = JSON.stringify({type: "file", format: "text", content: "owned by alice"});
fetch("/user/bob/api/contents/pwned.txt", {
  method: "PUT", credentials: "include", body: body,
  headers: {"Content-Type": "application/json"},
}).then(r => "status " + r.status, e => "failed: " + e.name).then(write => {
  out.write = write;
  return fetch("/hub/api/user", {credentials: "include"})
    .then(r => "status " + r.status, e => "failed: " + e.name);
}).then(who => {
  out.hub_user = who;
  document.body.setAttribute("data-result", JSON.stringify(out));
});
</script></body></html>"""

CREATE_CLUSTER = f"""
import json
from dask_gateway import Gateway
from tornado.web import RequestHandler

gateway = Gateway()
cluster = gateway.new_cluster()
cluster.scale(1)
client = cluster.get_client()
client.wait_for_workers(1, timeout=120)
PAGE = {EVIL_PAGE!r}

class Mine(RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/html")
        self.write(PAGE)

def add_my_page(dask_scheduler):
    dask_scheduler.http_application.add_handlers(r".*", [(r"/mine", Mine)])

client.run_on_scheduler(add_my_page)
print("CLUSTER=" + json.dumps([cluster.name, cluster.dashboard_link]))
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with running_platform(str(tmp_path_factory.mktemp("platform"))) as running:
        yield running


@pytest.fixture(scope="module")
def alice(platform):
    return started_user(platform, "alice", profile="dask")


@pytest.fixture(scope="module")
def bob(platform):
    return started_user(platform, "bob", profile="dask")


@pytest.fixture(scope="module")
def cluster(alice):
    """(name, dashboard link) of alice's cluster, with her page added to its scheduler."""
    kernel = alice.kernel()
    try:
        out = kernel.execute(CREATE_CLUSTER, timeout=300)
        line = next(x for x in out.splitlines() if x.startswith("CLUSTER="))
        name, link = json.loads(line.removeprefix("CLUSTER="))
        yield name, link
    finally:
        kernel.close()


def public(platform, link: str) -> str:
    """The dashboard link as a browser outside the platform opens it (host of the hub)."""
    path = urllib.parse.urlsplit(link).path
    return platform.url + path


def test_a_visitor_with_no_login_is_sent_to_the_hubs_login(platform, cluster):
    import requests

    _, link = cluster
    first = requests.get(public(platform, link), allow_redirects=False, timeout=30)
    assert first.status_code == 302
    assert first.headers["Location"].startswith("/hub/api/oauth2/authorize?")
    assert "sandbox" in first.headers["Content-Security-Policy"]
    landed = requests.get(public(platform, link), timeout=30)
    assert urllib.parse.urlsplit(landed.url).path == "/hub/login"
    assert 'name="password"' in landed.text
    # Knowing the name is not enough to guess the view key either.
    guess = public(platform, link).replace("/status", "/~" + "A" * 43 + "/status")
    assert requests.get(guess, timeout=30, allow_redirects=False).status_code == 403


def test_another_user_is_refused_and_the_owner_gets_a_sandboxed_dashboard(
    platform, alice, bob, cluster
):
    name, link = cluster
    refused = bob.session.get(public(platform, link), timeout=60)
    assert refused.status_code == 403
    assert f"bob may not see the dashboard of {name}" in refused.text
    assert "~" not in refused.url, "bob is never handed the view key"
    # The control: the owner, through the same link.
    shown = alice.session.get(public(platform, link), timeout=60)
    assert shown.status_code == 200, shown.text[:500]
    assert f"/clusters/{name}/~" in shown.url
    assert "bokeh" in shown.text.lower()
    assert shown.headers["Content-Security-Policy"].startswith("sandbox allow-scripts")
    assert "allow-same-origin" not in shown.headers["Content-Security-Policy"]
    assert shown.headers["X-Content-Type-Options"] == "nosniff"
    # Whatever the scheduler serves: alice's own page gets the same headers.
    mine = alice.session.get(shown.url.replace("/status", "/mine"), timeout=60)
    assert mine.status_code == 200 and "data-result" in mine.text
    assert mine.headers["Content-Security-Policy"].startswith("sandbox allow-scripts")
    # An admin may look too.
    admin = BrowserUser(platform, "admin", password=platform.admin_password)
    admin.login().raise_for_status()
    assert admin.session.get(public(platform, link), timeout=60).status_code == 200


def test_the_scheduler_never_sees_the_visitors_cookies(platform, alice, cluster):
    _, link = cluster
    page = alice.session.get(public(platform, link), timeout=60)
    assert page.status_code == 200
    # Bokeh copies the request's cookies into the page it serves: none may reach it.
    for cookie in alice.session.cookies:
        assert cookie.value not in page.text, f"the {cookie.name} cookie reached the page"


def login_in_browser(page, platform, user: BrowserUser) -> None:
    page.goto(f"{platform.url}/hub/login")
    page.fill("input[name=username]", user.name)
    page.fill("input[name=password]", user.password)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(lambda url: "/hub/login" not in url)


def test_the_dashboard_works_for_its_owner_in_a_tab_and_in_an_iframe(
    platform, alice, cluster, tmp_path
):
    _, link = cluster
    with chromium(tmp_path / "home") as browser:
        page = browser.new_context().new_page()
        page.set_default_timeout(SLOW)
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        login_in_browser(page, platform, alice)
        page.goto(public(platform, link))
        assert "/~" in page.url
        # Bokeh draws on canvases (in shadow roots, which locators pierce) once its
        # WebSocket session is up.
        try:
            page.locator("canvas").first.wait_for(state="attached")
        except Exception:
            raise AssertionError("no plot drew; its console:\n" + "\n".join(console)) from None
        assert any("Websocket connection 0 is now open" in line for line in console)
        # In an iframe of a hub page (the same origin): it loads and draws too.
        page.goto(f"{platform.url}/hub/home")
        page.evaluate(
            """link => { const f = document.createElement("iframe");
            f.id = "dash"; f.src = link; f.style.width = "1000px"; f.style.height = "700px";
            document.body.appendChild(f); }""",
            public(platform, link),
        )
        page.frame_locator("#dash").locator("canvas").first.wait_for(state="attached")


def test_alices_page_cannot_act_as_bob_who_opens_it(platform, alice, bob, cluster, tmp_path):
    _, link = cluster
    # alice opens her dashboard, and sends bob the link to her page under it (view key and
    # all), which is all a stranger needs to get bob to open it.
    shown = alice.session.get(public(platform, link), timeout=60)
    assert shown.status_code == 200, shown.text[:300]
    lure = shown.url.replace("/status", "/mine")
    with chromium(tmp_path / "home") as browser:
        page = browser.new_context().new_page()
        page.set_default_timeout(SLOW)
        login_in_browser(page, platform, bob)
        page.goto(lure)
        page.wait_for_selector("body[data-result]", state="attached")
        result = json.loads(page.get_attribute("body", "data-result"))
    assert result["cookie"] == "blocked: SecurityError", result
    assert result["storage"] == "blocked: SecurityError", result
    assert not result["write"].startswith("status 2"), result
    assert not result["hub_user"].startswith("status 2"), result
    assert bob.server_api("GET", "api/contents/pwned.txt").status_code == 404
    # The control: bob himself can write that file through his own server.
    made = bob.server_api(
        "PUT",
        "api/contents/pwned.txt",
        json={"type": "file", "format": "text", "content": "mine"},
    )
    assert made.status_code == 201, made.text
    bob.server_api("DELETE", "api/contents/pwned.txt").raise_for_status()


# From bob's kernel: GET /status on each of these loopback ports, as a stranger who found
# them would; what each answered.
KNOCK = """
import json, urllib.error, urllib.request
seen = {{}}
for port in {ports!r}:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{{port}}/status", timeout=10) as r:
            seen[port] = [r.status, r.read(200).decode(errors="replace")]
    except urllib.error.HTTPError as e:
        seen[port] = [e.code, e.read(200).decode(errors="replace")]
    except Exception as e:  # the TLS comm ports do not speak plain HTTP
        seen[port] = [0, type(e).__name__]
print("SEEN=" + json.dumps(seen))
"""


def test_another_account_cannot_open_the_dashboards_by_their_ports(platform, alice, bob, cluster):
    import psutil

    _, link = cluster
    ports = set()
    for proc in space_processes(platform, "alice"):
        try:
            if "dask-gateway" not in proc.cwd():
                continue
            listening = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        ports |= {c.laddr.port for c in listening if c.status == psutil.CONN_LISTEN}
    assert len(ports) >= 4, ports  # scheduler: comm, dashboard, gateway API; worker: comm...
    kernel = bob.kernel()
    try:
        out = kernel.execute(KNOCK.format(ports=sorted(ports)), timeout=120)
    finally:
        kernel.close()
    seen = json.loads(next(x for x in out.splitlines() if x.startswith("SEEN="))[5:])
    assert not [p for p, (status, _) in seen.items() if status == 200], seen
    refused = [
        p for p, (status, text) in seen.items() if status == 403 and "through the hub" in text
    ]
    assert len(refused) >= 2, f"the scheduler's and the worker's dashboards: {seen}"
    # The control: through the hub, alice's dashboard still answers her (the gate's key).
    assert alice.session.get(public(platform, link), timeout=60).status_code == 200
