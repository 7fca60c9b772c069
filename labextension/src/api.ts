// The REST API of the jupyter-chkpt server extension (docs/openapi.yaml).
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export type SnapshotKind = 'manual' | 'auto' | 'before-restore';

export interface ISnapshot {
  id: string;
  created: number;
  label: string;
  parent: string | null;
  stored_bytes: number;
  mem_bytes: number;
  pid?: number;
  tags: {
    execution_count?: number;
    cell?: string;
    auto?: boolean;
    kind?: SnapshotKind;
    notebook?: string;
  };
  /** Snapshots of earlier kernel processes only. */
  restorable?: boolean;
  why?: string;
}

export interface IActivity {
  op: 'checkpoint' | 'restore';
  phase: string;
  bytes?: number;
}

export interface IListing {
  kernel: {
    pid: number;
    kernel_id: string;
    live: string | null;
    notebook?: string | null;
    activity?: IActivity | null;
  };
  snapshots: ISnapshot[];
  tree: { id: string; depth: number; last: boolean }[];
  text: string;
  earlier?: ISnapshot[];
  usage?: { count: number; stored_bytes: number };
  /** What the helper is doing to the kernel (also found as kernel.activity). */
  activity?: IActivity | null;
}

export function activityOf(listing: IListing): IActivity | null | undefined {
  return listing.activity ?? listing.kernel.activity;
}

export interface IRestoreReply {
  snapshot: ISnapshot;
  result: { notes?: string[]; left?: string | null; pause_s?: number };
}

export interface IVariable {
  name: string;
  type: string;
  size: number;
  repr: string | null;
}

export interface IDiff {
  from: ISnapshot;
  to: ISnapshot;
  added: IVariable[];
  removed: IVariable[];
  changed: { name: string; from: IVariable; to: IVariable }[];
  same: number;
  incomplete?: boolean;
}

/** A refusal or failure, with the server's message (what happened, what to do). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason: string | null = null,
    /** The answer was not the API's JSON: a route this server does not have. */
    readonly missingRoute = false
  ) {
    super(message);
  }
}

export function explain(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function request<T>(path: string, method = 'GET', body?: unknown): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'api', 'chkpt', path);
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
  }
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  let data: { message?: string; reason?: string } = {};
  let json = true;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    json = false; // an HTML error page: no such route on this server (an older one)
  }
  if (!response.ok) {
    throw new ApiError(
      response.status,
      data.message || `${response.status} ${response.statusText}`,
      data.reason ?? null,
      response.status === 404 && !json
    );
  }
  return data as T;
}

const kernel = (id: string, rest = '') =>
  `kernels/${encodeURIComponent(id)}${rest ? '/' + rest : ''}`;
const snapshot = (kid: string, sid: string, rest = '') =>
  kernel(kid, `snapshots/${encodeURIComponent(sid)}${rest ? '/' + rest : ''}`);

export const api = {
  /** `now`: answered at once, with the helper's activity (progress), rather than once
   * the snapshots being stored are stored. */
  list: (kid: string, now = false) =>
    request<IListing>(kernel(kid, now ? 'snapshots?now=1' : 'snapshots')),
  take: (kid: string, label = '') =>
    request<{ snapshot: ISnapshot }>(kernel(kid, 'snapshots'), 'POST', { label }),
  restore: (kid: string, sid: string) =>
    request<IRestoreReply>(snapshot(kid, sid, 'restore'), 'POST', {}),
  undo: (kid: string) => request<IRestoreReply>(kernel(kid, 'undo'), 'POST', {}),
  redo: (kid: string) => request<IRestoreReply>(kernel(kid, 'redo'), 'POST', {}),
  cancel: (kid: string) => request<{ cancelled: number }>(kernel(kid, 'cancel'), 'POST', {}),
  label: (kid: string, sid: string, label: string) =>
    request<{ snapshot: ISnapshot }>(snapshot(kid, sid), 'PATCH', { label }),
  remove: (kid: string, sid: string) => request<void>(snapshot(kid, sid), 'DELETE'),
  diff: (kid: string, from: string, to: string) =>
    request<IDiff>(
      kernel(kid, `diff?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`)
    ),
  settings: (kid: string, auto: boolean, keep: number, max_mib: number) =>
    request<{ auto: boolean; keep: number; max_mib: number }>(kernel(kid, 'settings'), 'PUT', {
      auto,
      keep,
      max_mib
    })
};
