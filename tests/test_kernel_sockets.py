"""Where kernels' Unix sockets go, and when a path is too long for them (see
clusterhub.kernel_sockets); their use by real kernels is tried in test_strangers."""

from __future__ import annotations

import os
import socket

import pytest

from clusterhub import kernel_sockets
from clusterhub.ports import SOCKET_PATH_MAX


def test_a_socket_at_the_longest_allowed_path_really_binds(tmp_path):
    # The limit the module checks against is the machine's: one byte more fails to bind.
    base = f"/tmp/ks-{os.getpid()}"
    os.makedirs(base, exist_ok=True)
    try:
        path = base + "/" + "s" * (SOCKET_PATH_MAX - len(base) - 1)
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(path)
        os.unlink(path)
        with socket.socket(socket.AF_UNIX) as s, pytest.raises(OSError):
            s.bind(path + "s")
    finally:
        for name in os.listdir(base):
            os.unlink(os.path.join(base, name))
        os.rmdir(base)


def test_a_space_runtime_dir_is_short_whatever_the_name():
    root = kernel_sockets.runtime_root("0123456789")
    long_name = "x" * 200
    path = kernel_sockets.space_runtime_dir(root, long_name)
    assert os.path.dirname(path) == root
    assert path != kernel_sockets.space_runtime_dir(root, long_name + "y")
    assert kernel_sockets.too_long_reason(path) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="as root the root is in /run")
def test_as_root_the_runtime_root_is_in_run():
    assert kernel_sockets.runtime_root("abc") == "/run/clusterhub/abc"


def test_a_path_too_long_for_a_kernel_socket_is_named_with_the_limit():
    # One byte over: the runtime dir, a slash and the longest socket name.
    path = "/" + "d" * (SOCKET_PATH_MAX - kernel_sockets.KERNEL_SOCKET_NAME_MAX - 1)
    reason = kernel_sockets.too_long_reason(path)
    assert reason is not None
    assert path in reason and str(SOCKET_PATH_MAX) in reason
    assert kernel_sockets.too_long_reason(path[:-1]) is None


def test_prepare_makes_a_private_directory_afresh_and_remove_root_clears_it(tmp_path):
    root = str(tmp_path / "root")
    runtime = kernel_sockets.space_runtime_dir(root, "alice")
    kernel_sockets.prepare(runtime, None, None)
    open(os.path.join(runtime, "stale"), "w").close()
    kernel_sockets.prepare(runtime, None, None)  # a new start begins empty
    assert os.listdir(runtime) == []
    assert os.stat(runtime).st_mode & 0o777 == 0o700
    assert os.stat(root).st_mode & 0o777 == 0o711
    kernel_sockets.remove_root(root)
    assert not os.path.exists(root)
