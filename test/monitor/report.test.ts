// Reports: the masked excerpt, the report's shape, and delivery to a real relay (alert + audit
// record), including a relay that is down first and comes up later.

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/log.js';
import { Classifier, type Finding } from '../../src/monitor/classify.js';
import { adminToken, bypassReport, maskedExcerpt, Reporter, secretsIn } from '../../src/monitor/report.js';
import { adminGet, ADMIN_TOKEN, alerts, companyPolicy, freePort, startTestRelay, waitFor, type TestRelay } from '../helpers/relay.js';
import { assemble, fixture } from './replay.js';

const quiet = createLogger(() => {});

describe('excerpt masking', () => {
  it('masks HTTP credentials, keeping the scheme readable', () => {
    const e = maskedExcerpt('POST /v3/mail/send HTTP/1.1\r\nHost: api.sendgrid.com\r\nAuthorization: Bearer SG.ngeVfQFYQlKU0ufo8x5d1A.TwL2iGABf9DHoT\r\nX-Postmark-Server-Token: 0f9b2c1e-7d4a-4b1e\r\n\r\n');
    expect(e).toContain('Authorization: Bearer …(40 chars)');
    expect(e).toContain('X-Postmark-Server-Token: …(18 chars)');
    expect(e).not.toContain('ngeVf');
    expect(e).not.toContain('0f9b');
  });

  it('masks SMTP AUTH and the lines that answer it, not the commands after them', () => {
    const e = maskedExcerpt('EHLO x\r\nAUTH LOGIN\r\nYWdlbnQ=\r\naHVudGVyMg==\r\nMAIL FROM:<agent@company.com>\r\nAUTH PLAIN AGFnZW50AGh1bnRlcjI=\r\n');
    expect(e).toBe('EHLO x\r\nAUTH LOGIN\r\n…(8 chars)\r\n…(12 chars)\r\nMAIL FROM:<agent@company.com>\r\nAUTH PLAIN …(20 chars)\r\n');
  });

  it('masks whatever the secret detectors find, also a secret that crosses the cut', () => {
    const key = 'AKIAIOSFODNN7EXAMPLE';
    const e = maskedExcerpt(`DATA\r\nkey ${key} card 4111 1111 1111 1111 exp 12/29 password=Tr0ub4dor&3xyz\r\n`);
    expect(e).toContain('[aws AKIA…(20 chars)]');
    expect(e).toContain('[card card …1111]');
    expect(e).toContain('password=[password …(14 chars)]');
    expect(e).not.toMatch(/IOSFODNN|4111 1111|Tr0ub/);
    const crossing = maskedExcerpt(`${'x'.repeat(189)} ${key}`);
    expect(crossing.length).toBeLessThanOrEqual(200);
    expect(crossing).not.toContain('IOSF');
  });

  it('is at most 200 characters, terminal-safe', () => {
    const e = maskedExcerpt(`\x1b[31mred\x9b${'a'.repeat(500)}`);
    expect(e.startsWith('\\x1b[31mred\\x9b')).toBe(true);
    expect(e.length).toBe(200);
  });

  it('secretsIn names what leaked, masked', () => {
    expect(secretsIn('Revenue is up. api_key=sk_live_4eC39HqLyjWDarjtT1zdp7dc')).toEqual([{ detector: 'stripe', masked: 'sk_l…(32 chars)' }]);
  });
});

async function postmarkFinding(): Promise<Finding> {
  const { writes } = assemble(fixture('node-postmark.ndjson').filter((e) => !('pid' in e) || e.pid === 4242));
  const c = new Classifier();
  const found: Finding[] = [];
  for (const w of writes) found.push(...(await c.write(w)));
  return found[0]!;
}

describe('the report', () => {
  it('has the fields SPEC §7 lists, no nulls, the plaintext only as a masked excerpt', async () => {
    const f = await postmarkFinding();
    const r = bypassReport(f, { exe: '/usr/bin/node', cgroup: '/sys/fs/cgroup/unified/agents', unknown: (m) => m.domain !== 'company.com' });
    expect(r).toMatchObject({
      kind: 'bypass', pid: 4242, comm: 'MainThread', exe: '/usr/bin/node', destination: '127.0.0.1:44301', sni: 'api.postmarkapp.com', host: 'api.postmarkapp.com',
      protocol: 'mail-api', provider: 'postmark', endpoint: 'email', action: 'alerted', recipients: ['alice@company.com', 'phan@giftshop.club'],
      unknown_recipients: ['phan@giftshop.club'], sender: 'agent@company.com', cgroup: '/sys/fs/cgroup/unified/agents',
    });
    expect(r.recipient_fields).toContainEqual({ address: 'phan@giftshop.club', field: 'bcc', source: 'Bcc' });
    expect(r.secrets).toEqual([{ detector: 'stripe', masked: 'sk_l…(32 chars)' }]);
    expect(Object.values(r)).not.toContain(null);
    expect(r.excerpt).toMatch(/^POST \/email HTTP\/1\.1\r\n/);
    expect((r.excerpt as string).length).toBeLessThanOrEqual(200);
    expect(r.excerpt).toContain('X-Postmark-Server-Token: …(36 chars)');
    expect(JSON.stringify(r)).not.toContain('0f9b2c1e');
    expect(JSON.stringify(r)).not.toContain('4eC39HqLy');
  });

  it('a huge recipient list is cut to fit the relay limit, and says how many there were', async () => {
    const f = await postmarkFinding();
    f.recipients = Array.from({ length: 1000 }, (_, i) => ({ address: `user${i}.${'x'.repeat(200)}@evil.example`, field: 'bcc' as const, source: 'Bcc', mailbox: null }));
    const r = bypassReport(f, { exe: null, cgroup: null });
    expect(JSON.stringify(r).length).toBeLessThanOrEqual(60_000);
    expect(r.recipients_total).toBe(1000);
  });

  it('the token comes from POSTGUARD_ADMIN_TOKEN, else from the data dir', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pg-mon-token-'));
    writeFileSync(join(dir, 'admin-token'), 'from-file\n');
    expect(adminToken({ POSTGUARD_ADMIN_TOKEN: 'from-env', POSTGUARD_DATA_DIR: dir })).toBe('from-env');
    expect(adminToken({ POSTGUARD_DATA_DIR: dir })).toBe('from-file');
    expect(adminToken({ POSTGUARD_DATA_DIR: join(dir, 'none') })).toBeNull();
  });
});

