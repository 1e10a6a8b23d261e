"""The Clusters sidebar as a notebook widget: ``from clusterhub import ClustersWidget``.

Built from ipywidgets' own controls (no extra frontend code), and driven by
the same core as the sidebar (:class:`~.core.Clusters`): the list of clusters
with their workers, cores and memory, a worker count to scale to, adaptive
bounds for Dask, stop, "new cluster", and which hostname ran each recent task
of the selected cluster, each host in its own colour.

A background thread keeps it current while the kernel runs: every second
while tasks arrive, backing off to every ``max_interval`` seconds when nothing
changes or a call fails. ``close()`` stops it.
"""

from __future__ import annotations

import html
import math
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from .core import ENGINES, Clusters, UserError, default_clusters

ENGINE_LABELS = {"dask": "Dask", "spark": "Spark", "ipyparallel": "IPyParallel"}
RECENT_LIMIT = 20


def host_colour(index: int) -> str:
    """The colour of the n-th host seen (as in the sidebar): hues a golden angle apart."""
    hue = round((index * 137.508 + 200) % 360)
    return f"hsl({hue}, 65%, 42%)"


def format_bytes(value: float | None) -> str:
    if value is None:
        return "–"
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{value:.0f} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def format_duration(seconds: float) -> str:
    """As the sidebar shows it: to the millisecond, in microseconds below one."""
    if not math.isfinite(seconds) or seconds < 0:
        return ""
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 0.001:
        return f"{round(seconds * 1000)} ms"
    return f"{round(seconds * 1e6)} µs"


class HostTally:
    """Tasks per hostname of one cluster, folded from successive task-record answers.

    A record whose worker has not told its hostname yet is counted under the worker
    until an answer's ``workers`` names the host.
    """

    def __init__(self) -> None:
        self.cursor: float | None = None
        self.missed = 0
        self.counts: Counter[str] = Counter()
        self.pending: Counter[str] = Counter()
        self.workers: dict[str, str] = {}
        self.recent: list[dict[str, Any]] = []
        self.task_workers: set[str] = set()
        # "host", or "worker" when the workers have no hostnames of their own.
        self.place = "host"
        self._colours: dict[str, int] = {}

    def add(self, answer: dict[str, Any]) -> bool:
        """Fold in one answer of ``task_records``; True when it brought anything new."""
        changed = bool(answer["records"])
        if answer.get("place", self.place) != self.place:
            self.place = answer["place"]
            changed = True
        for worker, hostname in (answer.get("workers") or {}).items():
            if self.workers.get(worker) != hostname:
                self.workers[worker] = hostname
                changed = True
        for record in answer["records"]:
            hostname = record["hostname"] or self.workers.get(record["worker"] or "")
            if hostname:
                self._count(hostname, 1)
            else:
                self.pending[record["worker"] or "?"] += 1
            if record["worker"]:
                self.task_workers.add(record["worker"])
        for worker, tasks in list(self.pending.items()):
            hostname = self.workers.get(worker)
            if hostname:
                self._count(hostname, tasks)
                del self.pending[worker]
        self.recent = (self.recent + list(answer["records"]))[-RECENT_LIMIT:]
        self.missed += answer.get("missed") or 0
        self.cursor = answer["cursor"]
        return changed

    def colour(self, hostname: str) -> str:
        index = self._colours.setdefault(hostname, len(self._colours))
        return host_colour(index)

    def _count(self, hostname: str, tasks: int) -> None:
        self.colour(hostname)
        self.counts[hostname] += tasks

    def total(self) -> int:
        return sum(self.counts.values()) + sum(self.pending.values())

    def html(self, title: str) -> str:
        """The hostnames view: a coloured bar per host, then the most recent tasks."""
        counts = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        total = self.total()
        by_worker = self.place == "worker"
        heading = "Workers" if by_worker else "Hostnames"
        parts = [f"<h4 style='margin:4px 0'>{heading} of {html.escape(title)}</h4>"]
        if total == 0:
            parts.append("<p>No tasks yet: run a computation on this cluster.</p>")
        else:
            summary = f"{plural(total, 'task')} on {plural(len(counts), self.place)}"
            if by_worker:
                summary += " (they share this machine's hostname)"
            elif self.task_workers:
                summary += f", run by {plural(len(self.task_workers), 'worker')}"
            if self.missed:
                summary += f", {self.missed} older not shown"
            parts.append(f"<p class='clusterhub-summary'>{summary}</p>")
        most = counts[0][1] if counts else 1
        for hostname, tasks in counts:
            colour = self.colour(hostname)
            width = max(2, round(100 * tasks / most))
            parts.append(
                f"<div class='clusterhub-host' data-hostname='{html.escape(hostname)}'>"
                f"<span style='display:inline-block;width:10px;height:10px;"
                f"background:{colour}'></span> <code>{html.escape(hostname)}</code> "
                f"<b class='clusterhub-count'>{tasks}</b>"
                f"<div style='height:4px;width:{width}%;background:{colour}'></div></div>"
            )
        if self.pending:
            parts.append(
                f"<div>{plural(sum(self.pending.values()), 'task')} on workers whose "
                "hostname is not known yet</div>"
            )
        if self.recent:
            rows = []
            for record in reversed(self.recent):
                hostname = record["hostname"] or self.workers.get(record["worker"] or "")
                colour = self.colour(hostname) if hostname else "#888"
                seconds = ""
                if record["started"] is not None and record["finished"] is not None:
                    seconds = format_duration(record["finished"] - record["started"])
                rows.append(
                    f"<tr><td title='{html.escape(str(record['task']))}' "
                    "style='max-width:22em;overflow:hidden;text-overflow:ellipsis;"
                    "white-space:nowrap'>"
                    f"<code>{html.escape(str(record['task']))}</code></td>"
                    f"<td><span style='color:white;background:{colour};padding:0 4px'>"
                    f"{html.escape(hostname or '…')}</span></td><td>{seconds}</td></tr>"
                )
            parts.append(
                "<table style='font-size:smaller'><tr><th>task</th>"
                f"<th>{self.place}</th><th>time</th>"
                f"</tr>{''.join(rows)}</table>"
            )
        return "".join(parts)


