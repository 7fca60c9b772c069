// jupyter-chkpt for JupyterLab 4: toolbar buttons, a sidebar panel, commands, settings.
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, InputDialog, Notification, ToolbarButton } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { KernelMessage } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { historyIcon, undoIcon } from '@jupyterlab/ui-components';
import { ApiError, api, describe } from './api';
import { SnapshotPanel } from './panel';

const PLUGIN = 'jupyter-chkpt:plugin';
const CMD = {
  checkpoint: 'chkpt:checkpoint',
  restore: 'chkpt:restore',
  panel: 'chkpt:open-panel'
};

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN,
  description: 'Snapshot and restore the notebook kernel in place',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ISettingRegistry, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    registry: ISettingRegistry | null,
    labShell: ILabShell | null
  ) => {
    let auto = false;
    let keep = 10;

    const kernelId = (): string | null =>
      tracker.currentWidget?.sessionContext.session?.kernel?.id ?? null;

    const explain = (error: unknown): string =>
      error instanceof ApiError ? error.message : String(error);

    const refresh = async (): Promise<void> => {
      const id = kernelId();
      if (!id) {
        panel.showMessage('Open a notebook with a running kernel to see its snapshots.');
        return;
      }
      try {
        panel.show_(await api.list(id));
      } catch (error) {
        panel.showError(error);
      }
    };

    const withKernel = async (what: string, f: (id: string) => Promise<string>) => {
      const id = kernelId();
      if (!id) {
        Notification.warning(`${what}: open a notebook with a running kernel first.`);
        return;
      }
      const done = f(id);
      Notification.promise(done, {
        pending: { message: `${what}…`, options: { autoClose: false } },
        success: { message: (text: unknown) => String(text), options: { autoClose: 5000 } },
        error: { message: (e: unknown) => `${what} failed: ${explain(e)}` }
      });
      try {
        await done;
      } catch {
        // shown by the notification
      }
      await refresh();
    };

    const actions = {
      checkpoint: () =>
        withKernel('Checkpoint', async id => {
          const { snapshot } = await api.checkpoint(id);
          return `Snapshot ${snapshot.id} taken (cell [${snapshot.tags.execution_count}])`;
        }),
      restore: (snap: string) =>
        withKernel('Restore', async id => {
          const { snapshot, result } = await api.restore(id, snap);
          const notes = result.notes.length ? ` (${result.notes.length} notes)` : '';
          return `Kernel restored to ${snapshot.id}: back after cell [${snapshot.tags.execution_count}]${notes}`;
        }),
      label: async (snap: string) => {
        const answer = await InputDialog.getText({ title: `Label for snapshot ${snap}` });
        if (answer.button.accept && answer.value !== null) {
          const text = answer.value;
          await withKernel('Label', async id => {
            await api.label(id, snap, text);
            return `Snapshot ${snap} labelled`;
          });
        }
      },
      remove: (snap: string) =>
        withKernel('Delete', async id => {
          await api.remove(id, snap);
          return `Snapshot ${snap} deleted`;
        })
    };

    const panel = new SnapshotPanel(actions);
    panel.title.icon = historyIcon;
    app.shell.add(panel, 'right', { rank: 650 });

    const pickAndRestore = async () => {
      const id = kernelId();
      if (!id) {
        Notification.warning('Restore: open a notebook with a running kernel first.');
        return;
      }
      let listing;
      try {
        listing = await api.list(id);
      } catch (error) {
        Notification.error(explain(error), { autoClose: false });
        return;
      }
      if (!listing.snapshots.length) {
        Notification.info('This kernel has no snapshots yet: press Checkpoint first.');
        return;
      }
      const items = [...listing.snapshots].reverse().map(describe);
      const answer = await InputDialog.getItem({
        title: 'Restore the kernel to the snapshot',
        items,
        current: 0
      });
      if (answer.button.accept && answer.value) {
        await actions.restore(answer.value.split(' ')[0]);
      }
    };

    app.commands.addCommand(CMD.checkpoint, {
      label: 'Checkpoint Kernel',
      caption: 'Snapshot the kernel (memory, threads, open files) once it is idle',
      icon: historyIcon,
      execute: () => actions.checkpoint()
    });
    app.commands.addCommand(CMD.restore, {
      label: 'Restore Kernel…',
      caption: 'Return the kernel, in place, to one of its snapshots',
      icon: undoIcon,
      execute: () => pickAndRestore()
    });
    app.commands.addCommand(CMD.panel, {
      label: 'Show Kernel Snapshots',
      execute: () => {
        app.shell.activateById(panel.id);
        void refresh();
      }
    });
    if (palette) {
      for (const command of Object.values(CMD)) {
        palette.addItem({ command, category: 'Kernel Snapshots' });
      }
    }

    const applySettings = async () => {
      const id = kernelId();
      if (id) {
        try {
          await api.settings(id, auto, keep);
        } catch {
          // not a snapshots kernel: nothing to set
        }
      }
    };
    if (registry) {
      void registry.load(PLUGIN).then(settings => {
        const read = () => {
          auto = settings.get('autoSnapshots').composite as boolean;
          keep = settings.get('keep').composite as number;
          void applySettings();
        };
        settings.changed.connect(read);
        read();
      });
    }

    const watched = new WeakSet<object>();
    tracker.widgetAdded.connect((_, nb: NotebookPanel) => {
      nb.toolbar.insertItem(
        10,
        'chkpt-checkpoint',
        new ToolbarButton({
          icon: historyIcon,
          label: 'Checkpoint',
          tooltip: 'Snapshot the kernel (Alt+Shift+C)',
          onClick: () => void actions.checkpoint()
        })
      );
      nb.toolbar.insertItem(
        11,
        'chkpt-restore',
        new ToolbarButton({
          icon: undoIcon,
          label: 'Restore',
          tooltip: 'Restore the kernel to a snapshot (Alt+Shift+R)',
          onClick: () => void pickAndRestore()
        })
      );
      const watch = () => {
        const kernel = nb.sessionContext.session?.kernel;
        if (!kernel || watched.has(kernel)) {
          return;
        }
        watched.add(kernel);
        kernel.iopubMessage.connect((__, msg: KernelMessage.IIOPubMessage) => {
          // the restored kernel says so on IOPub, whoever asked for the restore
          if ((msg.header.msg_type as string) === 'chkpt_restored') {
            void refresh();
          }
        });
        void applySettings();
      };
      nb.sessionContext.kernelChanged.connect(() => {
        watch();
        void refresh();
      });
      void nb.sessionContext.ready.then(() => {
        watch();
        void refresh();
      });
    });
    tracker.currentChanged.connect(() => void refresh());
    labShell?.currentChanged.connect(() => void refresh());
  }
};

export default plugin;
