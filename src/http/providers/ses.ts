// Amazon SES v1 (query) and v2 (REST JSON). TODO: endpoints.

import type { Endpoint, Provider } from '../adapter.js';

const endpoints: Endpoint[] = [];

export const ses: Provider = {
  id: 'ses',
  name: 'Amazon SES',
  hosts: [/^email(-fips)?\.[a-z0-9-]+\.amazonaws\.com$/],
  endpoints,
  maxBody: 40 * 1024 * 1024,
  error: (status, message) => ({ headers: { 'content-type': 'application/json', 'x-amzn-errortype': status === 403 ? 'AccessDeniedException' : 'BadRequestException' }, body: JSON.stringify({ __type: status === 403 ? 'AccessDeniedException' : 'BadRequestException', message }) }),
};
