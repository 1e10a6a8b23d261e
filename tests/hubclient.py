"""Driving a running platform over HTTP the way a browser does.

`RunningPlatform` runs `clusterhub up` as a real subprocess on free ports;
`BrowserUser` logs in through the login form, submits the spawn form, follows
the OAuth redirects into the user's server and runs code in a kernel over the
Jupyter kernel websocket.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import psutil
import requests
import websocket

from clusterhub.procs import find_marked

READY_LINE = "clusterhub is ready at "


class PlatformError(RuntimeError):
    pass


def free_port() -> int:
    # Outside the ephemeral range: nothing else takes it before its component binds it.
    from clusterhub.ports import free_port as chosen_port

    return chosen_port()


def marked_processes(marker: str, value: str) -> list[psutil.Process]:
    # A space's marker is its directory; processes working in it belong to it too.
    return find_marked(marker, value, cwd_under=value if marker == "CLUSTERHUB_SPACE" else None)


def space_dir(platform: RunningPlatform, name: str) -> str:
    """Where a platform keeps user ``name``'s space (state, engines' files)."""
    from clusterhub.space import safe_name

    return os.path.join(platform.data_dir, "spaces", safe_name(name))


def space_processes(platform: RunningPlatform, name: str) -> list[psutil.Process]:
    """Every process of user ``name``'s space: server, kernels, engines, clusters."""
    return marked_processes("CLUSTERHUB_SPACE", space_dir(platform, name))


def ipp_engines(platform: RunningPlatform, name: str) -> list[psutil.Process]:
    """IPyParallel engines of ``name`` (an engine's own helper child is not an engine)."""
    found = [
        p for p in space_processes(platform, name) if "ipyparallel.engine" in " ".join(p.cmdline())
    ]
    pids = {p.pid for p in found}
    return [p for p in found if p.ppid() not in pids]


def _hangup_as_from_a_terminal() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


