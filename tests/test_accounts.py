"""User names, system accounts and control groups, as root on this machine (real useradd,
real cgroups, real processes)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys

import pytest

from clusterhub.accounts import (
    Account,
    AccountError,
    AccountPolicy,
    accounts_made,
    ensure_account,
    find_account,
    give_tree,
    remove_account,
    unix_name,
)
from clusterhub.fences import Fence, cgroup_version, remove_platform_groups, unavailable_reason
from clusterhub.names import InvalidName, check_name

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="making accounts needs root")


# -- names ------------------------------------------------------------------------------------
def test_names_have_one_spelling():
    assert check_name("Alice") == "alice"
    assert check_name("ＡＬＩＣＥ") == "alice"  # full-width: NFKC
    assert check_name("bob.smith_2-x") == "bob.smith_2-x"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "must not be empty"),
        ("a" * 300, "300 characters is too long"),
        ("a" * 33, "33 characters is too long"),
        ("alice\nbob", "U+000A"),
        ("аlice", "U+0430"),  # Cyrillic a: a lookalike of alice
        ("ana maría", "' ', U+00ED"),
        ("-alice", "must start with a letter or a digit"),
        ("../etc", "'/'"),
    ],
)
def test_names_that_break_the_rule_are_refused_with_the_rule_named(raw, problem):
    with pytest.raises(InvalidName) as caught:
        check_name(raw)
    message = str(caught.value)
    assert message.startswith("username: ")
    assert problem in message
    assert "1 to 32 characters from a-z, 0-9, '.', '_' and '-'" in message


def test_account_names_keep_users_apart_and_fit_32_characters():
    assert unix_name("ch-", "a.b") != unix_name("ch-", "a-b")
    long_one = unix_name("ch-", "x" * 32)
    assert len(long_one) == 32
    assert long_one != unix_name("ch-", "x" * 31 + "y")


def test_a_bad_account_policy_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="account_prefix"):
        AccountPolicy(prefix="Root").check()
    with pytest.raises(ValueError, match="account_uid_min/account_uid_max"):
        AccountPolicy(uid_min=10, uid_max=5).check()


# -- accounts ---------------------------------------------------------------------------------
@pytest.fixture
def policy(tmp_path):
    """A prefix and uid range of this test alone; every account it made is removed after."""
    made = AccountPolicy(prefix=f"t{secrets.token_hex(2)}-", uid_min=61000, uid_max=61999)
    yield made
    for name in accounts_made(made):
        subprocess.run(["userdel", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)


@as_root
def test_an_account_is_made_once_without_login_or_password(policy, tmp_path):
    home = str(tmp_path / "home")
    account = ensure_account(policy, "alice", home)
    assert account.name == policy.prefix + "alice"
    assert policy.uid_min <= account.uid <= policy.uid_max
    import pwd
    import spwd

    entry = pwd.getpwnam(account.name)
    assert entry.pw_shell.endswith(("nologin", "false"))
    assert entry.pw_dir == home
    assert spwd.getspnam(account.name).sp_pwdp.startswith("!")  # locked: no password
    # Found again (a hub restart), never made twice.
    assert ensure_account(policy, "alice", home) == account
    assert find_account(policy, "alice") == account
    assert accounts_made(policy) == [account.name]
    assert remove_account(policy, "alice")
    assert find_account(policy, "alice") is None


@as_root
def test_an_existing_system_account_of_that_name_is_never_taken_over(policy, tmp_path):
    name = policy.prefix + "mallory"
    subprocess.run(["useradd", "--no-create-home", name], check=True)
    try:
        with pytest.raises(AccountError, match="was not made for 'mallory' by this platform"):
            ensure_account(policy, "mallory", str(tmp_path))
    finally:
        subprocess.run(["userdel", name], check=False)


@as_root
def test_the_room_is_full_at_max_accounts(policy, tmp_path):
    small = AccountPolicy(policy.prefix, policy.uid_min, policy.uid_max, max_accounts=1)
    ensure_account(small, "first", str(tmp_path / "a"))
    with pytest.raises(AccountError, match="room for 1 attendees and all places are taken"):
        ensure_account(small, "second", str(tmp_path / "b"))
    assert find_account(small, "second") is None


@as_root
def test_accounts_made_at_once_get_distinct_uids(policy, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    names = [f"u{i}" for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        made = list(pool.map(lambda n: ensure_account(policy, n, str(tmp_path / n)), names))
    assert len({a.uid for a in made}) == 6


@as_root
def test_a_home_is_taken_over_without_following_links_or_losing_files(policy, tmp_path):
    account = ensure_account(policy, "carol", str(tmp_path / "home"))
    home = tmp_path / "home"
    (home / "notebooks").mkdir(parents=True)
    (home / "notebooks" / "mine.ipynb").write_text("{}")
    outside = tmp_path / "outside.txt"
    outside.write_text("root's")
    (home / "link").symlink_to(outside)
    assert give_tree(str(home), account, mode=0o700) >= 3
    assert (home / "notebooks" / "mine.ipynb").read_text() == "{}"
    assert os.lstat(home / "notebooks" / "mine.ipynb").st_uid == account.uid
    assert os.lstat(home / "link").st_uid == account.uid
    assert os.stat(outside).st_uid == 0, "the link's target is not given away"
    assert os.stat(home).st_mode & 0o777 == 0o700
    with pytest.raises(AccountError, match="is a symbolic link"):
        give_tree(str(home / "link"), account)


@as_root
def test_a_process_started_as_the_account_is_the_account(policy, tmp_path):
    account = ensure_account(policy, "dave", str(tmp_path))
    out = subprocess.run(
        ["id", "-u"], capture_output=True, text=True, check=True, **account.popen_kwargs()
    )
    assert int(out.stdout) == account.uid
    assert Account.current().uid == 0


# -- fences -----------------------------------------------------------------------------------
fenced = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


@pytest.fixture
def fence():
    made = Fence(platform_id=f"test{secrets.token_hex(3)}", name="alice")
    yield made
    remove_platform_groups(made.platform_id)
    assert not any(os.path.exists(d) for d in made.dirs()), "no cgroup left behind"


def _fenced_python(fence: Fence, code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=fence.preexec(),
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


@fenced
def test_a_memory_hog_is_killed_inside_its_fence_and_nothing_else(fence):
    fence.create(memory_bytes=200 << 20, pids_max=64)
    assert fence.memory_limit() == 200 << 20
    neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        hog = _fenced_python(fence, "chunks = []\nwhile True: chunks.append(bytearray(50 << 20))")
        assert hog.returncode == -signal.SIGKILL, hog.stderr
        assert fence.oom_kills() >= 1
        assert neighbour.poll() is None, "a process outside the fence is untouched"
        # The same fence still runs a well-behaved program.
        assert _fenced_python(fence, "print(sum(range(10)))").stdout.strip() == "45"
    finally:
        neighbour.kill()
        neighbour.wait()


@fenced
def test_a_fork_bomb_stops_at_the_pids_limit(fence):
    fence.create(memory_bytes=1 << 30, pids_max=40)
    bomb = _fenced_python(
        fence,
        "import os, sys, time\n"
        "made = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        made += 1\n"
        "except OSError as exc:\n"
        "    print(made, exc.errno)\n",
    )
    made, errno_seen = bomb.stdout.split()
    assert int(made) < 40
    assert int(errno_seen) == 11  # EAGAIN: fork refused at the limit
    fence.remove()
    assert not fence.pids()


@fenced
def test_every_user_gets_the_same_cpu_weight(fence):
    fence.create(memory_bytes=1 << 30, pids_max=64)
    other = Fence(fence.platform_id, "bob")
    other.create(memory_bytes=1 << 30, pids_max=64)
    if cgroup_version() == 2:
        files = [os.path.join(d, "cpu.weight") for d in (fence.dirs()[0], other.dirs()[0])]
    else:
        files = [os.path.join(f.dirs()[1], "cpu.shares") for f in (fence, other)]
    weights = {open(f).read().strip() for f in files}
    assert len(weights) == 1
    other.remove()
