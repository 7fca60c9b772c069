// Two snapshots compared: the variables added, removed and changed, as a table in
// the main area.
import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { historyIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import { IDiff, ISnapshot, IVariable } from './api';
import { count, size, time } from './format';

const REPR_MAX = 120;

function cell(row: HTMLTableRowElement, text: string, cls = '', title = ''): HTMLElement {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) {
    td.className = cls;
  }
  if (title) {
    td.title = title;
  }
  row.appendChild(td);
  return td;
}

function value(v: IVariable): string {
  if (v.repr === null) {
    return '';
  }
  return v.repr.length > REPR_MAX ? v.repr.slice(0, REPR_MAX - 1) + '…' : v.repr;
}

function name(s: ISnapshot): string {
  return `${s.id} ${time(s)} ${count(s)}${s.label ? ` '${s.label}'` : ''}`;
}

export class DiffView extends Widget {
  constructor(readonly diff: IDiff) {
    super();
    this.addClass('jp-chkpt-diff');
    const heading = document.createElement('p');
    heading.className = 'jp-chkpt-diff-heading';
    heading.textContent = `Variables in snapshot ${name(diff.to)}, compared with ${name(diff.from)}`;
    const table = document.createElement('table');
    table.className = 'jp-chkpt-diff-table';
    const head = table.createTHead().insertRow();
    for (const h of ['', 'Name', 'Type', 'Size', 'Value']) {
      const th = document.createElement('th');
      th.textContent = h;
      head.appendChild(th);
    }
    const body = table.createTBody();
    const add = (mark: string, kind: string, v: IVariable, before?: IVariable) => {
      const row = body.insertRow();
      row.className = `jp-chkpt-diff-${kind}`;
      row.dataset.name = v.name;
      cell(row, mark, 'jp-chkpt-diff-mark', kind);
      cell(row, v.name, 'jp-chkpt-diff-name');
      const arrow = (a: string, b: string) => (a === b ? b : `${a} → ${b}`);
      cell(row, before ? arrow(before.type, v.type) : v.type);
      cell(
        row,
        before ? arrow(size(before.size), size(v.size)) : size(v.size),
        'jp-chkpt-diff-size'
      );
      const text = before ? arrow(value(before), value(v)) : value(v);
      cell(
        row,
        text,
        'jp-chkpt-diff-value',
        before ? `${before.repr ?? ''}\n→\n${v.repr ?? ''}` : (v.repr ?? '')
      );
    };
    diff.added.forEach(v => add('+', 'added', v));
    diff.removed.forEach(v => add('−', 'removed', v));
    diff.changed.forEach(c => add('~', 'changed', c.to, c.from));
    const summary = document.createElement('p');
    summary.className = 'jp-chkpt-diff-summary';
    const parts = [
      `${diff.added.length} added`,
      `${diff.removed.length} removed`,
      `${diff.changed.length} changed`,
      `${diff.same} unchanged`
    ];
    summary.textContent =
      parts.join(', ') +
      (diff.incomplete ? ' (some variables were over the limits and not compared)' : '');
    this.node.append(heading, table, summary);
  }
}

const open = new Map<string, MainAreaWidget<DiffView>>();

export function openDiff(app: JupyterFrontEnd, diff: IDiff, path: string): void {
  const id = `jp-chkpt-diff-${diff.from.id}-${diff.to.id}`;
  open.get(id)?.dispose(); // an earlier comparison of the same two: show the new one
  const content = new DiffView(diff);
  const widget = new MainAreaWidget({ content });
  open.set(id, widget);
  widget.disposed.connect(() => open.get(id) === widget && open.delete(id));
  widget.id = id;
  widget.title.label = `Snapshot diff ${diff.from.id} → ${diff.to.id}`;
  widget.title.caption = `${path}: variables in ${diff.to.id} compared with ${diff.from.id}`;
  widget.title.icon = historyIcon;
  widget.title.closable = true;
  app.shell.add(widget, 'main', { mode: 'split-right' });
  app.shell.activateById(widget.id);
}
