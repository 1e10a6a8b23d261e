"""Task -> host records of a Spark standalone cluster, from each driver's REST API.

The drivers (SparkContexts) live in the user's kernels, not in the process
that asks, so they are found through the cluster's master:

1. the master's ``/json/`` lists its ``activeapps`` (ids only; Spark 4.3 gives
   no driver address there);
2. the master's application page ``/app/?appId=<id>`` links the driver's UI as
   "Application Detail UI" (the app's ``appUiUrl``); read once per app, cached;
3. the driver's ``/api/v1/applications/<id>/stages`` and, for stages that ran
   since the cursor, ``.../stages/<stage>/<attempt>/taskList`` give each task's
   executor and ``host``.

Spark's ``host`` is the address the executor's worker advertises (its
``--host``), which is what Spark itself calls the host: on one machine every
local worker advertises 127.0.0.1. The cursor is the latest finish time seen
(driver clock, seconds); a task whose end reaches the driver's status store
after a later task was read can be missed, which a sidebar can live with.

Cost: per poll, one master request, one stages request per active app, and one
taskList request per stage that ran since the cursor; nothing inside Spark.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any

HTTP_TIMEOUT = 5
_APP_UI_LINK = re.compile(r'href="(https?://[^"]+)"[^>]*>\s*Application Detail UI')
_FINISHED_TASKS = {"SUCCESS": "done", "FAILED": "error", "KILLED": "killed"}


def _get(url: str, *, as_json: bool = True) -> Any:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
        body = response.read()
    return json.loads(body) if as_json else body.decode("utf-8", "replace")


def _seconds(text: str | None) -> float | None:
    """Spark's REST times look like ``2026-11-22T20:40:10.538GMT``."""
    if not text:
        return None
    stamp = datetime.strptime(text[:23], "%Y-%m-%dT%H:%M:%S.%f")
    return stamp.replace(tzinfo=timezone.utc).timestamp()


class SparkRecords:
    """Reads task records of every active application of one master."""

    def __init__(self) -> None:
        self._driver_uis: dict[str, str] = {}  # app id -> driver UI base URL
        self._lock = threading.Lock()

    def active_apps(self, master_webui: str) -> list[str]:
        state = _get(f"{master_webui}/json/")
        return [app["id"] for app in state.get("activeapps", []) if app.get("id")]

    def driver_ui(self, master_webui: str, app_id: str) -> str | None:
        with self._lock:
            if app_id in self._driver_uis:
                return self._driver_uis[app_id]
        query = urllib.parse.urlencode({"appId": app_id})
        page = _get(f"{master_webui}/app/?{query}", as_json=False)
        match = _APP_UI_LINK.search(page)
        if match is None:
            return None
        with self._lock:
            self._driver_uis[app_id] = match.group(1).rstrip("/")
        return self._driver_uis[app_id]

    def collect(
        self, master_webui: str, cluster: str, since: float | None, limit: int
    ) -> dict[str, Any]:
        apps = self.active_apps(master_webui)
        with self._lock:  # apps that ended take their cached UI address with them
            for gone in set(self._driver_uis) - set(apps):
                del self._driver_uis[gone]
        records: list[dict[str, Any]] = []
        unreachable = []
        for app_id in apps:
            try:
                ui = self.driver_ui(master_webui, app_id)
                if ui is None:
                    unreachable.append(app_id)
                    continue
                records.extend(self._app_records(ui, app_id, cluster, since, limit))
            except (OSError, ValueError):
                # The driver is going away or busy; its tasks come on a later poll.
                unreachable.append(app_id)
        records.sort(key=lambda r: r["finished"])
        records = records[-limit:]
        cursor = max((r["finished"] for r in records), default=since or 0.0)
        workers = {r["worker"]: r["hostname"] for r in records}
        return {
            "records": records,
            "cursor": cursor,
            "workers": workers,
            "unreachable_apps": unreachable,
        }

    def _app_records(
        self, ui: str, app_id: str, cluster: str, since: float | None, limit: int
    ) -> list[dict[str, Any]]:
        base = f"{ui}/api/v1/applications/{urllib.parse.quote(app_id)}"
        stages = _get(f"{base}/stages?status=active&status=complete&status=failed")
        records = []
        for stage in stages:
            completed = _seconds(stage.get("completionTime"))
            if since is not None and completed is not None and completed <= since:
                continue  # finished before the cursor: nothing new in it
            done = stage.get("numCompleteTasks", 0) + stage.get("numFailedTasks", 0)
            done += stage.get("numKilledTasks", 0)
            total = max(done + stage.get("numActiveTasks", 0), stage.get("numTasks", 0))
            # Tasks are listed by id; the newest ``limit`` are at the end.
            offset = max(0, total - limit)
            tasks = _get(
                f"{base}/stages/{stage['stageId']}/{stage['attemptId']}/taskList"
                f"?offset={offset}&length={limit}"
            )
            for task in tasks:
                state = _FINISHED_TASKS.get(task.get("status", ""))
                started = _seconds(task.get("launchTime"))
                if state is None or started is None:
                    continue  # still running
                finished = started + task.get("duration", 0) / 1000
                if since is not None and finished <= since:
                    continue
                records.append(
                    {
                        "engine": "spark",
                        "cluster": cluster,
                        "task": (
                            f"{app_id} stage {stage['stageId']}.{stage['attemptId']} "
                            f"task {task['taskId']} partition {task['index']}"
                        ),
                        "worker": f"executor {task.get('executorId')}",
                        "hostname": task.get("host"),
                        "started": started,
                        "finished": finished,
                        "state": state,
                        "app": app_id,
                        "stage": stage["stageId"],
                        "partition": task["index"],
                    }
                )
        return records
