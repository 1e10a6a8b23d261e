"""What a Binder-style repository asks for, read the way repo2docker reads it.

The environment files live in ``binder/`` or ``.binder/`` when the repository has such a
folder (then files at the top are ignored, as with repo2docker), else at the top:
``requirements.txt``, ``environment.yml``, ``apt.txt``, ``postBuild``, ``start``,
``runtime.txt``, and ``setup.py`` at the top (installed with pip, when there is no binder
folder). A repository with none of them is refused: there would be nothing to build.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field

from .steps import BuildError

STEP = "read the environment files"
SPEC_DIRS = ("binder", ".binder")
RECOGNISED = ("requirements.txt", "environment.yml", "apt.txt", "postBuild", "start")
# repo2docker buildpacks we have no builder for: refused by name rather than ignored.
UNSUPPORTED = {
    "Dockerfile": "a repository with its own Dockerfile",
    "install.R": "R packages (install.R)",
    "DESCRIPTION": "an R package (DESCRIPTION)",
    "Project.toml": "Julia packages (Project.toml)",
    "REQUIRE": "Julia packages (REQUIRE)",
    "default.nix": "a Nix environment (default.nix)",
    "Pipfile": "a Pipfile (use requirements.txt)",
}


@dataclass
class BuildSpec:
    """The environment files of one checked-out repository (absolute paths, or empty)."""

    repo_dir: str
    spec_dir: str
    requirements: str = ""
    environment_yml: str = ""
    apt_txt: str = ""
    post_build: str = ""
    start: str = ""
    setup_py: str = ""
    runtime_txt: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def spec_folder(self) -> str:
        """``binder``, ``.binder`` or empty (the top of the repository)."""
        rel = os.path.relpath(self.spec_dir, self.repo_dir)
        return "" if rel == "." else rel

    def found(self) -> list[str]:
        names = []
        for path in (
            self.requirements,
            self.environment_yml,
            self.apt_txt,
            self.post_build,
            self.start,
            self.setup_py,
            self.runtime_txt,
        ):
            if path:
                names.append(os.path.relpath(path, self.repo_dir))
        return names

    def apt_packages(self) -> list[str]:
        if not self.apt_txt:
            return []
        packages = []
        with open(self.apt_txt) as f:
            for line in f:
                line = line.split("#", 1)[0].strip()
                if line:
                    packages.extend(line.split())
        bad = [p for p in packages if not re.fullmatch(r"[a-z0-9][a-z0-9+.\-]*(:[a-z0-9]+)?", p)]
        if bad:
            raise BuildError(STEP, f"apt.txt: not Debian package names: {', '.join(bad)}")
        return packages


def find_spec_dir(repo_dir: str) -> str:
    present = [d for d in SPEC_DIRS if os.path.isdir(os.path.join(repo_dir, d))]
    if len(present) > 1:
        raise BuildError(STEP, "the repository has both binder/ and .binder/: keep only one")
    return os.path.join(repo_dir, present[0]) if present else repo_dir


def read_spec(repo_dir: str) -> BuildSpec:
    """The environment files of ``repo_dir``; raises :class:`BuildError` when there are none
    or when the repository needs a buildpack we do not have."""
    spec_dir = find_spec_dir(repo_dir)
    for name, what in UNSUPPORTED.items():
        if os.path.isfile(os.path.join(spec_dir, name)):
            raise BuildError(
                STEP,
                f"{os.path.relpath(os.path.join(spec_dir, name), repo_dir)}: {what} is not "
                "supported; describe the environment with requirements.txt, environment.yml, "
                "apt.txt and postBuild",
            )

    def present(name: str, where: str = spec_dir) -> str:
        path = os.path.join(where, name)
        return path if os.path.isfile(path) else ""

    spec = BuildSpec(
        repo_dir=repo_dir,
        spec_dir=spec_dir,
        requirements=present("requirements.txt"),
        environment_yml=present("environment.yml"),
        apt_txt=present("apt.txt"),
        post_build=present("postBuild"),
        start=present("start"),
        runtime_txt=present("runtime.txt"),
        # repo2docker installs a setup.py only when there is no binder folder.
        setup_py=present("setup.py") if spec_dir == repo_dir else "",
    )
    if not [name for name in spec.found() if not name.endswith("runtime.txt")]:
        where = f"{os.path.relpath(spec_dir, repo_dir)}/" if spec_dir != repo_dir else "the top"
        raise BuildError(
            STEP,
            f"no environment files in {where} of the repository: expected at least one of "
            f"{', '.join(RECOGNISED)} (or setup.py), at the top or in a binder/ folder",
        )
    if spec.runtime_txt:
        spec.notes.extend(check_runtime(spec.runtime_txt))
    return spec


def check_runtime(path: str) -> list[str]:
    """runtime.txt asks for a Python version; a local build cannot change the platform's."""
    with open(path) as f:
        text = f.read().strip()
    match = re.fullmatch(r"python-(\d+)\.(\d+)(?:\.\d+)?", text)
    if not match:
        return [f"runtime.txt: {text!r} is not a Python runtime (python-X.Y); ignored"]
    wanted = (int(match.group(1)), int(match.group(2)))
    if wanted != sys.version_info[:2]:
        return [
            f"runtime.txt asks for Python {wanted[0]}.{wanted[1]}; the environment uses the "
            f"platform's Python {sys.version_info[0]}.{sys.version_info[1]}"
        ]
    return []
