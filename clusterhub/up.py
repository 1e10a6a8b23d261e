"""``clusterhub up``: the whole platform on this machine, in the foreground.

Everything is checked before anything starts (flags, ports, node, the proxy,
Java), so a mistake costs one clear line and leaves nothing half-started. The
hub and the Dask Gateway then run as children, each in its own session, and are
restarted when they exit unexpectedly (:mod:`clusterhub.supervise`); the hub
starts the proxy and the idle culler itself. On SIGINT/SIGTERM, and on
SIGHUP when its terminal closes (not under nohup), the hub is asked to stop (it
stops every user server, and each server stops its clusters and engines);
whatever still carries the platform's marker after that is stopped too.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import psutil
from cryptography.fernet import Fernet

from . import admission, gateway, kernel_sockets, procs, takeover
from .accounts import Account, closed_to_others
from .fences import platform_id, remove_platform_groups
from .fences import unavailable_reason as fence_unavailable_reason
from .ports import chosen_range, free_port, port_is_free, reserve
from .settings import GATEWAY_PREFIX, SETTINGS_ENV, PlatformSettings, default_data_dir
from .space import read_json, write_json_atomic
from .supervise import Supervised
from .usererror import UserError

WORKSHOP_CODE_ENV = "CLUSTERHUB_WORKSHOP_CODE"
MIN_CODE_LENGTH = 8
MAX_CODE_LENGTH = 128
HUB_START_TIMEOUT = 120
HUB_STOP_TIMEOUT = 120
# The unique memory one attendee holds with a notebook server, a kernel and a Dask cluster
# of two workers, all running (benchmarks/local_platform.py capacity, 30 attendees on the
# 2-core build machine).
ATTENDEE_BYTES = 300 * 2**20


@dataclass
class Secrets:
    workshop_code: str
    admin_password: str
    gateway_encrypt_key: str


def _say(message: str) -> None:
    try:
        print(message, flush=True)
    except OSError:
        # Whoever read our output is gone (a closed terminal or pipe). The platform must
        # still stop cleanly, so the rest goes nowhere rather than ending the stop halfway.
        sys.stdout = open(os.devnull, "w")  # for the rest of the process


def _stop_signals() -> list[signal.Signals]:
    """Ctrl-C, SIGTERM, and the terminal closing, unless started under nohup."""
    stop = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        stop.append(signal.SIGHUP)
    return stop


# -- checks ----------------------------------------------------------------------------------
def check_ip(ip: str) -> str:
    if ip in ("", "*"):
        return ""
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise UserError(
            f"--ip must be an IP address of this machine (e.g. 127.0.0.1 or 0.0.0.0), not {ip!r}"
        ) from None
    return ip


def check_workshop_code(code: str, source: str) -> str:
    if not MIN_CODE_LENGTH <= len(code) <= MAX_CODE_LENGTH or code != code.strip():
        raise UserError(
            f"{source} must be {MIN_CODE_LENGTH} to {MAX_CODE_LENGTH} characters without "
            f"leading or trailing spaces (got {len(code)} characters)"
        )
    return code


def check_config_file(path: str | None) -> str:
    if not path:
        return ""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise UserError(f"--config: no such file: {path}")
    try:
        with open(path) as f:
            compile(f.read(), path, "exec")
    except SyntaxError as exc:
        raise UserError(
            f"--config: {path} is not valid Python: line {exc.lineno}: {exc.msg}"
        ) from None
    except OSError as exc:
        raise UserError(f"--config: cannot read {path}: {exc.strerror}") from None
    return path


def check_tls(cert: str | None, key: str | None) -> tuple[str, str]:
    """Both files or neither; they must load as a certificate and its key."""
    if not cert and not key:
        return "", ""
    if not cert or not key:
        given, missing = ("--tls-cert", "--tls-key") if cert else ("--tls-key", "--tls-cert")
        raise UserError(f"{given} needs {missing} too (the certificate and its private key)")
    cert, key = os.path.abspath(cert), os.path.abspath(key)
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not os.path.isfile(path):
            raise UserError(f"{flag}: no such file: {path}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise UserError(
            f"--tls-cert/--tls-key: {cert} and {key} are not a PEM certificate and its "
            f"unencrypted private key ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise UserError(f"--tls-cert/--tls-key: cannot read them: {exc.strerror}") from None
    return cert, key


def cleartext_warning(ip: str, tls: bool) -> str | None:
    """One line when the public port is reachable from other machines without TLS."""
    if tls:
        return None
    if ip and ipaddress.ip_address(ip).is_loopback:
        return None
    where = f"on {ip}" if ip not in ("", "0.0.0.0", "::") else "on all interfaces"
    return (
        f"  warning:       listening {where} without TLS: the workshop code and every "
        "session cross the network in clear text; use --tls-cert and --tls-key"
    )


PROXY_COMMAND_ENV = "CLUSTERHUB_PROXY_COMMAND"
CHECKOUT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_proxy(checkout_dir: str = CHECKOUT_DIR) -> list[str]:
    """configurable-http-proxy: $CLUSTERHUB_PROXY_COMMAND, the checkout's node_modules, or PATH."""
    if not shutil.which("node"):
        raise UserError(
            "node is not installed: install Node.js 18 or newer "
            "(Debian/Ubuntu: apt-get install -y nodejs npm)"
        )
    chosen = os.environ.get(PROXY_COMMAND_ENV)
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise UserError(f"{PROXY_COMMAND_ENV}: {chosen} is not an executable file")
        return [chosen]
    candidates = [
        os.path.join(checkout_dir, "node_modules", ".bin", "configurable-http-proxy"),
        shutil.which("configurable-http-proxy") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return [candidate]
    raise UserError(
        "configurable-http-proxy is not installed: run `npm install` in the clusterhub "
        "checkout, or `npm install -g configurable-http-proxy`"
    )


def check_java() -> None:
    from .engines.local_spark import java_missing_reason

    reason = java_missing_reason()
    if reason:
        raise UserError(f"{reason} (the Spark profiles need it)")


def check_shared_install() -> None:
    """Per-user accounts run the platform's Python: every account must be able to."""
    places = {
        "the Python interpreter": os.path.realpath(sys.executable),
        "clusterhub": os.path.dirname(os.path.abspath(__file__)),
    }
    for what, path in places.items():
        blocked = closed_to_others(path)
        if blocked:
            raise UserError(
                f"attendees' accounts cannot reach {what} ({path}): {blocked} is closed to "
                "other users. Install clusterhub with a system Python outside /root "
                "(./bootstrap does), or run with --single-account"
            )


def check_data_dir(path: str, shared: bool = False) -> str:
    """The data dir, made if missing; ``shared``: attendees' accounts must reach into it."""
    path = os.path.abspath(os.path.expanduser(path))
    blocked = closed_to_others(os.path.dirname(path)) if shared else None
    if blocked:
        raise UserError(
            f"--data-dir: attendees' accounts cannot reach {path}: {blocked} is closed to "
            f"other users. Choose a directory outside it (default as root: {default_data_dir()})"
        )
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"--data-dir: cannot write to {path}: {exc.strerror}") from None
    return path


