// Everything the relay keeps, behind one object: the audit log, the capture-mode outbox and the
// quarantine. Storing a message and auditing it happen in one fsync'd transaction, so an
// acknowledged message always has both or neither.

import type { RecipientField } from '../core/intent.js';
import { AuditLog, type AuditInput, type AuditRecord } from './audit.js';
import { durableTransaction, GroupCommit, openDb, transaction, type Db } from './db.js';

export interface StoredEnvelope {
  from: string;
  to: string[];
}

export interface QueuedMessage {
  id: string;
  created: number;
  agent: string | null;
  from: string;
  to: string[];
  raw: Buffer;
  attempts?: number;
  lastError?: string | null;
}

export interface DraftRecipient {
  address: string;
  field: RecipientField;
}

export interface QuarantineEntry {
  id: string;
  time: string;
  expires: string;
  channel: string;
  agent: string | null;
  reason: string;
  rule: string;
  envelope: StoredEnvelope;
  size: number;
}

export class Store {
  readonly audit: AuditLog;
  private readonly commits: GroupCommit;

  constructor(readonly db: Db, readonly dataDir: string) {
    this.audit = new AuditLog(db, dataDir);
    this.commits = new GroupCommit(db);
  }

  static open(dataDir: string): Store {
    return new Store(openDb(dataDir), dataDir);
  }

  record(input: AuditInput): AuditRecord {
    return this.audit.append(input);
  }

  /** Where a failed background write is reported (the relay sets its logger). */
  set onBackgroundError(f: (e: Error) => void) {
    this.audit.onBackgroundError = f;
  }

  /** See AuditLog.appendSoon: for records written after the fact. Returns the record's id. */
  recordSoon(input: AuditInput): string {
    return this.audit.appendSoon(input);
  }

  /** Capture mode (no upstream): keep the message for the admin page, like Mailpit. */
  capture(input: AuditInput & { id: string }, envelope: StoredEnvelope, raw: Buffer): Promise<AuditRecord> {
    return this.commits.run(() => {
      this.db.prepare('INSERT INTO outbox (id, time, mail_from, rcpt_to, raw) VALUES (?, ?, ?, ?, ?)').run(input.id, new Date().toISOString(), envelope.from, JSON.stringify(envelope.to), raw);
      return this.audit.append(input);
    });
  }

  quarantine(input: AuditInput & { id: string }, q: { channel: string; agent: string | null; reason: string; rule: string; envelope: StoredEnvelope; holdMs: number }, raw: Buffer): Promise<AuditRecord> {
    return this.commits.run(() => {
      const now = Date.now();
      this.db
        .prepare('INSERT INTO quarantine (id, time, expires, channel, agent, reason, rule, envelope, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)')
        .run(input.id, new Date(now).toISOString(), new Date(now + q.holdMs).toISOString(), q.channel, q.agent, q.reason, q.rule, JSON.stringify(q.envelope), raw);
      return this.audit.append(input);
    });
  }

  /** Queue mode: store the message and its audit record durably (fsync'd) before the 250. */
  enqueue(input: AuditInput & { id: string }, msg: QueuedMessage): Promise<AuditRecord> {
    return this.commits.run(() => {
      this.insertQueued(msg);
      return this.audit.append(input);
    });
  }

  insertQueued(msg: QueuedMessage): void {
    this.db
      .prepare('INSERT INTO queue (id, created, agent, mail_from, rcpt_to, raw, attempts, next_attempt, last_error) VALUES (?, ?, ?, ?, ?, ?, 0, ?, NULL)')
      .run(msg.id, msg.created, msg.agent, msg.from, JSON.stringify(msg.to), msg.raw, msg.created);
  }

  /** Ids of messages due for an attempt, oldest due first, skipping the ones being attempted. */
  dueQueued(now: number, limit: number, skip: ReadonlySet<string>): string[] {
    const rows = this.db.prepare('SELECT id FROM queue WHERE next_attempt <= ? ORDER BY next_attempt LIMIT ?').all(now, limit + skip.size) as { id: string }[];
    return rows.map((r) => r.id).filter((id) => !skip.has(id)).slice(0, limit);
  }

  queued(id: string): QueuedMessage | undefined {
    const r = this.db.prepare('SELECT id, created, agent, mail_from, rcpt_to, raw, attempts, last_error FROM queue WHERE id = ?').get(id) as {
      id: string; created: number; agent: string | null; mail_from: string; rcpt_to: string; raw: Uint8Array; attempts: number; last_error: string | null;
    } | undefined;
    return r && { id: r.id, created: r.created, agent: r.agent, from: r.mail_from, to: JSON.parse(r.rcpt_to) as string[], raw: Buffer.from(r.raw), attempts: r.attempts, lastError: r.last_error };
  }

  /** When the next message becomes due, counting only the ones not due yet. */
  nextQueuedAfter(now: number): number | null {
    const row = this.db.prepare('SELECT MIN(next_attempt) AS t FROM queue WHERE next_attempt > ?').get(now) as { t: number | null };
    return row.t;
  }

  queueStats(): { messages: number; oldest: number | null } {
    const row = this.db.prepare('SELECT COUNT(*) AS n, MIN(created) AS oldest FROM queue').get() as { n: number; oldest: number | null };
    return { messages: row.n, oldest: row.oldest };
  }

