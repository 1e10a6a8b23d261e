"""Run kubespawner's own ``tests/test_spawner.py`` against the emulator and process-kubelet.

    python -m tests.kube.upstream_kubespawner [--checkout DIR] [pytest args...]

Not part of the test suite: it checks the emulator against a suite written for real
clusters. kubespawner's tests are not in its sdist, so they come from a checkout of its
repository at the installed version (``--checkout``, else a ``git clone`` of the tag).
Its conftest needs pytest-asyncio < 0.23 (a session ``event_loop`` fixture), so the suite
runs in a virtualenv of its own made beside the checkout, with the same kubespawner,
JupyterHub, jupyter_server, JupyterLab and kubernetes_asyncio versions as ours. Pods run that
environment's commands (``jupyterhub``, ``jupyterhub-singleuser``, ``python3``), as
jupyterhub's images would, plus configurable-http-proxy.

The summary at the end lists every test as passed, failed or errored; the reasons for the
ones that cannot pass here are in the closing notes of the Kubernetes issue and in the
emulator's "Not emulated" list.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = "https://github.com/jupyterhub/kubespawner"
SINGLEUSER_IMAGE = "quay.io/jupyterhub/singleuser:latest"
SINGLEUSER_IMAGE_USER = "1000"
SUITE_PINS = ["pytest<8", "pytest-asyncio==0.21.2", "pytest-timeout", "kubernetes"]


def suite_venv(path: str) -> str:
    """A virtualenv for kubespawner's suite; returns its python."""
    python = os.path.join(path, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
    pins = [
        f"jupyterhub-kubespawner=={version('jupyterhub-kubespawner')}",
        f"jupyterhub=={version('jupyterhub')}",
        f"kubernetes_asyncio=={version('kubernetes_asyncio')}",
        f"jupyter_server=={version('jupyter_server')}",
        f"jupyterlab=={version('jupyterlab')}",  # as in jupyterhub's singleuser image
        *SUITE_PINS,
    ]
    subprocess.run([python, "-m", "pip", "install", "--quiet", *pins], check=True)
    return python


def checkout(work: str) -> str:
    tag = version("jupyterhub-kubespawner")
    target = os.path.join(work, "kubespawner")
    subprocess.run(
        ["git", "clone", "--quiet", "--depth", "1", "--branch", tag, REPOSITORY, target],
        check=True,
    )
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", help="a kubespawner checkout at the installed version")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--patient-exec",
        action="store_true",
        help="give a started server ten times the suite's tries to answer "
        "(tests/kube/upstream_patient_exec.py)",
    )
    args, pytest_args = parser.parse_known_args()

    from tests.kube import pod_shared_dir
    from tests.kube.fixtures import KubeCluster

    work = tempfile.mkdtemp(prefix="kubespawner-upstream-")
    os.chmod(work, 0o755)  # the singleuser pods, not root, run the suite's environment in it
    cluster = None
    try:
        source = os.path.abspath(args.checkout) if args.checkout else checkout(work)
        python = suite_venv(os.path.join(work, "venv"))
        home = pod_shared_dir(os.path.join(work, "home"))
        # The images' PATH: the suite's environment (jupyterhub, JupyterLab, python3), as
        # lean as jupyterhub's own images, and configurable-http-proxy for the hub pod.
        from clusterhub.up import find_proxy

        bin_dirs = [os.path.dirname(python), os.path.dirname(find_proxy()[0])]
        cluster = KubeCluster(
            os.path.join(work, "cluster"),
            base_env={"PATH": os.pathsep.join([*bin_dirs, os.environ["PATH"]]), "HOME": home},
            # kubespawner's default image runs as its jovyan user (jupyter-server refuses
            # root); the hub's and the exec helper's images run as root.
            image_users={SINGLEUSER_IMAGE: SINGLEUSER_IMAGE_USER},
        )
        cluster.start()
        env = dict(os.environ, KUBECONFIG=cluster.kubeconfig)
        if args.patient_exec:
            # On its own on the path: this package's modules would shadow the standard
            # library's (selectors).
            plugins = os.path.join(work, "plugins")
            os.makedirs(plugins)
            shutil.copy(os.path.join(HERE, "upstream_patient_exec.py"), plugins)
            pytest_args = ["-p", "upstream_patient_exec", *pytest_args]
            env["PYTHONPATH"] = plugins
        env.pop("KUBERNETES_SERVICE_HOST", None)
        return subprocess.call(
            [
                python,
                "-m",
                "pytest",
                "tests/test_spawner.py",
                "-p",
                "no:cacheprovider",
                "-o",
                "asyncio_mode=auto",
                "-q",
                "-rA",
                "--timeout=240",
                f"--basetemp={os.path.join(work, 'pytest')}",
                *pytest_args,
            ],
            cwd=source,
            env=env,
        )
    finally:
        if cluster is not None:
            cluster.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
