"""The ``clusterhub`` command."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _count(flag: str, low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} must be a whole number from {low} to {high}, not {text!r}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{flag} must be from {low} to {high}, not {value}")
        return value

    return parse


def _uid_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        if not sep:
            raise ValueError
        first, last = int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--uid-range must be MIN-MAX, e.g. 20000-29999, not {text!r}"
        ) from None
    if not 1000 <= first <= last <= 2**31 - 2:
        raise argparse.ArgumentTypeError(
            f"--uid-range must satisfy 1000 <= MIN <= MAX <= 2147483646, not {text!r}"
        )
    return first, last


def _account_prefix(text: str) -> str:
    from .accounts import AccountPolicy

    try:
        AccountPolicy(prefix=text).check()
    except ValueError as exc:
        message = str(exc).replace("account_prefix", "--account-prefix")
        raise argparse.ArgumentTypeError(message) from None
    return text


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
        "--port",
        type=_count("--port", 1, 65535),
        default=8000,
        help="public port of the hub (default: 8000)",
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
        help="where accounts, homes and secrets are kept across restarts (default: "
        "/var/lib/clusterhub as root, else ~/.clusterhub)",
    )
    up.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="an extra JupyterHub config file (Python), loaded after clusterhub's own",
    )
    up.add_argument(
        "--tls-cert",
        default=None,
        metavar="FILE",
        help="serve the public port over HTTPS with this certificate (PEM, with any "
        "intermediates); needs --tls-key",
    )
    up.add_argument(
        "--tls-key",
        default=None,
        metavar="FILE",
        help="the private key (PEM, unencrypted) of --tls-cert",
    )
    up.add_argument(
        "--start-slots",
        type=_count("--start-slots", 0, 1024),
        default=0,
        help="how many starts of servers, kernels, Dask schedulers and workers run at once; "
        "the rest wait their turn (0, the default: one per core)",
    )
    up.add_argument(
        "--expect",
        type=_count("--expect", 0, 10000),
        default=0,
        metavar="N",
        help="attendees expected to arrive at once: when it is ready, say how much memory "
        "they need against what the machine has, and warn if they do not fit (default: 0)",
    )
    accounts = up.add_argument_group(
        "attendees (as root)",
        "Run as root, each attendee gets a system account of their own and a control group "
        "(memory, CPU, processes); run as another user, everyone shares that account.",
    )
    accounts.add_argument(
        "--single-account",
        action="store_true",
        help="as root too, run every attendee as this account (no boundary between them)",
    )
    from .accounts import AccountPolicy

    policy = AccountPolicy()  # the defaults live there
    accounts.add_argument(
        "--account-prefix",
        type=_account_prefix,
        default=policy.prefix,
        help=f"prefix of the attendees' system accounts (default: {policy.prefix})",
    )
    accounts.add_argument(
        "--uid-range",
        type=_uid_range,
        default=(policy.uid_min, policy.uid_max),
        metavar="MIN-MAX",
        help="uids (and gids) of the attendees' accounts "
        f"(default: {policy.uid_min}-{policy.uid_max})",
    )
    accounts.add_argument(
        "--max-accounts",
        type=_count("--max-accounts", 0, 100000),
        default=0,
        help="most attendee accounts this platform makes; 0: no limit (default)",
    )
    accounts.add_argument(
        "--max-servers",
        type=_count("--max-servers", 0, 100000),
        default=0,
        help="most attendee servers running at once; 0: no limit (default)",
    )
    _add_build(commands)
    return parser


def _add_build(commands) -> None:
    from .accounts import BUILD_ACCOUNT

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
        help="local mode: the platform's data dir (default: as for `clusterhub up`)",
    )
    build.add_argument(
        "--build-account",
        default=BUILD_ACCOUNT,
        help="local mode, as root: the unprivileged account the repository's pip installs, "
        f"postBuild and checks run as, made if missing (default: {BUILD_ACCOUNT})",
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
        from .up import run_up
        from .usererror import UserError

        try:
            return run_up(args)
        except UserError as exc:
            print(f"clusterhub up: error: {exc}", file=sys.stderr)
            return 2
    if args.command == "build":
        from .build.command import run_build

        return run_build(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