class _ClusterRow:
    """One cluster's line: its numbers and its controls."""

    def __init__(self, owner: ClustersWidget, cluster: dict[str, Any]):
        self.owner = owner
        self.cluster = cluster
        self.summary = widgets.HTML()
        self.workers = widgets.BoundedIntText(
            value=cluster.get("requested_workers") or cluster["workers"],
            min=0,
            max=owner.limits.get("workers", 64),
            description="Workers",
            layout=widgets.Layout(width="150px"),
        )
        self.scale = widgets.Button(description="Scale", button_style="primary")
        self.hosts = widgets.Button(description="Hostnames")
        self.stop = widgets.Button(description="Stop", button_style="danger")
        self.scale.on_click(lambda _: owner._act(f"Scaling {self.label}", self._scale))
        self.hosts.on_click(lambda _: owner.select(self.cluster))
        self.stop.on_click(lambda _: owner._act(f"Stopping {self.label}", self._stop))
        controls: list[widgets.Widget] = [self.workers, self.scale, self.hosts, self.stop]
        rows: list[widgets.Widget] = [self.summary, widgets.HBox(controls)]
        if cluster["engine"] == "dask":
            self.adaptive = widgets.Checkbox(value=False, description="Adaptive", indent=False)
            self.minimum = widgets.BoundedIntText(
                value=0,
                min=0,
                max=owner.limits.get("workers", 64),
                description="min",
                layout=widgets.Layout(width="120px"),
            )
            self.maximum = widgets.BoundedIntText(
                value=owner.limits.get("workers", 64),
                min=0,
                max=owner.limits.get("workers", 64),
                description="max",
                layout=widgets.Layout(width="120px"),
            )
            self.apply = widgets.Button(description="Apply")
            self.apply.on_click(lambda _: owner._act(f"Adapting {self.label}", self._adapt))
            rows.append(widgets.HBox([self.adaptive, self.minimum, self.maximum, self.apply]))
        self.box = widgets.VBox(
            rows,
            layout=widgets.Layout(border="1px solid #ccc", padding="4px", margin="2px 0"),
        )
        self.box.add_class("clusterhub-cluster")
        self.update(cluster, selected=False)

    @property
    def label(self) -> str:
        return f"{ENGINE_LABELS.get(self.cluster['engine'], self.cluster['engine'])} cluster " + (
            self.cluster["name"] or ""
        )

    def update(self, cluster: dict[str, Any], selected: bool) -> None:
        self.cluster = cluster
        running = cluster["state"] == "running"
        numbers = [plural(cluster["workers"], "worker"), plural(cluster["cores"], "core")]
        if cluster.get("memory") is not None:
            numbers.append(format_bytes(cluster["memory"]))
        requested = cluster.get("requested_workers")
        if requested is not None and requested != cluster["workers"]:
            numbers.append(f"{requested} requested")
        dashboard = (
            f" · <a href='{html.escape(cluster['dashboard'])}' target='_blank'>Dashboard</a>"
            if cluster.get("dashboard")
            else ""
        )
        error = (
            f"<div style='color:#c00'>{html.escape(cluster['error'])}</div>"
            if cluster.get("error")
            else ""
        )
        marker = "▶ " if selected else ""
        self.summary.value = (
            f"<div class='clusterhub-summary-line' data-workers='{cluster['workers']}'>"
            f"{marker}<b>{ENGINE_LABELS.get(cluster['engine'], cluster['engine'])}</b> "
            f"<code>{html.escape(cluster['name'] or '')}</code> <i>{cluster['state']}</i> · "
            f"<span class='clusterhub-numbers'>{' · '.join(numbers)}</span>{dashboard}</div>"
            f"{error}"
        )
        adaptive = cluster["engine"] == "dask" and self.adaptive.value
        self.workers.disabled = self.scale.disabled = not running or adaptive
        self.hosts.disabled = not running
        self.stop.disabled = cluster.get("name") is None or cluster["state"] == "unavailable"

    def _scale(self) -> None:
        self.owner.clusters.scale(self.cluster["engine"], self.cluster["name"], self.workers.value)

    def _adapt(self) -> None:
        if self.adaptive.value:
            self.owner.clusters.adapt(self.cluster["name"], self.minimum.value, self.maximum.value)
        else:  # adaptivity off: stay at the current size, now fixed
            self.owner.clusters.scale("dask", self.cluster["name"], self.cluster["workers"])

    def _stop(self) -> None:
        self.owner.clusters.stop(self.cluster["engine"], self.cluster["name"])


