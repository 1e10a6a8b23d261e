"""Write the hub's ClusterRole rules for the Helm chart from the Python data.

The rules live in one place, ``clusterhub.spawner.kubeobjects.HUB_RBAC_RULES``; the chart's
ClusterRole template reads ``clusterhub/files/hub-rbac-rules.json`` (``.Files.Get`` +
``fromJson``), which this script writes. Run it after changing the rules:

    python helm/generate_rbac.py           # rewrite the file
    python helm/generate_rbac.py --check   # exit 1 if the file is out of date

``tests/test_helm.py`` fails while the file and the Python data disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RULES_FILE = Path(__file__).resolve().parent / "clusterhub" / "files" / "hub-rbac-rules.json"


def render() -> str:
    """The file's exact content: the rules as indented JSON with a trailing newline."""
    from clusterhub.spawner.kubeobjects import HUB_RBAC_RULES

    return json.dumps(HUB_RBAC_RULES, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, do not write")
    args = parser.parse_args(argv)
    wanted = render()
    current = RULES_FILE.read_text() if RULES_FILE.exists() else None
    if args.check:
        if current != wanted:
            print(f"{RULES_FILE} is out of date: run python helm/generate_rbac.py", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        RULES_FILE.write_text(wanted)
        print(f"wrote {RULES_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