# -- secrets that survive a restart ----------------------------------------------------------
def load_secrets(data_dir: str, flag_code: str | None) -> tuple[Secrets, bool]:
    """The workshop code (flag, env, last run, else new), admin password and DB key.

    Returns the secrets and whether the workshop code was generated now.
    """
    path = os.path.join(data_dir, "secrets.json")
    stored = read_json(path, default={}) or {}
    generated = False
    if flag_code is not None:
        code = check_workshop_code(flag_code, "--workshop-code")
    elif os.environ.get(WORKSHOP_CODE_ENV):
        code = check_workshop_code(os.environ[WORKSHOP_CODE_ENV], WORKSHOP_CODE_ENV)
    elif stored.get("workshop_code"):
        code = stored["workshop_code"]
    else:
        # Short words are easy to read out to a room; 3 x 4 letters is still 57 bits.
        alphabet = "abcdefghjkmnpqrstuvwxyz"
        code = "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(3))
        generated = True
    result = Secrets(
        workshop_code=code,
        admin_password=stored.get("admin_password") or secrets.token_urlsafe(32),
        gateway_encrypt_key=stored.get("gateway_encrypt_key") or Fernet.generate_key().decode(),
    )
    write_json_atomic(path, result.__dict__)
    os.chmod(path, 0o600)
    return result, generated


