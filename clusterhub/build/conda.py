"""``environment.yml`` for an environment that pip fills: its ``pip:`` section as it is,
and its conda packages translated into pip requirements of the same name.

Conda version specs are translated (``numpy=1.26`` means 1.26.*, i.e. pip's ``==1.26.*``);
``python`` is checked against the platform's Python, ``pip`` dropped, and whatever cannot be
translated (``|`` alternatives, a conda-only name) is reported by name, never silently lost.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

import yaml

from .steps import BuildError

STEP = "read the environment files"
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)\s*(.*)$")


@dataclass
class CondaTranslation:
    pip_requirements: list[str] = field(default_factory=list)  # from the pip: section
    from_conda: dict[str, str] = field(default_factory=dict)  # conda spec -> pip requirement
    untranslatable: dict[str, str] = field(default_factory=dict)  # conda spec -> why
    notes: list[str] = field(default_factory=list)


def conda_version_to_pip(version: str) -> str:
    """``=1.26`` -> ``==1.26.*``; ``>=1,<2`` stays; ``1.26.*`` -> ``==1.26.*``."""
    version = version.strip().replace(" ", "")
    if not version:
        return ""
    if "|" in version:
        raise ValueError("alternatives (|) have no pip equivalent")
    if version.startswith("=") and not version.startswith("=="):
        # name=version=build: the build string has no meaning for pip
        number = version[1:].split("=", 1)[0]
        return f"=={number}" if number.endswith("*") else f"=={number}.*"
    if version[0].isdigit():
        return f"=={version}"
    if re.fullmatch(r"(==|>=|<=|!=|>|<|~=)[^,]+(,(==|>=|<=|!=|>|<|~=)[^,]+)*", version):
        return version
    raise ValueError(f"version {version!r} has no pip equivalent")


def translate(path: str) -> CondaTranslation:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise BuildError(STEP, f"environment.yml is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise BuildError(STEP, "environment.yml: expected a mapping with 'dependencies'")
    dependencies = data.get("dependencies") or []
    if not isinstance(dependencies, list):
        raise BuildError(STEP, "environment.yml: 'dependencies' must be a list")
    result = CondaTranslation()
    for entry in dependencies:
        if isinstance(entry, dict):
            pip_section = entry.get("pip")
            if set(entry) != {"pip"} or not isinstance(pip_section, list):
                raise BuildError(
                    STEP, f"environment.yml: unexpected entry {entry!r} in dependencies"
                )
            result.pip_requirements.extend(str(r) for r in pip_section)
            continue
        spec = str(entry).strip()
        bare = spec.split("::", 1)[-1]  # channel::name
        match = _NAME.match(bare)
        if not match:
            result.untranslatable[spec] = "not a package spec"
            continue
        name, version = match.group(1), match.group(2)
        if name == "pip":
            continue
        if name == "python":
            result.notes.extend(_check_python(version))
            continue
        try:
            result.from_conda[spec] = name + conda_version_to_pip(version)
        except ValueError as exc:
            result.untranslatable[spec] = str(exc)
    return result


def _check_python(version: str) -> list[str]:
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if not version.strip():
        return []
    match = re.fullmatch(r"=?=?(\d+(?:\.\d+)*)(?:\.\*)?(?:=.*)?", version.strip())
    if not match:
        return [f"environment.yml: python {version.strip()}; the environment uses {running}"]
    wanted = match.group(1)
    if not (
        running == wanted or running.startswith(wanted + ".") or wanted.startswith(running + ".")
    ):
        return [
            f"environment.yml asks for python {version.strip()}; the environment uses the "
            f"platform's Python {running}"
        ]
    return []
