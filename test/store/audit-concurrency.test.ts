// Two processes appending to one audit log (the relay and `postguard quarantine …`) keep one chain.

import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AuditLog, verifyAudit } from '../../src/store/audit.js';
import { openDb } from '../../src/store/db.js';

describe('audit log with two writers', () => {
  it('interleaved appends from another process never fork or break the chain', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pg-audit2-'));
    const db = openDb(dir);
    const log = new AuditLog(db, dir);
    log.append({ kind: 'system', action: 'start' });
    // The other writer: the built modules, in a child process, appending as fast as it can.
    const script = `
      import { AuditLog } from './dist/store/audit.js';
      import { openDb } from './dist/store/db.js';
      const db = openDb(${JSON.stringify(dir)});
      const log = new AuditLog(db, ${JSON.stringify(dir)});
      for (let i = 0; i < 300; i++) log.append({ kind: 'admin', action: 'other', i });
      log.flush();
      db.close();`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const done = new Promise<number | null>((resolve) => child.on('exit', resolve));
    let mine = 0;
    const until = Date.now() + 10_000;
    let exited = false;
    void done.then(() => (exited = true));
    while (!exited && Date.now() < until) {
      for (let i = 0; i < 20; i++, mine++) log.append({ kind: 'message', action: 'mine', i: mine });
      await new Promise((r) => setImmediate(r));
    }
    expect(await done, err).toBe(0);
    log.flush();
    const result = verifyAudit(db, dir);
    expect(result.problems).toEqual([]);
    expect(result.records).toBe(1 + 300 + mine);
    db.close();
  });
});
