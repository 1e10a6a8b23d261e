"""Keeping a repository's build away from root and from what the repository does not own.

A build runs code the organiser pointed us at (``pip``'s package builds, ``postBuild``).
As root, that code runs as the unprivileged build account
(:func:`clusterhub.accounts.ensure_build_account`) in a tree handed to it for the build, and
afterwards the tree is taken back: the account's processes are stopped and every file it
made becomes root's and unwritable by others, because every attendee's processes run from
it. Symbolic links that lead out of the repository are refused before anything runs, so
no later ``chmod`` or content copy can be turned against a file outside it.
"""

from __future__ import annotations

import os
import stat

import psutil

from ..accounts import Account, give_tree
from ..content import leads_out
from .steps import BuildError

ROOT = Account("root", 0, 0, (0,))
# Take-back strips write for group and others, and set-id bits, from the build's files.
SEALED_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_IWGRP | stat.S_IWOTH


def links_out_of(root: str) -> list[tuple[str, str]]:
    """Every symbolic link under ``root`` that resolves outside it: (path in root, target)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            if leads_out(path, root):
                found.append((os.path.relpath(path, root), os.readlink(path)))
    return sorted(found)


def refuse_links_out(root: str, step: str) -> None:
    links = links_out_of(root)
    if links:
        named = ", ".join(f"{path} -> {target}" for path, target in links)
        raise BuildError(
            step,
            f"symbolic links out of the repository are refused: {named}. Replace them with "
            "the files themselves, or links inside the repository",
        )


def hand_over(tree: str, builder: Account) -> None:
    """Give ``tree`` to the build account for the build."""
    if builder.uid != os.geteuid():
        give_tree(tree, builder)


def stop_processes_of(builder: Account, timeout: float = 10) -> int:
    """Stop whatever the build account still runs (a daemon started by postBuild)."""
    if builder.uid == 0 or builder.uid == os.geteuid():
        return 0
    mine = [p for p in psutil.process_iter(["uids"]) if p.info["uids"].real == builder.uid]
    for proc in mine:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(mine, timeout=timeout)
    return len(mine)


def take_back(tree: str, builder: Account) -> None:
    """After the build: nothing of the build account runs, and nothing it made is writable
    by anyone but root. Files it does not own (a hard link to a system file) are untouched.
    """
    if builder.uid == os.geteuid():
        return
    stop_processes_of(builder)
    for dirpath, dirnames, filenames in os.walk(tree, topdown=False, followlinks=False):
        for name in [*filenames, *dirnames]:
            _seal(os.path.join(dirpath, name), builder)
    _seal(tree, builder)


def _seal(path: str, builder: Account) -> None:
    info = os.lstat(path)
    if info.st_uid != builder.uid:
        return
    os.lchown(path, ROOT.uid, ROOT.gid)
    if not stat.S_ISLNK(info.st_mode):
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~SEALED_BITS)
