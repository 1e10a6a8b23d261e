"""Local mode: a new virtual environment built from a repository, beside the platform's.

The new environment *chains* to the platform's: it is a venv whose site-packages holds a
``.pth`` file that adds the platform's site-packages after its own. So the platform's
packages (JupyterHub, Dask, pyspark's 450 MB, ...) are not installed a second time, while
whatever the repository asks for is installed into the new environment and takes precedence.
pip sees the chained packages as installed, so a requirement the platform already meets costs
nothing. Three things make the chained venv a complete environment of its own:

- console scripts (``jupyterhub-singleuser``, ``dask``, ``jupyter``, ``pip`` ...) are
  copied into its ``bin/`` with their ``#!`` line pointing at the new ``python``, so the
  commands run in the new environment, not the platform's;
- ``share/jupyter`` is mirrored file by file as symlinks in real directories (JupyterLab's
  assets, lab extensions, kernels): a package that adds or replaces a file there does so in
  the new environment (pip unlinks before it writes), never through into the platform's;
- ``etc/jupyter`` (server extension switches, small) is copied, for the same reason.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

from ..accounts import Account
from . import conda
from .environments import Environment
from .spec import BuildSpec
from .steps import BuildError, Progress

STEPS = (
    "fetch the repository",
    "read the environment files",
    "create the environment",
    "install apt packages",
    "install Python packages",
    "run postBuild",
    "check the environment",
    "make it current",
)
# What every notebook server and engine imports: a repository must not break these.
PLATFORM_MODULES = (
    "jupyterhub.singleuser",
    "jupyter_server",
    "jupyterlab",
    "ipykernel",
    "distributed",
    "dask_gateway",
    "ipyparallel",
    "clusterhub",
)
PIP_TIMEOUT = 1800
POST_BUILD_TIMEOUT = 1800


def _site_packages(prefix: str) -> str:
    return sysconfig.get_path("purelib", vars={"base": prefix, "platbase": prefix})


def _platform_site_dirs() -> list[str]:
    dirs = []
    for key in ("purelib", "platlib"):
        path = sysconfig.get_path(key)
        if path not in dirs:
            dirs.append(path)
    return dirs


def create_chained_venv(prefix: str, progress: Progress) -> None:
    progress.run(
        [sys.executable, "-m", "venv", "--without-pip", prefix],
        what="python -m venv",
    )
    site_packages = _site_packages(prefix)
    # addsitedir, not a bare path: the platform's own .pth files (editable installs) count.
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in _platform_site_dirs())
    with open(os.path.join(site_packages, "_clusterhub_platform.pth"), "w") as f:
        f.write(lines)
    _copy_console_scripts(os.path.join(sys.prefix, "bin"), os.path.join(prefix, "bin"))
    _mirror_tree(
        os.path.join(sys.prefix, "share", "jupyter"), os.path.join(prefix, "share", "jupyter")
    )
    for entry in (
        os.listdir(os.path.join(sys.prefix, "share"))
        if os.path.isdir(os.path.join(sys.prefix, "share"))
        else []
    ):
        target = os.path.join(prefix, "share", entry)
        if entry != "jupyter" and not os.path.lexists(target):
            os.symlink(os.path.join(sys.prefix, "share", entry), target)
    platform_etc = os.path.join(sys.prefix, "etc", "jupyter")
    if os.path.isdir(platform_etc):
        shutil.copytree(platform_etc, os.path.join(prefix, "etc", "jupyter"), dirs_exist_ok=True)


def _copy_console_scripts(source_bin: str, dest_bin: str) -> int:
    """Copy the platform's Python console scripts, pointed at the new environment's python."""
    platform_bin = os.path.realpath(source_bin)
    new_python = os.path.join(dest_bin, "python")
    copied = 0
    for name in sorted(os.listdir(source_bin)):
        src, dst = os.path.join(source_bin, name), os.path.join(dest_bin, name)
        if (
            os.path.lexists(dst)
            or not os.path.isfile(src)
            or name.startswith(("python", "activate"))
        ):
            continue
        with open(src, "rb") as f:
            head = f.read(2)
            if head != b"#!":
                continue
            first = f.readline().decode(errors="replace").strip()
            rest = f.read()
        interpreter = first.split()[0] if first else ""
        if os.path.dirname(interpreter) not in (source_bin, platform_bin):
            continue  # a shell script or another interpreter's: not ours to rewrite
        with open(dst, "wb") as f:
            f.write(f"#!{new_python}\n".encode() + rest)
        os.chmod(dst, 0o755)
        copied += 1
    return copied


def _mirror_tree(source: str, dest: str) -> None:
    """Real directories, symlinked files (see the module docstring)."""
    if not os.path.isdir(source):
        return
    for dirpath, _dirnames, filenames in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        target_dir = os.path.normpath(os.path.join(dest, rel))
        os.makedirs(target_dir, exist_ok=True)
        for name in filenames:
            link = os.path.join(target_dir, name)
            if not os.path.lexists(link):
                os.symlink(os.path.join(dirpath, name), link)


# What a build's commands get from the caller's environment: the locale, how to reach the
# network and a package index. Nothing else (no workshop code, no settings, no tokens).
PASSED_TO_BUILDS = (
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST", "PIP_NO_INDEX",
)  # fmt: skip


def build_env(environment: Environment, home: str, tmp: str, cache: str) -> dict[str, str]:
    """The process environment of build commands run "inside" the new environment: a clean
    one, with the build's own home, temporary and pip cache directories."""
    env = {k: os.environ[k] for k in PASSED_TO_BUILDS if k in os.environ}
    env.update(environment.process_env(env.get("PATH", os.defpath)))
    env.update(
        HOME=home,
        TMPDIR=tmp,
        PIP_CACHE_DIR=cache,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
    )
    return env


