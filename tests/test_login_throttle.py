"""The login throttle: the window's arithmetic on a fake clock, then the real hub refusing a
guesser (429, Retry-After, a page saying when) while the rightful attendee and others log in."""

from __future__ import annotations

import pytest

from clusterhub.login_throttle import LoginThrottle, TooManyFailures


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(throttle: LoginThrottle, name: str, address: str) -> TooManyFailures:
    with pytest.raises(TooManyFailures) as info:
        throttle.check(name, address)
    return info.value


def test_a_name_is_refused_after_its_limit_until_the_oldest_failure_leaves_the_window():
    clock = Clock()
    throttle = LoginThrottle(per_name=3, per_address=100, window=60, clock=clock)
    for n in range(3):
        throttle.check("mallory", "10.0.0.1")
        assert throttle.failed("mallory", "10.0.0.1") == n + 1
        clock.now += 10
    # failures at 1000, 1010, 1020; now 1030: the first leaves the window at 1060
    error = refused(throttle, "mallory", "10.0.0.2")
    assert error.retry_after == 30
    assert str(error) == "Too many failed logins for mallory. Try again in 30 seconds."
    throttle.check("alice", "10.0.0.1")  # another name from the same address
    clock.now = 1059.5
    assert refused(throttle, "mallory", "10.0.0.1").retry_after == 1
    clock.now = 1060
    throttle.check("mallory", "10.0.0.1")  # one failure left the window: looked at again


def test_an_address_is_refused_for_every_name_after_its_limit():
    clock = Clock()
    throttle = LoginThrottle(per_name=100, per_address=4, window=60, clock=clock)
    for n in range(4):
        throttle.failed(f"guess{n}", "10.0.0.9")
    error = refused(throttle, "somebody-new", "10.0.0.9")
    assert (error.what, error.retry_after) == ("from 10.0.0.9", 60)
    throttle.check("somebody-new", "10.0.0.10")  # another address is not affected


def test_refused_attempts_do_not_extend_the_wait():
    clock = Clock()
    throttle = LoginThrottle(per_name=2, per_address=100, window=60, clock=clock)
    throttle.failed("mallory", "a")
    throttle.failed("mallory", "a")
    for _ in range(50):
        clock.now += 1
        refused(throttle, "mallory", "a")
    assert refused(throttle, "mallory", "a").retry_after == 10
    clock.now += 10
    throttle.check("mallory", "a")


def test_old_failures_are_forgotten():
    clock = Clock()
    throttle = LoginThrottle(per_name=5, per_address=20, window=60, clock=clock)
    for n in range(500):
        throttle.failed(f"user{n}", f"10.0.{n // 250}.{n % 250}")
    clock.now += 61
    throttle.check("user1", "10.0.0.1")
    assert throttle._failures == {}, "nothing kept for failures outside the window"


# -- the real hub -------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_hub_throttles_a_guesser_and_lets_the_rightful_attendee_back_in(tmp_path):
    import os
    import re
    import time

    from hubclient import BrowserUser, running_platform

    window = 20  # seconds: the 30 tries and the checks below take well under it
    config = tmp_path / "throttle.py"
    config.write_text(
        f"c.WorkshopAuthenticator.failed_logins_per_name = 5\n"
        f"c.WorkshopAuthenticator.failed_logins_per_address = 20\n"
        f"c.WorkshopAuthenticator.failed_login_window = {window}\n"
    )
    with running_platform(str(tmp_path), extra_args=["--config", str(config)]) as platform:
        wrong_codes = [f"not-the-code-{n}" for n in range(30)]
        answers = []
        for number, code in enumerate(wrong_codes, 1):
            answers.append(BrowserUser(platform, "mallory", password=code).login())
            if number == 5:
                fifth_failure = time.monotonic()
        # 30 wrong codes: the first five are looked at (and refused), every later one is
        # throttled before its code is looked at.
        assert [a.status_code for a in answers] == [403] * 5 + [429] * 25

        # The sixth try is refused before the code is looked at, the right code too.
        for code in ("one-more-wrong-code", platform.workshop_code):
            attempt = BrowserUser(platform, "mallory", password=code)
            answer = attempt.login()
            assert answer.status_code == 429, answer.status_code
            retry_after = int(answer.headers["Retry-After"])
            assert 1 <= retry_after <= window
            match = re.search(r"Try again in (\d+) seconds?", answer.text)
            assert match, answer.text[:2000]
            assert "for mallory" in answer.text
            assert attempt.session.get(f"{platform.url}/hub/api/user").status_code == 403

        # Control: another attendee from the same address logs in meanwhile.
        alice = BrowserUser(platform, "alice")
        assert alice.login().status_code == 200
        assert "/hub/" in alice.session.get(f"{platform.url}/hub/home").url

        # Once the window has passed, the rightful mallory gets in.
        time.sleep(max(0.0, fifth_failure + window + 0.5 - time.monotonic()))
        mallory = BrowserUser(platform, "mallory")
        answer = mallory.login()
        assert answer.status_code == 200, answer.text[:2000]
        assert mallory.session.get(f"{platform.url}/hub/api/user").json()["name"] == "mallory"

        # 20 failures from one address, over many names: the next new name is refused too.
        for n in range(20):
            BrowserUser(platform, f"guesser{n}", password="nope").login()
        answer = BrowserUser(platform, "newcomer").login()
        assert answer.status_code == 429
        assert "from 127.0.0.1" in answer.text

        # The log names who failed, never what they typed.
        with open(os.path.join(platform.data_dir, "logs", "hub.log")) as f:
            log = f.read()
        assert "failed login for mallory from 127.0.0.1" in log
        for code in [*wrong_codes, "one-more-wrong-code", "nope"]:
            assert code not in log, f"{code!r} is in the hub's log"
