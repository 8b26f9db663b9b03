// Queue mode (POSTGUARD_DELIVERY=queue), end to end over real sockets: the agent's 250 comes after
// an fsync'd store, a worker delivers with bounded concurrency and retries, gives up after the
// maximum age or on a 5xx, survives a restart and a kill -9 (at most the in-flight ones twice).

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { loadOrCreateCa } from '../../src/tls/ca.js';
import { sleep } from '../helpers/raw-smtp.js';
import { ADMIN_TOKEN, adminGet, alerts, freePort, idOf, startTestRelay, transport, upstreamEnv, waitFor, type TestRelay } from '../helpers/relay.js';
import { startSink, type Sink } from '../helpers/sink.js';

const POLICY = 'version: 1\nrecipients: [company.com]\n';

/** Shorter client timeouts than transport()'s: a stuck send fails well inside these tests' timeouts. */
const QUICK = { connectionTimeout: 5000, greetingTimeout: 5000, socketTimeout: 10_000 };

const queueEnv = (upstream: Pick<Sink, 'port' | 'caFile'>, extra: Record<string, string> = {}): Record<string, string> => ({
  POSTGUARD_DELIVERY: 'queue',
  ...upstreamEnv(upstream),
  POSTGUARD_QUEUE_RETRY_BASE: '50ms',
  POSTGUARD_QUEUE_RETRY_MAX: '500ms',
  ...extra,
});

/** A sink that is down: its port and CA are known (for the relay's config), nothing listens. */
async function downSink(): Promise<{ port: number; caDir: string; caFile: string }> {
  const s = await startSink();
  await s.close();
  return { port: s.port, caDir: s.caDir, caFile: s.caFile };
}

const xPostguard = (raw: Buffer) => /^X-Postguard: ([0-9a-f-]{36})\r?$/m.exec(raw.toString('latin1'))?.[1] ?? null;
const subjectOf = (raw: Buffer) => /^Subject: ([^\r\n]*)/m.exec(raw.toString('latin1'))?.[1] ?? null;

async function events(r: TestRelay, action: string): Promise<any[]> {
  const { status, body } = await adminGet(r, `/api/events?action=${action}&limit=1000`);
  expect(status).toBe(200);
  return body.events;
}

async function queueSize(r: TestRelay): Promise<number> {
  const { body } = await adminGet(r, '/api/info');
  return body.queue.messages;
}

// A slow, instrumented upstream: STARTTLS like test/helpers/sink.ts, but it holds every message
// `delayMs` before answering, counting the DATA phases in progress. A message counts as received
// once its final dot arrived (before the delayed 250), as for a real server that commits first:
// a relay killed during the delay has delivered it without knowing.
interface SlowSink {
  port: number;
  caFile: string;
  caDir: string;
  messages: { subject: string | null; id: string | null; raw: Buffer }[];
  active: number;
  maxActive: number;
  close(): Promise<void>;
}

