import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Where the Clusters API of the user's server lives, below the server's base URL. */
export const API_PREFIX = 'clusterhub/api';

/**
 * A refused or failed call to the Clusters API. `message` is safe to show: the
 * server words its refusals for people (`{"message", "field", "status"}`).
 */
export class APIError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly field: string | null = null
  ) {
    super(message);
    this.name = 'APIError';
  }
}

/**
 * Call the Clusters API and return its JSON answer typed as `T`.
 *
 * The XSRF header and the login come from `ServerConnection`, as for every
 * JupyterLab request. Throws an `APIError` carrying the server's message (or
 * the network's) for anything but a 2xx answer.
 */
export async function requestAPI<T>(
  endPoint = '',
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, API_PREFIX, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new APIError(`The server did not answer: ${(error as Error).message ?? error}`, 0);
  }
  const text = await response.text();
  let data: unknown = null;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const body = (data ?? {}) as { message?: string; field?: string | null };
    const message =
      typeof body.message === 'string' && body.message
        ? body.message
        : `${response.status} ${response.statusText}`.trim();
    throw new APIError(message, response.status, body.field ?? null);
  }
  return data as T;
}

/** `requestAPI` with a JSON body. */
export function sendJSON<T>(
  endPoint: string,
  method: 'POST' | 'PUT' | 'PATCH',
  body: unknown
): Promise<T> {
  return requestAPI<T>(endPoint, {
    method,
    body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json' }
  });
}
