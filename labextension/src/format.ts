// How snapshots read: sizes, times, kinds, one-line and full descriptions.
import { ISnapshot, SnapshotKind } from './api';

export function size(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

export function time(s: ISnapshot): string {
  return new Date(s.created * 1000).toLocaleTimeString([], {
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hourCycle: 'h23'
  });
}

export function age(s: ISnapshot, now = Date.now()): string {
  const seconds = Math.max(0, Math.round(now / 1000 - s.created));
  if (seconds < 60) {
    return `${seconds} s ago`;
  }
  if (seconds < 3600) {
    return `${Math.round(seconds / 60)} min ago`;
  }
  if (seconds < 86400) {
    return `${Math.round(seconds / 3600)} h ago`;
  }
  return `${Math.round(seconds / 86400)} d ago`;
}

export function kind(s: ISnapshot): SnapshotKind {
  return s.tags.kind ?? (s.tags.auto ? 'auto' : 'manual');
}

export const KIND_TEXT: Record<SnapshotKind, string> = {
  manual: 'manual',
  auto: 'auto',
  'before-restore': 'before restore'
};

export function count(s: ISnapshot): string {
  return `[${s.tags.execution_count ?? '?'}]`;
}

/** One line: for pickers and dialogs. */
export function describe(s: ISnapshot): string {
  const label = s.label ? ` '${s.label}'` : '';
  const cell = s.tags.cell ? `  ${s.tags.cell}` : '';
  const k = kind(s);
  const badge = k === 'manual' ? '' : ` (${KIND_TEXT[k]})`;
  return `${s.id}  ${time(s)}  ${count(s)}${label}${badge}${cell}  ${size(s.stored_bytes)}`;
}

/** Everything, for a hover title. */
export function details(s: ISnapshot, pid?: number): string {
  const lines = [
    `Snapshot ${s.id}${s.label ? ` '${s.label}'` : ''} (${KIND_TEXT[kind(s)]})`,
    `Taken ${new Date(s.created * 1000).toLocaleString()} after cell ${count(s)}`
  ];
  if (s.tags.cell) {
    lines.push(`Cell: ${s.tags.cell}`);
  }
  lines.push(`Memory ${size(s.mem_bytes)}, stored ${size(s.stored_bytes)} new`);
  if (s.parent) {
    lines.push(`Follows snapshot ${s.parent}`);
  }
  const p = s.pid ?? pid;
  if (p !== undefined) {
    lines.push(`Kernel process ${p}`);
  }
  if (s.tags.notebook) {
    lines.push(`Notebook ${s.tags.notebook}`);
  }
  return lines.join('\n');
}
