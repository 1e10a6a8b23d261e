"""Write the dependencies of clusterhub's wheel, by image, as pip requirement files.

    python images/requirements.py WHEEL DIR

DIR/core.txt gets the dependencies every image needs (no extra, or the kubernetes extra) and
DIR/runtime.txt those of the spark and dataframe extras. The Dockerfiles install these before
the wheel itself, so the large dependency layers stay cached while only clusterhub's code
changes. Markers other than a plain ``extra == "..."`` are refused: they would need the
image's own Python to evaluate.
"""

from __future__ import annotations

import re
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

FILES = {"core.txt": {None, "kubernetes"}, "runtime.txt": {"spark", "dataframe"}}
EXTRA_MARKER = re.compile(r"""^extra\s*==\s*["']([A-Za-z0-9_.-]+)["']$""")


def requires_dist(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = HeaderParser().parsestr(archive.read(metadata).decode())
    return message.get_all("Requires-Dist") or []


def by_extra(requirements: list[str]) -> dict[str | None, list[str]]:
    grouped: dict[str | None, list[str]] = {}
    for line in requirements:
        requirement, _, marker = (part.strip() for part in line.partition(";"))
        extra = None
        if marker:
            match = EXTRA_MARKER.match(marker)
            if match is None:
                raise SystemExit(f"requirements.py: cannot place {line!r} in an image")
            extra = match.group(1)
        grouped.setdefault(extra, []).append(requirement)
    return grouped


def main(wheel: str, out: str) -> None:
    grouped = by_extra(requires_dist(Path(wheel)))
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, extras in FILES.items():
        lines = sorted(r for extra in extras for r in grouped.get(extra, []))
        Path(out, name).write_text("".join(f"{line}\n" for line in lines))


if __name__ == "__main__":
    main(*sys.argv[1:])
