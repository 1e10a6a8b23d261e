/** The shapes the Clusters API answers with (see labextension/handlers.py). */

export type Engine = 'dask' | 'spark' | 'ipyparallel';

export interface ICluster {
  engine: Engine;
  name: string | null;
  state: string;
  workers: number;
  cores: number;
  /** Bytes; null where the engine has no memory bound. */
  memory: number | null;
  dashboard: string | null;
  error?: string;
  /** Where a start of this cluster waits in the machine's start queue, in words. */
  waiting?: string;
  requested_workers?: number | null;
  options?: Record<string, unknown>;
  started?: number | null;
}

export interface ILimits {
  workers: number;
  worker_cores: number;
  worker_memory_gib: number;
}

export interface IClustersAnswer {
  clusters: ICluster[];
  limits: ILimits;
}

export type Place = 'host' | 'worker';

export interface ITaskRecord {
  engine: Engine;
  cluster: string;
  task: string;
  worker: string | null;
  hostname: string | null;
  started: number | null;
  finished: number | null;
  state: string;
}

export interface ITasksAnswer {
  records: ITaskRecord[];
  counts: Record<string, number>;
  workers: Record<string, string>;
  /**
   * What `hostname` names: the task's host, or (workers sharing this machine's
   * hostname, no host of their own) its worker.
   */
  place?: Place;
  cursor: number;
  missed?: number;
}

/** The path of one cluster below `clusters/`. */
export function clusterPath(cluster: ICluster): string {
  return `clusters/${encodeURIComponent(cluster.engine)}/${encodeURIComponent(cluster.name ?? '')}`;
}

/** A stable key for a cluster across refreshes. */
export function clusterKey(cluster: ICluster): string {
  return `${cluster.engine}/${cluster.name ?? ''}`;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** Bytes for people: `2147483648` -> `2.0 GiB`. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) {
    return '–';
  }
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}
