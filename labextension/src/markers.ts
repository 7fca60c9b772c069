// Notebook cell markers: cells whose run a restore undid (their execution count is
// past the restored state's last cell) are dimmed until they run again; cells a
// snapshot follows get a dot in the prompt gutter.
import { Cell, CodeCell } from '@jupyterlab/cells';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { KernelMessage } from '@jupyterlab/services';
import { IListing } from './api';

const UNDONE = 'jp-chkpt-undone';
const SNAPPED = 'jp-chkpt-snapped';
const UNDONE_TITLE = 'Undone by restore: the kernel state no longer includes this run';

function prompt(cell: Cell): HTMLElement | null {
  return cell.node.querySelector('.jp-InputPrompt');
}

function codeCells(nb: NotebookPanel): CodeCell[] {
  return nb.content.widgets.filter((c): c is CodeCell => c.model.type === 'code') as CodeCell[];
}

/** Follows one notebook's restores; `snapshots` marks cells from a listing. */
export class CellMarkers {
  constructor(private nb: NotebookPanel) {
    nb.sessionContext.iopubMessage.connect((_, msg: KernelMessage.IMessage) => {
      if ((msg.header.msg_type as string) === 'chkpt_restored') {
        const content = msg.content as { execution_count?: number };
        if (typeof content.execution_count === 'number') {
          this.restored(content.execution_count);
        }
      }
    });
    NotebookActions.executed.connect(this.onExecuted, this);
    nb.disposed.connect(() => NotebookActions.executed.disconnect(this.onExecuted, this));
  }

  /** Mark the cells whose runs the restore undid: those counted after `count` (an
   * earlier restore's marks go: the restored state may hold those runs again). */
  restored(count: number): void {
    for (const [cell, unmark] of [...this.undone]) {
      unmark();
      this.title(cell);
    }
    for (const cell of codeCells(this.nb)) {
      const n = cell.model.executionCount;
      if (n !== null && n > count) {
        const unmark = () => {
          cell.model.stateChanged.disconnect(onChange);
          this.undone.delete(cell);
          cell.removeClass(UNDONE);
        };
        const onChange = (_: unknown, change: { name: string }) => {
          if (change.name === 'executionCount') {
            unmark(); // run again
            this.title(cell);
          }
        };
        this.undone.set(cell, unmark);
        cell.addClass(UNDONE);
        this.title(cell);
        cell.model.stateChanged.connect(onChange);
        cell.disposed.connect(() => this.undone.delete(cell));
      }
    }
    this.snapshots(this.listing);
  }

  /** Mark the cells a snapshot of the listing follows (same execution count). */
  snapshots(listing: IListing | null): void {
    this.listing = listing;
    this.after.clear();
    for (const s of listing?.snapshots ?? []) {
      const n = s.tags.execution_count;
      if (n !== undefined) {
        this.after.set(n, [...(this.after.get(n) ?? []), s.label ? `${s.id} '${s.label}'` : s.id]);
      }
    }
    for (const cell of codeCells(this.nb)) {
      const n = cell.model.executionCount;
      // an undone run is not in the kernel's history: a snapshot with its count is another's
      cell.toggleClass(SNAPPED, n !== null && this.after.has(n) && !this.undone.has(cell));
      this.title(cell);
    }
  }

  /** A cell ran: its count changed, and so may its snapshot marker. */
  private onExecuted(_: unknown, args: { notebook: unknown }): void {
    if (args.notebook === this.nb.content) {
      this.snapshots(this.listing);
    }
  }

  private title(cell: CodeCell): void {
    const node = prompt(cell);
    if (!node) {
      return;
    }
    const lines: string[] = [];
    if (this.undone.has(cell)) {
      lines.push(UNDONE_TITLE);
    }
    const n = cell.model.executionCount;
    const ids = n !== null ? this.after.get(n) : undefined;
    if (ids && cell.hasClass(SNAPPED)) {
      lines.push(`Kernel snapshot${ids.length > 1 ? 's' : ''} after this cell: ${ids.join(', ')}`);
    }
    if (lines.length) {
      node.title = lines.join('\n');
    } else {
      node.removeAttribute('title');
    }
  }

  private listing: IListing | null = null;
  /** Marked cells, each with what unmarks it. */
  private undone = new Map<CodeCell, () => void>();
  private after = new Map<number, string[]>();
}
