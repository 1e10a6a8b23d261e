import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { formatDuration, HostTally } from './hosts';
import {
  ICluster,
  IClustersAnswer,
  ILimits,
  ITasksAnswer,
  clusterKey,
  clusterPath,
  formatBytes
} from './model';
import { IBackoff, Poller } from './poller';
import { requestAPI, sendJSON } from './request';

/** The cluster list: fast right after a change, down to twice a minute when idle. */
export const LIST_BACKOFF: IBackoff = { interval: 2000, max: 30000, growth: 2 };
/** The hostnames view: every second while tasks arrive, every 10 s when idle. */
export const TASKS_BACKOFF: IBackoff = { interval: 1000, max: 10000, growth: 2 };

const ENGINE_LABELS: Record<string, string> = {
  dask: 'Dask',
  spark: 'Spark',
  ipyparallel: 'IPyParallel'
};

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** One cluster's card: built once, its text updated on every refresh. */
class ClusterCard {
  readonly node: HTMLLIElement;
  cluster: ICluster;
  /** True while the user edits a number: refreshes then leave the inputs alone. */
  edited = false;
  adaptive = false;

  constructor(
    cluster: ICluster,
    private readonly panel: ClustersPanel
  ) {
    this.cluster = cluster;
    const dask = cluster.engine === 'dask';
    this.node = el('li', { class: 'jp-ClusterHub-cluster' });
    this._title = el('span', { class: 'jp-ClusterHub-name' });
    this._state = el('span', { class: 'jp-ClusterHub-state' });
    this._stats = el('div', { class: 'jp-ClusterHub-stats' });
    this._error = el('div', { class: 'jp-ClusterHub-clusterError' });
    this._waiting = el('div', { class: 'jp-ClusterHub-waiting', role: 'status' });
    this._workers = el('input', {
      type: 'number',
      min: '0',
      step: '1',
      class: 'jp-ClusterHub-workersInput',
      'aria-label': 'Workers'
    });
    this._scale = el('button', { class: 'jp-mod-styled jp-mod-accept' }, 'Scale');
    this._adapt = el('input', { type: 'checkbox', 'aria-label': 'Adaptive' });
    this._minimum = el('input', {
      type: 'number',
      min: '0',
      step: '1',
      'aria-label': 'Adaptive minimum'
    });
    this._maximum = el('input', {
      type: 'number',
      min: '0',
      step: '1',
      'aria-label': 'Adaptive maximum'
    });
    this._applyAdapt = el('button', { class: 'jp-mod-styled' }, 'Apply');
    this._dashboard = el(
      'a',
      { class: 'jp-ClusterHub-dashboard', target: '_blank', rel: 'noopener' },
      'Dashboard'
    );
    this._hosts = el('button', { class: 'jp-mod-styled' }, 'Hostnames');
    this._stop = el('button', { class: 'jp-mod-styled jp-mod-warn' }, 'Stop');

    const head = el(
      'div',
      { class: 'jp-ClusterHub-head' },
      el(
        'span',
        { class: `jp-ClusterHub-engine jp-ClusterHub-engine-${cluster.engine}` },
        ENGINE_LABELS[cluster.engine] ?? cluster.engine
      ),
      this._title,
      this._state
    );
    const scaleRow = el(
      'div',
      { class: 'jp-ClusterHub-row' },
      el('label', {}, 'Workers ', this._workers),
      this._scale
    );
    const adaptRow = el(
      'div',
      { class: 'jp-ClusterHub-row jp-ClusterHub-adapt' },
      el('label', {}, this._adapt, ' Adaptive'),
      el('label', {}, 'min ', this._minimum),
      el('label', {}, 'max ', this._maximum),
      this._applyAdapt
    );
    const actions = el(
      'div',
      { class: 'jp-ClusterHub-row jp-ClusterHub-actions' },
      this._dashboard,
      this._hosts,
      this._stop
    );
    this.node.append(head, this._stats, this._waiting, this._error, scaleRow);
    if (dask) {
      this.node.append(adaptRow);
    }
    this.node.append(actions);

    for (const input of [this._workers, this._minimum, this._maximum]) {
      input.addEventListener('input', () => (this.edited = true));
      input.addEventListener('keydown', event => {
        if (event.key === 'Enter') {
          (input === this._workers ? this._scale : this._applyAdapt).click();
        }
      });
    }
    this._adapt.addEventListener('change', () => {
      this.edited = true;
      this._syncAdapt();
    });
    this._scale.addEventListener('click', () => this._onScale());
    this._applyAdapt.addEventListener('click', () => this._onAdapt());
    this._hosts.addEventListener('click', () => panel.select(this.cluster));
    this._stop.addEventListener('click', () => this._onStop());
    this.node.addEventListener('click', event => {
      if ((event.target as HTMLElement).closest('input, button, a, label') === null) {
        panel.select(this.cluster);
      }
    });
  }

