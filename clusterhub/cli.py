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
    _add_build(commands)
    return parser


def _add_build(commands) -> None:
    build = commands.add_parser(
        "build",
        help="rebuild the notebook and cluster environment from a Binder-style repository",
        description="Build the environment of notebooks and engines from a repository in "
        "repo2docker conventions (requirements.txt, environment.yml, apt.txt, postBuild, "
        "start, or a binder/ folder). Local mode makes a new environment under the data dir "
        "that new servers use; Kubernetes mode builds the notebook and cluster images.",
    )
    build.add_argument("source", metavar="SOURCE", help="a local directory or a Git URL")
    build.add_argument(
        "--ref", default="", help="the Git branch, tag or commit to build (default: HEAD)"
    )
    build.add_argument(
        "--mode",
        choices=("local", "kubernetes"),
        default="local",
        help="local: a new environment for `clusterhub up` (default); kubernetes: images",
    )
    build.add_argument(
        "--data-dir",
        default=None,
        help="local mode: the platform's data dir (default: ~/.clusterhub)",
    )
    build.add_argument(
        "--notebook-image",
        default="clusterhub/notebook:latest",
        help="kubernetes mode: the image the notebook image is built on "
        "(default: clusterhub/notebook:latest, from images/build.sh)",
    )
    build.add_argument(
        "--cluster-image",
        default="clusterhub/cluster:latest",
        help="kubernetes mode: the image whose command and settings the cluster image keeps "
        "(default: clusterhub/cluster:latest)",
    )
    build.add_argument(
        "--image-prefix",
        default="clusterhub",
        help="kubernetes mode: the new images are PREFIX/notebook:TAG and PREFIX/cluster:TAG "
        "(default: clusterhub)",
    )
    build.add_argument(
        "--tag",
        default="",
        help="kubernetes mode: the tag of both images (default: derived from the repository's "
        "commit or content)",
    )
    build.add_argument(
        "--values-file",
        default="",
        metavar="FILE",
        help="kubernetes mode: also write the Helm values that roll the images out to FILE",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        from .up import UsageError, run_up

        try:
            return run_up(args)
        except UsageError as exc:
            print(f"clusterhub up: error: {exc}", file=sys.stderr)
            return 2
    if args.command == "build":
        from .build.command import run_build

        return run_build(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
