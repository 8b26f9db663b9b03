// The quarantine lifecycle: held messages are listed, shown, released, deleted, or expire after
// the policy's duration. Release re-checks the envelope against the policy in force at release
// time (a human approves the content, not recipients the policy does not allow) and hands the
// message to the same Outbound as live mail; it stays held unless that succeeds.

import { parseMailbox } from '../core/address.js';
import type { Logger } from '../core/log.js';
import { judgeRecipient } from '../policy/decide.js';
import type { Policy } from '../policy/types.js';
import type { QuarantineEntry, Store } from '../store/store.js';
import type { Outbound } from './outbound.js';

export type ReleaseResult =
  | { ok: true; status: 'delivered' | 'queued' | 'captured'; delivered_to: string[]; dropped: string[]; audit_id: string }
  | { ok: false; status: number; error: string };

/** How a channel sends a held message on: what was delivered, or why not (the message then stays held). */
export type Releaser = (entry: QuarantineEntry & { raw: Buffer }, actor: string) => Promise<
  { ok: true; status: 'delivered' | 'queued' | 'captured'; delivered_to: string[]; dropped: string[]; delivery_audit_id: string } | { ok: false; status: number; error: string }
>;

export class Quarantine {
  private readonly releasers = new Map<string, Releaser>();
  /** How a channel's held bytes are shown to people (HTTP requests: credentials masked). */
  private readonly views = new Map<string, (raw: Buffer) => Buffer>();

  constructor(
    private readonly store: Store,
    private readonly outbound: Outbound,
    private readonly policy: () => Policy,
    private readonly log: Logger,
  ) {
    this.releasers.set('smtp', (entry, actor) => this.releaseSmtp(entry, actor));
  }

  /** The HTTP channel replays held requests its own way, and shows them without their credentials. */
  releaseWith(channel: string, releaser: Releaser, view?: (raw: Buffer) => Buffer): void {
    this.releasers.set(channel, releaser);
    if (view) this.views.set(channel, view);
  }

  list(limit?: number) {
    return this.store.quarantined(limit);
  }

  show(id: string) {
    const entry = this.store.quarantineEntry(id);
    const view = entry && this.views.get(entry.channel);
    return entry && view ? { ...entry, raw: view(entry.raw) } : entry;
  }

  async release(id: string, actor: string): Promise<ReleaseResult> {
    const entry = this.store.quarantineEntry(id);
    if (!entry) return { ok: false, status: 404, error: 'no such quarantined message' };
    const releaser = this.releasers.get(entry.channel);
    if (!releaser) return { ok: false, status: 409, error: `releasing ${entry.channel} messages is not supported` };
    if (!this.store.claimQuarantined(id)) return { ok: false, status: 409, error: 'already being released' };
    let result;
    try {
      result = await releaser(entry, actor);
    } catch (e) {
      this.store.unclaimQuarantined(id);
      throw e;
    }
    if (!result.ok) {
      this.store.unclaimQuarantined(id);
      return result;
    }
    const { delivered_to, dropped } = result;
    const record = this.store.unquarantine(id, { kind: 'admin', action: 'quarantine_released', ref: id, actor, delivery: result.status, delivered_to, dropped, delivery_audit_id: result.delivery_audit_id });
    this.log('info', 'quarantine_released', { id, actor, channel: entry.channel, delivery: result.status, recipients: delivered_to.length, dropped: dropped.length });
    return { ok: true, status: result.status, delivered_to, dropped, audit_id: record?.id ?? result.delivery_audit_id };
  }

  /**
   * SMTP: recipients the policy in force now does not allow are dropped (a human approves the
   * content, not recipients the policy does not allow); the rest go through the same Outbound as live mail.
   */
  private async releaseSmtp(entry: QuarantineEntry & { raw: Buffer }, actor: string): ReturnType<Releaser> {
    const policy = this.policy();
    const allowed: string[] = [];
    const dropped: string[] = [];
    for (const address of entry.envelope.to) {
      const m = parseMailbox(address);
      (m.ok && judgeRecipient(policy, entry.agent, m.value) ? allowed : dropped).push(address);
    }
    if (allowed.length === 0) return { ok: false, status: 409, error: `no recipient is allowed by the current policy (${dropped.join(', ')})` };
    const result = await this.outbound.submit(
      { id: entry.id, agent: entry.agent, from: entry.envelope.from, to: allowed, raw: entry.raw },
      { kind: 'message', channel: entry.channel, ref: entry.id, agent: entry.agent, released_by: actor, envelope: { from: entry.envelope.from, to: allowed }, recipients: { kept: allowed, stripped: dropped }, policy_version: policy.version },
    );
    if (result.status === 'failed') return { ok: false, status: 502, error: `upstream: ${result.response}` };
    return { ok: true, status: result.status, delivered_to: allowed, dropped, delivery_audit_id: result.record.id };
  }

  delete(id: string, actor: string): boolean {
    const record = this.store.unquarantine(id, { kind: 'admin', action: 'quarantine_deleted', ref: id, actor });
    if (record) this.log('info', 'quarantine_deleted', { id, actor });
    return record !== undefined;
  }

  /** Drop what has been held longer than the policy's duration (`quarantine_duration`). */
  expire(now = new Date()): number {
    let n = 0;
    for (const id of this.store.expiredQuarantine(now)) {
      if (this.store.unquarantine(id, { kind: 'admin', action: 'quarantine_expired', ref: id, actor: 'postguard' })) n++;
    }
    if (n > 0) this.log('info', 'quarantine_expired', { messages: n });
    return n;
  }
}
