// The history panel: the current notebook's kernel snapshots as a commit graph,
// a header naming the notebook and kernel with the kernel-wide actions, and the
// snapshots of earlier kernel processes.
import { ICodeCellModel } from '@jupyterlab/cells';
import {
  LabIcon,
  deleteIcon,
  editIcon,
  historyIcon,
  notebookIcon,
  redoIcon,
  refreshIcon,
  undoIcon
} from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import { IListing, ISnapshot } from './api';
import { KIND_TEXT, age, count, details, kind, size, time } from './format';
import { layout, render } from './graph';
import { snapshotIcon } from './icons';
import { NEEDS_KERNEL, SnapshotModel } from './model';

export interface IPanelActions {
  take(): void;
  restore(s: ISnapshot): void;
  label(s: ISnapshot): void;
  remove(s: ISnapshot): void;
  undo(): void;
  redo(): void;
  compare(from: ISnapshot, to: ISnapshot): void;
  changeKernel(): void;
  refresh(): void;
}

/** Every row is this tall: the graph is drawn for it. */
export const ROW_HEIGHT = 44;

interface IButton {
  cls: string;
  title: string;
  onClick: () => void;
  icon?: LabIcon;
  label?: string;
  disabled?: boolean;
  accent?: boolean;
}

function button(b: IButton): HTMLButtonElement {
  const e = document.createElement('button');
  e.className = `jp-Button ${b.accent ? 'jp-mod-styled jp-mod-accept' : 'jp-mod-minimal'} jp-chkpt-${b.cls}`;
  e.title = b.title;
  e.setAttribute('aria-label', b.label ?? b.title);
  if (b.icon) {
    e.appendChild(b.icon.element({ tag: 'span', className: 'jp-chkpt-icon' }));
  }
  if (b.label) {
    const span = document.createElement('span');
    span.textContent = b.label;
    e.appendChild(span);
  }
  e.disabled = b.disabled ?? false;
  e.addEventListener('click', event => {
    event.stopPropagation();
    b.onClick();
  });
  return e;
}

function span(cls: string, text: string, title = ''): HTMLSpanElement {
  const e = document.createElement('span');
  e.className = cls;
  e.textContent = text;
  if (title) {
    e.title = title;
  }
  return e;
}

function div(cls: string, ...children: (Node | string)[]): HTMLDivElement {
  const e = document.createElement('div');
  e.className = cls;
  e.append(...children);
  return e;
}

export class SnapshotPanel extends Widget {
  constructor(
    private model: SnapshotModel,
    private actions: IPanelActions
  ) {
    super();
    this.id = 'jp-chkpt-panel';
    this.title.caption = 'Kernel snapshot history';
    this.title.icon = historyIcon;
    this.addClass('jp-chkpt-panel');
    model.changed.connect(this.update, this);
    this.update();
  }

  /** Re-drawn only when what it shows changed (not, e.g., on progress news): a redraw
   * would take the focus and hover from the rows. */
  protected onUpdateRequest(): void {
    const m = this.model;
    const nb = m.notebook;
    const key = JSON.stringify([
      nb?.id,
      nb?.context.path,
      nb?.sessionContext.kernelDisplayName,
      m.support,
      m.error,
      m.listing,
      this.selected
    ]);
    if (key !== this.shown) {
      this.shown = key;
      this.render();
    }
  }

  protected onAfterShow(): void {
    this.actions.refresh();
  }

  private render(): void {
    const { model } = this;
    const nb = model.notebook;
    const support = model.support;
    const listing = model.listing;
    const header = this.header(listing);
    let body: HTMLElement[];
    if (!nb) {
      body = [this.message('Open a notebook to see its kernel snapshots.')];
    } else if (support === 'pending') {
      body = [this.message('Waiting for the kernel…')];
    } else if (support === 'none' || support === 'plain') {
      const runs =
        support === 'none' ? 'has no kernel' : `runs ${nb.sessionContext.kernelDisplayName}`;
      body = [
        this.message(`${NEEDS_KERNEL}: this notebook ${runs}.`),
        div(
          'jp-chkpt-message',
          button({
            cls: 'change-kernel',
            label: 'Change kernel…',
            title: 'Pick the Python 3 (snapshots) kernel for this notebook',
            accent: true,
            onClick: () => this.actions.changeKernel()
          })
        )
      ];
    } else if (model.error) {
      body = [this.message(model.error, 'jp-chkpt-error')];
    } else if (!listing) {
      body = [this.message('Loading snapshots…')];
    } else {
      body = [this.history(listing)];
      if (!listing.snapshots.length) {
        body.unshift(
          this.message('No snapshots yet: press Take snapshot, or run %checkpoint in a cell.')
        );
      }
      const earlier = this.earlier(listing);
      if (earlier) {
        body.push(earlier);
      }
    }
    this.node.replaceChildren(header, div('jp-chkpt-body', ...body));
  }

