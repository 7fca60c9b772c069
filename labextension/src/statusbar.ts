// The status bar item: "Snapshots: 6 · 1.2 GiB" for the current notebook's kernel,
// "Snapshots: taking…" while one is taken; a click opens the history panel.
import { Widget } from '@lumino/widgets';
import { size } from './format';
import { SnapshotModel } from './model';

export class SnapshotStatus extends Widget {
  constructor(
    private model: SnapshotModel,
    open: () => void
  ) {
    super();
    this.addClass('jp-chkpt-status');
    this._text.className = 'jp-StatusBar-TextItem';
    this.node.appendChild(this._text);
    this.node.title = 'Kernel snapshots: click to show the history';
    this.node.addEventListener('click', open);
    model.changed.connect(this.sync, this);
    this.sync();
  }

  private sync(): void {
    const { busy, listing } = this.model;
    let text = 'Snapshots';
    if (busy) {
      text = `Snapshots: ${busy.op === 'checkpoint' ? 'taking' : 'restoring'}…`;
    } else if (listing) {
      const n = listing.usage?.count ?? listing.snapshots.length;
      const bytes =
        listing.usage?.stored_bytes ?? listing.snapshots.reduce((a, s) => a + s.stored_bytes, 0);
      text = `Snapshots: ${n} · ${size(bytes)}`;
    }
    this._text.textContent = text;
  }

  private _text = document.createElement('span');
}
