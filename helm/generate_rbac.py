"""Write the platform's RBAC rules for the Helm chart from the Python data.

The rules live in one place, ``clusterhub.spawner.kubeobjects`` (the hub's: cluster-wide, in
each user's namespace, in its own namespace) and ``clusterhub.gateway.kubeobjects`` (the
gateway's: cluster-wide, in each user's namespace); the chart's RBAC templates read
``clusterhub/files/rbac-rules.json`` (``.Files.Get`` + ``fromJson``), which this script
writes. Run it after changing the rules:

    python helm/generate_rbac.py           # rewrite the file
    python helm/generate_rbac.py --check   # exit 1 if the file is out of date

``tests/test_helm.py`` fails while the file and the Python data disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RULES_FILE = Path(__file__).resolve().parent / "clusterhub" / "files" / "rbac-rules.json"


def rules() -> dict[str, list]:
    """Every rule list the chart renders, by the key its templates read."""
    from clusterhub.gateway import kubeobjects as gateway
    from clusterhub.spawner import kubeobjects as hub

    return {
        "hubCluster": hub.HUB_CLUSTER_RULES,
        "hubSpace": hub.HUB_SPACE_RULES,
        "hubHome": hub.HUB_HOME_RULES,
        "gatewayCluster": gateway.GATEWAY_CLUSTER_RULES,
        "gatewaySpace": gateway.GATEWAY_SPACE_RULES,
    }


def render() -> str:
    """The file's exact content: the rules as indented JSON with a trailing newline."""
    return json.dumps(rules(), indent=2) + "\n"


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