  private header(listing: IListing | null): HTMLElement {
    const nb = this.model.notebook;
    const ok = this.model.support === 'snapshots';
    const title = div('jp-chkpt-header-title', span('jp-chkpt-heading', 'Snapshot history'));
    title.appendChild(
      button({
        cls: 'refresh',
        icon: refreshIcon,
        title: 'Refresh',
        onClick: () => this.actions.refresh()
      })
    );
    const header = div('jp-chkpt-header', title);
    if (nb) {
      const path = nb.context.path;
      const where = div('jp-chkpt-notebook');
      where.appendChild(notebookIcon.element({ tag: 'span', className: 'jp-chkpt-icon' }));
      where.appendChild(span('jp-chkpt-path', path, path));
      const pid = listing ? ` · pid ${listing.kernel.pid}` : '';
      const kernel = `${nb.sessionContext.kernelDisplayName}${pid}`;
      header.append(where, div('jp-chkpt-kernel', span('', kernel, `Kernel ${kernel}`)));
    }
    const selected = this.selectedSnapshots(listing);
    const compare = button({
      cls: 'compare',
      label: selected.length ? `Compare (${selected.length}/2)` : 'Compare',
      title:
        selected.length === 2
          ? `Compare the variables of ${selected[0].id} and ${selected[1].id}`
          : 'Tick two snapshots to compare their variables',
      disabled: !ok || selected.length !== 2,
      onClick: () => this.actions.compare(selected[0], selected[1])
    });
    header.appendChild(
      div(
        'jp-chkpt-actions-bar',
        button({
          cls: 'take',
          icon: snapshotIcon,
          label: 'Take snapshot',
          title: 'Take a kernel snapshot (Alt+Shift+C)',
          accent: true,
          disabled: !ok,
          onClick: () => this.actions.take()
        }),
        button({
          cls: 'undo',
          icon: undoIcon,
          title: 'Undo Last Cell: back to the state before the last cell',
          disabled: !ok,
          onClick: () => this.actions.undo()
        }),
        button({
          cls: 'redo',
          icon: redoIcon,
          title: 'Redo Cell: forward again to the state an undo left',
          disabled: !ok,
          onClick: () => this.actions.redo()
        }),
        compare
      )
    );
    return header;
  }

  /** The tree as rows beside one SVG graph. */
  private history(listing: IListing): HTMLElement {
    const byId = new Map(listing.snapshots.map(s => [s.id, s]));
    const ordered = listing.tree.map(t => byId.get(t.id)).filter((s): s is ISnapshot => !!s);
    const graph = layout(ordered.map(s => ({ id: s.id, parent: s.parent })));
    const live = listing.kernel.live;
    const list = div('jp-chkpt-tree');
    list.setAttribute('role', 'list');
    const svg = render(graph, ROW_HEIGHT, live);
    const indent = Number(svg.getAttribute('width'));
    list.appendChild(svg);
    for (const s of ordered) {
      list.appendChild(this.row(s, listing, indent));
    }
    return list;
  }

  private row(s: ISnapshot, listing: IListing, indent: number): HTMLElement {
    const live = s.id === listing.kernel.live;
    const k = kind(s);
    const select = document.createElement('input');
    select.type = 'checkbox';
    select.className = 'jp-chkpt-select';
    select.checked = this.selected.includes(s.id);
    select.title = 'Tick two snapshots to compare them';
    select.setAttribute('aria-label', `Select ${s.id} to compare`);
    select.addEventListener('change', () => this.toggle(s.id, select.checked));
    const line1 = this.firstLine(s);
    const line2 = div(
      'jp-chkpt-line2',
      span('jp-chkpt-cell', this.cellText(s) || '(no cell)'),
      span('jp-chkpt-size', size(s.stored_bytes)),
      span(`jp-chkpt-badge jp-chkpt-badge-${k}`, KIND_TEXT[k])
    );
    if (live) {
      line2.appendChild(
        span('jp-chkpt-live-badge', 'live', 'The kernel state now derives from this snapshot')
      );
    }
    const actions = div(
      'jp-chkpt-row-actions',
      button({
        cls: 'restore',
        icon: historyIcon,
        title: `Restore the kernel to ${s.id}`,
        onClick: () => this.actions.restore(s)
      }),
      button({
        cls: 'label',
        icon: editIcon,
        title: 'Label…',
        onClick: () => this.actions.label(s)
      }),
      button({
        cls: 'delete',
        icon: deleteIcon,
        title: 'Delete…',
        onClick: () => this.actions.remove(s)
      })
    );
    const row = div('jp-chkpt-row', select, line1, actions, line2);
    row.setAttribute('role', 'listitem');
    row.tabIndex = 0; // focus (a tap, Tab) shows the row's buttons as a hover does
    row.dataset.snapshot = s.id;
    row.style.height = `${ROW_HEIGHT}px`;
    row.style.paddingLeft = `${indent}px`;
    const cell = this.cellText(s);
    row.title =
      details(cell && !s.tags.cell ? { ...s, tags: { ...s.tags, cell } } : s, listing.kernel.pid) +
      (live ? '\nLive: the kernel state now derives from this snapshot' : '');
    row.classList.toggle('jp-chkpt-live', live);
    return row;
  }

