// jupyter-chkpt for JupyterLab 4: toolbar buttons, the snapshot history panel,
// commands, a status bar item, notebook cell markers and settings.
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, ISessionContextDialogs, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { historyIcon, redoIcon, undoIcon } from '@jupyterlab/ui-components';
import { SnapshotActions } from './actions';
import { api } from './api';
import { size } from './format';
import { snapshotIcon } from './icons';
import { CellMarkers } from './markers';
import { SnapshotModel } from './model';
import { SnapshotPanel } from './panel';
import { SnapshotStatus } from './statusbar';
import { SnapshotButton } from './toolbar';

const PLUGIN = 'jupyter-chkpt:plugin';
const CMD = {
  checkpoint: 'chkpt:checkpoint',
  restore: 'chkpt:restore',
  panel: 'chkpt:open-panel',
  undo: 'chkpt:undo',
  redo: 'chkpt:redo'
};

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN,
  description: 'Snapshot and restore the notebook kernel in place',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [
    ICommandPalette,
    ISettingRegistry,
    ILayoutRestorer,
    IStatusBar,
    ISessionContextDialogs
  ],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    registry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null,
    statusBar: IStatusBar | null,
    dialogs: ISessionContextDialogs | null
  ) => {
    const model = new SnapshotModel(app, tracker);
    const actions = new SnapshotActions(app, model, dialogs);
    const current = () => tracker.currentWidget;

    const panel = new SnapshotPanel(model, {
      take: () => void actions.take(current()),
      restore: s => void actions.restore(current(), s.id),
      label: s => void actions.label(current(), s),
      remove: s => void actions.remove(current(), s),
      undo: () => void actions.undo(current()),
      redo: () => void actions.redo(current()),
      compare: (a, b) => void actions.compare(current(), a.id, b.id),
      changeKernel: () => {
        const nb = current();
        if (nb) {
          void actions.changeKernel(nb);
        }
      },
      refresh: () => model.scheduleRefresh(0)
    });
    app.shell.add(panel, 'right', { rank: 650 });
    restorer?.add(panel, 'jp-chkpt-panel');
    const showPanel = () => {
      app.shell.activateById(panel.id);
      model.scheduleRefresh(0);
    };

    app.commands.addCommand(CMD.checkpoint, {
      label: 'Take Kernel Snapshot',
      caption: 'Snapshot the kernel (memory, threads, open files) once it is idle',
      icon: snapshotIcon,
      execute: () => actions.take(current())
    });
    app.commands.addCommand(CMD.restore, {
      label: 'Restore Kernel Snapshot…',
      caption: 'Return the kernel, in place, to one of its snapshots',
      icon: historyIcon,
      execute: () => actions.pickAndRestore(current())
    });
    app.commands.addCommand(CMD.panel, {
      label: 'Show Kernel Snapshot History',
      icon: historyIcon,
      execute: showPanel
    });
    model.restarted.connect((_, { count, bytes, last, died }) => {
      const nb = model.notebook; // the restarted kernel is this one's
      Notification.info(
        `The kernel ${died ? 'died and was started again' : 'restarted'}. Its ${count} ` +
          `snapshot(s) (${size(bytes)}) are kept under "Earlier kernels": restoring one ` +
          'brings its whole state back into the new kernel.',
        {
          autoClose: died ? false : 15000,
          actions: [
            {
              label: 'Restore the last snapshot',
              caption: `Restore ${last.label || last.id} into the new kernel`,
              callback: () => {
                void nb?.sessionContext.ready.then(() => actions.restore(nb, last.id));
              }
            },
            { label: 'Show', callback: () => void app.commands.execute(CMD.panel) }
          ]
        }
      );
    });
    app.commands.addCommand(CMD.undo, {
      label: 'Undo Last Cell',
      caption: "Return the kernel to the state before the last cell's run",
      icon: undoIcon,
      execute: () => actions.undo(current())
    });
    app.commands.addCommand(CMD.redo, {
      label: 'Redo Cell',
      caption: 'Forward again to the state the last undo left',
      icon: redoIcon,
      execute: () => actions.redo(current())
    });
    if (palette) {
      for (const command of Object.values(CMD)) {
        palette.addItem({ command, category: 'Kernel Snapshots' });
      }
    }

    if (statusBar) {
      statusBar.registerStatusItem('jupyter-chkpt:status', {
        item: new SnapshotStatus(model, showPanel),
        align: 'left',
        rank: 5,
        isActive: () => model.support === 'snapshots',
        activeStateChanged: model.changed
      });
    }

    // settings: applied to every snapshots kernel when it starts and when they change
    let auto = false;
    let keep = 10;
    let maxMiB = 0;
    const applySettings = (nb: NotebookPanel) => {
      const kernel = nb.sessionContext.session?.kernel;
      if (kernel && model.supportOf(nb.sessionContext) === 'snapshots') {
        api.settings(kernel.id, auto, keep, maxMiB).catch(() => undefined); // said at the next action
      }
    };
    if (registry) {
      void registry.load(PLUGIN).then(settings => {
        const read = () => {
          auto = settings.get('autoSnapshots').composite as boolean;
          keep = settings.get('keep').composite as number;
          maxMiB = settings.get('maxStorageMiB').composite as number;
          tracker.forEach(applySettings);
        };
        settings.changed.connect(read);
        read();
      });
    }

    const markers = new WeakMap<NotebookPanel, CellMarkers>();
    model.changed.connect(() => {
      const nb = model.notebook;
      if (nb && model.listing) {
        markers.get(nb)?.snapshots(model.listing);
      }
    });

    tracker.widgetAdded.connect((_, nb: NotebookPanel) => {
      markers.set(nb, new CellMarkers(nb));
      nb.toolbar.insertItem(
        10,
        'chkpt-checkpoint',
        new SnapshotButton(nb, model, {
          name: 'take',
          icon: snapshotIcon,
          label: 'Snapshot',
          tooltip: 'Take a kernel snapshot (Alt+Shift+C)',
          onClick: () => void actions.take(nb),
          onUnavailable: () => actions.explainUnavailable(nb)
        })
      );
      nb.toolbar.insertItem(
        11,
        'chkpt-restore',
        new SnapshotButton(nb, model, {
          name: 'restore',
          icon: historyIcon,
          label: 'Restore Snapshot…',
          tooltip: 'Restore the kernel to a snapshot (Alt+Shift+R)',
          onClick: () => void actions.pickAndRestore(nb),
          onUnavailable: () => actions.explainUnavailable(nb)
        })
      );
      nb.sessionContext.kernelChanged.connect(() => applySettings(nb));
      void Promise.all([nb.sessionContext.ready, app.serviceManager.kernelspecs.ready]).then(() =>
        applySettings(nb)
      );
    });
  }
};

export default plugin;
