// Microsoft Graph mail (learn.microsoft.com/graph/api/user-sendmail). TODO: endpoints.

import type { Endpoint, Provider } from '../adapter.js';

const endpoints: Endpoint[] = [];

export const graph: Provider = {
  id: 'graph',
  name: 'Microsoft Graph',
  hosts: ['graph.microsoft.com', 'graph.microsoft.us', 'dod-graph.microsoft.us', 'microsoftgraph.chinacloudapi.cn'],
  endpoints,
  maxBody: 150 * 1024 * 1024,
  error: (status, message) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify({ error: { code: status === 403 ? 'ErrorAccessDenied' : 'ErrorInvalidRequest', message } }) }),
};
