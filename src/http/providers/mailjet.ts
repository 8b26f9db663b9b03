// Mailjet Send API v3.1 (dev.mailjet.com/email/reference/send-emails). TODO: endpoints.

import type { Endpoint, Provider } from '../adapter.js';

const endpoints: Endpoint[] = [];

export const mailjet: Provider = {
  id: 'mailjet',
  name: 'Mailjet',
  hosts: ['api.mailjet.com', 'api.us.mailjet.com'],
  endpoints,
  maxBody: 15 * 1024 * 1024,
  error: (status, message) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ErrorIdentifier: 'postguard', ErrorCode: 'mj-0403', StatusCode: status, ErrorMessage: message }) }),
};
