"""Workers' own hostnames on one machine (clusterhub.hostnames)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from clusterhub.hostnames import HOSTNAME_MAX, can_have_own_hostnames, worker_hostname


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
        "from clusterhub.hostnames import enter_own_uts\n"
        "enter_own_uts('alice-dask-7')\n"
        "print(socket.gethostname())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "alice-dask-7"
    assert socket.gethostname() != "alice-dask-7"


def test_without_root_a_hostname_of_ones_own_is_refused_and_nothing_changes():
    code = (
        "import socket\n"
        "from clusterhub.hostnames import enter_own_uts\n"
        "before = socket.gethostname()\n"
        "try:\n"
        "    enter_own_uts('mine')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno, socket.gethostname() == before)\n"
    )

    def not_root() -> None:  # as an attendee's process is
        if os.geteuid() == 0:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=not_root
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["refused", "1", "True"]  # EPERM
