"""``clusterhub build`` in local mode: one build, step by step, switched to current only
when every step succeeded (see :mod:`clusterhub.build.environments`)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TextIO

from ..accounts import BUILD_ACCOUNT, Account, ensure_build_account
from ..space import write_json_atomic
from . import local
from .environments import (
    BUILD_FILE,
    Environment,
    build_lock,
    current_environment,
    environments_dir,
    next_name,
    remove_incomplete,
    set_current,
)
from .isolation import hand_over, refuse_links_out, stop_processes_of, take_back
from .source import Source, fetch_source
from .spec import read_spec
from .steps import Progress


def builder_account(name: str = BUILD_ACCOUNT) -> Account:
    """Who runs the repository's code: the build account as root, else whoever we are."""
    if os.geteuid() != 0:
        return Account.current()
    return ensure_build_account(name)


def build_local(
    source: Source, data_dir: str, out: TextIO | None = None, build_account: str = BUILD_ACCOUNT
) -> Environment:
    """Build an environment from ``source`` under ``data_dir`` and make it current.

    Raises :class:`~clusterhub.build.steps.BuildError` (naming the step) on failure, after
    deleting everything the build wrote but its log; the current environment is unchanged."""
    out = out or sys.stdout
    data_dir = os.path.abspath(data_dir)
    with build_lock(data_dir):
        builder = builder_account(build_account)
        for stale in remove_incomplete(data_dir):
            print(f"clusterhub build: removed {stale}, left by an interrupted build", file=out)
        name = next_name(data_dir)
        root = os.path.join(environments_dir(data_dir), name)
        progress = Progress(
            local.STEPS, os.path.join(environments_dir(data_dir), "logs", f"{name}.log"), out
        )
        record = {
            "name": name,
            "source": source.location,
            "ref": source.ref,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "complete": False,
        }
        os.makedirs(root)
        # Every attendee's account runs from here (and the build account builds here).
        for directory in (environments_dir(data_dir), root):
            os.chmod(directory, 0o755)
        write_json_atomic(os.path.join(root, BUILD_FILE), record)
        try:
            progress.say(f"clusterhub build: {source.describe()} -> {root}")
            progress.say(f"  the repository's code runs as {builder.name} (uid {builder.uid})")
            environment = _steps(source, root, name, progress, record, builder)
        except BaseException:
            # Nothing half-built stays: not served, and not mistaken for a build later.
            stop_processes_of(builder)
            shutil.rmtree(root, ignore_errors=True)
            raise
        finally:
            progress.close()
        return environment


def _steps(
    source: Source, root: str, name: str, progress: Progress, record: dict, builder: Account
) -> Environment:
    repo = os.path.join(root, "repo")
    with progress.step("fetch the repository"):
        commit = fetch_source(source, repo, progress)
        if commit:
            progress.say(f"  commit {commit}")
        refuse_links_out(repo, progress.current)
    with progress.step("read the environment files"):
        spec = read_spec(repo)
        progress.say(f"  found: {', '.join(spec.found())}")
        for note in spec.notes:
            progress.say(f"  note: {note}")
        for script in (spec.start, spec.post_build):
            if script:
                local.make_executable(script)
    environment = Environment(
        name=name,
        prefix=os.path.join(root, "venv"),
        content=repo,
        content_exclude=(spec.spec_folder,) if spec.spec_folder else (),
        start=spec.start,
    )
    with progress.step("create the environment"):
        local.create_chained_venv(environment.prefix, progress)
    home, tmp = os.path.join(root, "home"), os.path.join(root, "tmp")
    cache = os.path.join(os.path.dirname(root), "cache", "pip")
    for directory in (home, tmp, cache):
        os.makedirs(directory, exist_ok=True)
    env = local.build_env(environment, home, tmp, cache)
    # From here on the repository's code runs, as the build account, in a tree that is its
    # own until the build is taken back (root's, and unwritable by others) at the end.
    hand_over(root, builder)
    hand_over(os.path.dirname(cache), builder)

    if spec.apt_txt and spec.apt_packages():
        with progress.step("install apt packages"):
            progress.say("  " + local.install_apt_packages(spec, progress))
    else:
        progress.skip("install apt packages", "no apt.txt")

    with progress.step("install Python packages"):
        installs = local.pip_requirements(spec, progress, env, builder)
        local.install_python_packages(installs, environment, repo, env, progress, builder)
        if not installs:
            progress.say("  nothing to install")

    if spec.post_build:
        with progress.step("run postBuild"):
            local.run_post_build(spec, env, progress, builder)
    else:
        progress.skip("run postBuild", "no postBuild")

    with progress.step("check the environment"):
        local.check_environment(environment, env, progress, builder)
        take_back(root, builder)
        shutil.rmtree(tmp, ignore_errors=True)

    with progress.step("make it current"):
        record.update(
            complete=True,
            commit=commit,
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            environment=environment.to_dict(),
        )
        write_json_atomic(os.path.join(root, BUILD_FILE), record)
        data_dir = os.path.dirname(os.path.dirname(root))
        set_current(data_dir, environment)
    return environment


def describe_current(data_dir: str) -> str:
    current = current_environment(data_dir)
    return current.name if current else "the platform's own (no build yet)"