  update(cluster: ICluster, limits: ILimits | null, selected: boolean): void {
    this.cluster = cluster;
    const running = cluster.state === 'running';
    this.node.dataset.cluster = clusterKey(cluster);
    this.node.dataset.state = cluster.state;
    this.node.dataset.workers = String(cluster.workers);
    this.node.classList.toggle('jp-mod-selected', selected);
    this._title.textContent = cluster.name ?? '';
    this._title.title = cluster.name ?? '';
    this._state.textContent = cluster.state;
    this._state.dataset.state = cluster.state;
    const parts = [plural(cluster.workers, 'worker'), plural(cluster.cores, 'core')];
    if (cluster.memory !== null && cluster.memory !== undefined) {
      parts.push(formatBytes(cluster.memory));
    }
    if (
      cluster.requested_workers !== null &&
      cluster.requested_workers !== undefined &&
      cluster.requested_workers !== cluster.workers
    ) {
      parts.push(`${cluster.requested_workers} requested`);
    }
    this._stats.textContent = parts.join(' · ');
    this._error.textContent = cluster.error ?? '';
    this._error.hidden = !cluster.error;
    this._waiting.textContent = cluster.waiting ?? '';
    this._waiting.hidden = !cluster.waiting;
    const max = String(limits?.workers ?? 64);
    for (const input of [this._workers, this._minimum, this._maximum]) {
      input.max = max;
    }
    if (!this.edited && document.activeElement !== this._workers) {
      this._workers.value = String(cluster.requested_workers ?? cluster.workers);
      if (this._maximum.value === '') {
        this._minimum.value = '0';
        this._maximum.value = max;
      }
    }
    if (cluster.dashboard) {
      this._dashboard.href = cluster.dashboard;
      this._dashboard.hidden = false;
    } else {
      this._dashboard.hidden = true;
    }
    const busy = this._busy;
    this._scale.disabled = busy || !running || this.adaptive;
    this._workers.disabled = busy || !running || this.adaptive;
    this._stop.disabled = busy || cluster.state === 'unavailable' || cluster.name === null;
    this._hosts.disabled = !running;
    this._adapt.checked = this.adaptive;
    this._adapt.disabled = busy || !running;
    this._syncAdapt();
  }

  private _syncAdapt(): void {
    const running = this.cluster.state === 'running';
    this._minimum.disabled = this._busy || !running || !this._adapt.checked;
    this._maximum.disabled = this._busy || !running || !this._adapt.checked;
    this._applyAdapt.disabled =
      this._busy || !running || (this._adapt.checked === this.adaptive && !this._adapt.checked);
  }

  private async _act(what: string, action: () => Promise<unknown>): Promise<void> {
    this._busy = true;
    this.node.classList.add('jp-mod-busy');
    this.update(this.cluster, this.panel.limits, this.node.classList.contains('jp-mod-selected'));
    try {
      await action();
      this.edited = false;
      this.panel.clearError();
    } catch (error) {
      this.panel.showError(`${what}: ${errorText(error)}`);
    } finally {
      this._busy = false;
      this.node.classList.remove('jp-mod-busy');
      this.panel.refreshList();
    }
  }

  private _onScale(): void {
    const text = this._workers.value.trim();
    const n = Number(text);
    if (text === '' || !Number.isInteger(n)) {
      this.panel.showError(`workers: must be a whole number, not "${text}"`);
      return;
    }
    void this._act(`Scaling ${this.cluster.name}`, () =>
      sendJSON<ICluster>(clusterPath(this.cluster), 'PUT', { workers: n })
    );
  }