class RunningPlatform:
    """`clusterhub up` in a subprocess, with its own HOME and TMPDIR under ``root``."""

    def __init__(
        self,
        root: str,
        workshop_code: str = "open-sesame-2026",
        extra_args=(),
        local_accounts: bool = True,
    ):
        self.root = root
        # As root, `clusterhub up` gives every attendee an account (local mode only).
        self.user_accounts = (
            local_accounts and os.geteuid() == 0 and "--single-account" not in extra_args
        )
        if self.user_accounts:
            # Attendees' accounts must pass through to their homes: pytest's own temp dirs
            # are closed to other users, so the data dir is a fresh one they can traverse,
            # and the accounts get a prefix of this platform alone (both removed after).
            self.data_dir = tempfile.mkdtemp(prefix="clusterhub-data-", dir="/tmp")
            os.chmod(self.data_dir, 0o711)
            self.account_prefix = f"t{secrets.token_hex(3)}-"
            extra_args = ["--account-prefix", self.account_prefix, *extra_args]
        else:
            self.data_dir = os.path.join(root, "data")
            self.account_prefix = ""
        self.workshop_code = workshop_code
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # With --tls-cert: the CA file clients trust (see use_tls).
        self.ca_file: str | None = None
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        self.admin_password = ""
        self.pass_workshop_code = True

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        home = os.path.join(self.root, "home")
        tmp = os.path.join(self.root, "tmp")
        os.makedirs(home, exist_ok=True)
        os.makedirs(tmp, exist_ok=True)
        env.update(HOME=home, TMPDIR=tmp, PYTHONUNBUFFERED="1")
        env.pop("CLUSTERHUB_WORKSHOP_CODE", None)
        env.pop("JUPYTERHUB_API_TOKEN", None)
        return env

    def start(self, timeout: float = 120, drain: bool = True) -> RunningPlatform:
        """Start `clusterhub up` and wait until it is ready. With ``drain=False`` nothing
        reads its output after that: the caller does, or closes ``proc.stdout``."""
        cmd = [
            sys.executable,
            "-m",
            "clusterhub.cli",
            "up",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            self.data_dir,
            *(["--workshop-code", self.workshop_code] if self.pass_workshop_code else []),
            *self.extra_args,
        ]
        self.output = []
        if hasattr(self, "_admin_token"):
            del self._admin_token  # tokens are kept, but log in anew like a returning admin
        self.proc = subprocess.Popen(
            cmd,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            # As from a terminal, whatever started the tests: `clusterhub up` leaves SIGHUP
            # alone when it inherits it ignored (nohup), and CI runs are often started so.
            preexec_fn=_hangup_as_from_a_terminal,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = re.search(r"admin login:\s+\S+ / (\S+)", line)
            if match:
                self.admin_password = match.group(1)
            if "Press Ctrl-C" in line:
                if drain:
                    # Keep reading what it prints: a full pipe would block its writes (the
                    # start queue logs from a thread of `clusterhub up`) and stall it.
                    self._drain = threading.Thread(target=self._read_rest, daemon=True)
                    self._drain.start()
                return self
        self.stop()
        raise PlatformError("clusterhub up did not become ready:\n" + "".join(self.output))

    def _read_rest(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self, timeout: float = 150) -> int:
        """SIGTERM `clusterhub up` and wait; returns its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        drain = getattr(self, "_drain", None)
        try:
            if drain is not None:
                self.proc.wait(timeout=timeout)
                drain.join(10)
            else:
                rest, _ = self.proc.communicate(timeout=timeout)
                self.output.append(rest or "")
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        self._drain = None
        return code

    def remove_accounts_and_data(self) -> None:
        """Delete the attendees' accounts this platform made and its shared data dir."""
        if not self.user_accounts:
            return
        from clusterhub.accounts import AccountPolicy, accounts_made

        for name in accounts_made(AccountPolicy(prefix=self.account_prefix)):
            subprocess.run(["userdel", name], capture_output=True, check=False)
            subprocess.run(["groupdel", name], capture_output=True, check=False)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def tear_down(self) -> None:
        """Stop it, remove its accounts and data dir; fail if any of its processes were left."""
        self.stop()
        leftovers = self.kill_leftovers()
        # What `clusterhub up` removes when it stops, should a test have killed it instead
        # (its start queue's socket and the kernels' sockets).
        from clusterhub import kernel_sockets
        from clusterhub.fences import platform_id

        kernel_sockets.remove_root(kernel_sockets.runtime_root(platform_id(self.data_dir)))
        self.remove_accounts_and_data()
        assert not leftovers, f"processes left behind: {leftovers}"

    def log_tails(self, lines: int = 40) -> str:
        """The last lines of the hub's, the gateway's and every live cluster process's log:
        what a failing test's report shows (a cluster's own logs go with it when it stops)."""
        import glob

        paths = [os.path.join(self.data_dir, "logs", n) for n in ("hub.log", "gateway.log")]
        paths += sorted(glob.glob(os.path.join(self.data_dir, "*", "*", "dask-gateway", "*",
                                               "logs", "*.log")))  # fmt: skip
        parts = []
        for path in paths:
            try:
                with open(path, errors="replace") as f:
                    tail = f.readlines()[-lines:]
            except OSError:
                continue
            text = "".join(line[:300] + ("\n" if len(line) > 300 else "") for line in tail)
            parts.append(f"--- {os.path.relpath(path, self.data_dir)}\n{text}")
        return "\n".join(parts)

    def kill_leftovers(self) -> list[str]:
        """Kill anything still marked as ours; returns what was found (should be nothing)."""
        found = marked_processes("CLUSTERHUB_PLATFORM", self.data_dir)
        described = []
        for proc in found:
            try:
                described.append(" ".join(proc.cmdline())[:200])
                proc.kill()
            except psutil.Error:
                pass
        return described

    def use_tls(self, ca_file: str) -> None:
        """Talk HTTPS to it from now on, trusting ``ca_file``."""
        self.url = self.url.replace("http://", "https://")
        self.ca_file = ca_file

    def admin_api(self, method: str, path: str, **kwargs) -> requests.Response:
        """Call the hub's REST API as the admin, with a token made through the login form."""
        if not hasattr(self, "_admin_token"):
            admin = BrowserUser(self, "admin", password=self.admin_password)
            admin.login()
            xsrf = admin.xsrf("/hub/")
            response = admin.session.post(
                f"{self.url}/hub/api/users/admin/tokens",
                json={"note": "tests", "expires_in": 3600},
                headers={"X-XSRFToken": xsrf},
            )
            response.raise_for_status()
            self._admin_token = response.json()["token"]
        headers = {"Authorization": f"token {self._admin_token}"}
        if self.ca_file:
            kwargs.setdefault("verify", self.ca_file)
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, **kwargs)


