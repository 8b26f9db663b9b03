// Everything the relay keeps, behind one object: the audit log, the capture-mode outbox and the
// quarantine. Storing a message and auditing it happen in one fsync'd transaction, so an
// acknowledged message always has both or neither.

import { AuditLog, type AuditInput, type AuditRecord } from './audit.js';
import { durableTransaction, openDb, type Db } from './db.js';

export interface StoredEnvelope {
  from: string;
  to: string[];
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

  constructor(readonly db: Db, readonly dataDir: string) {
    this.audit = new AuditLog(db, dataDir);
  }

  static open(dataDir: string): Store {
    return new Store(openDb(dataDir), dataDir);
  }

  record(input: AuditInput): AuditRecord {
    return this.audit.append(input);
  }

  /** Capture mode (no upstream): keep the message for the admin page, like Mailpit. */
  capture(input: AuditInput & { id: string }, envelope: StoredEnvelope, raw: Buffer): AuditRecord {
    return durableTransaction(this.db, () => {
      this.db.prepare('INSERT INTO outbox (id, time, mail_from, rcpt_to, raw) VALUES (?, ?, ?, ?, ?)').run(input.id, new Date().toISOString(), envelope.from, JSON.stringify(envelope.to), raw);
      return this.audit.append(input);
    });
  }

  quarantine(input: AuditInput & { id: string }, q: { channel: string; agent: string | null; reason: string; rule: string; envelope: StoredEnvelope; holdMs: number }, raw: Buffer): AuditRecord {
    return durableTransaction(this.db, () => {
      const now = Date.now();
      this.db
        .prepare('INSERT INTO quarantine (id, time, expires, channel, agent, reason, rule, envelope, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)')
        .run(input.id, new Date(now).toISOString(), new Date(now + q.holdMs).toISOString(), q.channel, q.agent, q.reason, q.rule, JSON.stringify(q.envelope), raw);
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

  quarantined(limit = 50): QuarantineEntry[] {
    const rows = this.db.prepare('SELECT id, time, expires, channel, agent, reason, rule, envelope, length(raw) AS size FROM quarantine ORDER BY time DESC LIMIT ?').all(limit) as (Omit<QuarantineEntry, 'envelope'> & { envelope: string })[];
    return rows.map((r) => ({ ...r, envelope: JSON.parse(r.envelope) as StoredEnvelope }));
  }

  close(): void {
    this.audit.flush();
    this.db.close();
  }
}
