// Mailgun messages API (documentation.mailgun.com). TODO: endpoints.

import type { Endpoint, Provider } from '../adapter.js';

const endpoints: Endpoint[] = [];

export const mailgun: Provider = {
  id: 'mailgun',
  name: 'Mailgun',
  hosts: ['api.mailgun.net', 'api.eu.mailgun.net'],
  endpoints,
  maxBody: 25 * 1024 * 1024,
  error: (status, message) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify({ message }) }),
};
