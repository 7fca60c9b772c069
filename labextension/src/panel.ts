// The sidebar panel: the current notebook's kernel snapshots as a tree.
import { Widget } from '@lumino/widgets';
import { ApiError, IListing, describe } from './api';

export interface IPanelActions {
  restore(id: string): Promise<void>;
  label(id: string): Promise<void>;
  remove(id: string): Promise<void>;
  checkpoint(): Promise<void>;
}

export class SnapshotPanel extends Widget {
  constructor(private actions: IPanelActions) {
    super();
    this.id = 'jp-chkpt-panel';
    this.title.caption = 'Kernel snapshots';
    this.title.label = 'Snapshots';
    this.addClass('jp-chkpt-panel');
    this.showMessage('Open a notebook to see its kernel snapshots.');
  }

  showMessage(text: string): void {
    this.node.replaceChildren(this.heading(), this.paragraph(text));
  }

  showError(error: unknown): void {
    const text =
      error instanceof ApiError ? error.message : `Could not list snapshots: ${String(error)}`;
    this.showMessage(text);
  }

  show_(listing: IListing): void {
    const byId = new Map(listing.snapshots.map(s => [s.id, s]));
    const take = document.createElement('button');
    take.textContent = 'Checkpoint now';
    take.className = 'jp-mod-styled jp-mod-accept';
    take.onclick = () => void this.actions.checkpoint();
    const children: HTMLElement[] = [this.heading(), take];
    if (!listing.snapshots.length) {
      children.push(this.paragraph('No snapshots yet: press Checkpoint or run %checkpoint.'));
    }
    const list = document.createElement('div');
    list.className = 'jp-chkpt-tree';
    for (const node of listing.tree) {
      const s = byId.get(node.id);
      if (!s) {
        continue;
      }
      const row = document.createElement('div');
      row.className = 'jp-chkpt-row';
      row.dataset.snapshot = s.id;
      if (s.id === listing.kernel.live) {
        row.classList.add('jp-chkpt-live');
        row.title = 'the kernel state now derives from this snapshot';
      }
      const info = document.createElement('span');
      info.className = 'jp-chkpt-info';
      info.style.paddingLeft = `${node.depth * 14}px`;
      info.textContent = (node.depth ? (node.last ? '└ ' : '├ ') : '') + describe(s);
      row.appendChild(info);
      for (const [name, act] of [
        ['Restore', () => this.actions.restore(s.id)],
        ['Label', () => this.actions.label(s.id)],
        ['Delete', () => this.actions.remove(s.id)]
      ] as [string, () => Promise<void>][]) {
        const b = document.createElement('button');
        b.textContent = name;
        b.className = `jp-chkpt-${name.toLowerCase()}`;
        b.onclick = () => void act();
        row.appendChild(b);
      }
      list.appendChild(row);
    }
    children.push(list);
    this.node.replaceChildren(...children);
  }

  private heading(): HTMLElement {
    const h = document.createElement('h2');
    h.textContent = 'Kernel snapshots';
    return h;
  }

  private paragraph(text: string): HTMLElement {
    const p = document.createElement('p');
    p.className = 'jp-chkpt-message';
    p.textContent = text;
    return p;
  }
}
