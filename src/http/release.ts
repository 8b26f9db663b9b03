// Releasing a quarantined HTTP request: the held bytes are read again with the adapter, recipients
// the policy in force now does not allow are removed (a reviewer approves the content, not unknown
// recipients), and the request is sent as the agent sent it, credentials included.

import type { Releaser } from '../delivery/quarantine.js';
import { judgeRecipient } from '../policy/decide.js';
import type { Policy } from '../policy/types.js';
import type { QuarantineEntry, Store } from '../store/store.js';
import { extract, outgoingBody, splitUrl } from './adapter.js';
import { endpointFor, providerFor } from './providers/index.js';
import type { HttpUpstream, Target } from './upstream.js';

/** A request held in quarantine: enough to send it again, byte for byte. */
export interface HeldRequest {
  target: Target;
  method: string;
  url: string;
  headers: Record<string, string | string[]>;
  body: string; // base64 of the decoded body
}

/**
 * Release a held request: read again with the adapter, recipients the policy in force now does
 * not allow removed (a human approves the content, not unknown recipients), then sent as held.
 */
export async function releaseHttp(entry: QuarantineEntry & { raw: Buffer }, policy: Policy, actor: string, ctx: { store: Store; upstream: HttpUpstream }): ReturnType<Releaser> {
  const held = JSON.parse(entry.raw.toString('utf8')) as HeldRequest;
  const provider = providerFor(held.target.host);
  const { path } = splitUrl(held.url);
  const match = provider && endpointFor(provider, held.method, path);
  if (!provider || !match) return { ok: false, status: 409, error: 'the held request no longer matches a send endpoint postguard knows' };
  const original = Buffer.from(held.body, 'base64');
  const { extracted } = await extract(provider, match.endpoint, { method: held.method, host: held.target.host, url: held.url, headers: held.headers, body: original, params: match.params });
  const kept: string[] = [];
  const dropped: string[] = [];
  for (const m of extracted.messages) {
    for (const r of m.recipients) {
      if (judgeRecipient(policy, entry.agent, r.mailbox)) {
        if (r.delivers) kept.push(r.mailbox.address);
      } else if (r.strip) {
        r.strip();
        dropped.push(r.mailbox.address);
      } else return { ok: false, status: 409, error: `${r.mailbox.address} (${r.source}) is not allowed by the current policy and cannot be removed from this request` };
    }
  }
  if (kept.length === 0) return { ok: false, status: 409, error: `no recipient is allowed by the current policy (${dropped.join(', ')})` };
  const out = outgoingBody(extracted, dropped.length > 0, original);
  const headers = { ...held.headers, 'content-length': String(out.body.length), ...(out.contentType ? { 'content-type': out.contentType } : {}) };
  const r = await ctx.upstream.send(held.target, held.method, held.url, headers, out.body);
  const record = ctx.store.record({
    kind: 'message', channel: 'http', action: r.status < 300 ? 'released' : 'upstream_rejected', ref: entry.id, provider: provider.id, endpoint: match.endpoint.name,
    host: held.target.host, method: held.method, path, agent: entry.agent, released_by: actor, status: r.status, recipients: { kept: [...new Set(kept)], stripped: [...new Set(dropped)] }, policy_version: policy.version,
  });
  if (r.status >= 300) return { ok: false, status: 502, error: `${provider.name} answered ${r.status}: ${r.body.slice(0, 300)}` };
  return { ok: true, status: 'delivered', delivered_to: [...new Set(kept)], dropped: [...new Set(dropped)], delivery_audit_id: record.id };
}

/** Header values that are credentials: never shown (the held request keeps them for the replay). */
const SECRET_HEADER = /^(authorization|cookie|x-api-key|api-key|x-postmark-server-token|x-postmark-account-token|x-amz-security-token|x-goog-api-key)$/i;

/** The held request for people: readable JSON, the body as text, credentials masked. */
export function viewHeldRequest(raw: Buffer): Buffer {
  const held = JSON.parse(raw.toString('utf8')) as HeldRequest;
  const headers = Object.fromEntries(Object.entries(held.headers).map(([k, v]) => [k, SECRET_HEADER.test(k) ? '(masked)' : v]));
  return Buffer.from(JSON.stringify({ target: held.target, method: held.method, url: held.url, headers, body: Buffer.from(held.body, 'base64').toString('utf8') }, null, 2));
}
