// Brevo transactional email (developers.brevo.com/reference/send-transac-email). TODO: endpoints.

import type { Endpoint, Provider } from '../adapter.js';

const endpoints: Endpoint[] = [];

export const brevo: Provider = {
  id: 'brevo',
  name: 'Brevo',
  hosts: ['api.brevo.com', 'api.sendinblue.com'],
  endpoints,
  maxBody: 32 * 1024 * 1024,
  error: (status, message) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: status === 403 ? 'permission_denied' : 'bad_request', message }) }),
};
