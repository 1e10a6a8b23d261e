"""Docker for the image tests: a private Docker daemon, a Debian base image made with
debootstrap, and the clusterhub images built by ``images/build.sh``.

Nothing here touches the machine's own Docker (if any): the daemon has its own data root,
exec root, socket and pid file, no bridge network and no iptables rules, and containers are
run with ``--network host`` so test traffic stays on loopback. :meth:`DockerDaemon.stop`
removes every container, stops the daemon by its pid and deletes its directories. The test
run's daemon keeps its data root (the images, and so Docker's build cache) in the test cache
for the next run (see :func:`kept_data_root`); any other daemon's images go with it.

Needs root, ``dockerd`` (Debian: ``docker.io``) and ``debootstrap``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import testcache

REPO = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO / "images"
# Images the tests use (and build.sh builds), tagged <PREFIX>/<name>:<TAG>.
PREFIX = "clusterhub"
TAG = "test"
NAMES = ("hub", "notebook", "cluster")
BASE_IMAGE = "clusterhub-test/debian:bookworm"
# A debootstrap root file system is rebuilt when the cached one is older than this: Debian
# stable changes rarely, and on a fresh machine it costs ~35 s.
BASE_MAX_AGE_S = 7 * 24 * 3600


def cache_dir() -> Path:
    """Files kept between test runs (see testcache)."""
    return testcache.cache_dir("images")


def missing_requirements() -> str | None:
    """Why the image tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "the image tests start their own dockerd and run debootstrap: run them as root"
    for tool, package in (("dockerd", "docker.io"), ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install -y {package})"
    if shutil.which("npm") is None:
        return "npm is not installed (images/build.sh installs the HTTP proxy with it)"
    return None


def docker_cli() -> str:
    """The docker client shipped with dockerd: another client on PATH (e.g. a newer one that
    builds through buildx) may not speak to this daemon the way build.sh expects."""
    dockerd = shutil.which("dockerd")
    assert dockerd, "dockerd is not installed"
    beside = Path(dockerd).resolve().parent / "docker"
    for candidate in (beside, Path("/usr/bin/docker")):
        if candidate.exists():
            return str(candidate)
    return shutil.which("docker") or "docker"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processes_under(path: str) -> list[int]:
    """Pids whose command line names ``path`` (the daemon's containerd and shims)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if path.encode() in cmdline:
            pids.append(int(entry))
    return pids


def _unmount_under(path: str) -> None:
    """Unmount whatever is still mounted below ``path`` (deepest first), so it can be deleted."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(path + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


