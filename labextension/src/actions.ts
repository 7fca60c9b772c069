// What the toolbar, the commands and the panel do, on one notebook's kernel.
import { JupyterFrontEnd } from '@jupyterlab/application';
import {
  Dialog,
  ISessionContext,
  InputDialog,
  Notification,
  showDialog
} from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';
import { ApiError, IRestoreReply, ISnapshot, api, explain } from './api';
import { openDiff } from './diff';
import { count, describe } from './format';
import { NEEDS_KERNEL, SnapshotModel } from './model';
import { withProgress } from './progress';

export class SnapshotActions {
  constructor(
    private app: JupyterFrontEnd,
    private model: SnapshotModel,
    private dialogs: ISessionContext.IDialogs | null
  ) {}

  /** The notebook's kernel if it takes snapshots; else says why and returns null. */
  kernelOf(nb: NotebookPanel | null): Kernel.IKernelConnection | null {
    if (!nb) {
      Notification.warning('Open a notebook on the Python 3 (snapshots) kernel first.', {
        autoClose: 5000
      });
      return null;
    }
    const support = this.model.supportOf(nb.sessionContext);
    const kernel = nb.sessionContext.session?.kernel ?? null;
    if (support === 'snapshots' && kernel) {
      return kernel;
    }
    if (support === 'pending') {
      Notification.info('The kernel is starting: try again in a moment.', { autoClose: 5000 });
    } else {
      this.explainUnavailable(nb);
    }
    return null;
  }

  /** A plain kernel (or none): say what is needed, offer to change the kernel. */
  explainUnavailable(nb: NotebookPanel): void {
    const name = nb.sessionContext.kernelDisplayName;
    Notification.info(`${NEEDS_KERNEL}; this notebook runs ${name}.`, {
      autoClose: 10000,
      actions: [
        {
          label: 'Change kernel',
          caption: 'Pick the Python 3 (snapshots) kernel for this notebook',
          displayType: 'accent',
          callback: () => void this.changeKernel(nb)
        }
      ]
    });
  }

  async changeKernel(nb: NotebookPanel): Promise<void> {
    if (this.dialogs) {
      await this.dialogs.selectKernel(nb.sessionContext);
    } else {
      this.app.shell.activateById(nb.id);
      await this.app.commands.execute('notebook:change-kernel');
    }
  }

  async take(nb: NotebookPanel | null, label = ''): Promise<ISnapshot | undefined> {
    const kernel = this.kernelOf(nb);
    if (!kernel) {
      return;
    }
    const reply = await withProgress(this.model, {
      title: 'Taking a kernel snapshot',
      op: 'checkpoint',
      kernel,
      request: () => api.take(kernel.id, label),
      success: ({ snapshot }) => ({
        message: `Kernel snapshot ${snapshot.id} taken (after cell ${count(snapshot)})`
      }),
      failure: 'Kernel snapshot failed'
    });
    return reply?.snapshot;
  }

  async restore(nb: NotebookPanel | null, snapshot: string): Promise<void> {
    const kernel = this.kernelOf(nb);
    if (!kernel) {
      return;
    }
    await withProgress(this.model, {
      title: `Restoring kernel snapshot ${snapshot}`,
      op: 'restore',
      kernel,
      request: () => api.restore(kernel.id, snapshot),
      success: reply => this.restored(nb, reply, 'Kernel restored to'),
      failure: 'Restore failed'
    });
  }

  undo(nb: NotebookPanel | null): Promise<void> {
    return this.step(nb, 'undo');
  }

  redo(nb: NotebookPanel | null): Promise<void> {
    return this.step(nb, 'redo');
  }

  /** The restore picker: newest first. */
  async pickAndRestore(nb: NotebookPanel | null): Promise<void> {
    const kernel = this.kernelOf(nb);
    if (!kernel) {
      return;
    }
    let snapshots: ISnapshot[];
    try {
      snapshots = (await api.list(kernel.id)).snapshots;
    } catch (error) {
      Notification.error(explain(error), { autoClose: false });
      return;
    }
    if (!snapshots.length) {
      Notification.info('This kernel has no snapshots yet: take one with Snapshot first.', {
        autoClose: 5000
      });
      return;
    }
    const answer = await InputDialog.getItem({
      title: 'Restore Kernel Snapshot',
      label: 'Return the kernel, in place, to:',
      items: [...snapshots].reverse().map(describe),
      current: 0,
      okLabel: 'Restore'
    });
    if (answer.button.accept && answer.value) {
      await this.restore(nb, answer.value.split(' ')[0]);
    }
  }

