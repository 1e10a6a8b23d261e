"""The local notebook server's command: jupyterhub-singleuser, ended without teardown."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clusterhub.build.environments import Environment
from clusterhub.singleuser import COMMAND, PLAIN_COMMAND, server_command

# jupyterhub-singleuser's main replaced by one that registers an exit handler and returns.
FAKE_SERVER = """
import atexit, sys
import jupyterhub.singleuser as real

def main():
    atexit.register(lambda: open(sys.argv[1], "w").write("exit handlers ran"))
    print("served", flush=True)
    {end}

real.main = main
from clusterhub.singleuser import main as quick
quick()
print("never here")
"""


@pytest.mark.parametrize("end, status", [("return 3", 3), ("sys.exit(4)", 4), ("return", 0)])
def test_the_server_ends_with_its_status_after_its_exit_handlers(tmp_path, end, status):
    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-c", FAKE_SERVER.format(end=end), str(marker)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == status, done.stderr
    assert done.stdout.splitlines() == ["served"]
    assert marker.read_text() == "exit handlers ran"


def environment_with(tmp_path, *scripts: str) -> Environment:
    bin_dir = tmp_path / "env" / "bin"
    bin_dir.mkdir(parents=True)
    for name in scripts:
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    return Environment(name="built-1", prefix=str(tmp_path / "env"))


def test_an_environment_with_the_command_runs_it(tmp_path):
    environment = environment_with(tmp_path, COMMAND, PLAIN_COMMAND)
    assert server_command([f"/platform/bin/{COMMAND}", "--debug"], environment) == [
        os.path.join(environment.bin, COMMAND),
        "--debug",
    ]


def test_an_environment_built_before_the_command_runs_jupyterhub_singleuser(tmp_path):
    environment = environment_with(tmp_path, PLAIN_COMMAND)
    assert server_command([f"/platform/bin/{COMMAND}", "--debug"], environment) == [
        os.path.join(environment.bin, PLAIN_COMMAND),
        "--debug",
    ]


def test_another_configured_command_is_left_as_it_is(tmp_path):
    environment = environment_with(tmp_path, PLAIN_COMMAND)
    assert server_command(["/opt/my-server"], environment) == ["/opt/my-server"]
