"""One machine's room across restarts (as root): a home from the single-account mode is
taken over by its attendee's new account with nothing lost, the account is found again
after a restart, and the room's limits (accounts, running servers) refuse with a page that
says so and changes nothing."""

from __future__ import annotations

import os
import pwd
import stat

import pytest
from hubclient import BrowserUser, RunningPlatform, marked_processes

from clusterhub.accounts import AccountPolicy, accounts_made

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="attendee accounts exist only as root"),
]
NOTES = "my notes, written before the platform ran as root's accounts"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """Not started: the first test starts it in the single-account mode, then as root's."""
    limits = ["--max-accounts", "2", "--max-servers", "1"]
    running = RunningPlatform(str(tmp_path_factory.mktemp("room")), extra_args=limits)
    try:
        yield running
    finally:
        running.tear_down()


def started(platform: RunningPlatform, name: str) -> BrowserUser:
    user = BrowserUser(platform, name)
    user.login().raise_for_status()
    response = user.spawn(profile="dask")
    assert response.status_code == 302, response.text
    user.wait_ready()
    return user


def uid_of(platform: RunningPlatform, name: str) -> int:
    return pwd.getpwnam(platform.account_prefix + name).pw_uid


def test_a_single_account_home_is_taken_over_and_the_account_kept_across_restarts(platform):
    per_user = list(platform.extra_args)
    platform.extra_args = [*per_user, "--single-account"]
    platform.start()
    alice = started(platform, "alice")
    written = alice.server_api(
        "PUT", "api/contents/notes.txt", json={"type": "file", "format": "text", "content": NOTES}
    )
    assert written.status_code == 201, written.text
    alice.stop_server()
    platform.stop()
    home = os.path.join(platform.data_dir, "homes", "alice")
    assert os.stat(os.path.join(home, "notes.txt")).st_uid == 0, "made by root's single account"
    assert not accounts_made(AccountPolicy(prefix=platform.account_prefix))

    platform.extra_args = per_user
    platform.start()
    alice = started(platform, "alice")
    uid = uid_of(platform, "alice")
    info = os.stat(home)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid, 0o700)
    assert os.stat(os.path.join(home, "notes.txt")).st_uid == uid
    kept = alice.server_api("GET", "api/contents/notes.txt?content=1")
    assert kept.json()["content"] == NOTES, "nothing in the home was lost"
    space = os.path.join(platform.data_dir, "spaces", "alice")
    processes = marked_processes("CLUSTERHUB_SPACE", space)
    assert any("clusterhub-singleuser" in " ".join(p.cmdline()) for p in processes)
    assert {p.uids().real for p in processes} == {uid}
    alice.stop_server()

    # A restart finds the same account again: no second one, the same uid, the same home.
    platform.stop()
    platform.start()
    alice = started(platform, "alice")
    assert uid_of(platform, "alice") == uid
    assert accounts_made(AccountPolicy(prefix=platform.account_prefix)) == [
        platform.account_prefix + "alice"
    ]
    assert alice.server_api("GET", "api/contents/notes.txt?content=1").json()["content"] == NOTES
    alice.stop_server()


def test_a_full_room_says_so_and_changes_nothing(platform):
    # --max-servers 1: while alice runs, bob is asked to come back later.
    alice = started(platform, "alice")
    bob = BrowserUser(platform, "bob")
    bob.login().raise_for_status()
    refused = bob.spawn(profile="dask")
    assert refused.status_code == 429, refused.status_code
    assert "Active user limit exceeded" in refused.text
    assert not bob.server_model().get("servers")
    alice.stop_server()

    # The control: with alice stopped, bob gets the second and last place.
    bob = started(platform, "bob")
    bob.stop_server()

    # --max-accounts 2: a third attendee is refused with the reason, and no account is made.
    carol = BrowserUser(platform, "carol")
    carol.login().raise_for_status()
    response = carol.spawn(profile="dask")
    page = response.text
    if response.status_code == 302:  # the failure arrives on the pending page
        page = carol.session.get(f"{platform.url}/hub/spawn-pending/carol").text
    assert "room for 2 attendees and all places are taken" in page, page[-2000:]
    assert not carol.server_model().get("servers")
    assert sorted(accounts_made(AccountPolicy(prefix=platform.account_prefix))) == [
        platform.account_prefix + "alice",
        platform.account_prefix + "bob",
    ]
