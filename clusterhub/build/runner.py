"""``clusterhub build`` in local mode: one build, step by step, switched to current only
when every step succeeded (see :mod:`clusterhub.build.environments`)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TextIO

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
from .source import Source, fetch_source
from .spec import read_spec
from .steps import Progress


def build_local(source: Source, data_dir: str, out: TextIO | None = None) -> Environment:
    """Build an environment from ``source`` under ``data_dir`` and make it current.

    Raises :class:`~clusterhub.build.steps.BuildError` (naming the step) on failure, after
    deleting everything the build wrote but its log; the current environment is unchanged."""
    out = out or sys.stdout
    data_dir = os.path.abspath(data_dir)
    with build_lock(data_dir):
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
        write_json_atomic(os.path.join(root, BUILD_FILE), record)
        try:
            progress.say(f"clusterhub build: {source.describe()} -> {root}")
            environment = _steps(source, root, name, progress, record)
        except BaseException:
            # Nothing half-built stays: not served, and not mistaken for a build later.
            shutil.rmtree(root, ignore_errors=True)
            raise
        finally:
            progress.close()
        return environment


def _steps(source: Source, root: str, name: str, progress: Progress, record: dict) -> Environment:
    repo = os.path.join(root, "repo")
    with progress.step("fetch the repository"):
        commit = fetch_source(source, repo, progress)
        if commit:
            progress.say(f"  commit {commit}")
    with progress.step("read the environment files"):
        spec = read_spec(repo)
        progress.say(f"  found: {', '.join(spec.found())}")
        for note in spec.notes:
            progress.say(f"  note: {note}")
        if spec.start:
            # repo2docker runs `start` as the entrypoint whatever its mode bits; so do we.
            os.chmod(spec.start, os.stat(spec.start).st_mode | 0o111)
    environment = Environment(
        name=name,
        prefix=os.path.join(root, "venv"),
        content=repo,
        content_exclude=(spec.spec_folder,) if spec.spec_folder else (),
        start=spec.start,
    )
    with progress.step("create the environment"):
        local.create_chained_venv(environment.prefix, progress)
    home = os.path.join(root, "home")
    os.makedirs(home)
    env = local.build_env(environment, home)

    if spec.apt_txt and spec.apt_packages():
        with progress.step("install apt packages"):
            progress.say("  " + local.install_apt_packages(spec, progress))
    else:
        progress.skip("install apt packages", "no apt.txt")

    with progress.step("install Python packages"):
        installs = local.pip_requirements(spec, progress, env)
        local.install_python_packages(installs, environment, repo, env, progress)
        if not installs:
            progress.say("  nothing to install")

    if spec.post_build:
        with progress.step("run postBuild"):
            local.run_post_build(spec, env, progress)
    else:
        progress.skip("run postBuild", "no postBuild")

    with progress.step("check the environment"):
        local.check_environment(environment, env, progress)

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
