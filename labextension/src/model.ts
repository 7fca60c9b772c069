// What the panel and the status bar show: the current notebook's kernel, whether it
// takes snapshots, its listing (refreshed on IOPub news, restarts and our own actions)
// and the operation in progress.
import { JupyterFrontEnd } from '@jupyterlab/application';
import { ISessionContext } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Event, Kernel, KernelMessage } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';
import { ApiError, IListing, ISnapshot, api, explain } from './api';

/** none: no kernel; pending: not known yet; plain: a kernel without snapshots. */
export type Support = 'none' | 'pending' | 'plain' | 'snapshots';

export const NEEDS_KERNEL = 'Kernel snapshots need the Python 3 (snapshots) kernel';

/** IOPub messages a snapshots kernel publishes when its snapshots change. */
export const NEWS = new Set(['chkpt_changed', 'chkpt_restored']);

/** The server's event (jupyter_server's event bus) when its REST API changed snapshots. */
export const EVENTS_SCHEMA = 'https://jupyter-chkpt.org/events/snapshots/v1';

/** A restart (or a death: `died`) of a kernel that had snapshots. */
export interface IRestarted {
  count: number;
  bytes: number;
  /** The newest: what "Restore the last snapshot" brings back. */
  last: ISnapshot;
  died: boolean;
}

export interface IBusy {
  op: 'checkpoint' | 'restore';
  phase: string;
}

const DEBOUNCE_MS = 200;
const STARTUP_RETRIES = 15; // seconds a new kernel may take to register with the helper

export class SnapshotModel {
  constructor(
    private app: JupyterFrontEnd,
    readonly tracker: INotebookTracker
  ) {
    tracker.currentChanged.connect(() => this.scheduleRefresh(0));
    tracker.widgetAdded.connect((_, nb) => this.watch(nb));
    app.serviceManager.kernelspecs.specsChanged.connect(() => this.scheduleRefresh(0));
    // what other tabs and clients change over REST (label, delete: the kernel does not know)
    app.serviceManager.events.stream.connect((_, event: Event.Emission) => {
      if (event.schema_id === EVENTS_SCHEMA && event.kernel_id === this.kernel?.id) {
        this.scheduleRefresh();
      }
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The notebook whose kernel is shown: the current one. */
  get notebook(): NotebookPanel | null {
    return this.tracker.currentWidget;
  }

  get kernel(): Kernel.IKernelConnection | null {
    return this.notebook?.sessionContext.session?.kernel ?? null;
  }

  get support(): Support {
    const nb = this.notebook;
    return nb ? this.supportOf(nb.sessionContext) : 'none';
  }

  /** Whether the session's kernel is a snapshots kernel (its kernelspec says so). */
  supportOf(session: ISessionContext): Support {
    const kernel = session.session?.kernel;
    if (!kernel) {
      return session.isReady || session.hasNoKernel ? 'none' : 'pending';
    }
    const specs = this.app.serviceManager.kernelspecs.specs;
    if (!specs) {
      return 'pending';
    }
    const spec = specs.kernelspecs[kernel.name];
    return spec?.metadata?.jupyter_chkpt ? 'snapshots' : 'plain';
  }

  /** The last listing of the current kernel (null until one arrives, or on an error). */
  get listing(): IListing | null {
    const listing = this._listing;
    return listing && listing.kernel.kernel_id === this.kernel?.id ? listing : null;
  }

  get error(): string | null {
    return this._error;
  }

  get busy(): IBusy | null {
    return this._busy;
  }

  set busy(value: IBusy | null) {
    this._busy = value;
    this._changed.emit();
  }

  /** Refresh after `delay` ms; calls in between are folded into one. */
  scheduleRefresh(delay = DEBOUNCE_MS): void {
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    this._timer = setTimeout(() => {
      this._timer = null;
      void this.refresh();
    }, delay);
  }

  async refresh(): Promise<void> {
    const seq = ++this._seq;
    const kernel = this.kernel;
    if (this.support !== 'snapshots' || !kernel) {
      this._listing = null;
      this._error = null;
      this._changed.emit();
      return;
    }
    try {
      const listing = await api.list(kernel.id);
      if (seq === this._seq) {
        this._listing = listing;
        this._error = null;
        this._retries = 0;
        this.noticeRestart(listing);
      }
    } catch (error) {
      if (seq !== this._seq) {
        return;
      }
      this._listing = null;
      if (
        error instanceof ApiError &&
        error.reason === 'NotSnapshotsKernel' &&
        this._retries < STARTUP_RETRIES
      ) {
        // a snapshots kernel that has only just started: it registers in a moment
        this._retries++;
        this._error = null;
        this.scheduleRefresh(1000);
        return;
      }
      this._error = explain(error);
    }
    if (seq === this._seq) {
      this._changed.emit();
    }
  }

  /** Refresh on the notebook's kernel news, restarts and kernel changes. */
  private watch(nb: NotebookPanel): void {
    const session = nb.sessionContext;
    const mine = () => nb === this.notebook;
    let refreshWhenIdle = false;
    session.iopubMessage.connect((_, msg: KernelMessage.IMessage) => {
      if (NEWS.has(msg.header.msg_type) && mine()) {
        this.scheduleRefresh();
      }
    });
    session.statusChanged.connect((_, status: Kernel.Status) => {
      if (status === 'restarting' || status === 'autorestarting') {
        this._died = status === 'autorestarting';
        refreshWhenIdle = true;
      } else if (status === 'idle' && refreshWhenIdle) {
        refreshWhenIdle = false;
        if (mine()) {
          this.scheduleRefresh();
        }
      }
    });
    session.kernelChanged.connect(() => {
      refreshWhenIdle = true; // a new kernel: once more when it is idle
      this._retries = 0;
      if (mine()) {
        this.scheduleRefresh(0);
      }
    });
    void session.ready.then(() => mine() && this.scheduleRefresh(0));
  }

  /** A listing of the same kernel in another process than the last one with snapshots:
   * a restart (or a death). Listings fail while the kernel is down, so the process's
   * snapshots are remembered from its last listing that had some. */
  private noticeRestart(listing: IListing): void {
    const { kernel_id, pid } = listing.kernel;
    const before = this._lastWithSnapshots;
    if (before && before.kernel.kernel_id === kernel_id && before.kernel.pid !== pid) {
      const kept = before.snapshots;
      // JupyterLab's dialog said "all variables will be lost": say where they are
      this._restarted.emit({
        count: kept.length,
        bytes: kept.reduce((n, s) => n + s.stored_bytes, 0),
        last: kept.reduce((a, s) => (s.created > a.created ? s : a)),
        died: this._died
      });
      this._lastWithSnapshots = null;
    }
    if (listing.snapshots.length) {
      this._lastWithSnapshots = listing;
    }
  }

  /** The kernel restarted while it had snapshots: how many, what they store, the newest. */
  get restarted(): ISignal<this, IRestarted> {
    return this._restarted;
  }

  private _changed = new Signal<this, void>(this);
  private _restarted = new Signal<this, IRestarted>(this);
  private _listing: IListing | null = null;
  private _lastWithSnapshots: IListing | null = null;
  private _died = false;
  private _error: string | null = null;
  private _busy: IBusy | null = null;
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _seq = 0;
  private _retries = 0;
}
