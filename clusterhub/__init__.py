"""clusterhub: a JupyterHub where every user gets their own small cluster.

The parts of the distribution live in top-level folders of the source tree
(``spawner/``, ``gateway/``, ``labextension/``) so that each is easy to find; an
installed wheel places them inside this package. In a source checkout (an
editable install) they are found by adding the checkout's root to this
package's search path, so ``clusterhub.spawner`` imports the same code in both
layouts.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

_PARTS = ("spawner", "gateway", "labextension")
_checkout_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if all(os.path.isfile(os.path.join(_checkout_root, part, "__init__.py")) for part in _PARTS):
    __path__.append(_checkout_root)  # type: ignore[name-defined]  # noqa: F821


def __getattr__(name: str) -> type:
    # `from clusterhub import ClustersWidget` in a notebook; imported on first use so that
    # importing clusterhub (the hub, the spawner, the engines) never needs ipywidgets.
    if name == "ClustersWidget":
        from clusterhub.labextension.widget import ClustersWidget

        return ClustersWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
