"""One system account per hub user, when the platform runs as root.

Attendees are strangers who share one workshop code, so on one machine each gets a Unix
account of their own (as The Littlest JupyterHub does): their notebook, kernels, clusters
and engines run under it, and the kernel's ordinary file and signal permissions keep them
out of each other's files and processes, and out of the platform's.

Accounts are made on a user's first spawn and found again by name after a restart:

- the name is ``<prefix><space name>`` (the space's escaping of the hub name, so ``a.b`` and
  ``a-b`` stay apart), shortened with a hash when it would pass 32 characters;
- no login shell, no password (``useradd`` leaves it locked), a group of its own;
- the uid comes from a configured range; an existing account of that name is only reused if
  it is one of ours (its comment says so): the platform never takes over a system account.

Making an account needs ``useradd`` and root; the single-account mode (not root) has none.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from .fences import Fence
from .space import safe_name

UNIX_NAME_MAX = 32
# The comment (GECOS) of every account we make: how we know an account is ours.
ACCOUNT_COMMENT_PREFIX = "clusterhub user "
NOLOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")


class AccountError(RuntimeError):
    """An account could not be made or used; the message is safe to show to the user."""


@dataclass(frozen=True)
class AccountPolicy:
    """How accounts are named and numbered (``clusterhub up`` flags / settings)."""

    prefix: str = "ch-"
    uid_min: int = 20000
    uid_max: int = 29999
    max_accounts: int = 0  # 0: as many as the uid range holds

    def check(self) -> AccountPolicy:
        if not self.prefix or not self.prefix[0].isalpha() or not self.prefix.islower():
            raise ValueError(
                f"account_prefix: must start with a lowercase letter, not {self.prefix!r}"
            )
        if not all(c.isalnum() or c in "-_" for c in self.prefix) or len(self.prefix) > 12:
            raise ValueError(
                f"account_prefix: 1 to 12 characters from a-z, 0-9, '-', '_', not {self.prefix!r}"
            )
        if not 1000 <= self.uid_min <= self.uid_max <= 2**31 - 2:
            raise ValueError(
                "account_uid_min/account_uid_max: need 1000 <= min <= max <= 2147483646, "
                f"not {self.uid_min}..{self.uid_max}"
            )
        if self.max_accounts < 0:
            raise ValueError(f"max_accounts: must be 0 (no limit) or more, not {self.max_accounts}")
        return self


@dataclass(frozen=True)
class Account:
    """Who a space's processes run as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Account:
        return cls(
            name=str(data["name"]),
            uid=int(data["uid"]),
            gid=int(data["gid"]),
            groups=tuple(int(g) for g in data.get("groups", ())),
        )

    @classmethod
    def current(cls) -> Account:
        uid = os.getuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name=name, uid=uid, gid=os.getgid(), groups=tuple(os.getgroups()))

    def is_current(self) -> bool:
        return os.geteuid() == self.uid

    def become(self) -> None:
        """Switch this process to the account for good (groups first, then gid, then uid)."""
        if os.geteuid() == self.uid and os.getegid() == self.gid:
            return
        os.setgroups(list(self.groups) or [self.gid])
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, self.uid)
        if os.getuid() != self.uid or os.geteuid() != self.uid:
            raise AccountError(f"could not become {self.name}")

    def preexec(self, first: Callable[[], None] | None = None) -> Callable[[], None]:
        """A ``preexec_fn`` that runs ``first`` (still as root: joining a control group), then
        becomes this account. Not Popen's ``user=``: Python switches before ``preexec_fn``."""

        def preexec() -> None:
            if first is not None:
                first()
            self.become()

        return preexec

    def popen_kwargs(self) -> dict:
        """``subprocess.Popen`` arguments that start a process as this account (no-op if we
        already are it)."""
        if self.is_current():
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


def identity_of(record: dict) -> tuple[Account | None, Fence | None]:
    """The account and fence a space's processes run as, from its record (``space.json``,
    or a warm interpreter's assignment); None for each the single-account mode lacks."""
    account = Account.from_dict(record["account"]) if record.get("account") else None
    fence = Fence(**record["fence"]) if record.get("fence") else None
    return account, fence


