// The REST API of the jupyter-chkpt server extension (docs/openapi.yaml).
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface ISnapshot {
  id: string;
  created: number;
  label: string;
  parent: string | null;
  stored_bytes: number;
  mem_bytes: number;
  tags: { execution_count?: number; cell?: string; auto?: boolean };
}

export interface IListing {
  kernel: { pid: number; kernel_id: string; live: string | null };
  snapshots: ISnapshot[];
  tree: { id: string; depth: number; last: boolean }[];
  text: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
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
  const data = text ? JSON.parse(text) : {};
  if (!response.ok) {
    throw new ApiError(response.status, data.message || response.statusText);
  }
  return data as T;
}

export const api = {
  list: (kernelId: string) => request<IListing>(`kernels/${kernelId}/snapshots`),
  checkpoint: (kernelId: string, label = '') =>
    request<{ snapshot: ISnapshot }>(`kernels/${kernelId}/snapshots`, 'POST', { label }),
  restore: (kernelId: string, snapshot: string) =>
    request<{ snapshot: ISnapshot; result: { notes: string[] } }>(
      `kernels/${kernelId}/snapshots/${snapshot}/restore`,
      'POST',
      {}
    ),
  label: (kernelId: string, snapshot: string, label: string) =>
    request<{ snapshot: ISnapshot }>(`kernels/${kernelId}/snapshots/${snapshot}`, 'PATCH', {
      label
    }),
  remove: (kernelId: string, snapshot: string) =>
    request<void>(`kernels/${kernelId}/snapshots/${snapshot}`, 'DELETE'),
  settings: (kernelId: string, auto: boolean, keep: number) =>
    request<{ auto: boolean; keep: number }>(`kernels/${kernelId}/settings`, 'PUT', { auto, keep })
};

export function describe(s: ISnapshot): string {
  const when = new Date(s.created * 1000).toLocaleTimeString();
  const count = s.tags.execution_count ?? '?';
  const label = s.label ? ` '${s.label}'` : '';
  const auto = s.tags.auto ? ' (auto)' : '';
  const cell = s.tags.cell ? `  ${s.tags.cell}` : '';
  return `${s.id}  ${when}  [${count}]${label}${auto}${cell}  ${size(s.stored_bytes)}`;
}

function size(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}
