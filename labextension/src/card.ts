import { Dialog, showDialog } from '@jupyterlab/apputils';

import { el, errorText, plural } from './dom';
import { ICluster, ILimits, clusterKey, clusterPath, formatBytes } from './model';
import type { ClustersPanel } from './panel';
import { requestAPI, sendJSON } from './request';

const ENGINE_LABELS: Record<string, string> = {
  dask: 'Dask',
  spark: 'Spark',
  ipyparallel: 'IPyParallel'
};

/** One cluster's card: built once, its text updated on every refresh. */
export class ClusterCard {
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
