// Gmail API (developers.google.com/gmail/api/reference/rest). TODO: endpoints.

import type { Endpoint, Provider } from '../adapter.js';

const endpoints: Endpoint[] = [];

export const gmail: Provider = {
  id: 'gmail',
  name: 'Gmail API',
  hosts: ['gmail.googleapis.com', 'www.googleapis.com'],
  endpoints,
  maxBody: 36 * 1024 * 1024,
  error: (status, message) => ({ headers: { 'content-type': 'application/json; charset=UTF-8' }, body: JSON.stringify({ error: { code: status, message, status: status === 403 ? 'PERMISSION_DENIED' : 'INVALID_ARGUMENT', errors: [{ message, domain: 'postguard', reason: status === 403 ? 'forbidden' : 'badRequest' }] } }) }),
};
