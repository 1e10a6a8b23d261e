"""Kernels close garbage dask-gateway clients on a thread of their own, never on the collector's.

dask-gateway's ``Gateway`` and ``GatewayCluster`` close themselves from ``__del__``. Closing
waits on the client's event loop and then takes distributed's ``LoopRunner._lock``, a lock
shared by every client in the process. ``__del__`` runs wherever Python's cycle collector
happens to run, and a client lands in a reference cycle after any refused request (the
exception's traceback holds the frame that holds the client), so in a notebook:

- if the collector runs on the IO-loop thread that a new ``Gateway()`` is starting, the new
  client's ``start()`` holds the shared lock while it waits for that thread, the thread waits
  for the lock, and after 10 s ``Gateway()`` fails with a bare ``AssertionError``;
- if it runs on the garbage client's own loop thread, closing joins that thread from itself
  and the kernel hangs.

Running the original ``__del__`` on a short-lived thread of its own breaks both: the thread
that collected goes on, and the close still happens (the client stays alive until it has).

Loaded into every kernel of the environment as an IPython extension (see
``jupyter-config/ipython_kernel_config.json``). It patches ``dask_gateway.client`` when that
is first imported, so a kernel that never uses Dask does not pay for importing it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from typing import Any

CLIENT_MODULE = "dask_gateway.client"
PATCHED_CLASSES = ("Gateway", "GatewayCluster")
_MARK = "_clusterhub_closes_on_own_thread"


def _closing_on_own_thread(original_del):
    def __del__(self) -> None:
        if sys.is_finalizing():
            return
        threading.Thread(
            target=original_del, args=(self,), name="dask-gateway client close", daemon=True
        ).start()

    setattr(__del__, _MARK, True)
    __del__.__doc__ = original_del.__doc__
    return __del__


def patch(client_module: Any) -> None:
    """Make ``Gateway`` and ``GatewayCluster`` in ``client_module`` close on their own thread."""
    for name in PATCHED_CLASSES:
        cls = getattr(client_module, name)
        if not getattr(cls.__del__, _MARK, False):
            cls.__del__ = _closing_on_own_thread(cls.__del__)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of ``dask_gateway.client`` to patch it."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != CLIENT_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        real_exec = loader.exec_module

        def exec_module(module) -> None:
            real_exec(module)
            patch(module)

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Patch the client now if it is imported, else when it is."""
    if CLIENT_MODULE in sys.modules:
        patch(sys.modules[CLIENT_MODULE])
        return
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def load_ipython_extension(ipython: Any) -> None:
    install()