# -- running ---------------------------------------------------------------------------------
# Only "is our own proxy up yet?": its certificate may name another host than the loopback
# address asked here, or be self-signed, and nothing is sent that needs it checked.
_LIVENESS_TLS = ssl.create_default_context()
_LIVENESS_TLS.check_hostname = False
_LIVENESS_TLS.verify_mode = ssl.CERT_NONE


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=_LIVENESS_TLS) as response:
            return response.status == 200
    except OSError:
        return False


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# Who may enter what in the data dir. The platform's own state (hub and gateway databases,
# the cookie secret, settings, logs) is the platform account's alone; every account may pass
# through data_dir, homes/ and spaces/ to reach its own entry (0711: no listing), and run the
# built environments.
DATA_DIR_MODES = {
    "": 0o711,
    "hub": 0o700,
    "gateway": 0o700,
    "logs": 0o700,
    "run": 0o700,
    "homes": 0o711,
    "spaces": 0o711,
    "environments": 0o755,
}


def secure_data_dir(settings: PlatformSettings) -> None:
    for sub, mode in DATA_DIR_MODES.items():
        path = settings.path(sub) if sub else settings.data_dir
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, mode)
    secrets_file = settings.path("secrets.json")
    if os.path.exists(secrets_file):
        os.chmod(secrets_file, 0o600)


