"""The cluster image's entrypoint with an injected fault, chosen by ``$CLUSTERHUB_FAULT``.

The process-kubelet runs it for the test image ``faulty:test``; every fault is a real
process misbehaving, never a mock:

- ``scheduler-hangs``: the scheduler process runs but never starts a scheduler;
- ``scheduler-slow``: the scheduler starts only after ``$CLUSTERHUB_FAULT_DELAY`` seconds;
- ``worker-exits``: every worker process exits with an error before it connects.

Anything else runs the real entrypoint unchanged.
"""

import os
import sys
import time

from clusterhub.engines.entrypoint import main

mode, fault = sys.argv[1], os.environ.get("CLUSTERHUB_FAULT", "")
if mode == "dask-gateway-scheduler" and fault == "scheduler-hangs":
    while True:
        time.sleep(3600)
if mode == "dask-gateway-scheduler" and fault == "scheduler-slow":
    time.sleep(float(os.environ.get("CLUSTERHUB_FAULT_DELAY", "30")))
if mode == "dask-gateway-worker" and fault == "worker-exits":
    sys.exit("injected fault: the worker dies before it connects")
main(sys.argv[1:])