def closed_to_others(path: str) -> str | None:
    """The first directory on ``path``'s way that other accounts cannot pass, or None."""
    current = "/"
    for part in os.path.abspath(path).strip("/").split("/"):
        current = os.path.join(current, part)
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return current
        if stat.S_ISDIR(mode) and not mode & 0o001:
            return current
    return None


def unix_name(prefix: str, hub_name: str) -> str:
    """The account name of a hub user: the prefix and the space's name, at most 32 chars."""
    name = prefix + safe_name(hub_name)
    if len(name) <= UNIX_NAME_MAX:
        return name
    digest = hashlib.sha256(hub_name.encode()).hexdigest()[:8]
    return name[: UNIX_NAME_MAX - 9] + "-" + digest


def _ours(entry: pwd.struct_passwd, hub_name: str) -> bool:
    return entry.pw_gecos == ACCOUNT_COMMENT_PREFIX + hub_name


def _account_of(entry: pwd.struct_passwd) -> Account:
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, tuple(sorted(set(groups))))


def accounts_made(policy: AccountPolicy) -> list[str]:
    """Names of the accounts this platform made (by prefix, uid range and comment)."""
    return [
        e.pw_name
        for e in pwd.getpwall()
        if e.pw_name.startswith(policy.prefix)
        and policy.uid_min <= e.pw_uid <= policy.uid_max
        and e.pw_gecos.startswith(ACCOUNT_COMMENT_PREFIX)
    ]


def find_account(policy: AccountPolicy, hub_name: str) -> Account | None:
    """The user's account if it exists; AccountError if that name belongs to someone else."""
    name = unix_name(policy.prefix, hub_name)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    if not _ours(entry, hub_name) or not policy.uid_min <= entry.pw_uid <= policy.uid_max:
        raise AccountError(
            f"the system account {name!r} exists but was not made for {hub_name!r} by this "
            "platform; an administrator must remove or rename it"
        )
    return _account_of(entry)


# useradd and groupadd lock /etc/passwd and /etc/group themselves and fail (rather than wait)
# when they are busy: one account at a time on the whole machine, across the hub's threads,
# `clusterhub build` and any other platform on it. In a directory of root's own: in a
# world-writable one (/run/lock, /tmp) an attendee could make the file first and hold the
# lock forever.
ACCOUNTS_LOCK = "/run/clusterhub/accounts.lock"