  /** After a partial delivery: keep only the recipients still to try, and audit what happened. */
  narrowQueued(id: string, to: string[], attempts: number, nextAttempt: number, error: string, input: AuditInput): AuditRecord {
    return transaction(this.db, () => {
      this.db.prepare('UPDATE queue SET rcpt_to = ?, attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?').run(JSON.stringify(to), attempts, nextAttempt, error, id);
      return this.audit.append(input);
    });
  }

  retryQueued(id: string, attempts: number, nextAttempt: number, error: string): void {
    this.db.prepare('UPDATE queue SET attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?').run(attempts, nextAttempt, error, id);
  }

  /**
   * Remove a finished message and audit its outcome in one transaction. Not fsync'd: it survives a
   * killed process, and an OS crash could at worst bring the row back, i.e. a redelivery — which
   * the queue already allows for the messages in flight.
   */
  finishQueued(id: string, input: AuditInput): AuditRecord {
    return transaction(this.db, () => {
      this.db.prepare('DELETE FROM queue WHERE id = ?').run(id);
      return this.audit.append(input);
    });
  }

  outbox(limit = 50): { id: string; time: string; envelope: StoredEnvelope; size: number }[] {
    const rows = this.db.prepare('SELECT id, time, mail_from, rcpt_to, length(raw) AS size FROM outbox ORDER BY time DESC LIMIT ?').all(limit) as { id: string; time: string; mail_from: string; rcpt_to: string; size: number }[];
    return rows.map((r) => ({ id: r.id, time: r.time, envelope: { from: r.mail_from, to: JSON.parse(r.rcpt_to) as string[] }, size: r.size }));
  }

  outboxRaw(id: string): Buffer | undefined {
    const row = this.db.prepare('SELECT raw FROM outbox WHERE id = ?').get(id) as { raw: Uint8Array } | undefined;
    return row ? Buffer.from(row.raw) : undefined;
  }

  quarantineEntry(id: string): (QuarantineEntry & { raw: Buffer }) | undefined {
    const row = this.db.prepare('SELECT id, time, expires, channel, agent, reason, rule, envelope, raw, length(raw) AS size FROM quarantine WHERE id = ?').get(id) as (Omit<QuarantineEntry, 'envelope'> & { envelope: string; raw: Uint8Array }) | undefined;
    return row ? { ...row, envelope: JSON.parse(row.envelope) as StoredEnvelope, raw: Buffer.from(row.raw) } : undefined;
  }

  /** Remove a held message and audit why (released, deleted, expired) in one transaction. */
  unquarantine(id: string, input: AuditInput): AuditRecord | undefined {
    return durableTransaction(this.db, () => {
      const gone = this.db.prepare('DELETE FROM quarantine WHERE id = ?').run(id);
      return gone.changes === 0 ? undefined : this.audit.append(input);
    });
  }

  expiredQuarantine(now: Date): string[] {
    return (this.db.prepare("SELECT id FROM quarantine WHERE expires <= ? AND state = 'held'").all(now.toISOString()) as { id: string }[]).map((r) => r.id);
  }

  /**
   * Claim a held message for release, so two releases (API and CLI, or two clicks) cannot both
   * deliver it. False if it is gone or already being released.
   */
  claimQuarantined(id: string): boolean {
    return this.db.prepare("UPDATE quarantine SET state = 'releasing' WHERE id = ? AND state = 'held'").run(id).changes === 1;
  }

  /** Put a claimed message back (its delivery failed). */
  unclaimQuarantined(id: string): void {
    this.db.prepare("UPDATE quarantine SET state = 'held' WHERE id = ?").run(id);
  }

  quarantineCount(): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM quarantine').get() as { n: number }).n;
  }

  quarantined(limit = 50): QuarantineEntry[] {
    const rows = this.db.prepare('SELECT id, time, expires, channel, agent, reason, rule, envelope, length(raw) AS size FROM quarantine ORDER BY time DESC LIMIT ?').all(limit) as (Omit<QuarantineEntry, 'envelope'> & { envelope: string })[];
    return rows.map((r) => ({ ...r, envelope: JSON.parse(r.envelope) as StoredEnvelope }));
  }

  /** A draft the HTTP relay saw created or edited (and inspected), with the recipients it holds. */
  rememberDraft(provider: string, id: string, eventId: string, recipients: DraftRecipient[]): void {
    this.db.prepare('INSERT OR REPLACE INTO http_drafts (provider, id, time, event_id, recipients) VALUES (?, ?, ?, ?, ?)').run(provider, id, new Date().toISOString(), eventId, JSON.stringify(recipients));
  }

  /** The recipients of a draft made through the relay; undefined if the relay never saw it. */
  draftRecipients(provider: string, id: string): DraftRecipient[] | undefined {
    const row = this.db.prepare('SELECT recipients FROM http_drafts WHERE provider = ? AND id = ?').get(provider, id) as { recipients: string } | undefined;
    return row ? (JSON.parse(row.recipients) as DraftRecipient[]) : undefined;
  }

  close(): void {
    this.audit.flush();
    this.db.close();
  }
}