class ClustersWidget(widgets.VBox):
    """Your clusters, their controls and the hostnames of their tasks, in a notebook.

    ``clusters``: the core to drive (by default the one configured from this kernel's
    environment, as in the sidebar). ``interval`` and ``max_interval``: seconds between
    refreshes while things change, and at most when idle. ``autorefresh=False``: refresh
    only on :meth:`refresh` and after an action.
    """

    def __init__(
        self,
        clusters: Clusters | None = None,
        *,
        autorefresh: bool = True,
        interval: float = 1.0,
        max_interval: float = 10.0,
        **kwargs: Any,
    ):
        self.clusters = clusters if clusters is not None else default_clusters()
        self.limits: dict[str, int] = {}
        self.interval = interval
        self.max_interval = max_interval
        self._rows: dict[tuple[str, str | None], _ClusterRow] = {}
        self._selected: tuple[str, str] | None = None
        self._tally = HostTally()
        self._render_lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._list_error = ""
        self._action_error = ""

        self.title = widgets.HTML("<h3 style='margin:4px 0'>Clusters</h3>")
        self.error = widgets.HTML()
        self.error.add_class("clusterhub-error")
        self.new_workers = widgets.BoundedIntText(
            value=1, min=0, max=64, description="Workers", layout=widgets.Layout(width="150px")
        )
        self.new_button = widgets.Button(description="New cluster", button_style="success")
        self.new_button.on_click(lambda _: self._act("New cluster", self._new))
        self.list = widgets.VBox()
        self.hosts = widgets.HTML()
        self.hosts.add_class("clusterhub-hosts")
        super().__init__(
            [
                self.title,
                self.error,
                widgets.HBox([self.new_workers, self.new_button]),
                self.list,
                self.hosts,
            ],
            **kwargs,
        )
        self.add_class("clusterhub-widget")
        self.refresh()
        self._thread: threading.Thread | None = None
        if autorefresh:
            self._thread = threading.Thread(
                target=self._loop, name="clusterhub-widget", daemon=True
            )
            self._thread.start()

    # -- refreshing ----------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Read the clusters and the selected one's new task records; True if anything
        changed. Errors are shown in the widget (and not raised)."""
        changed = self._refresh_list()
        return self._refresh_tasks() or changed

    def _refresh_list(self) -> bool:
        try:
            found = self.clusters.list_engines()
            self.limits = self.clusters.limits()
        except Exception as exc:  # shown to the user, and retried with backoff
            self._set_error(list_error=f"Could not list the clusters: {describe(exc)}")
            return False
        self._set_error(list_error="")
        with self._render_lock:
            before = {key: row.cluster for key, row in self._rows.items()}
            self.new_workers.max = self.limits.get("workers", 64)
            keys = []
            for cluster in found:
                key = (cluster["engine"], cluster["name"])
                keys.append(key)
                row = self._rows.get(key)
                if row is None:
                    row = self._rows[key] = _ClusterRow(self, cluster)
                row.update(cluster, selected=key == self._selected)
            for key in set(self._rows) - set(keys):
                self._rows.pop(key).box.close()
            self.list.children = [self._rows[key].box for key in keys]
            if self._selected not in self._rows or not self._running(self._selected):
                first = next(
                    (c for c in found if c["engine"] == "dask" and c["state"] == "running"),
                    next((c for c in found if c["state"] == "running"), None),
                )
                if first is not None:
                    self.select(first, refresh=False)
                elif self._selected is not None:
                    self._selected = None
                    self.hosts.value = ""
            return before != {key: row.cluster for key, row in self._rows.items()}

    def _running(self, key: tuple[str, str] | None) -> bool:
        row = self._rows.get(key) if key is not None else None
        return row is not None and row.cluster["state"] == "running"

    def _refresh_tasks(self) -> bool:
        key = self._selected
        if key is None or not self._running(key):
            return False
        tally = self._tally
        try:
            answer = self.clusters.task_records(key[0], key[1], tally.cursor)
        except Exception as exc:
            self._set_hosts(tally, f"Could not read the tasks: {describe(exc)}")
            return False
        with self._render_lock:
            if tally is not self._tally:
                return True
            changed = tally.add(answer)
            if changed:
                self._set_hosts(tally)
            return changed

    def _set_hosts(self, tally: HostTally, error: str = "") -> None:
        with self._render_lock:
            if tally is not self._tally or self._selected is None:
                return
            title = "/".join(self._selected)
            problem = (
                f"<div style='color:#c00' role='alert'>{html.escape(error)}</div>" if error else ""
            )
            self.hosts.value = problem + tally.html(title)

    def _loop(self) -> None:
        delay = self.interval
        while not self._closed.is_set():
            self._wake.wait(delay)
            if self._closed.is_set():
                return
            woken = self._wake.is_set()
            self._wake.clear()
            changed = self.refresh()
            if changed or woken:
                delay = self.interval
            else:
                delay = min(self.max_interval, delay * 2)

    # -- actions -------------------------------------------------------------------------------
    def select(self, cluster: dict[str, Any], refresh: bool = True) -> None:
        """Show the hostnames of one cluster's tasks."""
        with self._render_lock:
            key = (cluster["engine"], cluster["name"])
            if key != self._selected:
                self._selected = key
                self._tally = HostTally()
                self._set_hosts(self._tally)
            for row_key, row in self._rows.items():
                row.update(row.cluster, selected=row_key == key)
        if refresh:
            self._wake.set()

    def _new(self) -> None:
        created = self.clusters.new_dask_cluster(workers=self.new_workers.value)
        self._refresh_list()
        self.select(created)

    def _act(self, what: str, action: Callable[[], Any]) -> None:
        """Run a user's action; its refusal is shown in the widget, not raised."""
        try:
            action()
        except Exception as exc:
            self._set_error(action_error=f"{what}: {describe(exc)}")
        else:
            self._set_error(action_error="")
        self._refresh_list()
        self._wake.set()

    def _set_error(self, list_error: str | None = None, action_error: str | None = None) -> None:
        if list_error is not None:
            self._list_error = list_error
        if action_error is not None:
            self._action_error = action_error
        messages = [m for m in (self._action_error, self._list_error) if m]
        self.error.value = "".join(
            f"<div role='alert' style='color:#a00;background:#fdd;padding:4px'>"
            f"{html.escape(m)}</div>"
            for m in messages
        )

    def close(self) -> None:
        """Stop refreshing and close the widget (the clusters keep running)."""
        self._closed.set()
        self._wake.set()
        for row in self._rows.values():
            row.box.close()
        super().close()


def describe(exc: BaseException) -> str:
    """A refusal's own message; anything else with its type, so nothing is hidden."""
    if isinstance(exc, UserError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


__all__ = ["ENGINES", "ClustersWidget", "HostTally", "host_colour"]
