"""The one user-error type and its validators, as every face uses them."""

import math

import pytest

from clusterhub.usererror import OVER_LIMIT, UserError, number, whole_number


def refusal(call, *args, **kwargs) -> UserError:
    with pytest.raises(UserError) as refused:
        call(*args, **kwargs)
    return refused.value


def test_a_refusal_carries_its_message_field_and_status():
    error = UserError("workers: must be a whole number from 0 to 8, not -1", field="workers")
    assert error.to_dict() == {
        "message": "workers: must be a whole number from 0 to 8, not -1",
        "field": "workers",
        "status": 400,
    }
    assert isinstance(error, ValueError), "a refused value, for code that catches ValueError"


@pytest.mark.parametrize(
    "value, text, message",
    [
        (True, False, "n: must be a whole number from 0 to 8, not True"),
        (3.0, False, "n: must be a whole number from 0 to 8, not 3.0"),
        ("3", False, "n: must be a whole number from 0 to 8, not '3'"),
        ("three", True, "n: must be a whole number from 0 to 8, not 'three'"),
        ("9", True, "n: must be a whole number from 0 to 8, not 9"),
        (-1, False, "n: must be a whole number from 0 to 8, not -1"),
        (None, True, "n: must be a whole number from 0 to 8, not None"),
    ],
)
def test_a_whole_number_names_the_field_and_the_range(value, text, message):
    error = refusal(whole_number, "n", value, low=0, high=8, text=text)
    assert (error.message, error.field, error.status) == (message, "n", 400)


def test_text_is_read_as_a_number_only_when_it_is_text():
    assert whole_number("n", " 7 ", low=0, high=8, text=True) == 7
    assert whole_number("n", 7, low=0, high=8) == 7


def test_above_the_profiles_limit_is_over_limit_and_the_range_shown_is_the_limit():
    error = refusal(whole_number, "workers", 5, low=0, high=100, limit=4)
    assert (error.message, error.status) == (
        "workers: 5 is over your profile's limit of 4",
        OVER_LIMIT,
    )
    error = refusal(whole_number, "workers", "x", low=0, high=100, limit=4)
    assert error.message == "workers: must be a whole number from 0 to 4, not 'x'"
    assert whole_number("workers", 4, low=0, high=100, limit=4) == 4


@pytest.mark.parametrize("value", [True, "1.5", math.nan, 0.1, 65])
def test_a_number_names_the_field_and_the_range(value):
    error = refusal(number, "memory_gib.limit", value, low=0.25, high=64)
    assert error.message.startswith("memory_gib.limit: must be a number from 0.25 to 64, not ")
    assert error.field == "memory_gib.limit"


def test_a_number_in_range_comes_back_as_a_float():
    assert number("cores", 2, low=0.5, high=4) == 2.0


def test_a_refusal_in_an_owner_task_crosses_to_the_hub_whole(tmp_path):
    """Owner tasks run as the attendee's account, in a process of their own: the refusal
    comes back with its field and status, not just its words."""
    import json
    import subprocess
    import sys

    request = {
        "task": "start_engine",
        "data_dir": str(tmp_path),
        "username": "alice",
        "kinds": ["dask-on-mars"],
        "workers": 1,
    }
    (tmp_path / "users" / "alice").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "clusterhub.owner_tasks"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer == {
        "user_error": {
            "message": "engine: unknown engine 'dask-on-mars'; choose spark or ipyparallel",
            "field": "engine",
            "status": 404,
        }
    }
