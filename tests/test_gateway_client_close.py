"""Garbage dask-gateway clients are closed without blocking whichever thread collected them.

Each case runs in a fresh interpreter: the patch changes dask-gateway's classes process-wide.
"""

import subprocess
import sys
import textwrap

import pytest

# A client in a reference cycle is collected on a new thread while this thread holds
# distributed's shared LoopRunner lock, exactly as ``Gateway()`` holds it while its IO-loop
# thread starts (and that thread is where the collector ran in a kernel).
COLLECT_WHILE_A_CLIENT_STARTS = textwrap.dedent(
    """
    import gc, sys, threading, time
    gc.disable()
    if sys.argv[1] == "patched":
        from clusterhub import gateway_client_close
        gateway_client_close.install()
    from dask_gateway import Gateway
    from dask_gateway.auth import BasicAuth
    from distributed.utils import LoopRunner

    gateway = Gateway(address="http://127.0.0.1:9", auth=BasicAuth("alice", ""))
    loop_thread = gateway._loop_runner._loop_thread._thread
    cycle = [gateway]
    cycle.append(cycle)
    del gateway, cycle
    with LoopRunner._lock:
        collector = threading.Thread(target=gc.collect)
        collector.start()
        collector.join(5)
        print("collector blocked" if collector.is_alive() else "collector went on")
    collector.join(30)
    loop_thread.join(30)
    print("client closed" if not loop_thread.is_alive() else "client left open")
    """
)


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_the_collector_goes_on_and_the_client_is_still_closed():
    assert _run(COLLECT_WHILE_A_CLIENT_STARTS, "patched").split("\n")[:2] == [
        "collector went on",
        "client closed",
    ]


@pytest.mark.slow
def test_control_unpatched_the_collector_blocks_on_the_shared_lock():
    # If dask-gateway or distributed fix this, this fails: then the patch can go.
    assert _run(COLLECT_WHILE_A_CLIENT_STARTS, "unpatched").startswith("collector blocked")


def test_the_patch_waits_for_dask_gateway_to_be_imported_and_applies_once():
    out = _run(
        textwrap.dedent(
            """
            import sys
            from clusterhub import gateway_client_close
            gateway_client_close.install()
            gateway_client_close.install()
            print("dask_gateway.client" in sys.modules)
            from dask_gateway import Gateway, GatewayCluster
            from dask_gateway import client
            for cls in (Gateway, GatewayCluster):
                print(cls.__del__.__module__)
            gateway_client_close.patch(client)
            print(Gateway.__del__.__closure__[0].cell_contents.__module__)
            """
        )
    )
    assert out.split() == [
        "False",
        "clusterhub.gateway_client_close",
        "clusterhub.gateway_client_close",
        "dask_gateway.client",
    ]
