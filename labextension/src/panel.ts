import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { ClusterCard } from './card';
import { el, errorText } from './dom';
import { HostsView } from './hostsview';
import { ICluster, IClustersAnswer, ILimits, clusterKey } from './model';
import { IBackoff, Poller } from './poller';
import { requestAPI, sendJSON } from './request';

/** The cluster list: fast right after a change, down to twice a minute when idle. */
export const LIST_BACKOFF: IBackoff = { interval: 2000, max: 30000, growth: 2 };
/** The hostnames view: every second while tasks arrive, every 10 s when idle. */
export const TASKS_BACKOFF: IBackoff = { interval: 1000, max: 10000, growth: 2 };

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
    this._hosts = new HostsView();
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
      this._hosts.node
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
      tick: () => {
        const key = this._hosts.selected;
        return this._hosts.refresh(key === null ? undefined : this._cards.get(key)?.cluster);
      },
      isStandby: standby,
      onError: (error, wait) =>
        this._hosts.setError(
          `Could not read the tasks: ${errorText(error)} (trying again in ${Math.round(
            wait / 1000
          )} s)`
        ),
      onSuccess: () => this._hosts.setError('')
    });
    this._onVisibility = () => {
      if (!document.hidden) {
        this._listPoller.wake();
        this._tasksPoller.wake();
      }
    };
    document.addEventListener('visibilitychange', this._onVisibility);
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
    this._hosts.show(key);
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
      this._hosts.show(null); // a new cluster's view starts afresh, even under an old key
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
    const selected = this._hosts.selected;
    if (
      selected === null ||
      !clusters.some(c => clusterKey(c) === selected && c.state === 'running')
    ) {
      const first =
        clusters.find(c => c.engine === 'dask' && c.state === 'running') ??
        clusters.find(c => c.state === 'running');
      if (first && clusterKey(first) !== selected) {
        this.select(first);
      } else if (!first && selected !== null) {
        this._hosts.show(null);
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
      card.update(cluster, this.limits, key === this._hosts.selected);
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

  private _cards = new Map<string, ClusterCard>();
  private _lastList = '';
  private _actionError = '';
  private _pollError = '';
  private _started = false;
  private _error: HTMLDivElement;
  private _newWorkers: HTMLInputElement;
  private _newButton: HTMLButtonElement;
  private _list: HTMLUListElement;
  private _empty: HTMLParagraphElement;
  private _hosts: HostsView;
  private _listPoller: Poller;
  private _tasksPoller: Poller;
  private _onVisibility: () => void;
}
