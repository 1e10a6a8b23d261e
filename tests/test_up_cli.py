"""`clusterhub up` refuses bad flags and unfit machines with one clear line, starting nothing."""

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest


def run_up(tmp_path, *args, env_changes=None, path=None):
    env = {**os.environ, "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
    env.pop("CLUSTERHUB_WORKSHOP_CODE", None)
    if path is not None:
        env["PATH"] = path
        env.pop("JAVA_HOME", None)
    env.update(env_changes or {})
    data_dir = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "clusterhub.cli", "up", "--data-dir", str(data_dir), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return result, data_dir


def error_line(result):
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "0"], "--port must be from 1 to 65535, not 0"),
        (["--port", "70000"], "--port must be from 1 to 65535, not 70000"),
        (["--port", "eighty"], "--port must be a whole number from 1 to 65535, not 'eighty'"),
        (["--ip", "somewhere"], "--ip must be an IP address of this machine"),
        (["--workshop-code", "short"], "--workshop-code must be 8 to 128 characters"),
        (["--config", "/nonexistent/config.py"], "--config: no such file: /nonexistent/config.py"),
        (["--start-slots", "2000"], "--start-slots must be from 0 to 1024, not 2000"),
        (["--start-slots", "-1"], "--start-slots must be from 0 to 1024, not -1"),
        (["--expect", "many"], "--expect must be a whole number from 0 to 10000, not 'many'"),
    ],
)
def test_bad_flags(tmp_path, args, message):
    result, data_dir = run_up(tmp_path, *args)
    assert result.returncode == 2
    assert message in error_line(result)
    assert not data_dir.exists(), "nothing was started or written"


def test_a_config_file_that_is_not_python(tmp_path):
    bad = tmp_path / "config.py"
    bad.write_text("c.JupyterHub.port = = 1\n")
    result, data_dir = run_up(tmp_path, "--config", str(bad))
    assert result.returncode == 2
    assert "is not valid Python: line 1" in error_line(result)
    assert not data_dir.exists()


def test_workshop_code_from_the_environment_is_checked_too(tmp_path):
    result, _ = run_up(tmp_path, env_changes={"CLUSTERHUB_WORKSHOP_CODE": "abc"})
    assert result.returncode == 2
    assert "CLUSTERHUB_WORKSHOP_CODE must be 8 to 128 characters" in error_line(result)


def test_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result, data_dir = run_up(tmp_path, "--ip", "127.0.0.1", "--port", str(port))
    assert result.returncode == 2
    line = error_line(result)
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port" in line
    assert not data_dir.exists()


def bin_dir_with(tmp_path, *tools):
    """A PATH directory holding only the named tools (and what a shell needs)."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for tool in ("sh", "bash", *tools):
        found = shutil.which(tool)
        if found:
            os.symlink(found, directory / tool)
    return str(directory)


def test_missing_node(tmp_path):
    result, data_dir = run_up(tmp_path, path=bin_dir_with(tmp_path, "java"))
    assert result.returncode == 2
    assert "node is not installed: install Node.js" in error_line(result)
    assert not data_dir.exists()


def test_missing_java(tmp_path):
    result, data_dir = run_up(tmp_path, path=bin_dir_with(tmp_path, "node"))
    assert result.returncode == 2
    line = error_line(result)
    assert "Java is not installed: install a JDK" in line and "Spark" in line
    assert not data_dir.exists()


def test_a_proxy_command_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-proxy"
    result, data_dir = run_up(tmp_path, env_changes={"CLUSTERHUB_PROXY_COMMAND": str(missing)})
    assert result.returncode == 2
    assert f"CLUSTERHUB_PROXY_COMMAND: {missing} is not an executable file" in error_line(result)
    assert not data_dir.exists()


def test_missing_proxy(tmp_path, monkeypatch):
    from clusterhub.up import find_proxy
    from clusterhub.usererror import UserError

    monkeypatch.setenv("PATH", bin_dir_with(tmp_path, "node"))
    monkeypatch.delenv("CLUSTERHUB_PROXY_COMMAND", raising=False)
    with pytest.raises(UserError, match="configurable-http-proxy is not installed: run `npm"):
        find_proxy(checkout_dir=str(tmp_path))


@pytest.mark.e2e
@pytest.mark.slow
def test_a_closed_terminal_stops_the_whole_platform(tmp_path):
    """The terminal `clusterhub up` runs in goes away: its output has no reader any more
    (each line it prints fails with EPIPE) and it gets SIGHUP. It still stops everything."""
    from hubclient import RunningPlatform, marked_processes

    running = RunningPlatform(str(tmp_path))
    try:
        running.start(drain=False)
        assert marked_processes("CLUSTERHUB_PLATFORM", running.data_dir), "it is running"
        running.proc.stdout.close()
        running.proc.send_signal(signal.SIGHUP)
        assert running.proc.wait(timeout=150) == 0
        left = [
            " ".join(p.cmdline()) for p in marked_processes("CLUSTERHUB_PLATFORM", running.data_dir)
        ]
        assert not left, left
    finally:
        running.tear_down()


def test_under_nohup_a_closed_terminal_leaves_it_running():
    from clusterhub.up import _stop_signals

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert signal.SIGHUP not in _stop_signals()
    finally:
        signal.signal(signal.SIGHUP, previous)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        assert signal.SIGHUP in _stop_signals()
    finally:
        signal.signal(signal.SIGHUP, previous)