  async label(nb: NotebookPanel | null, snapshot: ISnapshot): Promise<void> {
    const kernel = this.kernelOf(nb);
    if (!kernel) {
      return;
    }
    const answer = await InputDialog.getText({
      title: `Label snapshot ${snapshot.id}`,
      label: 'Label (empty: none)',
      text: snapshot.label,
      placeholder: 'e.g. clean data',
      okLabel: 'Save'
    });
    if (!answer.button.accept || answer.value === null) {
      return;
    }
    try {
      await api.label(kernel.id, snapshot.id, answer.value);
      Notification.success(`Snapshot ${snapshot.id} labelled '${answer.value}'`, {
        autoClose: 3000
      });
    } catch (error) {
      Notification.error(`Label failed: ${explain(error)}`, { autoClose: false });
    }
    this.model.scheduleRefresh(0);
  }

  async remove(nb: NotebookPanel | null, snapshot: ISnapshot): Promise<void> {
    const kernel = this.kernelOf(nb);
    if (!kernel) {
      return;
    }
    const body = document.createElement('div');
    body.className = 'jp-chkpt-confirm';
    body.textContent = describe(snapshot);
    const answer = await showDialog({
      title: 'Delete kernel snapshot?',
      body: new Widget({ node: body }),
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await api.remove(kernel.id, snapshot.id);
      Notification.success(`Snapshot ${snapshot.id} deleted`, { autoClose: 3000 });
    } catch (error) {
      Notification.error(`Delete failed: ${explain(error)}`, { autoClose: false });
    }
    this.model.scheduleRefresh(0);
  }

  async compare(nb: NotebookPanel | null, from: string, to: string): Promise<void> {
    const kernel = this.kernelOf(nb);
    if (!kernel) {
      return;
    }
    try {
      const diff = await api.diff(kernel.id, from, to);
      openDiff(this.app, diff, nb?.context.path ?? '');
    } catch (error) {
      if (error instanceof ApiError && error.missingRoute) {
        Notification.info('Comparing snapshots needs a newer jupyter-chkpt server.', {
          autoClose: 5000
        });
      } else {
        Notification.error(`Compare failed: ${explain(error)}`, { autoClose: false });
      }
    }
  }

  private async step(nb: NotebookPanel | null, which: 'undo' | 'redo'): Promise<void> {
    const kernel = this.kernelOf(nb);
    if (!kernel) {
      return;
    }
    const undo = which === 'undo';
    await withProgress(this.model, {
      title: undo ? 'Undoing the last cell' : 'Redoing the cell',
      op: 'restore',
      kernel,
      request: () => (undo ? api.undo(kernel.id) : api.redo(kernel.id)),
      success: reply =>
        this.restored(nb, reply, undo ? 'Undone: kernel back to' : 'Redone: kernel at'),
      failure: undo ? 'Undo failed' : 'Redo failed',
      benign: error =>
        error.reason === 'NothingToUndo'
          ? error.message
          : error.missingRoute
            ? `${undo ? 'Undo' : 'Redo'} needs a newer jupyter-chkpt server.`
            : null
    });
  }

  /** The success message of a restore, with Undo when it left a snapshot behind. */
  private restored(nb: NotebookPanel | null, reply: IRestoreReply, what: string) {
    const { snapshot, result } = reply;
    const notes = result.notes?.length ? ` (${result.notes.length} notes)` : '';
    const left = result.left;
    return {
      message: `${what} ${snapshot.id}: back after cell ${count(snapshot)}${notes}`,
      actions: left
        ? [
            {
              label: 'Undo',
              caption: `Restore snapshot ${left}, the state this restore left`,
              callback: () => void this.restore(nb, left)
            }
          ]
        : []
    };
  }
}
