// The tamper-evident audit log: one record per decision, hash-chained. Each row stores the exact
// JSON text it was hashed over, hash = sha256(prev_hash + "\n" + record), and the record carries
// its own seq, so an edit, a deletion or a reordering breaks the chain. The chain alone cannot
// show a truncated tail, so the newest (seq, hash) is also written to `audit.head` beside the
// database; `postguard audit verify` checks both. The head is written at most every 100 ms (and on
// close): a file write per message was a tenth of the relay's CPU per message.

import { createHash, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { transaction, type Db } from './db.js';

export type AuditKind = 'message' | 'http' | 'monitor' | 'admin' | 'policy' | 'system';

/** A record before its outcome is known. */
export interface AuditBase {
  /** Pre-allocated when the id must be known before the record is written (the X-Postguard header). */
  id?: string;
  kind: AuditKind;
  [field: string]: unknown;
}

export interface AuditInput extends AuditBase {
  action: string;
}

export interface AuditRecord extends AuditInput {
  id: string;
  seq: number;
  time: string;
}

const GENESIS = '0'.repeat(64);

export function newEventId(): string {
  return randomUUID();
}

export class AuditLog {
  private readonly headFile: string;
  private readonly insert;
  private readonly last;
  private headTimer: NodeJS.Timeout | null = null;

  constructor(private readonly db: Db, dataDir: string) {
    this.headFile = join(dataDir, 'audit.head');
    this.insert = db.prepare('INSERT INTO audit (seq, id, time, kind, action, record, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
    this.last = db.prepare('SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1');
  }

  /** Append one record (in the caller's transaction, if any). Returns it as stored. */
  append(input: AuditInput): AuditRecord {
    // Other processes append too (`postguard quarantine release`): reading the tail and inserting
    // must happen under the write lock, or two writers could both claim the next seq.
    if (!this.db.isTransaction) return transaction(this.db, () => this.append(input));
    // Read the tail each time (an indexed lookup) so CLI commands in other processes can append too;
    // two writers racing for one seq collide on the primary key instead of forking the chain.
    const last = this.last.get() as { seq: number; hash: string } | undefined;
    const prev = last?.hash ?? GENESIS;
    const seq = (last?.seq ?? 0) + 1;
    const record: AuditRecord = { ...input, id: input.id ?? newEventId(), seq, time: new Date().toISOString() };
    const text = JSON.stringify(record);
    const hash = chainHash(prev, text);
    this.insert.run(seq, record.id, record.time, record.kind, record.action, text, prev, hash);
    this.onAppend(record);
    this.headTimer ??= setTimeout(() => {
      try {
        this.flush();
      } catch {
        // The next append schedules another attempt; verify reports a lagging head as fine.
        this.headTimer = null;
      }
    }, 100).unref();
    return record;
  }

  /** Told of every record written (metrics). */
  onAppend: (r: AuditRecord) => void = () => {};
  /** Where a failed background write is reported. */
  onBackgroundError: (e: Error) => void = () => {};
  private pending: (AuditInput & { id: string })[] = [];
  private pendingTimer: NodeJS.Timeout | null = null;

  /**
   * Append within a few milliseconds, in one transaction with the others written meanwhile: for
   * records written after the fact (an HTTP request already answered), where a transaction per
   * record would be a large share of the relay's cost per request. Up to 5 ms or 256 records: under
   * load an event-loop turn holds one request, so a per-turn flush would still commit per record.
   * Reads (`get`, `list`, `flush`) see pending records. Returns the record's id.
   */
  appendSoon(input: AuditInput): string {
    const id = input.id ?? newEventId();
    const n = this.pending.push({ ...input, id });
    if (n === 1) this.pendingTimer = setTimeout(() => this.writePending(), 5);
    else if (n >= 256) this.writePending();
    return id;
  }

  private writePending(): void {
    if (this.pendingTimer) clearTimeout(this.pendingTimer);
    this.pendingTimer = null;
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    try {
      transaction(this.db, () => {
        for (const input of batch) this.append(input);
      });
    } catch (e) {
      this.onBackgroundError(e as Error);
    }
  }

  get(id: string): AuditRecord | undefined {
    this.writePending();
    const row = this.db.prepare('SELECT record FROM audit WHERE id = ?').get(id) as { record: string } | undefined;
    return row ? (JSON.parse(row.record) as AuditRecord) : undefined;
  }

  /** Newest first. `before` pages by seq. */
  list(opts: { limit?: number; before?: number; kind?: string; action?: string } = {}): AuditRecord[] {
    this.writePending();
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (opts.before) (where.push('seq < ?'), args.push(opts.before));
    if (opts.kind) (where.push('kind = ?'), args.push(opts.kind));
    if (opts.action) (where.push('action = ?'), args.push(opts.action));
    const sql = `SELECT record FROM audit ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT ?`;
    args.push(Math.min(Math.max(opts.limit ?? 50, 1), 1000));
    return (this.db.prepare(sql).all(...args) as { record: string }[]).map((r) => JSON.parse(r.record) as AuditRecord);
  }

  /** Write the newest committed (seq, hash) to audit.head now. Read back, so a rolled-back append never lands there. */
  flush(): void {
    this.writePending();
    if (this.headTimer) clearTimeout(this.headTimer);
    this.headTimer = null;
    const last = this.last.get() as { seq: number; hash: string } | undefined;
    if (!last) return;
    const tmp = `${this.headFile}.tmp`;
    writeFileSync(tmp, `${last.seq} ${last.hash}\n`, { mode: 0o600 });
    renameSync(tmp, this.headFile);
  }
}

function chainHash(prev: string, text: string): string {
  return createHash('sha256').update(prev).update('\n').update(text).digest('hex');
}

export interface VerifyResult {
  ok: boolean;
  records: number;
  problems: string[];
}

/** Walk the whole chain. Reports the first problems found (at most 20). */
export function verifyAudit(db: Db, dataDir: string): VerifyResult {
  const problems: string[] = [];
  const headFile = join(dataDir, 'audit.head');
  // The head may lag the chain (written every 100 ms; a killed relay leaves it behind): that is
  // fine. A head that names a record the chain no longer has, or a different hash, is tampering.
  const headText = existsSync(headFile) ? readFileSync(headFile, 'utf8').trim() : null;
  const head = headText !== null && /^\d+ [0-9a-f]{64}$/.test(headText) ? headText.split(' ') : null;
  if (headText !== null && !head) problems.push('head: audit.head is not `<seq> <sha256>` (edited)');
  const headSeq = head ? Number(head[0]) : 0;
  let prev = GENESIS;
  let expected = 1;
  let count = 0;
  const rows = db.prepare('SELECT seq, id, time, kind, action, record, prev_hash, hash FROM audit ORDER BY seq').iterate() as Iterable<{ seq: number; id: string; time: string; kind: string; action: string; record: string; prev_hash: string; hash: string }>;
  for (const row of rows) {
    count++;
    if (problems.length >= 20) break;
    if (row.seq !== expected) problems.push(`seq ${row.seq}: expected seq ${expected} (a record was deleted or renumbered)`);
    let parsed: Partial<AuditRecord> = {};
    try {
      parsed = JSON.parse(row.record) as AuditRecord;
    } catch {
      problems.push(`seq ${row.seq}: record is not valid JSON`);
    }
    // The indexed columns are copies for queries; a copy that disagrees with the hashed record is an edit.
    if (parsed.seq !== row.seq || parsed.id !== row.id) problems.push(`seq ${row.seq}: record's own seq/id do not match its row (moved or edited)`);
    else if (parsed.time !== row.time || parsed.kind !== row.kind || parsed.action !== row.action) problems.push(`seq ${row.seq}: time/kind/action columns differ from the hashed record (edited)`);
    if (row.prev_hash !== prev) problems.push(`seq ${row.seq}: previous-hash link broken (a record before it was deleted, edited or reordered)`);
    if (chainHash(row.prev_hash, row.record) !== row.hash) problems.push(`seq ${row.seq}: hash does not match the record (edited)`);
    if (row.seq === headSeq && head && row.hash !== head[1]) problems.push(`seq ${row.seq}: differs from the hash audit.head recorded for it (rewritten)`);
    prev = row.hash;
    expected = row.seq + 1;
  }
  if (headSeq > expected - 1) problems.push(`head: audit.head names seq ${headSeq} but the chain ends at seq ${expected - 1} (records removed from the end)`);
  if (headText === null && count > 0) problems.push('head: audit.head is missing');
  return { ok: problems.length === 0, records: count, problems };
}