class Platform:
    """The hub (with its proxy and idle culler) and the gateway, each supervised: restarted
    when it exits unexpectedly, while attendees' servers, kernels and clusters run on."""

    def __init__(self, settings: PlatformSettings):
        self.settings = settings
        self.log_path = settings.path("logs", "hub.log")
        self.gateway_log_path = settings.path("logs", "gateway.log")
        this_platform = platform_id(settings.data_dir)
        self.runtime_root = kernel_sockets.runtime_root(this_platform)
        # In this process, not the hub's: the queue outlives a restart of the hub.
        self.admission = admission.ServerThread(
            admission.socket_path(this_platform),
            settings.start_slots or admission.default_slots(),
        )
        self.hub = Supervised("hub", self._start_hub, before_restart=self._clear_dead_hub)
        self.gateway = Supervised(
            "gateway", self._start_gateway, before_restart=self._clear_dead_gateway
        )

    def start(self) -> None:
        s = self.settings
        for sub in ("hub", "gateway", "homes", "spaces", "logs", "run"):
            os.makedirs(s.path(sub), exist_ok=True)
        secure_data_dir(s)
        s.save(s.path("run", "settings.json"))
        self.admission.start()
        self.gateway.start()
        self.hub.start()

    def _environment(self) -> dict[str, str]:
        s = self.settings
        return {
            admission.SOCKET_ENV: self.admission.server.path,
            SETTINGS_ENV: s.path("run", "settings.json"),
            procs.PLATFORM_MARKER: s.data_dir,
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
        }

    def _start_hub(self) -> subprocess.Popen:
        config_file = os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "jupyterhub_config.py"
        )
        return _popen_logged(
            [os.path.join(os.path.dirname(sys.executable), "jupyterhub"), "-f", config_file],
            cwd=self.settings.path("hub"),
            env={**os.environ, **self._environment()},
            log_path=self.log_path,
        )

    def _start_gateway(self) -> subprocess.Popen:
        """The Dask Gateway, a hub service by URL and token but this process's child: a
        restart of the hub leaves it, and the clusters it tracks, alone."""
        s = self.settings
        # As clean as JupyterHub gives a managed service: what its processes inherit is
        # chosen (LocalSpaceBackend.inherited_environment), not whatever `up` had.
        env = {k: os.environ[k] for k in GATEWAY_INHERITED_ENV if k in os.environ}
        env.update(self._environment())
        env["JUPYTERHUB_API_TOKEN"] = s.gateway_api_token
        env["JUPYTERHUB_API_URL"] = f"http://127.0.0.1:{s.hub_port}/hub/api"
        return _popen_logged(
            gateway.server_command(),
            cwd=s.path("gateway"),
            env=env,
            log_path=self.gateway_log_path,
        )

    def _clear_dead_hub(self) -> None:
        """What a hub that died leaves and its successor would trip over: its proxy and its
        idle culler."""
        takeover.stop(
            takeover.leftovers(self.settings.data_dir, roles={"proxy", "culler"}),
            self.settings.data_dir,
        )

    def _clear_dead_gateway(self) -> None:
        """The proxy of a gateway that died, which holds the ports its successor binds."""
        takeover.stop(
            takeover.leftovers(self.settings.data_dir, roles={"gateway-proxy"}),
            self.settings.data_dir,
        )

    def wait_ready(self, stopping) -> None:
        s = self.settings
        steps = [
            ("hub and proxy", f"{s.local_url}hub/health", self.hub, self.log_path),
            ("Dask Gateway", f"{s.gateway_url}/api/health", self.gateway, self.gateway_log_path),
        ]
        deadline = time.monotonic() + HUB_START_TIMEOUT
        for name, url, child, log_path in steps:
            _say(f"  starting {name} ...")
            while not _healthy(url):
                if not child.running():
                    raise RuntimeError(
                        f"the {child.name} exited while starting (code "
                        f"{child.proc.returncode}); last lines of {log_path}:\n"
                        f"{_tail(log_path)}"
                    )
                if stopping():
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name} did not become ready in {HUB_START_TIMEOUT} s; "
                        f"see {log_path}:\n{_tail(log_path)}"
                    )
                time.sleep(0.2)
            _say(f"  {name}: ready")

    def supervise(self) -> str | None:
        """One round of supervision; returns why to give up, or None."""
        for child, log_path in ((self.gateway, self.gateway_log_path), (self.hub, self.log_path)):
            reason = child.check(_say)
            if reason:
                return f"{reason}; last lines of {log_path}:\n{_tail(log_path)}"
        return None

    def stop(self) -> None:
        _say("Stopping: user servers, clusters and engines, then the hub ...")
        # The hub first: stopping each server stops its clusters through the gateway.
        for child in (self.hub, self.gateway):
            child.restart_at = None
            proc = child.proc
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(HUB_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _say(f"  the {child.name} did not stop in time; stopping it by force")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        left = procs.sweep(procs.PLATFORM_MARKER, self.settings.data_dir)
        if left:
            _say(f"  stopped {left} leftover processes")
        self.admission.stop()
        # Kernel sockets of spaces that were not stopped one by one (a hub killed by force).
        kernel_sockets.remove_root(self.runtime_root)
        if self.settings.user_accounts:
            # Users' control groups, and anything still in them.
            left = remove_platform_groups(platform_id(self.settings.data_dir))
            if left:
                _say(f"  removed {left} leftover control groups")


# What the gateway inherits from `clusterhub up` (JupyterHub's env_keep, as for a service).
GATEWAY_INHERITED_ENV = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL")


def _popen_logged(cmd: list[str], cwd: str, env: dict, log_path: str) -> subprocess.Popen:
    """A child in a session of its own (a Ctrl-C in the terminal reaches `up` only, which
    then stops everything in order), its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def resolve_settings(args) -> tuple[PlatformSettings, bool]:
    """Check every flag and the machine; raise UserError before anything starts.

    Takes this data dir's lock (held until the process exits) and, if a previous `up`
    died leaving the platform's own processes running, stops those as the last step."""
    ip = check_ip(args.ip)
    if args.workshop_code is not None:
        check_workshop_code(args.workshop_code, "--workshop-code")
    elif os.environ.get(WORKSHOP_CODE_ENV):
        check_workshop_code(os.environ[WORKSHOP_CODE_ENV], WORKSHOP_CODE_ENV)
    config_file = check_config_file(args.config)
    tls_cert, tls_key = check_tls(getattr(args, "tls_cert", None), getattr(args, "tls_key", None))
    proxy = find_proxy()
    check_java()
    try:
        chosen_range()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    # The public port may be held by the proxy a previous `up` left running: taken over
    # (stopped) below, once this data dir's lock says no other `up` runs on it.
    left = takeover.leftovers(
        os.path.abspath(os.path.expanduser(args.data_dir or default_data_dir()))
    )
    if not port_is_free(ip, args.port) and args.port not in takeover.listening_ports(left):
        where = ip or "all interfaces"
        raise UserError(
            f"port {args.port} on {where} is in use: stop what uses it, or choose another "
            "with --port"
        )
    reserve(args.port)  # free now, the proxy's later: never one of the ports chosen below
    user_accounts = os.geteuid() == 0 and not getattr(args, "single_account", False)
    if user_accounts:
        check_shared_install()
    data_dir = check_data_dir(args.data_dir or default_data_dir(), shared=user_accounts)
    lock = takeover.PlatformLock(data_dir)
    try:
        lock.acquire()
    except takeover.InUse as exc:
        raise UserError(
            f"--data-dir {data_dir} is in use by a running platform ({exc}); stop it first "
            "or choose another data dir"
        ) from None
    _LOCKS.append(lock)
    found, generated = load_secrets(data_dir, args.workshop_code)
    expect = getattr(args, "expect", 0)
    if left:
        _say(
            f"clusterhub: a previous clusterhub up for {data_dir} stopped without stopping "
            f"its hub; taking over (attendees' servers, kernels and clusters are kept)"
        )
        takeover.stop(left, data_dir)
    ports = _internal_ports(data_dir)
    settings = PlatformSettings(
        data_dir=data_dir,
        workshop_code=found.workshop_code,
        admin_password=found.admin_password,
        gateway_encrypt_key=found.gateway_encrypt_key,
        gateway_api_token=secrets.token_hex(32),
        ip=ip,
        port=args.port,
        **ports,
        proxy_command=proxy,
        extra_config_file=config_file,
        tls_cert=tls_cert,
        tls_key=tls_key,
        user_accounts=user_accounts,
        account_prefix=getattr(args, "account_prefix", "ch-"),
        account_uid_min=getattr(args, "uid_range", (20000, 29999))[0],
        account_uid_max=getattr(args, "uid_range", (20000, 29999))[1],
        max_accounts=getattr(args, "max_accounts", 0),
        max_servers=getattr(args, "max_servers", 0),
        start_slots=getattr(args, "start_slots", 0),
        expect=expect,
    )
    return settings, generated


INTERNAL_PORTS = (
    "hub_port",
    "proxy_api_port",
    "gateway_api_port",
    "gateway_http_port",
    "gateway_tcp_port",
)
# This process's data dir lock, held until it exits.
_LOCKS: list[takeover.PlatformLock] = []


def _internal_ports(data_dir: str) -> dict[str, int]:
    """The previous run's internal ports where they are free, else new ones: servers,
    kernels and clusters that outlived a previous `up` reach the hub and the gateway at the
    addresses they were given."""
    try:
        previous = read_json(os.path.join(data_dir, "run", "settings.json")) or {}
    except (OSError, ValueError):
        previous = {}
    ports = {}
    for name in INTERNAL_PORTS:
        port = previous.get(name)
        if not isinstance(port, int) or not 0 < port < 65536:
            ports[name] = free_port()
        elif port_is_free("127.0.0.1", port):
            reserve(port)
            ports[name] = port
        else:
            ports[name] = free_port()
            _say(
                f"clusterhub: warning: the previous run's {name} {port} is taken by another "
                f"program, so {ports[name]} is used: what outlived that run (servers, kernels, "
                "clusters) cannot reach the platform there any more"
            )
    return ports


def describe_isolation(settings: PlatformSettings) -> list[str]:
    """One line on who attendees run as, one more if they cannot be fenced."""
    if not settings.user_accounts:
        account = Account.current().name
        return [
            f"  attendees:     every attendee runs as {account} (single account: no boundary "
            "between them; run as root for one account each)"
        ]
    lines = [
        f"  attendees:     one system account each ({settings.account_prefix}<name>, uids "
        f"{settings.account_uid_min}-{settings.account_uid_max})"
    ]
    reason = fence_unavailable_reason()
    if reason:
        lines.append(f"  fences:        none, attendees run unfenced: {reason}")
    return lines


def describe_expected(expect: int, available_bytes: int) -> list[str]:
    """What a room of ``expect`` attendees needs of the machine's memory, and whether it fits.

    Every Dask start is already warm (schedulers and workers fork from a parent that
    imported Dask, see clusterhub.forkserver): what a room needs ahead is memory."""
    need = expect * ATTENDEE_BYTES
    lines = [
        f"  expected:      {expect} attendees need about {need / 2**30:.1f} GiB "
        f"({ATTENDEE_BYTES >> 20} MB each with a Dask cluster of 2 workers); "
        f"{available_bytes / 2**30:.1f} GiB available"
    ]
    if need > available_bytes:
        fit = available_bytes // ATTENDEE_BYTES
        lines.append(
            f"  warning:       about {fit} of the {expect} fit; the rest would make the machine "
            "swap or end processes: add memory, or spread the room over more machines"
        )
    return lines


def run_up(args) -> int:
    _say("clusterhub: checking this machine ...")
    settings, generated = resolve_settings(args)
    stop_requested = []

    def request_stop(signum, _frame):
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in _stop_signals()}
    platform = Platform(settings)
    code = 0
    try:
        _say(f"clusterhub: starting in {settings.data_dir}")
        platform.start()
        platform.wait_ready(lambda: bool(stop_requested))
        if not stop_requested:
            _say("")
            _say(f"clusterhub is ready at {settings.local_url}")
            if settings.ip in ("", "0.0.0.0", "::"):
                _say(f"  (listening on all interfaces, port {settings.port})")
            warning = cleartext_warning(settings.ip, bool(settings.tls_cert))
            if warning:
                _say(warning)
            note = " (generated; keep it for the next run)" if generated else ""
            _say(f"  workshop code: {settings.workshop_code}{note}")
            _say(f"  admin login:   {settings.admin_users[0]} / {settings.admin_password}")
            _say(f"  Dask Gateway:  {settings.local_url.rstrip('/')}{GATEWAY_PREFIX}/")
            for line in describe_isolation(settings):
                _say(line)
            if settings.expect:
                for line in describe_expected(settings.expect, psutil.virtual_memory().available):
                    _say(line)
            _say("Press Ctrl-C to stop everything.")
        while not stop_requested:
            reason = platform.supervise()
            if reason:
                _say(f"clusterhub: giving up: {reason}")
                code = 1
                break
            time.sleep(0.2)
    except RuntimeError as exc:
        _say(f"clusterhub up: error: {exc}")
        code = 1
    finally:
        platform.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 0:
        _say("clusterhub: stopped.")
    return code
