"""``clusterhub build``: check the flags (a bad one changes nothing), then run the build of
the chosen mode and say what happened."""

from __future__ import annotations

import os
import re
import sys
from typing import TextIO

from ..accounts import BUILD_ACCOUNT, AccountError, check_build_account_name, closed_to_others
from ..settings import default_data_dir
from ..usererror import UserError
from .environments import BuildLocked
from .source import SourceError, check_source
from .steps import BuildError, tail

_IMAGE_NAME = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
KUBERNETES_ONLY = ("notebook_image", "cluster_image", "image_prefix", "tag", "values_file")
DEFAULTS = {
    "notebook_image": "clusterhub/notebook:latest",
    "cluster_image": "clusterhub/cluster:latest",
    "image_prefix": "clusterhub",
    "tag": "",
    "values_file": "",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_flags(args) -> None:
    if args.mode == "local":
        for name in KUBERNETES_ONLY:
            if getattr(args, name) != DEFAULTS[name]:
                raise UserError(f"{_flag(name)} is for --mode kubernetes only")
        try:
            check_build_account_name(args.build_account)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        return
    if args.data_dir:
        raise UserError("--data-dir is for --mode local only")
    if args.build_account != BUILD_ACCOUNT:
        raise UserError("--build-account is for --mode local only")
    if not _IMAGE_NAME.fullmatch(args.image_prefix):
        raise UserError(
            f"--image-prefix: {args.image_prefix!r} is not an image name (lowercase letters, "
            "digits, . _ - and / between parts)"
        )
    if args.tag and not _TAG.fullmatch(args.tag):
        raise UserError(
            f"--tag: {args.tag!r} is not a Docker tag (1-128 of letters, digits, _ . -, "
            "not starting with . or -)"
        )
    if args.values_file and not os.path.isdir(os.path.dirname(os.path.abspath(args.values_file))):
        raise UserError(f"--values-file: the directory of {args.values_file} does not exist")


def resolve_data_dir(path: str | None) -> str:
    path = os.path.abspath(os.path.expanduser(path or default_data_dir()))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--data-dir: {path} is not a directory")
    if os.path.isdir(path) and not os.access(path, os.W_OK):
        raise UserError(f"--data-dir: cannot write to {path}")
    reached = path if os.path.isdir(path) else os.path.dirname(path)
    blocked = closed_to_others(reached) if os.geteuid() == 0 else None
    if blocked:
        raise UserError(
            f"--data-dir: the build account cannot reach {path}: {blocked} is closed to other "
            f"users. Use the platform's data dir (as root: {default_data_dir()})"
        )
    return path


def run_build(args, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        check_flags(args)
        source = check_source(args.source, args.ref)
        data_dir = resolve_data_dir(args.data_dir) if args.mode == "local" else ""
    except (UserError, SourceError) as exc:
        print(f"clusterhub build: error: {exc}", file=err)
        return 2
    if args.mode == "kubernetes":
        from .image import ImageOptions, build_images

        options = ImageOptions(
            notebook_base=args.notebook_image,
            cluster_base=args.cluster_image,
            prefix=args.image_prefix,
            tag=args.tag,
            values_file=args.values_file,
        )
        try:
            build_images(source, options, out=out)
        except BuildError as exc:
            _report_failure(exc, err, "no image was tagged")
            return 1
        return 0

    from .runner import build_local, describe_current

    try:
        environment = build_local(source, data_dir, out=out, build_account=args.build_account)
    except (BuildLocked, AccountError) as exc:
        print(f"clusterhub build: error: {exc}", file=err)
        return 2
    except BuildError as exc:
        _report_failure(exc, err, f"the current environment is still {describe_current(data_dir)}")
        return 1
    print(
        f"clusterhub build: {environment.name} is now current. New servers (and their "
        "clusters and engines) use it; running servers keep their environment until they "
        "restart.",
        file=out,
    )
    return 0


def _report_failure(exc: BuildError, err: TextIO, consequence: str) -> None:
    print(f"clusterhub build: failed at step '{exc.step}': {exc.message}", file=err)
    if exc.output.strip():
        print(f"--- output of '{exc.step}' (last lines) ---", file=err)
        print(tail(exc.output), file=err)
        print("---", file=err)
    print(f"clusterhub build: {consequence}.", file=err)