async function startSlowSink(opts: { delayMs: number; port?: number; caDir?: string }): Promise<SlowSink> {
  const dir = opts.caDir ?? mkdtempSync(join(tmpdir(), 'pg-slowsink-'));
  const { ca } = loadOrCreateCa(join(dir, 'ca'));
  const leaf = ca.leafFor(['127.0.0.1', 'localhost']);
  const caFile = join(dir, 'sink-ca.pem');
  writeFileSync(caFile, ca.certPem);
  const sink: SlowSink = { port: 0, caFile, caDir: dir, messages: [], active: 0, maxActive: 0, close: async () => {} };
  const server = new SMTPServer({
    key: leaf.keyPem,
    cert: leaf.certPem,
    authOptional: true,
    disableReverseLookup: true,
    logger: false,
    onData(stream, _session, cb) {
      sink.active++;
      sink.maxActive = Math.max(sink.maxActive, sink.active);
      const chunks: Buffer[] = [];
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        sink.active--;
      };
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('error', finish); // the client went away mid-DATA: nothing received
      stream.on('close', () => {
        if (!stream.readableEnded) finish();
      });
      stream.on('end', () => {
        const raw = Buffer.concat(chunks);
        sink.messages.push({ subject: subjectOf(raw), id: xPostguard(raw), raw });
        setTimeout(() => {
          finish();
          cb(null, 'slow sink ok');
        }, opts.delayMs);
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  sink.port = (server.server.address() as AddressInfo).port;
  sink.close = () => new Promise((resolve) => server.close(() => resolve()));
  return sink;
}

describe('queue mode: acceptance does not depend on the upstream', () => {
  it('answers 250 Queued while the upstream is down; a 200-message burst is acked and, once the sink is back, each arrives exactly once', { timeout: 60_000 }, async () => {
    const down = await downSink();
    const r = await startTestRelay({ policy: POLICY, env: queueEnv(down) });
    let sink: Sink | null = null;
    try {
      const info = await adminGet(r, '/api/info');
      expect(info.body.delivery).toBe('queue');

      const first = await transport(r, QUICK).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', subject: 'q1 first', text: 'hello' });
      expect(first.response).toMatch(/^250 2\.0\.0 Queued by postguard \[[0-9a-f-]{36}\]$/);
      const ids = new Set([idOf(first.response)]);

      const pool = transport(r, { ...QUICK, pool: true, maxConnections: 8, maxMessages: Infinity });
      try {
        const infos = await Promise.all(Array.from({ length: 200 }, (_, i) => pool.sendMail({ from: 'agent@company.com', to: 'colleague@company.com', subject: `q1 burst ${i}`, text: `message ${i}` })));
        for (const x of infos) {
          expect(x.response).toMatch(/^250 2\.0\.0 Queued by postguard /);
          ids.add(idOf(x.response));
        }
      } finally {
        pool.close();
      }
      expect(ids.size).toBe(201);

      // Every acked message has its `queued` audit record (same id as X-Postguard) and is stored.
      const queued = await events(r, 'queued');
      expect(new Set(queued.map((e) => e.id))).toEqual(ids);
      expect(await queueSize(r)).toBe(201);
      // Let each one fail its first attempt against the dead upstream, so every delivery is a retry.
      await waitFor(() => (r.relay.store.db.prepare('SELECT COUNT(*) AS n FROM queue WHERE attempts = 0').get() as { n: number }).n === 0, 10_000, 'a first (failed) attempt of every message');

      sink = await startSink({ port: down.port, caDir: down.caDir });
      const s = sink;
      await waitFor(async () => s.messages.length >= 201 && (await queueSize(r)) === 0, 30_000, 'all 201 messages at the sink');
      await sleep(600); // more than RETRY_MAX: a stray retry would show up as a duplicate
      const delivered = s.messages.map((m) => xPostguard(m.raw));
      expect(delivered).toHaveLength(201);
      expect(new Set(delivered)).toEqual(ids);
      expect(new Set(s.messages.map((m) => subjectOf(m.raw))).size).toBe(201);

      const records = await events(r, 'delivered');
      expect(records).toHaveLength(201);
      expect(new Set(records.map((e) => e.ref))).toEqual(ids);
      for (const e of records) {
        expect(e).toMatchObject({ kind: 'message', channel: 'queue', action: 'delivered' });
        expect(e.attempts).toBeGreaterThan(1);
      }
      // The delivered record comes after the queued one in the hash chain.
      const queuedSeq = new Map(queued.map((e) => [e.id, e.seq]));
      for (const e of records) expect(e.seq).toBeGreaterThan(queuedSeq.get(e.ref)!);
    } finally {
      await r.close();
      await sink?.close();
    }
  });
});

describe('queue mode: kill -9 under load', () => {
  it('loses no acked message; duplicates at most the deliveries in flight', { timeout: 90_000 }, async () => {
    const CONCURRENCY = 4;
    const sink = await startSlowSink({ delayMs: 5 });
    const dir = mkdtempSync(join(tmpdir(), 'pg-kill-'));
    writeFileSync(join(dir, 'policy.yaml'), POLICY);
    const children: ChildProcess[] = [];
    const spawnRelay = async (smtpPort: number, adminPort: number) => {
      const child = spawn(process.execPath, ['dist/cli.js', 'relay'], {
        env: {
          ...process.env,
          POSTGUARD_POLICY: join(dir, 'policy.yaml'), POSTGUARD_DATA_DIR: join(dir, 'data'), POSTGUARD_CERTS_DIR: join(dir, 'certs'),
          POSTGUARD_SMTP_LISTEN: `127.0.0.1:${smtpPort}`, POSTGUARD_SMTPS_LISTEN: 'off', POSTGUARD_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
          POSTGUARD_ADMIN_TOKEN: ADMIN_TOKEN,
          ...upstreamEnv(sink),
          POSTGUARD_DELIVERY: 'queue', POSTGUARD_QUEUE_CONCURRENCY: String(CONCURRENCY),
          POSTGUARD_QUEUE_RETRY_BASE: '50ms', POSTGUARD_QUEUE_RETRY_MAX: '500ms',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      let out = '';
      let started = false;
      // Keep reading: a full pipe would block the relay.
      child.stdout!.on('data', (d: Buffer) => {
        if (!started) out += d;
      });
      child.stderr!.on('data', (d: Buffer) => {
        if (!started) out += d;
      });
      const exit = new Promise<void>((_, reject) => child.once('exit', (code, sig) => reject(new Error(`relay exited (${code ?? sig}) before starting: ${out}`))));
      exit.catch(() => {});
      await Promise.race([waitFor(() => out.includes('"relay_started"'), 15_000, 'relay_started'), exit]);
      started = true;
      return child;
    };
    try {
      const smtpPort = await freePort();
      const adminPort = await freePort();
      const child = await spawnRelay(smtpPort, adminPort);
      const caPem = (await (await fetch(`http://127.0.0.1:${adminPort}/api/ca.pem`)).text());

      const acked = new Set<string>();
      let failed = 0;
      let killed = false;
      let seq = 0;
      const t = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort, pool: true, maxConnections: 8, maxMessages: Infinity, requireTLS: true, tls: { ca: caPem }, connectionTimeout: 5000, socketTimeout: 10_000 });
      const worker = async () => {
        while (!killed && seq < 5000) {
          const subject = `kill ${seq++}`;
          try {
            const info = await t.sendMail({ from: 'agent@company.com', to: 'colleague@company.com', subject, text: `body of ${subject}\n${'x'.repeat(1500)}` });
            if (/^250 /.test(info.response)) acked.add(subject);
          } catch {
            failed++;
            if (killed) return;
          }
        }
      };
      const workers = Promise.all(Array.from({ length: 8 }, worker));

      // Kill mid-load, at a moment when the sink holds a delivery in progress.
      await waitFor(() => acked.size >= 300 && sink.messages.length >= 50, 30_000, 'load to build up');
      await waitFor(() => sink.active > 0, 10_000, 'a delivery in flight at the sink');
      const inFlightAtSink = sink.active;
      child.kill('SIGKILL');
      killed = true;
      const deliveredBeforeKill = sink.messages.length;
      await new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));
      await workers;
      t.close();
      expect(child.signalCode).toBe('SIGKILL');

      const ackedAtKill = acked.size;
      // Restart on the same data dir (new ports: no client of the old one can reach it).
      const adminPort2 = await freePort();
      await spawnRelay(await freePort(), adminPort2);
      const info = async () => (await (await fetch(`http://127.0.0.1:${adminPort2}/api/info`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()) as { delivery: string; queue: { messages: number } };
      expect((await info()).delivery).toBe('queue');
      const received = () => new Set(sink.messages.map((m) => m.subject));
      await waitFor(async () => [...acked].every((s) => received().has(s)) && (await info()).queue.messages === 0, 45_000, 'every acked message at the sink');
      await sleep(600); // a stray retry would show up as a duplicate

      const counts = new Map<string, number>();
      for (const m of sink.messages) counts.set(m.subject!, (counts.get(m.subject!) ?? 0) + 1);
      const missing = [...acked].filter((s) => !counts.has(s));
      const duplicates = [...counts.values()].filter((n) => n > 1).reduce((a, n) => a + n - 1, 0);
      const unacked = [...counts.keys()].filter((s) => !acked.has(s)).length;
      console.log(`kill -9 under load: acked=${ackedAtKill} delivered=${sink.messages.length} distinct=${counts.size} duplicates=${duplicates} missing=${missing.length} ` +
        `delivered-but-not-acked=${unacked} client-failures=${failed} delivered-before-kill=${deliveredBeforeKill} in-flight-at-sink-at-kill=${inFlightAtSink} queue-concurrency=${CONCURRENCY}`);
      expect(missing).toEqual([]);
      expect(duplicates).toBeLessThanOrEqual(CONCURRENCY);
      expect(sink.maxActive).toBeLessThanOrEqual(CONCURRENCY);
      for (const [s, n] of counts) if (n > 1) expect(s).toMatch(/^kill \d+$/);
    } finally {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? null : new Promise((r) => c.once('exit', r)))));
      await sink.close();
    }
  });
});

describe('queue mode: giving up', () => {
  it('after POSTGUARD_QUEUE_MAX_AGE with the upstream down: removed, `expired` audit and a queue_expired alert', { timeout: 20_000 }, async () => {
    const down = await downSink();
    const r = await startTestRelay({ policy: POLICY, env: queueEnv(down, { POSTGUARD_QUEUE_MAX_AGE: '300ms', POSTGUARD_QUEUE_RETRY_MAX: '100ms' }) });
    try {
      const t0 = Date.now();
      const info = await transport(r, QUICK).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', subject: 'never delivered', text: 'x' });
      expect(info.response).toMatch(/^250 2\.0\.0 Queued/);
      const id = idOf(info.response);
      await waitFor(async () => (await events(r, 'expired')).some((e) => e.ref === id), 10_000, 'the expired record');
      expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
      const [expired] = (await events(r, 'expired')).filter((e) => e.ref === id);
      expect(expired).toMatchObject({ kind: 'message', channel: 'queue', action: 'expired', ref: id, upstream: { status: 'failed', temporary: true } });
      expect(expired.attempts).toBeGreaterThan(1);
      expect(await queueSize(r)).toBe(0);
      expect(r.relay.store.db.prepare('SELECT COUNT(*) AS n FROM queue WHERE id = ?').get(id)).toEqual({ n: 0 });
      const a = (await alerts(r, 'queue_expired')).filter((x) => x.event_id === id);
      expect(a).toHaveLength(1);
      expect(a[0]).toMatchObject({ kind: 'queue_expired', severity: 'high', details: { audit_id: expired.id } });
      // Given up for good: no further attempt records.
      await sleep(300);
      expect((await events(r, 'expired')).filter((e) => e.ref === id)).toHaveLength(1);
      expect((await events(r, 'delivered')).filter((e) => e.ref === id)).toHaveLength(0);
    } finally {
      await r.close();
    }
  });

  it('a permanent 5xx from the upstream: `upstream_rejected` audit and alert, not retried', { timeout: 20_000 }, async () => {
    const sink = await startSink();
    sink.failWith = 550;
    const r = await startTestRelay({ policy: POLICY, env: queueEnv(sink) });
    try {
      const info = await transport(r, QUICK).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', subject: 'refused upstream', text: 'x' });
      expect(info.response).toMatch(/^250 2\.0\.0 Queued/);
      const id = idOf(info.response);
      await waitFor(async () => (await events(r, 'upstream_rejected')).some((e) => e.ref === id), 10_000, 'the upstream_rejected record');
      const [rec] = (await events(r, 'upstream_rejected')).filter((e) => e.ref === id);
      expect(rec).toMatchObject({ kind: 'message', channel: 'queue', action: 'upstream_rejected', ref: id, attempts: 1, upstream: { status: 'failed', temporary: false, code: 550 } });
      const a = (await alerts(r, 'upstream_rejected')).filter((x) => x.event_id === id);
      expect(a).toHaveLength(1);
      expect(a[0]).toMatchObject({ kind: 'upstream_rejected', details: { audit_id: rec.id, attempts: 1 } });
      expect(await queueSize(r)).toBe(0);
      // Several retry bases later: still exactly one attempt upstream.
      await sleep(600);
      expect(sink.transactions).toBe(1);
      expect(sink.messages).toHaveLength(0);
      expect((await events(r, 'tempfail')).filter((e) => e.ref === id)).toHaveLength(0);
      expect((await events(r, 'upstream_rejected')).filter((e) => e.ref === id)).toHaveLength(1);
    } finally {
      await r.close();
      await sink.close();
    }
  });
});

describe('queue mode: bounded concurrency, no stall', () => {
  it('POSTGUARD_QUEUE_CONCURRENCY=2 against a 300 ms upstream: at most 2 deliveries at once; 20 parallel submissions acked long before they are delivered', { timeout: 30_000 }, async () => {
    const sink = await startSlowSink({ delayMs: 300 });
    const r = await startTestRelay({ policy: POLICY, env: queueEnv(sink, { POSTGUARD_QUEUE_CONCURRENCY: '2' }) });
    try {
      const t0 = performance.now();
      const ackTimes: number[] = [];
      const infos = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
        const t = transport(r, QUICK);
        try {
          const info = await t.sendMail({ from: 'agent@company.com', to: 'colleague@company.com', subject: `slow ${i}`, text: `message ${i}` });
          ackTimes.push(performance.now() - t0);
          return info;
        } finally {
          t.close();
        }
      }));
      const allAcked = performance.now() - t0;
      for (const x of infos) expect(x.response).toMatch(/^250 2\.0\.0 Queued/);
      expect(allAcked).toBeLessThan(1500);
      // Still accepting while the worker is busy: one more message is acked at once.
      const s1 = performance.now();
      const extra = await transport(r, QUICK).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', subject: 'slow extra', text: 'x' });
      const extraMs = performance.now() - s1;
      expect(extra.response).toMatch(/^250 2\.0\.0 Queued/);
      expect(extraMs).toBeLessThan(500);
      expect(sink.messages.length).toBeLessThan(15); // deliveries are still going on

      await waitFor(() => sink.messages.length >= 21 && sink.active === 0, 20_000, 'all 21 delivered');
      const allDelivered = performance.now() - t0;
      console.log(`bounded concurrency: 20 acked in ${Math.round(allAcked)} ms (extra one in ${Math.round(extraMs)} ms), 21 delivered in ${Math.round(allDelivered)} ms, max concurrent upstream deliveries ${sink.maxActive}`);
      expect(allDelivered).toBeGreaterThanOrEqual(3000);
      expect(sink.maxActive).toBeLessThanOrEqual(2);
      expect(sink.maxActive).toBe(2);
      expect(new Set(sink.messages.map((m) => m.subject)).size).toBe(21);
    } finally {
      await r.close();
      await sink.close();
    }
  });
});

