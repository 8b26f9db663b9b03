// The provider registry: every mail-API host the relay knows, and the endpoints that send mail on
// it. A host in here is always intercepted and inspected; a write to an endpoint not listed for it
// is refused (fail closed), reads pass.

import type { Endpoint, Provider } from '../adapter.js';
import { postmark } from './postmark.js';
import { sendgrid } from './sendgrid.js';
import { mailgun } from './mailgun.js';
import { ses } from './ses.js';
import { resend } from './resend.js';
import { brevo } from './brevo.js';
import { mailjet } from './mailjet.js';
import { sparkpost } from './sparkpost.js';
import { gmail } from './gmail.js';
import { graph } from './graph.js';

export const PROVIDERS: readonly Provider[] = [postmark, sendgrid, mailgun, ses, resend, brevo, mailjet, sparkpost, gmail, graph];

const exact = new Map<string, Provider>();
for (const p of PROVIDERS) for (const h of p.hosts) if (typeof h === 'string') exact.set(h, p);

/** The provider serving `host` (lower-case, no trailing dot, no port), if it is a mail-API host. */
export function providerFor(host: string): Provider | undefined {
  const h = host.toLowerCase().replace(/\.$/, '');
  return exact.get(h) ?? PROVIDERS.find((p) => p.hosts.some((x) => typeof x !== 'string' && x.test(h)));
}

export function endpointFor(p: Provider, method: string, path: string): { endpoint: Endpoint; params: string[] } | undefined {
  for (const endpoint of p.endpoints) {
    if (endpoint.method !== method) continue;
    const m = endpoint.path.exec(path);
    if (m) return { endpoint, params: m.slice(1).map((s) => s ?? '') };
  }
  return undefined;
}
