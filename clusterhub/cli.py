"""The ``clusterhub`` command."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--port must be a whole number from 1 to 65535, not {text!r}"
        ) from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be from 1 to 65535, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clusterhub",
        description="A JupyterHub where every user gets their own small cluster.",
    )
    parser.add_argument("--version", action="version", version=f"clusterhub {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up",
        help="run the whole platform on this machine (foreground; Ctrl-C stops everything)",
        description="Run the hub, the proxy, the Dask Gateway and the idle culler on this "
        "machine. Users log in with any name and the workshop code.",
    )
    up.add_argument(
        "--port", type=_port, default=8000, help="public port of the hub (default: 8000)"
    )
    up.add_argument(
        "--ip",
        default="",
        help="address the public port binds to (default: all interfaces); "
        "every other service listens on 127.0.0.1 only",
    )
    up.add_argument(
        "--workshop-code",
        default=None,
        help="the code attendees log in with, at least 8 characters "
        "(default: $CLUSTERHUB_WORKSHOP_CODE, else the one from the last run, else generated)",
    )
    up.add_argument(
        "--data-dir",
        default=None,
        help="where accounts, homes and secrets are kept across restarts (default: ~/.clusterhub)",
    )
    up.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="an extra JupyterHub config file (Python), loaded after clusterhub's own",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        from .up import UsageError, run_up

        try:
            return run_up(args)
        except UsageError as exc:
            print(f"clusterhub up: error: {exc}", file=sys.stderr)
            return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
