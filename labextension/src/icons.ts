// A camera for taking a snapshot; themed like JupyterLab's own icons (jp-icon3).
import { LabIcon } from '@jupyterlab/ui-components';

export const snapshotIcon = new LabIcon({
  name: 'jupyter-chkpt:snapshot',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<path class="jp-icon3" fill="#616161" d="M9 3 7.2 5H4a2 2 0 0 0-2 2v12a2 2 0 0 0 2 2h16' +
    'a2 2 0 0 0 2-2V7a2 2 0 0 0-2-2h-3.2L15 3H9zm3 5a5 5 0 1 1 0 10 5 5 0 0 1 0-10zm0 2' +
    'a3 3 0 1 0 0 6 3 3 0 0 0 0-6z"/></svg>'
});