def install_apt_packages(spec: BuildSpec, progress: Progress) -> str:
    """Install missing apt.txt packages when running as root; otherwise fail naming them.

    A local build changes the machine's packages for every user, so it never does that
    behind the organiser's back: without root it says exactly what to run."""
    packages = spec.apt_packages()
    missing = [p for p in packages if not _deb_installed(p)]
    if not missing:
        return f"all {len(packages)} installed already"
    if os.geteuid() != 0:
        raise BuildError(
            progress.current,
            f"apt.txt needs Debian packages this machine lacks: {' '.join(missing)}. Installing "
            f"them needs root: run `sudo apt-get install -y {' '.join(missing)}` and build "
            "again",
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    progress.run(["apt-get", "update"], what="apt-get update", env=env, timeout=600)
    progress.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        what="apt-get install",
        env=env,
        timeout=1800,
    )
    return f"installed {' '.join(missing)}"


def _deb_installed(package: str) -> bool:
    import subprocess

    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
    )
    return result.returncode == 0 and result.stdout.strip().endswith(" installed")


def pip_requirements(
    spec: BuildSpec, progress: Progress, env: dict[str, str], builder: Account | None = None
) -> list[list[str]]:
    """The ``pip install`` argument lists for the repository (empty: nothing to install)."""
    installs: list[list[str]] = []
    if spec.environment_yml:
        translation = conda.translate(spec.environment_yml)
        for note in translation.notes:
            progress.say(f"  note: {note}")
        served, not_served = servable_by_pip(translation.from_conda, env, builder=builder)
        cannot = {**translation.untranslatable, **not_served}
        if cannot:
            progress.say(
                "  environment.yml: conda packages pip cannot install, left out: "
                + "; ".join(f"{spec_} ({why})" for spec_, why in cannot.items())
            )
        requirements = [*served, *translation.pip_requirements]
        if requirements:
            installs.append(requirements)
    if spec.requirements:
        installs.append(["-r", spec.requirements])
    if spec.setup_py:
        installs.append([spec.repo_dir])
    return installs


def servable_by_pip(
    from_conda: dict[str, str],
    env: dict[str, str],
    python: str = "",
    builder: Account | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Ask pip (a dry run, no dependencies) which conda packages it has under the same name."""
    import subprocess

    python = python or os.path.join(env["VIRTUAL_ENV"], "bin", "python")

    def check(requirement: str) -> bool:
        result = subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--no-deps",
                "--ignore-installed",
                "--quiet",
                requirement,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            **(builder.popen_kwargs() if builder else {}),
        )
        return result.returncode == 0

    served, not_served = [], {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(check, from_conda.values()))
    for (conda_spec, requirement), ok in zip(from_conda.items(), answers, strict=True):
        if ok:
            served.append(requirement)
        else:
            not_served[conda_spec] = f"no {requirement} on the package index"
    return served, not_served


def install_python_packages(
    installs: list[list[str]], environment: Environment, cwd: str, env: dict[str, str],
    progress: Progress, builder: Account | None = None,
) -> None:  # fmt: skip
    for arguments in installs:
        progress.run(
            [environment.python, "-m", "pip", "install", "--no-input", *arguments],
            what="pip install " + " ".join(os.path.basename(a) for a in arguments),
            cwd=cwd,
            env=env,
            timeout=PIP_TIMEOUT,
            account=builder,
        )


def make_executable(path: str) -> None:
    """repo2docker runs ``postBuild`` and ``start`` whatever their mode bits; so do we.
    (Called before the tree is handed to the build account, on files checked to be in it.)"""
    mode = os.stat(path, follow_symlinks=False).st_mode
    if stat.S_ISREG(mode):
        os.chmod(path, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def run_post_build(
    spec: BuildSpec, env: dict[str, str], progress: Progress, builder: Account | None = None
) -> None:
    """postBuild runs once, in the repository's checkout (as repo2docker runs it in the
    repository's directory), with the new environment first on PATH."""
    progress.run(
        [spec.post_build],
        what="postBuild",
        cwd=spec.repo_dir,
        env=env,
        timeout=POST_BUILD_TIMEOUT,
        account=builder,
    )


def check_environment(
    environment: Environment, env: dict[str, str], progress: Progress,
    builder: Account | None = None,
) -> None:  # fmt: skip
    """The repository's packages must not have broken what every server and engine needs."""
    imports = "; ".join(f"import {m}" for m in PLATFORM_MODULES)
    progress.run(
        [environment.python, "-c", f"{imports}; print('ok')"],
        what="importing the platform's modules in the new environment",
        env=env,
        timeout=300,
        account=builder,
    )
    for command in ("jupyterhub-singleuser", "dask"):
        if environment.executable(command) == command:
            raise BuildError(progress.current, f"{command} is missing from {environment.bin}")