class DockerDaemon:
    """A dockerd of our own under ``root`` (data, exec root, socket, pid file, log)."""

    def __init__(self, root: Path, data_root: Path | None = None):
        self.root = root
        # A data root outside ``root`` outlives the daemon (see kept_data_root).
        self.data_root = data_root or root / "data"
        self.socket = root / "docker.sock"
        self.pidfile = root / "docker.pid"
        self.log_path = root / "dockerd.log"
        self.cli = docker_cli()
        self.process: subprocess.Popen | None = None
        # seconds per build step, filled in by whoever builds (for the test report)
        self.timings: dict[str, float] = {}
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            # the legacy builder: what docker 20.10 uses without buildx, on any client
            "DOCKER_BUILDKIT": "0",
            "DOCKER_CONFIG": str(root / "client-config"),
        }

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        for sub in ("exec", "client-config"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                "dockerd",
                f"--data-root={self.data_root}",
                f"--exec-root={self.root / 'exec'}",
                f"--host=unix://{self.socket}",
                f"--pidfile={self.pidfile}",
                # No docker0 bridge, no NAT or iptables rules: the host's networking stays as
                # it is. Containers use --network host (loopback) or none.
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--log-level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # its own session: a Ctrl-C of pytest reaches it through our teardown only
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()  # containerd may have started before dockerd gave up
                raise RuntimeError(f"dockerd exited at start:\n{tail}")
            if self.socket.exists() and self.docker("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {timeout:.0f} s:\n{tail}")

    def stop(self) -> bool:
        """Remove every container, stop the daemon and everything it started, delete root.
        True if the daemon stopped by itself on SIGTERM (so its data root is consistent)."""
        clean = False
        if self.process is not None and self.process.poll() is None:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=120)
            # Images no tag leads to any more (a previous build's): a kept data root would
            # grow with every build otherwise.
            self.docker("image", "prune", "-f", check=False, timeout=300)
            self.docker("volume", "prune", "-f", check=False, timeout=120)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
                clean = True
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        # containerd and its shims run detached from dockerd; whatever outlived it goes now
        for pid in processes_under(str(self.root)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _unmount_under(str(self.root))
        _unmount_under(str(self.data_root))
        shutil.rmtree(self.root, ignore_errors=True)
        return clean

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no dockerd log)"

    # -- commands -----------------------------------------------------------------------------
    def docker(
        self, *args: str, check: bool = True, timeout: float | None = 600, **kwargs
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [self.cli, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def inspect(self, name: str) -> dict:
        return json.loads(self.docker("inspect", name).stdout)[0]

    def logs(self, name: str, lines: int = 60) -> str:
        result = self.docker("logs", "--tail", str(lines), name, check=False)
        return result.stdout + result.stderr

    def health(self, name: str) -> str:
        state = self.inspect(name)["State"]
        return (state.get("Health") or {}).get("Status", "none")


def clean_stale_runs() -> None:
    """Delete daemon directories that a killed test run left behind (its pid is gone)."""
    for stale in cache_dir().glob("docker-*"):
        pidfile = stale / "docker.pid"
        try:
            alive = _pid_alive(int(pidfile.read_text().strip()))
        except (OSError, ValueError):
            alive = False
        if not alive:
            for pid in processes_under(str(stale)):
                os.kill(pid, signal.SIGKILL)
            _unmount_under(str(stale))
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def docker_daemon() -> Iterator[DockerDaemon]:
    clean_stale_runs()
    with kept_data_root() as data_root:
        # On the venv's disk, not /tmp (which may be RAM): the images take several GB. The
        # path stays short: containerd's sockets live under the exec root.
        daemon = DockerDaemon(cache_dir() / f"docker-{os.getpid()}", data_root)
        try:
            daemon.start()
            yield daemon
        finally:
            if not daemon.stop() and data_root is not None:
                _forget(data_root)


@contextmanager
def kept_data_root() -> Iterator[Path | None]:
    """The daemon's data root kept in the test cache between runs, so that a build reuses the
    layers of the last one (Docker's cache: an unchanged step is not run again); None while
    another test run holds it (that run's daemon then gets a data root of its own).

    A data root whose daemon did not stop cleanly (killed, or the run was) may be
    inconsistent: it is deleted rather than used."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    data_root, in_use = cache / "layers", cache / "layers.in-use"
    with open(cache / "layers.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        if in_use.exists():
            _forget(data_root)
        in_use.touch()
        yield data_root
        in_use.unlink()  # not on an exception out of the run: then it is forgotten next time


def _forget(data_root: Path) -> None:
    _unmount_under(str(data_root))
    shutil.rmtree(data_root, ignore_errors=True)


# -- the base image ---------------------------------------------------------------------------
def debootstrap_tarball(log: Path) -> Path:
    """A minimal Debian bookworm root file system as a tarball, cached for a week."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in sorted(cache.glob("bookworm-minbase-*.tar"), reverse=True):
        if now - old.stat().st_mtime < BASE_MAX_AGE_S:
            return old
        old.unlink()
    rootfs = cache / "bookworm-rootfs.tmp"
    shutil.rmtree(rootfs, ignore_errors=True)
    tarball = cache / f"bookworm-minbase-{time.strftime('%Y%m%d')}.tar"
    try:
        with open(log, "ab") as out:
            subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(rootfs)],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=900,
            )
        # What Debian's slim images leave out, and apt's caches: ~125 MB less.
        for sub in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
                    "var/cache/apt", "var/lib/apt/lists"):  # fmt: skip
            target = rootfs / sub
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], check=True
        )
        partial.rename(tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return tarball


def import_base(daemon: DockerDaemon, log: Path) -> str:
    """The debootstrap tarball as BASE_IMAGE; a kept data root has it already, unless the
    tarball was made again since (the image's comment names the tarball)."""
    tarball = debootstrap_tarball(log)
    found = daemon.docker("image", "inspect", "--format", "{{.Comment}}", BASE_IMAGE, check=False)
    if found.returncode != 0 or found.stdout.strip() != tarball.name:
        with open(tarball, "rb") as f:
            daemon.docker(
                "import", "--message", tarball.name, "-", BASE_IMAGE, stdin=f, timeout=300
            )
    return BASE_IMAGE


# -- the clusterhub images --------------------------------------------------------------------
def build_images(
    daemon: DockerDaemon,
    *,
    base_image: str,
    ca_dir: Path | None,
    work: Path,
    python: str = sys.executable,
) -> dict[str, float]:
    """Run images/build.sh; returns the seconds each step took (from its output)."""
    logs = work / "build-logs"
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    args = [
        str(IMAGES_DIR / "build.sh"),
        f"--base={base_image}",
        f"--prefix={PREFIX}",
        f"--tag={TAG}",
        f"--wheelhouse={cache_dir() / 'wheelhouse'}",
        f"--pip-cache={cache_dir() / 'pip-cache'}",
        f"--python={python}",
        f"--log-dir={logs}",
    ]
    if ca_dir is not None:
        args.append(f"--ca-dir={ca_dir}")
    env = {
        **daemon.env,
        "DOCKER": daemon.cli,
        "TMPDIR": str(tmp),
        "HOME": str(tmp),
        # the host-side downloads (clusterhub's build backend, the proxy's npm packages) are
        # cached between runs like the wheelhouse
        "PIP_CACHE_DIR": str(cache_dir() / "pip-cache"),
        "npm_config_cache": str(cache_dir() / "npm-cache"),
    }
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"images/build.sh failed:\n{result.stdout}\n{result.stderr[-6000:]}")
    timings = {}
    for line in result.stdout.splitlines():
        # "build.sh: core: 42 s"
        parts = line.split(": ")
        if len(parts) == 3 and parts[2].endswith(" s"):
            timings[parts[1]] = float(parts[2][:-2])
    return timings