  /** Snapshots of earlier processes of this kernel (before a restart or a crash):
   * restoring one moves its whole state into the running kernel process. */
  private earlier(listing: IListing): HTMLElement | null {
    const earlier = listing.earlier ?? [];
    if (!earlier.length) {
      return null;
    }
    const total = earlier.reduce((a, s) => a + s.stored_bytes, 0);
    const details_ = document.createElement('details');
    details_.className = 'jp-chkpt-earlier';
    details_.open = this.earlierOpen;
    details_.addEventListener('toggle', () => (this.earlierOpen = details_.open));
    const summary = document.createElement('summary');
    summary.textContent = `Earlier kernels (${earlier.length}, ${size(total)})`;
    summary.title =
      'Snapshots of processes this kernel ran before a restart or a crash: restoring one ' +
      'brings its whole state into the running kernel';
    details_.appendChild(summary);
    for (const s of [...earlier].reverse()) {
      const why = s.why || 'a snapshot of an earlier kernel process';
      const restorable = s.restorable === true;
      const restore = button({
        cls: 'restore',
        icon: historyIcon,
        title: restorable
          ? `Restore ${s.id} into the running kernel (from its process ${s.pid ?? '?'})`
          : why,
        disabled: !restorable,
        onClick: () => (restorable ? this.actions.restore(s) : undefined)
      });
      const line1 = this.firstLine(s);
      const line2 = div(
        'jp-chkpt-line2',
        span('jp-chkpt-cell', s.tags.cell || '(no cell)'),
        span('jp-chkpt-size', size(s.stored_bytes)),
        span('jp-chkpt-age', age(s))
      );
      const row = div(
        'jp-chkpt-row jp-chkpt-earlier-row',
        line1,
        div(
          'jp-chkpt-row-actions',
          restorable ? restore : span('jp-chkpt-disabled-wrap', '', why),
          button({
            cls: 'delete',
            icon: deleteIcon,
            title: 'Delete…',
            onClick: () => this.actions.remove(s)
          })
        ),
        line2
      );
      if (!restorable) {
        (row.querySelector('.jp-chkpt-disabled-wrap') as HTMLElement).appendChild(restore);
      }
      row.dataset.snapshot = s.id;
      row.tabIndex = 0;
      row.style.height = `${ROW_HEIGHT}px`;
      row.title = `${details(s)}\n${restorable ? 'Earlier process' : 'Not restorable'}: ${why}`;
      details_.appendChild(row);
    }
    return details_;
  }

  /** Time, execution count, and the label (else the id): every row's first line. */
  private firstLine(s: ISnapshot): HTMLElement {
    return div(
      'jp-chkpt-line1',
      span('jp-chkpt-time', time(s)),
      span('jp-chkpt-count', count(s)),
      span(s.label ? 'jp-chkpt-name' : 'jp-chkpt-name jp-chkpt-id', s.label || s.id)
    );
  }

  /** The first line of the cell the snapshot follows: its tag, else the notebook's cell
   * that ran with its execution count (a snapshot taken from outside a cell). */
  private cellText(s: ISnapshot): string {
    if (s.tags.cell) {
      return s.tags.cell;
    }
    const n = s.tags.execution_count;
    const cell = this.model.notebook?.content.widgets.find(
      c => c.model.type === 'code' && (c.model as ICodeCellModel).executionCount === n
    );
    const source = cell?.model.sharedModel.getSource() ?? '';
    return source.split('\n').find(line => line.trim()) ?? '';
  }

  private message(text: string, cls = ''): HTMLElement {
    const p = document.createElement('p');
    p.className = `jp-chkpt-message ${cls}`.trim();
    p.textContent = text;
    return p;
  }

  /** Keep the two most recently ticked. */
  private toggle(id: string, on: boolean): void {
    this.selected = this.selected.filter(s => s !== id);
    if (on) {
      this.selected.push(id);
    }
    this.selected = this.selected.slice(-2);
    this.update();
  }

  /** The ticked snapshots still listed, oldest first. */
  private selectedSnapshots(listing: IListing | null): ISnapshot[] {
    const snaps = listing?.snapshots ?? [];
    this.selected = this.selected.filter(id => snaps.some(s => s.id === id));
    return snaps.filter(s => this.selected.includes(s.id)).sort((a, b) => a.created - b.created);
  }

  private selected: string[] = [];
  private earlierOpen = false;
  private shown = '';
}
