import { formatDuration, HostTally } from './hosts';
import { ICluster, ITasksAnswer, clusterPath } from './model';
import { requestAPI } from './request';
import { el, plural } from './dom';

/**
 * Which hostname (or, on one machine, which worker) ran each recent task of the selected
 * cluster: a bar per host in its own colour, and the recent tasks with their durations.
 */
export class HostsView {
  readonly node: HTMLElement;

  constructor() {
    this.node = el('section', { class: 'jp-ClusterHub-hosts' });
    this.render();
  }

  /** The key of the cluster shown, or null. */
  get selected(): string | null {
    return this._selected;
  }

  /** Show the cluster with this key (null: none), from a fresh tally if it is another. */
  show(key: string | null): void {
    if (key !== this._selected) {
      this._selected = key;
      this._tally = new HostTally();
      this._tasksError = '';
      this.render();
    }
  }

  /** Read the task records of `cluster` (the selected one) that are new; true if any. */
  async refresh(cluster: ICluster | undefined): Promise<boolean> {
    const key = this._selected;
    if (key === null || !cluster || cluster.state !== 'running') {
      return false;
    }
    const tally = this._tally;
    const since = tally.cursor === undefined ? '' : `?since=${tally.cursor}`;
    const answer = await requestAPI<ITasksAnswer>(`${clusterPath(cluster)}/tasks${since}`);
    if (key !== this._selected || tally !== this._tally) {
      return true; // the selection changed meanwhile: this answer is not for the view
    }
    const changed = tally.add(answer);
    if (changed) {
      this.render();
    }
    return changed;
  }

  /** Why the records could not be read ('' once they can again). */
  setError(message: string): void {
    if (message !== this._tasksError) {
      this._tasksError = message;
      this.render();
    }
  }

  render(): void {
    const section = this.node;
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

  private _selected: string | null = null;
  private _tally = new HostTally();
  private _tasksError = '';
}
