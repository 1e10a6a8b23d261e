"""Workers' own hostnames on one machine (clusterhub.hostnames)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile

import pytest

from clusterhub.hostnames import (
    HOSTNAME_MAX,
    can_have_own_hostnames,
    hosts_text,
    launcher,
    worker_hostname,
)


def test_hostnames_name_the_space_the_engine_and_the_number():
    assert worker_hostname("alice", "dask", 3) == "alice-dask-3"
    assert worker_hostname("Bob.Smith_2", "spark", 1) == "bob-smith-2-spark-1"
    assert worker_hostname("...", "ipp", 2) == "user-ipp-2"
    long = worker_hostname("a" * 200, "dask", 12)
    assert len(long) <= HOSTNAME_MAX and long.endswith("-dask-12")


@pytest.mark.skipif(not can_have_own_hostnames(), reason="UTS namespaces need root")
def test_a_process_gets_its_own_hostname_and_the_machine_keeps_its():
    code = (
        "import socket\n"
        "from clusterhub.hostnames import enter_own_host\n"
        "enter_own_host('alice-dask-7')\n"
        "print(socket.gethostname())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "alice-dask-7"
    assert socket.gethostname() != "alice-dask-7"


def not_root() -> None:  # as an attendee's own process is
    if os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)


def launched(name: str, code: str) -> subprocess.CompletedProcess:
    """``code`` run through the launcher as host ``name``, by a process that is not root."""
    return subprocess.run(
        [*launcher(sys.executable, name), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        preexec_fn=not_root,
        cwd="/",
        timeout=60,
    )


LOOK = "import os, socket; print(socket.gethostname(), os.getuid(), os.getgid())"


def test_without_root_a_process_still_gets_its_own_hostname_as_itself():
    """A user namespace of its own, mapping only its own uid and gid: the engine an
    attendee starts is a host of its own and still the attendee."""
    done = launched("dave-ipp-1", LOOK + "; print(open('/proc/self/status').read())")
    assert done.returncode == 0, done.stderr
    first, status = done.stdout.split("\n", 1)
    assert first.split() == ["dave-ipp-1", "65534", "65534"]
    effective = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    assert int(effective.split()[1], 16) == 0, "no capability after the exec"
    assert socket.gethostname() != "dave-ipp-1"


def test_a_refused_hostname_still_runs_the_command_and_says_why():
    done = launched("x" * 100, LOOK)  # longer than a hostname may be
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [socket.gethostname(), "65534", "65534"]
    assert "keeps the machine's hostname" in done.stderr


RESOLVE = (
    "import socket; print(socket.gethostname(), socket.gethostbyname('dave-spark-2'),"
    " socket.gethostbyname('localhost'), open('/etc/hosts').read().count('dave-spark-'))"
)


@pytest.mark.parametrize("as_root", [True, False])
def test_a_hosts_file_of_the_spaces_names_the_workers_inside_and_nowhere_else(tmp_path, as_root):
    """What a Spark worker and its driver get: the space's worker names resolve, every name
    of the machine's hosts file still does, and the machine's own file is untouched."""
    if as_root and not can_have_own_hostnames():
        pytest.skip("as root only")
    # Where the attendee can read it (pytest's own temp dirs are closed to other users).
    fd, hosts = tempfile.mkstemp(prefix="clusterhub-hosts-", dir="/tmp")
    with os.fdopen(fd, "w") as f:
        f.write(hosts_text([worker_hostname("dave", "spark", n) for n in (1, 2, 3)]))
    os.chmod(hosts, 0o644)
    try:
        check_hosts_file(hosts, as_root)
    finally:
        os.unlink(hosts)


def check_hosts_file(hosts: str, as_root: bool) -> None:
    with open("/etc/hosts") as f:
        machine_before = f.read()
    done = subprocess.run(
        [*launcher(sys.executable, "dave-spark-2", str(hosts)), sys.executable, "-c", RESOLVE],
        capture_output=True,
        text=True,
        preexec_fn=None if as_root else not_root,
        cwd="/",
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert done.stdout.split() == ["dave-spark-2", "127.0.0.1", "127.0.0.1", "3"]
    with open("/etc/hosts") as f:
        assert f.read() == machine_before
    with pytest.raises(OSError):
        socket.gethostbyname("dave-spark-2")  # out here, nobody knows it
