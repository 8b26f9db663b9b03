// Resend (resend.com/docs/api-reference/emails). TODO: endpoints.

import type { Endpoint, Provider } from '../adapter.js';

const endpoints: Endpoint[] = [];

export const resend: Provider = {
  id: 'resend',
  name: 'Resend',
  hosts: ['api.resend.com'],
  endpoints,
  maxBody: 40 * 1024 * 1024,
  error: (status, message) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify({ statusCode: status, name: status === 403 ? 'restricted_api_key' : 'validation_error', message }) }),
};
