// The notebook toolbar's Snapshot and Restore Snapshot… buttons: JupyterLab's toolbar
// button look, dimmed (still clickable, to say why) on a kernel without snapshots.
import { NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import { NEEDS_KERNEL, SnapshotModel } from './model';

export interface IButtonOptions {
  name: string;
  label: string;
  tooltip: string;
  icon: LabIcon;
  onClick: () => void;
  /** While the kernel cannot take snapshots. */
  onUnavailable: () => void;
}

export class SnapshotButton extends Widget {
  constructor(
    private nb: NotebookPanel,
    private model: SnapshotModel,
    private options: IButtonOptions
  ) {
    super();
    this.addClass('jp-ToolbarButton');
    this.addClass('jp-chkpt-button');
    this.addClass(`jp-chkpt-button-${options.name}`);
    const button = (this._button = document.createElement('button'));
    button.className = 'jp-ToolbarButtonComponent jp-Button jp-mod-minimal';
    button.setAttribute('aria-label', options.label);
    const label = document.createElement('span');
    label.className = 'jp-ToolbarButtonComponent-label';
    label.textContent = options.label;
    button.append(
      options.icon.element({ tag: 'span', className: 'jp-ToolbarButtonComponent-icon' }),
      label
    );
    button.addEventListener('mousedown', event => event.preventDefault()); // keep the cell focused
    button.addEventListener('click', () => {
      if (this._available) {
        this.options.onClick();
      } else {
        this.options.onUnavailable();
      }
    });
    this.node.appendChild(button);
    const session = nb.sessionContext;
    session.kernelChanged.connect(this.sync, this);
    session.statusChanged.connect(this.sync, this);
    model.changed.connect(this.sync, this);
    this.sync();
  }

  /** Available unless the notebook's kernel is known not to take snapshots. */
  private sync(): void {
    const support = this.model.supportOf(this.nb.sessionContext);
    this._available = support === 'snapshots' || support === 'pending';
    this.toggleClass('jp-chkpt-unavailable', !this._available);
    this._button.setAttribute('aria-disabled', String(!this._available));
    this._button.title = this._available ? this.options.tooltip : NEEDS_KERNEL;
  }

  private _button: HTMLButtonElement;
  private _available = true;
}
