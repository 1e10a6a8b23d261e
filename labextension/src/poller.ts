/**
 * A poll loop that backs off and stands by.
 *
 * Each tick says whether it saw anything new. While things change the loop
 * runs at `interval`; every quiet or failed tick multiplies the delay by
 * `growth`, up to `max`. While `isStandby()` holds (the panel is hidden, the
 * page is in the background) it makes no request at all and sleeps until
 * `wake()`. `refresh()` polls now and returns to the fast pace: after the
 * user changed something, news is expected soon.
 *
 * Not `@lumino/polling`'s `Poll`: it backs off only after a failure, and the
 * panel must also slow down while nothing changes (a quiet room of 100 open
 * sidebars would otherwise poll every second).
 */

export interface IBackoff {
  /** Milliseconds between ticks while something changes. */
  interval: number;
  /** The longest wait between ticks, in milliseconds. */
  max: number;
  /** How much the wait grows after a quiet or failed tick (> 1). */
  growth: number;
}

/** The wait before the next tick. */
export function nextDelay(
  current: number,
  outcome: 'changed' | 'quiet' | 'failed',
  backoff: IBackoff
): number {
  if (outcome === 'changed') {
    return backoff.interval;
  }
  const grown = Math.max(backoff.interval, current) * backoff.growth;
  return Math.min(backoff.max, grown);
}

export interface IPollerOptions extends IBackoff {
  /** One poll; resolves true when it saw something new. */
  tick: () => Promise<boolean>;
  /** True while polling would be wasted (nobody looks). */
  isStandby: () => boolean;
  /** Called after a failed tick with the error and the wait before the retry. */
  onError?: (error: unknown, retryInMs: number) => void;
  /** Called after a tick that worked. */
  onSuccess?: () => void;
}

export class Poller {
  constructor(private readonly options: IPollerOptions) {
    this._delay = options.interval;
  }

  /** The current wait between ticks, in milliseconds. */
  get delay(): number {
    return this._delay;
  }

  /** True while standing by (no timer armed until `wake()`). */
  get sleeping(): boolean {
    return this._sleeping;
  }

  /** Poll now and go back to the fast pace. */
  refresh(): void {
    this._delay = this.options.interval;
    this._sleeping = false;
    this._schedule(0);
  }

  /** Resume after a standby (panel shown, page visible again): poll now. */
  wake(): void {
    if (this._disposed) {
      return;
    }
    if (this._sleeping) {
      this._sleeping = false;
      this._schedule(0);
    }
  }

  /** Start polling (the first tick runs at once). */
  start(): void {
    this._schedule(0);
  }

  dispose(): void {
    this._disposed = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _schedule(wait: number): void {
    if (this._disposed) {
      return;
    }
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    this._timer = setTimeout(() => {
      this._timer = null;
      void this._run();
    }, wait);
  }

  private async _run(): Promise<void> {
    if (this._disposed) {
      return;
    }
    if (this.options.isStandby()) {
      this._sleeping = true;
      return;
    }
    if (this._running) {
      this._again = true; // a refresh arrived during a tick: tick once more after it
      return;
    }
    this._running = true;
    let outcome: 'changed' | 'quiet' | 'failed';
    try {
      outcome = (await this.options.tick()) ? 'changed' : 'quiet';
      this.options.onSuccess?.();
    } catch (error) {
      outcome = 'failed';
      this._delay = nextDelay(this._delay, outcome, this.options);
      this.options.onError?.(error, this._delay);
    } finally {
      this._running = false;
    }
    if (outcome !== 'failed') {
      this._delay = nextDelay(this._delay, outcome, this.options);
    }
    if (this._again) {
      this._again = false;
      this._schedule(0);
    } else if (this._timer === null) {
      this._schedule(this._delay);
    }
  }

  private _delay: number;
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _running = false;
  private _again = false;
  private _sleeping = false;
  private _disposed = false;
}