describe('delivery to the relay', () => {
  let r: TestRelay;
  beforeAll(async () => {
    r = await startTestRelay({ policy: companyPolicy() });
  });
  afterAll(async () => {
    await r?.close();
  });

  it('a bypass report becomes an alert and an audit record', async () => {
    const reporter = new Reporter({ url: `http://127.0.0.1:${r.adminPort}`, token: () => ADMIN_TOKEN, log: quiet });
    const report = bypassReport(await postmarkFinding(), { exe: '/usr/bin/node', cgroup: null });
    reporter.send(report);
    expect(await reporter.flush(5000)).toBe(true);
    const [alert] = await alerts(r, 'bypass');
    expect(alert).toMatchObject({ kind: 'bypass', severity: 'high', channel: 'monitor' });
    expect(alert.summary).toContain('mail-api from pid 4242');
    expect(alert.summary).toContain('phan@giftshop.club');
    expect(alert.details).toMatchObject({ pid: 4242, exe: '/usr/bin/node', destination: '127.0.0.1:44301', protocol: 'mail-api', provider: 'postmark', action: 'alerted' });
    const { body } = await adminGet(r, `/api/events/${alert.event_id}`);
    expect(body).toMatchObject({ kind: 'monitor', report_kind: 'bypass', action: 'alerted', pid: 4242, sni: 'api.postmarkapp.com', recipients: ['alice@company.com', 'phan@giftshop.club'] });
    expect(body.excerpt).toMatch(/^POST \/email/);
    reporter.close();
  });

  it('reports are batched and arrive quickly (median well under 100 ms)', async () => {
    const reporter = new Reporter({ url: `http://127.0.0.1:${r.adminPort}`, token: () => ADMIN_TOKEN, log: quiet });
    const f = await postmarkFinding();
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      reporter.send(bypassReport({ ...f, pid: 50_000 + i }, { exe: null, cgroup: null }));
      await reporter.flush(5000);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    expect(times[10]).toBeLessThan(100);
    expect(reporter.stats).toMatchObject({ sent: 20, dropped: 0, failures: 0 });
    reporter.close();
  });

  it('a report the relay refuses is dropped (and logged), the ones after it still go', async () => {
    const logs: string[] = [];
    const reporter = new Reporter({ url: `http://127.0.0.1:${r.adminPort}`, token: () => ADMIN_TOKEN, log: createLogger((l) => logs.push(l)) });
    reporter.send({ kind: 'bypass', pid: -1 });
    reporter.send({ kind: 'bypass', pid: 60_001, protocol: 'connect', destination: '127.0.0.1:25', action: 'alerted' });
    expect(await reporter.flush(5000)).toBe(true);
    expect(logs.join('')).toContain('monitor_report_refused');
    expect((await alerts(r, 'bypass')).some((a) => a.details.pid === 60_001)).toBe(true);
    reporter.close();
  });

  it('relay down, then up: the buffered reports arrive', async () => {
    const port = await freePort();
    const logs: string[] = [];
    const reporter = new Reporter({ url: `http://127.0.0.1:${port}`, token: () => ADMIN_TOKEN, log: createLogger((l) => logs.push(l)), baseDelayMs: 20, maxDelayMs: 100 });
    reporter.send({ kind: 'bypass', pid: 70_001, protocol: 'smtp-tls', destination: '127.0.0.1:4465', recipients: ['phan@giftshop.club'], action: 'alerted' });
    reporter.send({ kind: 'bypass', pid: 70_002, protocol: 'connect', destination: '127.0.0.1:587', action: 'alerted' });
    await waitFor(() => reporter.stats.failures >= 2, 5000, 'failed attempts');
    expect(reporter.queued).toBe(2);
    expect(logs.filter((l) => l.includes('monitor_relay_unreachable'))).toHaveLength(1); // once per outage
    const late = await startTestRelay({ policy: companyPolicy(), env: { POSTGUARD_ADMIN_LISTEN: `127.0.0.1:${port}` } });
    try {
      expect(await reporter.flush(10_000)).toBe(true);
      const pids = (await alerts(late, 'bypass')).map((a) => a.details.pid).sort();
      expect(pids).toEqual([70_001, 70_002]);
      expect(logs.join('')).toContain('monitor_relay_back');
    } finally {
      reporter.close();
      await late.close();
    }
  });

  it('the queue is bounded: the oldest reports go first', () => {
    const reporter = new Reporter({ url: 'http://127.0.0.1:1', token: () => null, log: quiet, maxQueue: 3 });
    for (let i = 0; i < 5; i++) reporter.send({ kind: 'bypass', pid: i });
    expect(reporter.queued).toBe(3);
    expect(reporter.stats.dropped).toBe(2);
    reporter.close();
  });
});