describe('queue mode: restart', () => {
  it('messages queued before a restart are delivered by the next relay on the same data dir', { timeout: 30_000 }, async () => {
    const down = await downSink();
    const first = await startTestRelay({ policy: POLICY, env: queueEnv(down) });
    const ids = new Set<string>();
    let second: TestRelay | null = null;
    let sink: Sink | null = null;
    try {
      const t = transport(first, QUICK);
      for (let i = 0; i < 5; i++) {
        const info = await t.sendMail({ from: 'agent@company.com', to: 'colleague@company.com', subject: `restart ${i}`, text: `message ${i}` });
        expect(info.response).toMatch(/^250 2\.0\.0 Queued/);
        ids.add(idOf(info.response));
      }
      t.close();
      expect(await queueSize(first)).toBe(5);
      await first.close();

      // Same data dir and policy file. (Not POSTGUARD_CERTS_DIR: startTestRelay reads the CA from its
      // own new dir; the agent-facing CA plays no part in what the queue delivers.)
      second = await startTestRelay({
        policy: POLICY,
        env: queueEnv(down, {
          POSTGUARD_DATA_DIR: join(first.dir, 'data'),
          POSTGUARD_POLICY: first.policyFile,
        }),
      });
      const r2 = second;
      expect(await queueSize(r2)).toBe(5);
      sink = await startSink({ port: down.port, caDir: down.caDir });
      const s = sink;
      await waitFor(async () => s.messages.length >= 5 && (await queueSize(r2)) === 0, 15_000, 'the 5 queued messages at the sink');
      await sleep(600);
      expect(s.messages).toHaveLength(5);
      expect(new Set(s.messages.map((m) => xPostguard(m.raw)))).toEqual(ids);
      const delivered = await events(r2, 'delivered');
      expect(new Set(delivered.map((e) => e.ref))).toEqual(ids);
    } finally {
      await first.close();
      await second?.close();
      await sink?.close();
    }
  });
});
