// SparkPost transmissions (developers.sparkpost.com/api/transmissions). TODO: endpoints.

import type { Endpoint, Provider } from '../adapter.js';

const endpoints: Endpoint[] = [];

export const sparkpost: Provider = {
  id: 'sparkpost',
  name: 'SparkPost',
  hosts: ['api.sparkpost.com', 'api.eu.sparkpost.com'],
  endpoints,
  maxBody: 20 * 1024 * 1024,
  error: (status, message) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify({ errors: [{ message, code: String(status), description: message }] }) }),
};