def wait_until_healthy(proc: subprocess.Popen, url: str, timeout: float) -> bool:
    """Poll ``url`` until it answers; False if ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            if proc.poll() is not None:
                return False
            time.sleep(0.2)
    return False


@contextlib.contextmanager
def running_platform(root: str, **options) -> Iterator[RunningPlatform]:
    """A started platform under ``root``; stopped afterwards, and nothing may be left running."""
    running = RunningPlatform(root, **options)
    try:
        running.start()
        yield running
    except BaseException:
        # A test that runs its platform in a `with` block fails before the report is made,
        # and the logs go with the data dir: say their last lines now (pytest shows them).
        print(running.log_tails(), file=sys.stderr)
        raise
    finally:
        running.tear_down()


class BrowserUser:
    def __init__(self, platform: RunningPlatform, name: str, password: str | None = None):
        self.platform = platform
        self.name = name
        self.password = platform.workshop_code if password is None else password
        self.session = requests.Session()
        if platform.ca_file:
            # (with trust_env, REQUESTS_CA_BUNDLE would win over the session's own CA file)
            self.session.trust_env = False
            self.session.verify = platform.ca_file
        self.base = platform.url

    # -- cookies ------------------------------------------------------------------------------
    def xsrf(self, path_prefix: str) -> str:
        """The `_xsrf` cookie for a path: the hub's and the user server's both exist."""
        best = None
        for cookie in self.session.cookies:
            if cookie.name == "_xsrf" and path_prefix.startswith(cookie.path or "/"):
                if best is None or len(cookie.path) > len(best.path):
                    best = cookie
        if best is None:
            raise PlatformError(f"no _xsrf cookie for {path_prefix}")
        return best.value

    # -- hub pages ----------------------------------------------------------------------------
    def login(self) -> requests.Response:
        self.session.get(f"{self.base}/hub/login").raise_for_status()
        return self.session.post(
            f"{self.base}/hub/login",
            data={"username": self.name, "password": self.password, "_xsrf": self.xsrf("/hub/")},
            allow_redirects=True,
        )

    def spawn(self, **options) -> requests.Response:
        """Submit the spawn form (after login the hub shows it) with the given options."""
        form = {"_xsrf": self.xsrf("/hub/"), **{k: str(v) for k, v in options.items()}}
        return self.session.post(f"{self.base}/hub/spawn", data=form, allow_redirects=False)

    def server_model(self) -> dict:
        response = self.platform.admin_api("GET", f"/users/{self.name}")
        response.raise_for_status()
        return response.json()

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until the server answers, then open it once so OAuth sets our cookies."""
        deadline = time.monotonic() + timeout
        while not self.server_model().get("servers", {}).get("", {}).get("ready"):
            if time.monotonic() > deadline:
                raise PlatformError(f"{self.name}'s server was not ready in {timeout} s")
            time.sleep(0.3)
        # API paths refuse a request without the server's cookie; a page redirects through
        # the hub's OAuth and sets it, as when a browser lands on JupyterLab.
        self.session.get(f"{self.base}/user/{self.name}/lab").raise_for_status()
        self.session.get(f"{self.base}/user/{self.name}/api/status").raise_for_status()

    def stop_server(self, timeout: float = 120) -> None:
        response = self.platform.admin_api("DELETE", f"/users/{self.name}/server")
        if response.status_code not in (202, 204):
            raise PlatformError(f"stopping {self.name}: {response.status_code} {response.text}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.server_model().get("servers", {}).get(""):
                return
            time.sleep(0.3)
        raise PlatformError(f"{self.name}'s server did not stop in {timeout} s")

    # -- the user's server --------------------------------------------------------------------
    def server_api(self, method: str, path: str, **kwargs) -> requests.Response:
        prefix = f"/user/{self.name}/"
        headers = kwargs.pop("headers", {})
        headers["X-XSRFToken"] = self.xsrf(prefix)
        return self.session.request(
            method, f"{self.base}{prefix}{path.lstrip('/')}", headers=headers, **kwargs
        )

    def notebook_code(self, path: str) -> list[str]:
        """The code cells of a notebook in the user's home, as the server has them."""
        model = self.server_api("GET", f"api/contents/{path}?content=1")
        model.raise_for_status()
        cells = [c for c in model.json()["content"]["cells"] if c["cell_type"] == "code"]
        return [
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells
        ]

    def run_cells(
        self, kernel: Kernel, path: str, cells: list[str], timeout: float = 300
    ) -> list[str]:
        """Run ``cells`` (of notebook ``path``) in order in ``kernel``; returns each output.
        A failing cell raises, naming the notebook and the cell."""
        outputs = []
        for number, code in enumerate(cells, 1):
            try:
                outputs.append(kernel.execute(code, timeout=timeout))
            except KernelError as exc:
                raise KernelError(f"{path}, code cell {number} failed:\n{exc}") from None
        return outputs

    def run_notebook(self, path: str, timeout: float = 300) -> list[str]:
        """Run every code cell of a notebook in the user's home, in order, in a new kernel,
        as "Run All" in JupyterLab does; returns each cell's output. A failing cell raises."""
        cells = self.notebook_code(path)
        kernel = self.kernel()
        try:
            return self.run_cells(kernel, path, cells, timeout)
        finally:
            kernel.close()

    def kernel(self) -> Kernel:
        response = self.server_api("POST", "api/kernels", json={"name": "python3"})
        response.raise_for_status()
        return Kernel(self, response.json()["id"])


def started_user(platform: RunningPlatform, name: str, timeout: float = 120, **form) -> BrowserUser:
    """``name`` logged in through the form, with a server spawned from ``form`` (the spawn
    form's fields) and ready."""
    user = BrowserUser(platform, name)
    user.login().raise_for_status()
    response = user.spawn(**form)
    assert response.status_code == 302, response.text[:2000]
    user.wait_ready(timeout=timeout)
    return user


class KernelError(RuntimeError):
    pass


class Kernel:
    """A kernel of the user's server, driven over its websocket as JupyterLab does."""

    def __init__(self, user: BrowserUser, kernel_id: str):
        self.user = user
        self.id = kernel_id
        self.ws = self._connect()
        self.session_id = uuid.uuid4().hex
        # jupyter-server closes a kernel's websocket whose client has not answered its pings
        # for 90 s; a browser answers them on its own, so this client does too while idle.
        self._using = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._answer_pings, daemon=True).start()

    def _answer_pings(self) -> None:
        while not self._closed.wait(5):
            with self._using:
                if self._closed.is_set():
                    return
                self.ws.settimeout(0.05)
                try:
                    while True:
                        self.ws.recv()  # replies to pings; idle output of no request is dropped
                except websocket.WebSocketTimeoutException:
                    pass
                except (websocket.WebSocketException, OSError):
                    return  # closed: the next execute reports it

    def _connect(self) -> websocket.WebSocket:
        user = self.user
        base = urlparse(user.base)
        scheme = "wss" if base.scheme == "https" else "ws"
        url = f"{scheme}://{base.netloc}/user/{user.name}/api/kernels/{self.id}/channels"
        cookies = "; ".join(f"{c.name}={c.value}" for c in user.session.cookies)
        verify = user.session.verify
        return websocket.create_connection(
            url,
            cookie=cookies,
            header=[f"X-XSRFToken: {user.xsrf(f'/user/{user.name}/')}"],
            origin=user.base,
            timeout=300,
            sslopt={"ca_certs": verify} if isinstance(verify, str) else None,
        )

    def reconnect(self) -> None:
        """A new websocket to the same kernel, as JupyterLab opens when its connection
        dropped (e.g. the proxy in between was restarted)."""
        with self._using:
            try:
                self.ws.close()
            except Exception:
                pass  # already broken
            self.ws = self._connect()

    def execute(self, code: str, timeout: float = 300) -> str:
        """Run ``code``; return its stdout (not stderr, where JVMs log) and the repr of its result.

        An exception in the kernel raises KernelError."""
        with self._using:
            return self._execute(code, timeout)

    def _execute(self, code: str, timeout: float) -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": self.user.name,
                        "session": self.session_id,
                        "msg_type": "execute_request",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                    },
                    "channel": "shell",
                }
            )
        )
        output: list[str] = []
        error = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(1, deadline - time.monotonic()))
            # Control frames too: the server pings every 30 s, and a recv() that answered
            # pings on its own would never time out while a kernel stays silent.
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                continue
            msg = json.loads(data)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                output.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                output.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                error = f"{content['ename']}: {content['evalue']}\n" + "\n".join(
                    content.get("traceback", [])
                )
            elif kind == "status" and content["execution_state"] == "idle":
                if error:
                    raise KernelError(error)
                return "".join(output)
        raise KernelError(f"no answer in {timeout} s to:\n{code}")

    def close(self) -> None:
        self._closed.set()
        try:
            with self._using:
                self.ws.close()
        finally:
            self.user.server_api("DELETE", f"api/kernels/{self.id}")