def extra_ca_dir() -> Path | None:
    """The machine's extra CA certificates, if it has any: a TLS-inspecting proxy's CA must be
    in the images for pip and apt to get through it."""
    path = Path("/usr/local/share/ca-certificates")
    return path if any(path.glob("*.crt")) else None


def size_budgets() -> dict[str, int]:
    """Bytes per image, from the budget table of images/README.md (``| hub | ... | 1.0 GB |``)."""
    budgets = {}
    for line in (IMAGES_DIR / "README.md").read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] in NAMES and cells[-1].endswith(" GB"):
            budgets[cells[0]] = int(float(cells[-1][:-3]) * 1e9)
    return budgets


# -- small helpers for the tests ---------------------------------------------------------------
def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def run_args(
    name: str, image: str, *args: str, env: dict[str, str] | None = None,
    volumes: Sequence[str] = (), options: Sequence[str] = (),
    health_interval: str | None = "2s",
) -> list[str]:  # fmt: skip
    """``docker run -d`` arguments: host network (loopback only), a fast health check."""
    cmd = ["run", "-d", "--name", name, "--network", "host", *options]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    for volume in volumes:
        cmd += ["-v", volume]
    if health_interval:
        cmd += [f"--health-interval={health_interval}", "--health-start-period=120s"]
    return [*cmd, image, *args]
