import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';

import { ClustersPanel } from './panel';

export { requestAPI, APIError } from './request';

/** The panel's id: also the `data-id` of its tab in the left side bar. */
export const PANEL_ID = 'clusterhub-clusters';
const OPEN_COMMAND = 'clusterhub:open-clusters';

// Three nodes joined to a scheduler.
const CLUSTERS_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <circle cx="12" cy="5" r="3"/>
    <circle cx="5" cy="18" r="3"/>
    <circle cx="12" cy="19" r="3"/>
    <circle cx="19" cy="18" r="3"/>
    <path d="M11 8h2v8h-2zM10.2 7.1l1.6 1.2-5 8-1.6-1.2zM13.8 7.1l5 8-1.6 1.2-5-8z"/>
  </g>
</svg>`;

export const clustersIcon = new LabIcon({ name: 'clusterhub:clusters', svgstr: CLUSTERS_SVG });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'clusterhub:sidebar',
  description: 'The Clusters sidebar: scale your clusters and see which host ran each task.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const panel = new ClustersPanel();
    panel.id = PANEL_ID;
    panel.title.icon = clustersIcon;
    panel.title.caption = 'Clusters';
    app.shell.add(panel, 'left', { rank: 200 });
    restorer?.add(panel, PANEL_ID);

    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Show Clusters',
      caption: 'Open the Clusters sidebar',
      execute: () => app.shell.activateById(PANEL_ID)
    });
    palette?.addItem({ command: OPEN_COMMAND, category: 'Clusters' });
  }
};

export default plugin;
