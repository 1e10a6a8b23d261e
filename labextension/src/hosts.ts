import { ITaskRecord, ITasksAnswer, Place } from './model';

/** How many recent tasks the view lists. */
export const RECENT_LIMIT = 20;

/**
 * The colour of the n-th host seen: hues a golden angle apart, so every host
 * differs visibly from the ones seen just before it, however many there are.
 */
export function hostColour(index: number): string {
  const hue = Math.round((index * 137.508 + 200) % 360);
  return `hsl(${hue}, 65%, 42%)`;
}

/**
 * A task's duration for the recent-tasks table: to the millisecond, and in
 * microseconds below one (a map of small tasks would otherwise read "0 ms"
 * throughout).
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds >= 1) {
    return `${seconds.toFixed(3)} s`;
  }
  if (seconds >= 0.001) {
    return `${Math.round(seconds * 1000)} ms`;
  }
  return `${Math.round(seconds * 1e6)} µs`;
}

export interface IHostCount {
  hostname: string;
  tasks: number;
  colour: string;
}

/**
 * Everything the hostnames view shows for one cluster, built up from the
 * answers of `GET .../tasks?since=cursor`: tasks per hostname since the view
 * opened, the most recent tasks, a colour per host that never changes.
 *
 * A record may come before its worker's hostname is known (`hostname: null`);
 * it is counted under its worker until an answer's `workers` names the host.
 */
export class HostTally {
  /** The cursor to send as `since` next time (undefined: from the start). */
  cursor: number | undefined = undefined;
  /** Records the server could no longer return (its buffer wrapped). */
  missed = 0;
  /** What the bars stand for: hosts, or workers when they have no host of their own. */
  place: Place = 'host';

  /** Fold in one answer; returns true when it brought anything new. */
  add(answer: ITasksAnswer): boolean {
    let changed = answer.records.length > 0;
    if (answer.place && answer.place !== this.place) {
      this.place = answer.place;
      changed = true;
    }
    for (const [worker, hostname] of Object.entries(answer.workers ?? {})) {
      if (this._workers.get(worker) !== hostname) {
        this._workers.set(worker, hostname);
        changed = true;
      }
    }
    for (const record of answer.records) {
      const hostname = record.hostname ?? this._workers.get(record.worker ?? '');
      if (hostname) {
        this._count(hostname, 1);
      } else {
        const worker = record.worker ?? '?';
        this._pending.set(worker, (this._pending.get(worker) ?? 0) + 1);
      }
      this._recent.push(record);
      if (record.worker) {
        this._taskWorkers.add(record.worker);
      }
    }
    // Tasks counted under a worker move to its host once the host is known.
    for (const [worker, tasks] of [...this._pending]) {
      const hostname = this._workers.get(worker);
      if (hostname) {
        this._count(hostname, tasks);
        this._pending.delete(worker);
      }
    }
    if (this._recent.length > RECENT_LIMIT) {
      this._recent.splice(0, this._recent.length - RECENT_LIMIT);
    }
    this.missed += answer.missed ?? 0;
    this.cursor = answer.cursor;
    return changed;
  }

  /** Tasks per host, most first, each with its colour. */
  counts(): IHostCount[] {
    return [...this._counts]
      .map(([hostname, tasks]) => ({
        hostname,
        tasks,
        colour: this.colour(hostname)
      }))
      .sort((a, b) => b.tasks - a.tasks || a.hostname.localeCompare(b.hostname));
  }

  /** Tasks whose worker has not said its hostname yet. */
  pending(): number {
    let total = 0;
    this._pending.forEach(n => (total += n));
    return total;
  }

  /** The most recent tasks, newest first, with hostnames filled in where known. */
  recent(): ITaskRecord[] {
    return this._recent
      .map(r => ({
        ...r,
        hostname: r.hostname ?? this._workers.get(r.worker ?? '') ?? null
      }))
      .reverse();
  }

  /** How many distinct workers ran the tasks counted. */
  taskWorkers(): number {
    return this._taskWorkers.size;
  }

  /** The workers and their hosts as last reported. */
  workers(): Map<string, string> {
    return new Map(this._workers);
  }

  total(): number {
    let total = this.pending();
    this._counts.forEach(n => (total += n));
    return total;
  }

  colour(hostname: string): string {
    let index = this._colours.get(hostname);
    if (index === undefined) {
      index = this._colours.size;
      this._colours.set(hostname, index);
    }
    return hostColour(index);
  }

  private _count(hostname: string, tasks: number): void {
    this.colour(hostname); // first seen, first coloured
    this._counts.set(hostname, (this._counts.get(hostname) ?? 0) + tasks);
  }

  private _counts = new Map<string, number>();
  private _pending = new Map<string, number>();
  private _workers = new Map<string, string>();
  private _colours = new Map<string, number>();
  private _recent: ITaskRecord[] = [];
  private _taskWorkers = new Set<string>();
}
