// SendGrid v3 (twilio.com/docs/sendgrid/api-reference/mail-send). TODO: endpoints.

import type { Endpoint, Provider } from '../adapter.js';

const endpoints: Endpoint[] = [];

export const sendgrid: Provider = {
  id: 'sendgrid',
  name: 'SendGrid',
  hosts: ['api.sendgrid.com', 'api.eu.sendgrid.com'],
  endpoints,
  maxBody: 30 * 1024 * 1024,
  error: (status, message) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify({ errors: [{ message, field: null, help: null }] }) }),
};
