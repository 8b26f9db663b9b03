// Where a decided message goes, in one place for every caller (the SMTP channel, quarantine
// release): delivered now (sync), stored for the queue worker (queue), or kept in the outbox
// (capture: no upstream). `submit` resolves only once the message is delivered or durably stored,
// and writes the audit record of what happened.

import { newEventId, type AuditBase, type AuditRecord } from '../store/audit.js';
import type { Store } from '../store/store.js';
import type { DeliveryResult, Transmission, Upstream } from '../smtp/upstream.js';
import type { DeliveryQueue } from './queue.js';

export type DeliveryMode = 'sync' | 'queue' | 'capture';

export interface OutboundMessage {
  /** The X-Postguard id carried in the bytes; also the queue key. */
  id: string;
  agent: string | null;
  from: string;
  to: string[];
  raw: Buffer;
}

export type SubmitResult =
  | { status: 'delivered' | 'queued' | 'captured'; record: AuditRecord }
  | { status: 'failed'; temporary: boolean; code: number | null; response: string; record: AuditRecord };

export interface Outbound {
  readonly mode: DeliveryMode;
  /** Sync mode only: an upstream transaction opened early (cut-through), used if its envelope matches. */
  begin(from: string, to: string[]): Transmission | null;
  submit(msg: OutboundMessage, audit: AuditBase, early?: Transmission | null): Promise<SubmitResult>;
}

/**
 * `mode` is the configured delivery; without an upstream it is capture whatever the config says.
 * `queue` is whatever delivers queued mail: the relay's worker, or nothing for a CLI (the relay's worker polls).
 */
export function createOutbound(mode: Exclude<DeliveryMode, 'capture'>, store: Store, upstream: Upstream | null, queue: Pick<DeliveryQueue, 'offer'> | null): Outbound {
  if (!upstream) {
    return {
      mode: 'capture',
      begin: () => null,
      async submit(msg, audit) {
        const record = await store.capture({ ...audit, id: audit.id ?? newEventId(), action: 'captured' }, { from: msg.from, to: msg.to }, msg.raw);
        return { status: 'captured', record };
      },
    };
  }
  if (mode === 'queue') {
    if (!queue) throw new Error('queue mode needs a delivery queue');
    return {
      mode,
      begin: () => null,
      async submit(msg, audit) {
        const queued = { id: msg.id, created: Date.now(), agent: msg.agent, from: msg.from, to: msg.to, raw: msg.raw, attempts: 0 };
        const record = await store.enqueue({ ...audit, id: audit.id ?? newEventId(), action: 'queued' }, queued);
        queue.offer(queued);
        return { status: 'queued', record };
      },
    };
  }
  return {
    mode,
    begin: (from, to) => upstream.begin(from, to),
    async submit(msg, audit, early) {
      const matches = early && early.to.length === msg.to.length && early.to.every((a, i) => a === msg.to[i]);
      // Withdraw a non-matching early transaction before sending: it holds a pooled session.
      if (!matches) early?.withdraw();
      const result = matches ? await early.commit(msg.raw) : await upstream.send(msg.from, msg.to, msg.raw);
      const record = store.record({ ...audit, id: audit.id, ...outcome(result) });
      return result.status === 'delivered' ? { status: 'delivered', record } : { status: 'failed', temporary: result.temporary, code: result.code, response: result.response, record };
    },
  };
}

/** Audit fields for an upstream attempt. */
export function outcome(result: DeliveryResult): { action: string; upstream: Record<string, unknown> } {
  if (result.status === 'delivered') {
    // Some recipients refused while the others took it: the message cannot be unsent, so it is
    // reported (and alerted by the caller) rather than answered as a failure.
    return { action: result.rejected.length ? 'partially_delivered' : 'delivered', upstream: { status: 'delivered', response: result.response, accepted: result.accepted, rejected: result.rejected } };
  }
  return { action: result.temporary ? 'tempfail' : 'upstream_rejected', upstream: { status: 'failed', temporary: result.temporary, code: result.code, response: result.response } };
}
