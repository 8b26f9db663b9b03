// The audit log is hash-chained: any edit, deletion or reordering of stored rows, and any cut at
// the tail, must make verifyAudit fail and say where. Tampering goes straight at the SQLite file
// (node:sqlite), as an attacker with file access would.

import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { AuditLog, verifyAudit, type AuditRecord } from '../../src/store/audit.js';
import { durableTransaction, openDb } from '../../src/store/db.js';

const root = mkdtempSync(join(tmpdir(), 'postguard-audit-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

interface Row {
  seq: number;
  id: string;
  record: string;
  prev_hash: string;
  hash: string;
}

const chainHash = (prev: string, text: string): string => createHash('sha256').update(prev).update('\n').update(text).digest('hex');

/** A fresh data dir holding `count` audit records; the database is closed again. */
function freshLog(count = 5): { dir: string; records: AuditRecord[] } {
  const dir = join(root, `data-${n++}`);
  const db = openDb(dir);
  const log = new AuditLog(db, dir);
  const records: AuditRecord[] = [];
  for (let i = 1; i <= count; i++) {
    records.push(log.append({ kind: 'message', action: i % 2 ? 'deliver' : 'block', rule: 'recipients', recipients: [`r${i}@example.com`] }));
  }
  // The head is written lazily (at most every 100 ms) and on flush/close, as the relay does on shutdown.
  log.flush();
  db.close();
  return { dir, records };
}

function verify(dir: string) {
  const db = openDb(dir);
  try {
    return verifyAudit(db, dir);
  } finally {
    db.close();
  }
}

/** Tamper with the database file directly. */
function tamper(dir: string, fn: (db: DatabaseSync) => void): void {
  const db = new DatabaseSync(join(dir, 'postguard.db'));
  try {
    fn(db);
  } finally {
    db.close();
  }
}

const row = (db: DatabaseSync, seq: number): Row => db.prepare('SELECT seq, id, record, prev_hash, hash FROM audit WHERE seq = ?').get(seq) as unknown as Row;

describe('AuditLog', () => {
  it('appends 5 records with seq 1..5, and the chain verifies', () => {
    const { dir, records } = freshLog(5);
    expect(records.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(new Set(records.map((r) => r.id)).size).toBe(5);
    for (const r of records) expect(Number.isNaN(Date.parse(r.time))).toBe(false);
    expect(verify(dir)).toEqual({ ok: true, records: 5, problems: [] });
  });

  it('stores the exact JSON it hashed, chained from a zero genesis hash', () => {
    const { dir, records } = freshLog(3);
    tamper(dir, (db) => {
      let prev = '0'.repeat(64);
      for (const r of records) {
        const stored = row(db, r.seq);
        expect(JSON.parse(stored.record)).toEqual(r);
        expect(stored.id).toBe(r.id);
        expect(stored.prev_hash).toBe(prev);
        expect(stored.hash).toBe(chainHash(prev, stored.record));
        prev = stored.hash;
      }
    });
  });

  it('audit.head names the newest seq and hash, mode 0600', () => {
    const { dir } = freshLog(5);
    const head = join(dir, 'audit.head');
    let last!: Row;
    tamper(dir, (db) => (last = row(db, 5)));
    expect(readFileSync(head, 'utf8')).toBe(`5 ${last.hash}\n`);
    expect(statSync(head).mode & 0o777).toBe(0o600);
  });

  it('get() and list() read back what was appended, newest first', () => {
    const dir = join(root, `data-${n++}`);
    const db = openDb(dir);
    try {
      const log = new AuditLog(db, dir);
      const a = log.append({ kind: 'message', action: 'deliver' });
      const b = log.append({ kind: 'admin', action: 'release', id: 'pre-allocated-id' });
      const c = log.append({ kind: 'message', action: 'block', rule: 'agents' });
      log.flush();
      expect(b.id).toBe('pre-allocated-id');
      expect(log.get(a.id)).toEqual(a);
      expect(log.get('nope')).toBeUndefined();
      expect(log.list().map((r) => r.seq)).toEqual([3, 2, 1]);
      expect(log.list({ kind: 'message' }).map((r) => r.id)).toEqual([c.id, a.id]);
      expect(log.list({ action: 'block' })).toEqual([c]);
      expect(log.list({ before: 3, limit: 1 })).toEqual([b]);
      expect(verifyAudit(db, dir)).toMatchObject({ ok: true, records: 3 });
    } finally {
      db.close();
    }
  });

  it('a rolled-back transaction leaves no audit row and the chain stays intact', () => {
    const dir = join(root, `data-${n++}`);
    const db = openDb(dir);
    try {
      const log = new AuditLog(db, dir);
      log.append({ kind: 'message', action: 'deliver' });
      expect(() =>
        durableTransaction(db, () => {
          log.append({ kind: 'message', action: 'deliver' });
          throw new Error('boom');
        }),
      ).toThrow('boom');
      log.append({ kind: 'message', action: 'deliver' });
      log.flush();
      expect(log.list().map((r) => r.seq)).toEqual([2, 1]);
      expect(verifyAudit(db, dir)).toMatchObject({ ok: true, records: 2 });
    } finally {
      db.close();
    }
  });

  it('an append rolled back with its transaction does not leave audit.head ahead of the chain', () => {
    const dir = join(root, `data-${n++}`);
    const db = openDb(dir);
    try {
      const log = new AuditLog(db, dir);
      log.append({ kind: 'message', action: 'deliver' });
      log.flush();
      expect(() =>
        durableTransaction(db, () => {
          log.append({ kind: 'message', action: 'quarantine' });
          throw new Error('disk full');
        }),
      ).toThrow('disk full');
      log.flush(); // e.g. the 100 ms timer, or shutdown
      // Nobody tampered: the log must not report tampering.
      expect(verifyAudit(db, dir)).toEqual({ ok: true, records: 1, problems: [] });
    } finally {
      db.close();
    }
  });

  it('an empty log verifies', () => {
    const dir = join(root, `data-${n++}`);
    openDb(dir).close();
    expect(verify(dir)).toEqual({ ok: true, records: 0, problems: [] });
  });
});

interface Tamper {
  name: string;
  /** Edits the database and/or the data dir. */
  apply: (dir: string) => void;
  /** Some problem must match each of these. */
  problems: RegExp[];
}

const tampers: Tamper[] = [
  {
    name: 'edit a record’s JSON',
    apply: (dir) =>
      tamper(dir, (db) => {
        const r = row(db, 3);
        const edited = r.record.replace('"block"', '"deliver"').replace('r3@example.com', 'phan@giftshop.club');
        expect(edited).not.toBe(r.record);
        db.prepare('UPDATE audit SET record = ? WHERE seq = 3').run(edited);
      }),
    problems: [/^seq 3: .*hash does not match/],
  },
  {
    name: 'edit a record and recompute its own hash → the next link breaks',
    apply: (dir) =>
      tamper(dir, (db) => {
        const r = row(db, 3);
        const edited = r.record.replace('r3@example.com', 'phan@giftshop.club');
        db.prepare('UPDATE audit SET record = ?, hash = ? WHERE seq = 3').run(edited, chainHash(r.prev_hash, edited));
      }),
    problems: [/^seq 4: .*previous-hash link broken/],
  },
  {
    name: 'edit a record and recompute the whole rest of the chain → audit.head no longer matches',
    apply: (dir) =>
      tamper(dir, (db) => {
        let prev = row(db, 2).hash;
        for (let seq = 3; seq <= 5; seq++) {
          const r = row(db, seq);
          const text = seq === 3 ? r.record.replace('r3@example.com', 'phan@giftshop.club') : r.record;
          const hash = chainHash(prev, text);
          db.prepare('UPDATE audit SET record = ?, prev_hash = ?, hash = ? WHERE seq = ?').run(text, prev, hash, seq);
          prev = hash;
        }
      }),
    problems: [/seq 5.*audit\.head|audit\.head.*seq 5/],
  },
  {
    name: 'edit a row’s id column',
    apply: (dir) => tamper(dir, (db) => db.prepare("UPDATE audit SET id = 'forged-id' WHERE seq = 2").run()),
    problems: [/^seq 2: .*seq\/id do not match/],
  },
  {
    // list({action}) and list({kind}) filter on these columns, so a forged column hides a record
    // from "show me the blocks" while its (hashed) JSON still says block.
    name: 'edit a row’s action column (what list({action}) filters on)',
    apply: (dir) => tamper(dir, (db) => db.prepare("UPDATE audit SET action = 'deliver' WHERE seq = 2").run()),
    problems: [/^seq 2: /],
  },
  {
    name: 'delete a middle row',
    apply: (dir) => tamper(dir, (db) => db.prepare('DELETE FROM audit WHERE seq = 3').run()),
    problems: [/^seq 4: expected seq 3/, /^seq 4: .*previous-hash link broken/],
  },
  {
    name: 'delete the first row',
    apply: (dir) => tamper(dir, (db) => db.prepare('DELETE FROM audit WHERE seq = 1').run()),
    problems: [/^seq 2: expected seq 1/],
  },
  {
    name: 'swap two rows’ seq',
    apply: (dir) =>
      tamper(dir, (db) => {
        db.exec('UPDATE audit SET seq = -2 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = -2;');
      }),
    problems: [/^seq 2: .*seq\/id do not match/, /^seq 4: .*seq\/id do not match/, /^seq 2: .*previous-hash link broken/],
  },
  {
    name: 'renumber a row’s seq in both the row and the record, rehashing it',
    apply: (dir) =>
      tamper(dir, (db) => {
        const r = row(db, 5);
        db.prepare('DELETE FROM audit WHERE seq = 4').run();
        const text = r.record.replace('"seq":5', '"seq":4');
        expect(text).not.toBe(r.record);
        db.prepare('UPDATE audit SET seq = 4, record = ?, hash = ? WHERE seq = 5').run(text, chainHash(r.prev_hash, text));
      }),
    problems: [/^seq 4: .*previous-hash link broken/],
  },
  {
    name: 'delete the last row (caught via audit.head)',
    apply: (dir) => tamper(dir, (db) => db.prepare('DELETE FROM audit WHERE seq = 5').run()),
    problems: [/^head: audit\.head names seq 5 but the chain ends at seq 4/],
  },
  {
    name: 'delete every row (caught via audit.head)',
    apply: (dir) => tamper(dir, (db) => db.prepare('DELETE FROM audit').run()),
    problems: [/^head: audit\.head names seq 5 but the chain ends at seq 0/],
  },
  {
    name: 'delete audit.head',
    apply: (dir) => unlinkSync(join(dir, 'audit.head')),
    problems: [/audit\.head is missing/],
  },
  {
    name: 'delete the last row and rewrite audit.head with a bad hash',
    apply: (dir) => {
      tamper(dir, (db) => db.prepare('DELETE FROM audit WHERE seq = 5').run());
      writeFileSync(join(dir, 'audit.head'), `4 ${'f'.repeat(64)}\n`);
    },
    problems: [/seq 4/],
  },
  {
    name: 'overwrite audit.head with garbage, then delete the last row',
    apply: (dir) => {
      tamper(dir, (db) => db.prepare('DELETE FROM audit WHERE seq = 5').run());
      writeFileSync(join(dir, 'audit.head'), 'garbage\n');
    },
    problems: [/audit\.head/],
  },
  {
    name: 'empty audit.head, then delete the last row',
    apply: (dir) => {
      tamper(dir, (db) => db.prepare('DELETE FROM audit WHERE seq = 5').run());
      writeFileSync(join(dir, 'audit.head'), '');
    },
    problems: [/audit\.head/],
  },
  {
    name: 'record text that is not JSON',
    apply: (dir) =>
      tamper(dir, (db) => {
        const r = row(db, 2);
        const text = '{"broken":';
        db.prepare('UPDATE audit SET record = ?, hash = ? WHERE seq = 2').run(text, chainHash(r.prev_hash, text));
      }),
    problems: [/^seq 2: record is not valid JSON/],
  },
];

describe('verifyAudit detects tampering', () => {
  for (const t of tampers) {
    it(t.name, () => {
      const { dir } = freshLog(5);
      expect(verify(dir).ok).toBe(true);
      t.apply(dir);
      const result = verify(dir);
      expect(result.ok, `not detected; problems: ${JSON.stringify(result.problems)}`).toBe(false);
      expect(result.problems.length).toBeGreaterThan(0);
      for (const want of t.problems) {
        expect(result.problems.some((p) => want.test(p)), `no problem matching ${want}; got:\n${result.problems.join('\n')}`).toBe(true);
      }
      // Every problem says where: a seq, or the head file.
      for (const p of result.problems) expect(p).toMatch(/^(seq \d+|head): /);
    });
  }

  it('problems are capped at 20', () => {
    const { dir } = freshLog(30);
    tamper(dir, (db) => db.exec(`UPDATE audit SET record = record || ' '`));
    const result = verify(dir);
    expect(result.ok).toBe(false);
    expect(result.problems.length).toBeLessThanOrEqual(21); // 20 chain problems + the head check
    expect(result.problems[0]).toMatch(/^seq 1: /);
  });

  it('a head that lags the chain (not yet flushed) is not tampering', () => {
    const { dir } = freshLog(5);
    let third!: Row;
    tamper(dir, (db) => (third = row(db, 3)));
    writeFileSync(join(dir, 'audit.head'), `3 ${third.hash}\n`);
    expect(verify(dir)).toEqual({ ok: true, records: 5, problems: [] });
  });

  it('the head is written by the 100 ms timer without an explicit flush', async () => {
    const dir = join(root, `data-${n++}`);
    const db = openDb(dir);
    try {
      const log = new AuditLog(db, dir);
      log.append({ kind: 'system', action: 'start' });
      log.append({ kind: 'system', action: 'tick' });
      await new Promise((r) => setTimeout(r, 300));
      expect(readFileSync(join(dir, 'audit.head'), 'utf8')).toMatch(/^2 [0-9a-f]{64}\n$/);
      expect(verifyAudit(db, dir)).toMatchObject({ ok: true, records: 2 });
    } finally {
      db.close();
    }
  });

  it('a verified-ok log is untouched by verifying it', () => {
    const { dir } = freshLog(2);
    expect(verify(dir).ok).toBe(true);
    expect(verify(dir).ok).toBe(true);
    expect(existsSync(join(dir, 'audit.head'))).toBe(true);
  });
});
