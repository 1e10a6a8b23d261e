"""Where the hostnames view says a task ran: its host, or its worker when workers share this
machine's hostname (one machine without per-worker hostnames); literal answers as the
engines' record readers give them."""

from __future__ import annotations

import copy

from clusterhub.labextension.task_places import place_tasks
from clusterhub.labextension.widget import HostTally, format_duration

MACHINE = frozenset({"build-box", "localhost", "127.0.0.1", "::1"})


def record(task: str, worker: str | None, hostname: str | None) -> dict:
    return {
        "engine": "dask",
        "cluster": "c",
        "task": task,
        "worker": worker,
        "hostname": hostname,
        "started": 1.0,
        "finished": 1.25,
        "state": "done",
    }


def test_workers_with_hosts_of_their_own_are_named_by_host():
    answer = {
        "records": [record("a", "tcp://10.0.0.5:4000", "dask-worker-x")],
        "workers": {"tcp://10.0.0.5:4000": "dask-worker-x", "tcp://10.0.0.6:4000": "dask-w-y"},
        "cursor": 1,
    }
    before = copy.deepcopy(answer)
    assert place_tasks(answer, MACHINE) == {**before, "place": "host"}


def test_workers_sharing_this_machines_hostname_are_named_by_worker():
    answer = {
        "records": [
            record("a", "tcp://127.0.0.1:41235", "build-box"),
            record("b", "tcp://127.0.0.1:41301", "build-box"),
            record("c", "tcp://127.0.0.1:41301", None),
        ],
        "workers": {"tcp://127.0.0.1:41235": "build-box", "tcp://127.0.0.1:41301": "build-box"},
        "cursor": 3,
    }
    placed = place_tasks(answer, MACHINE)
    assert placed["place"] == "worker"
    assert [r["hostname"] for r in placed["records"]] == [
        "127.0.0.1:41235",
        "127.0.0.1:41301",
        "127.0.0.1:41301",
    ]
    assert placed["workers"] == {
        "tcp://127.0.0.1:41235": "127.0.0.1:41235",
        "tcp://127.0.0.1:41301": "127.0.0.1:41301",
    }


def test_spark_on_loopback_is_named_by_executor_and_unknown_hosts_wait():
    spark = {
        "records": [record("stage 0 task 1", "executor 0", "127.0.0.1")],
        "workers": {"executor 0": "127.0.0.1"},
        "cursor": 9,
    }
    assert place_tasks(spark, MACHINE)["records"][0]["hostname"] == "executor 0"
    nothing_known = {"records": [record("a", "engine 1", None)], "workers": {}, "cursor": 1}
    assert place_tasks(nothing_known, MACHINE)["place"] == "host"
    assert nothing_known["records"][0]["hostname"] is None


def test_the_widget_labels_workers_as_workers_with_durations_and_full_names():
    tally = HostTally()
    answer = place_tasks(
        {
            "records": [record(f"inc-{i}" * 20, f"engine {i % 2}", "build-box") for i in range(6)],
            "workers": {},
            "cursor": 6,
        },
        MACHINE,
    )
    assert tally.add(answer)
    assert tally.place == "worker"
    view = tally.html("default")
    assert "Workers of default" in view
    assert "6 tasks on 2 workers (they share this machine's hostname)" in view
    assert "<th>worker</th>" in view and "250 ms" in view
    assert f"title='{'inc-5' * 20}'" in view


def test_durations_read_to_the_millisecond_and_in_microseconds_below():
    assert format_duration(2.5) == "2.500 s"
    assert format_duration(0.1234) == "123 ms"
    assert format_duration(0.000042) == "42 µs"
    assert format_duration(-1) == ""