  private _onAdapt(): void {
    if (!this._adapt.checked) {
      // Turning adaptivity off: stay at the current size, now fixed.
      const n = this.cluster.workers;
      void this._act(`Fixing ${this.cluster.name} at ${n} workers`, async () => {
        await sendJSON<ICluster>(clusterPath(this.cluster), 'PUT', { workers: n });
        this.adaptive = false;
      });
      return;
    }
    const minimum = Number(this._minimum.value);
    const maximum = Number(this._maximum.value);
    void this._act(`Making ${this.cluster.name} adaptive`, async () => {
      await sendJSON<ICluster>(clusterPath(this.cluster), 'PATCH', {
        adapt: { minimum, maximum }
      });
      this.adaptive = true;
    });
  }

  private async _onStop(): Promise<void> {
    const label = `${ENGINE_LABELS[this.cluster.engine] ?? this.cluster.engine} cluster ${
      this.cluster.name
    }`;
    const answer = await showDialog({
      title: 'Stop cluster',
      body: `Stop the ${label}? Its workers and their results are lost.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop' })]
    });
    if (!answer.button.accept) {
      return;
    }
    await this._act(`Stopping ${label}`, () =>
      requestAPI<void>(clusterPath(this.cluster), { method: 'DELETE' })
    );
  }

  private _busy = false;
  private _title: HTMLSpanElement;
  private _state: HTMLSpanElement;
  private _stats: HTMLDivElement;
  private _error: HTMLDivElement;
  private _waiting: HTMLDivElement;
  private _workers: HTMLInputElement;
  private _scale: HTMLButtonElement;
  private _adapt: HTMLInputElement;
  private _minimum: HTMLInputElement;
  private _maximum: HTMLInputElement;
  private _applyAdapt: HTMLButtonElement;
  private _dashboard: HTMLAnchorElement;
  private _hosts: HTMLButtonElement;
  private _stop: HTMLButtonElement;
}

/**
 * The "Clusters" sidebar: every cluster of the user's space with its controls,
 * and which hostname ran each recent task of the selected one.
 */
export class ClustersPanel extends Widget {
  limits: ILimits | null = null;

  constructor() {
    super();
    this.addClass('jp-ClusterHub');
    this._error = el('div', { class: 'jp-ClusterHub-error', role: 'alert' });
    this._error.hidden = true;
    this._newWorkers = el('input', {
      type: 'number',
      min: '0',
      step: '1',
      value: '1',
      'aria-label': 'Workers of the new cluster'
    });
    this._newButton = el(
      'button',
      { class: 'jp-mod-styled jp-mod-accept jp-ClusterHub-new' },
      'New cluster'
    );
    this._list = el('ul', { class: 'jp-ClusterHub-list' });
    this._empty = el(
      'p',
      { class: 'jp-ClusterHub-empty' },
      'No clusters yet. "New cluster" starts a Dask cluster; clusters made in a notebook appear here too.'
    );
    this._hosts = el('section', { class: 'jp-ClusterHub-hosts' });
    this.node.append(
      el('h2', { class: 'jp-ClusterHub-title' }, 'Clusters'),
      this._error,
      el(
        'div',
        { class: 'jp-ClusterHub-row jp-ClusterHub-newRow' },
        el('label', {}, 'Workers ', this._newWorkers),
        this._newButton
      ),
      this._empty,
      this._list,
      this._hosts
    );
    this._newButton.addEventListener('click', () => void this._onNew());

    const standby = () => !this.isVisible || document.hidden;
    this._listPoller = new Poller({
      ...LIST_BACKOFF,
      tick: () => this._refreshList(),
      isStandby: standby,
      onError: (error, wait) =>
        this._showPollError(
          `Could not list the clusters: ${errorText(error)} (trying again in ${Math.round(
            wait / 1000
          )} s)`
        ),
      onSuccess: () => this._showPollError('')
    });
    this._tasksPoller = new Poller({
      ...TASKS_BACKOFF,
      tick: () => this._refreshTasks(),
      isStandby: standby,
      onError: (error, wait) =>
        this._setHostsError(
          `Could not read the tasks: ${errorText(error)} (trying again in ${Math.round(
            wait / 1000
          )} s)`
        ),
      onSuccess: () => this._setHostsError('')
    });
    this._onVisibility = () => {
      if (!document.hidden) {
        this._listPoller.wake();
        this._tasksPoller.wake();
      }
    };
    document.addEventListener('visibilitychange', this._onVisibility);
    this._renderHosts();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    document.removeEventListener('visibilitychange', this._onVisibility);
    this._listPoller.dispose();
    this._tasksPoller.dispose();
    super.dispose();
  }

  /** Show the hostnames of one cluster's tasks. */
  select(cluster: ICluster): void {
    const key = clusterKey(cluster);
    if (key !== this._selected) {
      this._selected = key;
      this._tally = new HostTally();
      this._tasksError = '';
      this._renderHosts();
    }
    for (const card of this._cards.values()) {
      card.node.classList.toggle('jp-mod-selected', clusterKey(card.cluster) === key);
    }
    this._tasksPoller.refresh();
  }

  /** Poll the list now (after a change the user made). */
  refreshList(): void {
    this._listPoller.refresh();
    this._tasksPoller.refresh();
  }

  /** An error from something the user did; stays until the next success or dismissal. */
  showError(message: string): void {
    this._actionError = message;
    this._renderError();
  }

  clearError(): void {
    this._actionError = '';
    this._renderError();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (!this._started) {
      this._started = true;
      this._listPoller.start();
      this._tasksPoller.start();
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._listPoller.wake();
    this._tasksPoller.wake();
  }

  private _showPollError(message: string): void {
    this._pollError = message;
    this._renderError();
  }

  private _renderError(): void {
    const messages = [this._actionError, this._pollError].filter(m => m);
    this._error.replaceChildren();
    for (const message of messages) {
      const dismiss = el(
        'button',
        { class: 'jp-ClusterHub-dismiss', 'aria-label': 'Dismiss' },
        '×'
      );
      const line = el('div', {}, el('span', {}, message), dismiss);
      dismiss.addEventListener('click', () => {
        if (message === this._actionError) {
          this._actionError = '';
        } else {
          this._pollError = '';
        }
        this._renderError();
      });
      this._error.append(line);
    }
    this._error.hidden = messages.length === 0;
  }

  private async _onNew(): Promise<void> {
    const text = this._newWorkers.value.trim();
    const workers = Number(text);
    if (text === '' || !Number.isInteger(workers)) {
      this.showError(`workers: must be a whole number, not "${text}"`);
      return;
    }
    this._newButton.disabled = true;
    this._newButton.textContent = 'Starting…';
    try {
      const created = await sendJSON<ICluster>('clusters', 'POST', { workers });
      this.clearError();
      this._selected = null;
      this.select(created);
    } catch (error) {
      this.showError(`New cluster: ${errorText(error)}`);
    } finally {
      this._newButton.disabled = false;
      this._newButton.textContent = 'New cluster';
      this.refreshList();
    }
  }

  private async _refreshList(): Promise<boolean> {
    const answer = await requestAPI<IClustersAnswer>('clusters');
    const text = JSON.stringify(answer);
    const changed = text !== this._lastList;
    this._lastList = text;
    this.limits = answer.limits;
    this._newWorkers.max = String(answer.limits.workers);
    this._renderList(answer.clusters);
    return changed;
  }

  private _renderList(clusters: ICluster[]): void {
    const seen = new Set<string>();
    if (
      this._selected === null ||
      !clusters.some(c => clusterKey(c) === this._selected && c.state === 'running')
    ) {
      const first =
        clusters.find(c => c.engine === 'dask' && c.state === 'running') ??
        clusters.find(c => c.state === 'running');
      if (first && clusterKey(first) !== this._selected) {
        this.select(first);
      } else if (!first && this._selected !== null) {
        this._selected = null;
        this._renderHosts();
      }
    }
    for (const cluster of clusters) {
      const key = clusterKey(cluster);
      seen.add(key);
      let card = this._cards.get(key);
      if (!card) {
        card = new ClusterCard(cluster, this);
        this._cards.set(key, card);
      }
      card.update(cluster, this.limits, key === this._selected);
      this._list.append(card.node); // keeps the server's order
    }
    for (const [key, card] of [...this._cards]) {
      if (!seen.has(key)) {
        card.node.remove();
        this._cards.delete(key);
      }
    }
    this._empty.hidden = clusters.length > 0;
  }

  private async _refreshTasks(): Promise<boolean> {
    const key = this._selected;
    const card = key === null ? undefined : this._cards.get(key);
    if (key === null || !card || card.cluster.state !== 'running') {
      return false;
    }
    const tally = this._tally;
    const since = tally.cursor === undefined ? '' : `?since=${tally.cursor}`;
    const answer = await requestAPI<ITasksAnswer>(`${clusterPath(card.cluster)}/tasks${since}`);
    if (key !== this._selected || tally !== this._tally) {
      return true; // the selection changed meanwhile: this answer is not for the view
    }
    const changed = tally.add(answer);
    if (changed) {
      this._renderHosts();
    }
    return changed;
  }

  private _setHostsError(message: string): void {
    if (message !== this._tasksError) {
      this._tasksError = message;
      this._renderHosts();
    }
  }

  private _renderHosts(): void {
    const section = this._hosts;
    section.replaceChildren();
    if (this._selected === null) {
      section.hidden = true;
      return;
    }
    section.hidden = false;
    section.dataset.cluster = this._selected;
    const tally = this._tally;
    const counts = tally.counts();
    const total = tally.total();
    const byWorker = tally.place === 'worker';
    section.append(el('h3', {}, `${byWorker ? 'Workers' : 'Hostnames'} of ${this._selected}`));
    if (this._tasksError) {
      section.append(el('div', { class: 'jp-ClusterHub-error', role: 'alert' }, this._tasksError));
    }
    const workers = tally.taskWorkers();
    section.append(
      el(
        'p',
        { class: 'jp-ClusterHub-summary' },
        total === 0
          ? 'No tasks yet: run a computation on this cluster.'
          : `${plural(total, 'task')} on ${plural(counts.length, tally.place)}` +
              (workers && !byWorker ? `, run by ${plural(workers, 'worker')}` : '') +
              (byWorker ? ' (they share this machine’s hostname)' : '') +
              (tally.missed ? `, ${tally.missed} older not shown` : '')
      )
    );
    const most = counts.length ? counts[0].tasks : 1;
    const bars = el('ul', { class: 'jp-ClusterHub-hostList' });
    for (const host of counts) {
      const bar = el('div', { class: 'jp-ClusterHub-bar' });
      bar.style.width = `${Math.max(2, (100 * host.tasks) / most)}%`;
      bar.style.background = host.colour;
      const swatch = el('span', { class: 'jp-ClusterHub-swatch' });
      swatch.style.background = host.colour;
      const item = el(
        'li',
        { class: 'jp-ClusterHub-host', 'data-hostname': host.hostname },
        el(
          'div',
          { class: 'jp-ClusterHub-hostLine' },
          swatch,
          el('span', { class: 'jp-ClusterHub-hostname' }, host.hostname),
          el('span', { class: 'jp-ClusterHub-count' }, String(host.tasks))
        ),
        bar
      );
      bars.append(item);
    }
    if (tally.pending()) {
      bars.append(
        el(
          'li',
          { class: 'jp-ClusterHub-host jp-mod-pending' },
          `${plural(tally.pending(), 'task')} on workers whose hostname is not known yet`
        )
      );
    }
    section.append(bars);
    const recent = tally.recent();
    if (recent.length) {
      const rows = el('tbody');
      for (const record of recent) {
        const chip = el('span', { class: 'jp-ClusterHub-chip' }, record.hostname ?? '…');
        if (record.hostname) {
          chip.style.background = tally.colour(record.hostname);
        }
        const seconds =
          record.started !== null && record.finished !== null
            ? formatDuration(record.finished - record.started)
            : '';
        rows.append(
          el(
            'tr',
            { 'data-state': record.state },
            el('td', { class: 'jp-ClusterHub-task', title: record.task }, record.task),
            el('td', {}, chip),
            el('td', { class: 'jp-ClusterHub-duration' }, seconds)
          )
        );
      }
      section.append(
        el('h4', {}, 'Recent tasks'),
        el(
          'table',
          { class: 'jp-ClusterHub-recent' },
          el(
            'thead',
            {},
            el('tr', {}, el('th', {}, 'task'), el('th', {}, tally.place), el('th', {}, 'time'))
          ),
          rows
        )
      );
    }
  }

  private _cards = new Map<string, ClusterCard>();
  private _selected: string | null = null;
  private _tally = new HostTally();
  private _lastList = '';
  private _actionError = '';
  private _pollError = '';
  private _tasksError = '';
  private _started = false;
  private _error: HTMLDivElement;
  private _newWorkers: HTMLInputElement;
  private _newButton: HTMLButtonElement;
  private _list: HTMLUListElement;
  private _empty: HTMLParagraphElement;
  private _hosts: HTMLElement;
  private _listPoller: Poller;
  private _tasksPoller: Poller;
  private _onVisibility: () => void;
}