@contextlib.contextmanager
def _accounts_lock() -> Iterator[None]:
    os.makedirs(os.path.dirname(ACCOUNTS_LOCK), mode=0o700, exist_ok=True)
    fd = os.open(ACCOUNTS_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _free_id(policy: AccountPolicy) -> int:
    used = {e.pw_uid for e in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    for candidate in range(policy.uid_min, policy.uid_max + 1):
        if candidate not in used:
            return candidate
    raise AccountError(
        f"no free uid left in {policy.uid_min}..{policy.uid_max}: the room is full "
        "(an administrator can widen account_uid_max)"
    )


def _nologin() -> str:
    for shell in NOLOGIN_SHELLS:
        if os.path.exists(shell):
            return shell
    return "/bin/false"


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise AccountError(f"{cmd[0]} failed: {(result.stderr or result.stdout).strip()}")


def ensure_account(policy: AccountPolicy, hub_name: str, home: str) -> Account:
    """The user's account, made now if it does not exist yet."""
    found = find_account(policy, hub_name)
    if found is not None:
        return found
    useradd, groupadd = shutil.which("useradd"), shutil.which("groupadd")
    if os.geteuid() != 0 or not useradd or not groupadd:
        raise AccountError("per-user accounts need root and useradd/groupadd (package passwd)")
    with _accounts_lock():
        found = find_account(policy, hub_name)  # made meanwhile by another spawn
        if found is not None:
            return found
        if policy.max_accounts and len(accounts_made(policy)) >= policy.max_accounts:
            raise AccountError(
                f"this workshop has room for {policy.max_accounts} attendees and all places "
                "are taken; ask the organiser"
            )
        name = unix_name(policy.prefix, hub_name)
        number = _free_id(policy)
        _run([groupadd, "--gid", str(number), name])
        try:
            _run(
                [
                    useradd,
                    "--uid", str(number),
                    "--gid", str(number),
                    "--no-create-home",
                    "--home-dir", home,
                    "--shell", _nologin(),
                    "--comment", ACCOUNT_COMMENT_PREFIX + hub_name,
                    "--no-log-init",
                    name,
                ]
            )  # fmt: skip
        except AccountError:
            _run([shutil.which("groupdel") or "groupdel", name])
            raise
    return find_account(policy, hub_name) or _missing(name)


def _missing(name: str) -> Account:
    raise AccountError(f"the account {name!r} was made but cannot be found")


def remove_account(policy: AccountPolicy, hub_name: str) -> bool:
    """Delete the user's account and group (never their files); whether there was one."""
    found = find_account(policy, hub_name)
    if found is None:
        return False
    _run([shutil.which("userdel") or "userdel", found.name])
    with contextlib.suppress(KeyError, AccountError):
        grp.getgrnam(found.name)
        _run([shutil.which("groupdel") or "groupdel", found.name])
    return True


def give_tree(path: str, account: Account, mode: int | None = None) -> int:
    """Make ``path`` and everything below it the account's; returns how many entries changed.

    Never follows a symbolic link (a link is re-owned itself, its target is left alone) and
    never leaves the file system of ``path``. A home made in the single-account mode is
    taken over this way, with nothing in it lost.
    """
    top = os.lstat(path)
    if stat.S_ISLNK(top.st_mode):
        raise AccountError(f"{path} is a symbolic link; refusing to give it to {account.name}")
    changed = 0
    for root, dirs, files in os.walk(path, topdown=True, followlinks=False):
        here = os.lstat(root)
        if here.st_dev != top.st_dev:
            dirs[:] = []
            continue
        for entry in [*dirs, *files]:
            full = os.path.join(root, entry)
            info = os.lstat(full)
            if info.st_uid != account.uid or info.st_gid != account.gid:
                os.lchown(full, account.uid, account.gid)
                changed += 1
    if top.st_uid != account.uid or top.st_gid != account.gid:
        os.lchown(path, account.uid, account.gid)  # last: an interrupted run is redone
        changed += 1
    if mode is not None:
        os.chmod(path, mode)
    return changed


# -- the build account ------------------------------------------------------------------------
# `clusterhub build` runs a repository's code (pip's builds, postBuild, the checks) as this
# account, never as root: a repository is whatever the organiser pointed us at.
BUILD_ACCOUNT = "clusterhub-build"
BUILD_ACCOUNT_COMMENT = "clusterhub build account"
_SYSTEM_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def check_build_account_name(name: str) -> str:
    if not _SYSTEM_NAME.fullmatch(name):
        raise ValueError(
            f"--build-account: {name!r} is not an account name; use 1 to 32 characters from "
            "a-z, 0-9, '_' and '-', starting with a letter or '_'"
        )
    return name


def ensure_build_account(name: str) -> Account:
    """The build account, made now (a system account, no home, no login) if it is missing.

    An existing account of that name is used only if this platform made it."""

    def found() -> Account | None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        if entry.pw_gecos != BUILD_ACCOUNT_COMMENT:
            raise AccountError(
                f"--build-account: the system account {name!r} exists but was not made by "
                "clusterhub; choose another name"
            )
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, (entry.pw_gid,))

    account = found()
    if account is not None:
        return account
    useradd = shutil.which("useradd")
    if os.geteuid() != 0 or not useradd:
        raise AccountError("a build account needs root and useradd (package passwd)")
    with _accounts_lock():
        account = found()
        if account is None:
            _run(
                [
                    useradd,
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir", "/nonexistent",
                    "--shell", _nologin(),
                    "--comment", BUILD_ACCOUNT_COMMENT,
                    name,
                ]
            )  # fmt: skip
            account = found()
    return account or _missing(name)


def remove_build_account(name: str) -> bool:
    """Delete the build account (if it is ours); whether there was one."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return False
    if entry.pw_gecos != BUILD_ACCOUNT_COMMENT:
        return False
    _run([shutil.which("userdel") or "userdel", name])
    return True
