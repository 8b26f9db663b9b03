// SQLite through node:sqlite (no native addon), in WAL mode. Two durability levels:
// - durableTransaction (synchronous=FULL): the commit is fsync'd before it returns. Used whenever
//   the relay is about to answer 250 for a message it keeps (capture, quarantine, queue).
// - everything else (synchronous=NORMAL): committed to the WAL, which survives the process being
//   killed; an OS crash may lose the newest records until the next fsync'd commit or checkpoint.
//   An audit record of a message the upstream already accepted is in that class: fsyncing each
//   one cost ~0.5 ms of blocked event loop per message under load (bench/smtp.mjs).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  time TEXT NOT NULL,
  kind TEXT NOT NULL,
  action TEXT NOT NULL,
  record TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit(time);
CREATE TABLE IF NOT EXISTS outbox (
  id TEXT PRIMARY KEY,
  time TEXT NOT NULL,
  mail_from TEXT,
  rcpt_to TEXT NOT NULL,
  raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
  id TEXT PRIMARY KEY,
  created INTEGER NOT NULL,
  agent TEXT,
  mail_from TEXT NOT NULL,
  rcpt_to TEXT NOT NULL,
  raw BLOB NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt INTEGER NOT NULL,
  last_error TEXT
);
CREATE INDEX IF NOT EXISTS queue_due ON queue(next_attempt);
CREATE TABLE IF NOT EXISTS alerts (
  id TEXT PRIMARY KEY,
  time TEXT NOT NULL,
  kind TEXT NOT NULL,
  severity TEXT NOT NULL,
  agent TEXT,
  event_id TEXT,
  record TEXT NOT NULL,
  webhook TEXT NOT NULL DEFAULT 'none',
  webhook_attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts(time);
CREATE TABLE IF NOT EXISTS quarantine (
  id TEXT PRIMARY KEY,
  time TEXT NOT NULL,
  expires TEXT NOT NULL,
  channel TEXT NOT NULL,
  agent TEXT,
  reason TEXT NOT NULL,
  rule TEXT NOT NULL,
  envelope TEXT NOT NULL,
  raw BLOB NOT NULL,
  state TEXT NOT NULL DEFAULT 'held'
);
-- Drafts created through the HTTP relay (Gmail, Graph): sending one by id is allowed only if its
-- content was inspected on the way in; its recipients (JSON [{address, field}]) are judged again then.
CREATE TABLE IF NOT EXISTS http_drafts (
  provider TEXT NOT NULL,
  id TEXT NOT NULL,
  time TEXT NOT NULL,
  event_id TEXT NOT NULL,
  recipients TEXT NOT NULL DEFAULT '[]',
  PRIMARY KEY (provider, id)
);
`;

export type Db = DatabaseSync;

export function openDb(dataDir: string): Db {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const db = new DatabaseSync(join(dataDir, 'postguard.db'));
  db.exec('PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;');
  db.exec(SCHEMA);
  // Data dirs from before the quarantine had a release claim.
  const columns = db.prepare("SELECT name FROM pragma_table_info('quarantine')").all() as { name: string }[];
  if (!columns.some((c) => c.name === 'state')) db.exec("ALTER TABLE quarantine ADD COLUMN state TEXT NOT NULL DEFAULT 'held'");
  return db;
}

/**
 * Durable commits from many sessions share one fsync: work handed in during one turn of the event
 * loop commits in one transaction, each piece in its own savepoint (a throw undoes only that
 * piece), and every caller's promise settles after the single fsync'd COMMIT.
 */
export class GroupCommit {
  private pending: { fn: () => unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
  private scheduled = false;

  constructor(private readonly db: Db) {}

  run<T>(fn: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending.splice(0);
    const outcomes: ({ ok: true; value: unknown } | { ok: false; error: unknown })[] = [];
    try {
      durableTransaction(this.db, () => {
        for (const item of batch) {
          this.db.exec('SAVEPOINT item');
          try {
            outcomes.push({ ok: true, value: item.fn() });
            this.db.exec('RELEASE item');
          } catch (error) {
            this.db.exec('ROLLBACK TO item');
            this.db.exec('RELEASE item');
            outcomes.push({ ok: false, error });
          }
        }
      });
    } catch (error) {
      for (const item of batch) item.reject(error);
      return;
    }
    batch.forEach((item, i) => {
      const o = outcomes[i]!;
      if (o.ok) item.resolve(o.value);
      else item.reject(o.error);
    });
  }
}

/** Run fn in one transaction (committed to the WAL, not fsync'd); a throw rolls back. */
export function transaction<T>(db: Db, fn: () => T): T {
  db.exec('BEGIN IMMEDIATE');
  try {
    const out = fn();
    db.exec('COMMIT');
    return out;
  } catch (e) {
    db.exec('ROLLBACK');
    throw e;
  }
}

/** Run fn in one transaction whose commit is fsync'd before this returns; a throw rolls back. */
export function durableTransaction<T>(db: Db, fn: () => T): T {
  db.exec('PRAGMA synchronous=FULL');
  try {
    return transaction(db, fn);
  } finally {
    db.exec('PRAGMA synchronous=NORMAL');
  }
}
