// A snapshot or restore in progress: one notification that follows the request,
// saying what the kernel is doing (polled from the listing's `activity` every
// 500 ms), with Cancel while the request waits for a running cell.
import { Notification } from '@jupyterlab/apputils';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { ApiError, IActivity, activityOf, api, explain } from './api';
import { size } from './format';
import { SnapshotModel } from './model';

const POLL_MS = 500;

export interface IOutcome {
  message: string;
  actions?: Notification.IAction[];
}

export interface IOperation<T> {
  /** What the notification calls it: "Taking a kernel snapshot". */
  title: string;
  op: IActivity['op'];
  kernel: Kernel.IKernelConnection;
  request: () => Promise<T>;
  success: (value: T) => IOutcome;
  /** What a failure says, as in "Restore failed: <message>". */
  failure: string;
  /** What to say, as info, for an answer that is not an error (nothing to undo). */
  benign?: (error: ApiError) => string | null;
}

export const WAITING = 'waiting for the running cell to finish';
const CANCELLING = 'cancelling (the running cell goes on)';

/** Run the request with a progress notification; its value, or undefined if it failed. */
export async function withProgress<T>(
  model: SnapshotModel,
  o: IOperation<T>
): Promise<T | undefined> {
  const id = Notification.emit(`${o.title}…`, 'in-progress', { autoClose: false });
  let done = false;
  let shown = '';
  let cancelling = false;
  const cancel: Notification.IAction = {
    label: 'Cancel',
    caption: 'Call the request off (the running cell goes on)',
    callback: event => {
      event.preventDefault(); // keep the notification: it says how it ends
      cancelling = true;
      show(CANCELLING);
      api.cancel(o.kernel.id).catch(error => {
        cancelling = false;
        Notification.warning(`Could not cancel: ${explain(error)}`, { autoClose: 5000 });
      });
    }
  };
  const show = (phase: string) => {
    if (cancelling && phase !== CANCELLING) {
      phase = CANCELLING; // until the request says how it ended
    }
    if (done || phase === shown) {
      return;
    }
    shown = phase;
    model.busy = { op: o.op, phase };
    Notification.update({
      id,
      message: `${o.title}: ${phase}…`,
      type: 'in-progress',
      autoClose: false,
      actions: phase === WAITING ? [cancel] : []
    });
  };
  // What keeps the kernel busy, from its IOPub status messages' parents: a cell
  // (execute_request: our request waits for it) or a request like ours (chkpt_request).
  let busyWith: string | null = o.kernel.status === 'busy' ? 'execute_request' : null;
  const onIOPub = (_: unknown, msg: KernelMessage.IIOPubMessage) => {
    if (KernelMessage.isStatusMsg(msg)) {
      const parent = (msg.parent_header as { msg_type?: string }).msg_type ?? null;
      busyWith = msg.content.execution_state === 'busy' ? parent : null;
    }
  };
  o.kernel.iopubMessage.connect(onIOPub);
  const poll = async () => {
    let activity: IActivity | null | undefined;
    try {
      activity = activityOf(await api.list(o.kernel.id, true));
    } catch {
      activity = undefined; // the listing failed: keep what is shown
    }
    if (activity) {
      const bytes = activity.bytes && !/\d/.test(activity.phase) ? `, ${size(activity.bytes)}` : '';
      show(activity.phase + bytes);
    } else if (busyWith === 'execute_request') {
      show(WAITING);
    }
    if (!done) {
      timer = setTimeout(() => void poll(), POLL_MS);
    }
  };
  model.busy = { op: o.op, phase: '' };
  let timer: ReturnType<typeof setTimeout> | null = setTimeout(() => void poll(), POLL_MS);
  try {
    const value = await o.request();
    const outcome = o.success(value);
    Notification.update({
      id,
      message: outcome.message,
      type: 'success',
      autoClose: outcome.actions?.length ? 10000 : 5000,
      actions: outcome.actions ?? []
    });
    return value;
  } catch (error) {
    if (error instanceof ApiError && error.reason === 'Cancelled') {
      Notification.update({
        id,
        message: `${o.title}: cancelled`,
        type: 'info',
        autoClose: 5000,
        actions: []
      });
    } else if (error instanceof ApiError && o.benign?.(error)) {
      const message = o.benign(error) as string;
      Notification.update({ id, message, type: 'info', autoClose: 5000, actions: [] });
    } else {
      Notification.update({
        id,
        message: `${o.failure}: ${explain(error)}`,
        type: 'error',
        autoClose: false,
        actions: []
      });
    }
    return undefined;
  } finally {
    done = true;
    o.kernel.iopubMessage.disconnect(onIOPub);
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    model.busy = null;
    model.scheduleRefresh(0);
  }
}
