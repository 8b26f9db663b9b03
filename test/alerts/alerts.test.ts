// Alerts end to end: every block, quarantine and strip is an alert record pointing at its audit
// record; the policy's webhook gets Slack-compatible JSON with retries, and a slow or dead webhook
// never slows mail; a rejected policy reload is an alert; secrets never appear in clear in logs,
// alerts, webhook bodies or the audit.

import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import type { SendMailOptions } from 'nodemailer';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sleep } from '../helpers/raw-smtp.js';
import { adminGet, alerts, companyPolicy, closeRelayAndSink, freePort, idOf, send, startRelayAndSink, transport, waitFor, withRelay, type Failure, type Info, type TestRelay } from '../helpers/relay.js';
import type { Sink } from '../helpers/sink.js';

const ATTACKER = 'phan@giftshop.club';

/**
 * Wait until no webhook request is in flight: every alert answered (sent / failed) or none
 * configured. Closing a relay with a request in flight is its own test below.
 */
async function webhookSettled(r: TestRelay): Promise<void> {
  await waitFor(() => r.relay.alerts.list({ limit: 1000 }).every((a) => a.webhook === 'sent' || a.webhook === 'failed' || a.webhook === 'none'), 15_000, 'webhook deliveries settled');
}

// --- a local webhook receiver --------------------------------------------------------------------

interface Hook {
  url: string;
  port: number;
  requests: { method: string; path: string; headers: IncomingMessage['headers']; raw: string; body: any }[];
  close(): Promise<void>;
}

/** `answer(n)` for the n-th request (1-based): a status code, or 'hang' to never answer. */
async function startHook(answer: (n: number) => number | 'hang' = () => 200): Promise<Hook> {
  const requests: Hook['requests'] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown = null;
      try {
        body = JSON.parse(raw);
      } catch {
        body = null;
      }
      requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, raw, body });
      const a = answer(requests.length);
      if (a === 'hang') return; // keep the socket open, never reply
      res.writeHead(a, { 'content-type': 'text/plain' });
      res.end(a === 200 ? 'ok' : 'nope');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    port,
    requests,
    // Once: a test may close its receiver early, and hookPerTest closes it again afterwards.
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      })),
  };
}

/** For a describe block: a starter for webhook receivers, each closed after its test (if not already). */
function hookPerTest(): (answer?: (n: number) => number | 'hang') => Promise<Hook> {
  let hook: Hook | undefined;
  afterEach(async () => {
    await hook?.close();
    hook = undefined;
  });
  return async (answer) => (hook = await startHook(answer));
}

const basePolicy = (o: { webhook?: string; priority?: string; mode?: string; unknown?: string } = {}) =>
  companyPolicy({ ...o, extra: o.webhook || o.priority ? `alerts:\n${o.webhook ? `  webhook: ${o.webhook}\n` : ''}${o.priority ? `  priority: ${o.priority}\n` : ''}` : '' });

// ---------------------------------------------------------------------------------------------

describe('alert records', () => {
  let sink: Sink;
  let r: TestRelay;
  beforeAll(async () => {
    ({ r, sink } = await startRelayAndSink(basePolicy()));
  });
  afterAll(() => closeRelayAndSink(r, sink));

  const check = async (eventId: string, kind: string, action: string, summary: RegExp, severity = 'normal') => {
    const found = (await alerts(r)).filter((a) => a.event_id === eventId);
    expect(found, `alerts for ${eventId}`).toHaveLength(1);
    const a = found[0];
    expect(a).toMatchObject({ kind, severity, channel: 'smtp', agent: null, event_id: eventId, webhook: 'none' });
    expect(typeof a.id).toBe('string');
    expect(Number.isNaN(Date.parse(a.time))).toBe(false);
    expect(a.summary).toMatch(summary);
    const ev = await adminGet(r, `/api/events/${eventId}`);
    expect(ev.status).toBe(200);
    expect(ev.body.action).toBe(action);
    expect(a.details.rule).toBe(ev.body.rule);
    expect(r.logs.some((l) => l.event === 'alert' && l.id === a.id && l.alert === kind && l.event_id === eventId)).toBe(true);
    return a;
  };

  it('a strip raises a `stripped` alert', async () => {
    const info = (await send(r, { from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' })) as Info;
    expect(info.rejected).toEqual([ATTACKER]);
    const a = await check(idOf(info.response), 'stripped', 'delivered', /^stripped recipients of a smtp message from an unauthenticated client: unknown recipients stripped \(rule recipients\); unknown recipients: phan@giftshop\.club$/);
    expect(a.details.stripped).toEqual([ATTACKER]);
  });

  it('a block raises a `blocked` alert', async () => {
    const err = (await send(r, { from: 'agent@company.com', to: 'colleague@company.com', text: `key ${['AKIA', 'IOSFODNN7', 'EXAMPLE'].join('')}` })) as Failure;
    expect(err.responseCode).toBe(554);
    const a = await check(idOf(err.response!), 'blocked', 'blocked', /^blocked a smtp message from an unauthenticated client: secret or credential in content \(rule secrets\[0\]\)$/);
    expect(a.details.detectors).toEqual([{ rule: 'secrets[0]', detector: 'aws', where: 'text', masked: 'AKIA…(20 chars)' }]);
  });

  it('a quarantine raises a `quarantined` alert', async () => {
    const info = (await send(r, { from: 'agent@company.com', to: 'colleague@company.com', text: 'db', attachments: [{ filename: 'prod.kdbx', content: Buffer.from([1, 2, 3]) }] })) as Info;
    expect(info.response).toMatch(/Held for review/);
    const a = await check(idOf(info.response), 'quarantined', 'quarantined', /^quarantined a smtp message .*attachment rule matched \(rule attachments\[0\]\)$/);
    expect(a.details.detectors).toEqual([{ rule: 'attachments[0]', detector: 'attachment', where: 'attachment prod.kdbx', masked: null }]);
  });

  it('unknown_recipients block: a `blocked` alert naming the unknown recipient; priority high → severity high', async () => {
    writeFileSync(r.policyFile, basePolicy({ unknown: 'block', priority: 'high' }));
    expect(r.relay.policy.reload()).toEqual([]);
    const err = (await send(r, { from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' })) as Failure;
    expect(err.responseCode).toBe(554);
    const a = await check(idOf(err.response!), 'blocked', 'blocked', /unknown recipient \(rule unknown_recipients\.hidden\); unknown recipients: phan@giftshop\.club$/, 'high');
    expect(a.details.unknown_recipients).toEqual([ATTACKER]);
    writeFileSync(r.policyFile, basePolicy());
    expect(r.relay.policy.reload()).toEqual([]);
  });

  it('allowed mail raises none', async () => {
    const before = (await alerts(r)).length;
    const info = (await send(r, { from: 'agent@company.com', to: 'colleague@company.com', cc: 'boss@company.com', text: 'fine' })) as Info;
    expect(info.response).toMatch(/^250 2\.0\.0 Delivered/);
    expect((await alerts(r)).length).toBe(before);
  });

  it('GET /api/alerts filters by kind, is newest first, and needs the token', async () => {
    const all = await alerts(r);
    expect(all.map((a) => a.kind)).toEqual(['blocked', 'quarantined', 'blocked', 'stripped']);
    expect((await alerts(r, 'blocked')).map((a) => a.kind)).toEqual(['blocked', 'blocked']);
    const res = await fetch(`http://127.0.0.1:${r.adminPort}/api/alerts`, { signal: AbortSignal.timeout(10_000) });
    expect(res.status).toBe(401);
  });
});

describe('webhook', () => {
  const startTestHook = hookPerTest();

  it('receives JSON with a Slack-compatible `text` and a `postguard` object; marked sent', async () => {
    const h = await startTestHook();
    await withRelay(basePolicy({ webhook: h.url }), async (r) => {
      const info = (await send(r, { from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' })) as Info;
      const eventId = idOf(info.response);
      await waitFor(() => h.requests.length >= 1, 10_000, 'the webhook POST');
      await waitFor(() => r.relay.alerts.list()[0]?.webhook === 'sent', 10_000, 'webhook marked sent');
      expect(h.requests).toHaveLength(1);
      const req = h.requests[0]!;
      expect(req.method).toBe('POST');
      expect(req.path).toBe('/hook');
      expect(req.headers['content-type']).toBe('application/json');
      expect(req.headers['user-agent']).toBe('postguard');
      const [alert] = r.relay.alerts.list();
      expect(typeof req.body.text).toBe('string');
      expect(req.body.text).toBe(`[postguard] normal: ${alert!.summary} [${eventId}]`);
      expect(req.body.postguard).toMatchObject({ id: alert!.id, kind: 'stripped', severity: 'normal', event_id: eventId, summary: alert!.summary, channel: 'smtp' });
      expect(req.body.postguard.details.stripped).toEqual([ATTACKER]);
      const api = await alerts(r);
      expect(api[0]).toMatchObject({ id: alert!.id, webhook: 'sent' });
      await webhookSettled(r);
    });
  });

  it('500 twice, then 200: delivered on the third try, webhook becomes sent', async () => {
    const h = await startTestHook((n) => (n <= 2 ? 500 : 200));
    await withRelay(basePolicy({ webhook: h.url }), async (r) => {
      const blocked = (await send(r, { from: 'agent@company.com', to: 'colleague@company.com', text: `token ghp_${'a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8'}` })) as Failure;
      expect(blocked.responseCode).toBe(554);
      const eventId = idOf(blocked.response!);
      await waitFor(() => r.relay.alerts.list()[0]?.webhook === 'retrying', 5_000, 'first failure marked retrying');
      await waitFor(() => r.relay.alerts.list()[0]?.webhook === 'sent', 15_000, 'webhook sent after retries');
      expect(h.requests).toHaveLength(3);
      const ids = new Set(h.requests.map((q) => q.body.postguard.id));
      expect(ids.size).toBe(1);
      expect(h.requests[0]!.body.postguard.event_id).toBe(eventId);
      const row = r.relay.store.db.prepare('SELECT webhook, webhook_attempts FROM alerts WHERE event_id = ?').get(eventId) as { webhook: string; webhook_attempts: number };
      expect(row).toEqual({ webhook: 'sent', webhook_attempts: 3 });
      expect(r.logs.filter((l) => l.event === 'alert_webhook_failed' && l.status === 500)).toHaveLength(2);
    });
  }, 30_000);

  /** 20 messages, each raising a `stripped` alert, over one connection; returns the elapsed ms. */
  async function timeTwenty(r: TestRelay, sink: Sink): Promise<number> {
    const t = transport(r, { pool: true, maxConnections: 1, maxMessages: Infinity });
    try {
      // Warm up (TLS session, upstream pool) outside the measurement.
      for (let i = 0; i < 3; i++) await t.sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: `warm ${i}` });
      const start = performance.now();
      for (let i = 0; i < 20; i++) {
        const info = (await t.sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: `m ${i}` })) as Info;
        expect(info.rejected).toEqual([ATTACKER]);
      }
      const elapsed = performance.now() - start;
      expect(sink.messages).toHaveLength(23);
      expect((await alerts(r, 'stripped')).length).toBe(23);
      return elapsed;
    } finally {
      t.close();
    }
  }

  it('a webhook that hangs, or is down, does not slow mail', async () => {
    let baseline = 0;
    await withRelay(basePolicy(), async (r, sink) => {
      baseline = await timeTwenty(r, sink);
    });

    const h = await startTestHook(() => 'hang');
    let hanging = 0;
    await withRelay(basePolicy({ webhook: h.url }), async (r, sink) => {
      hanging = await timeTwenty(r, sink);
      expect(h.requests.length).toBeGreaterThanOrEqual(1); // it was tried, and is still waiting
      expect(r.relay.alerts.list({ limit: 100 }).every((a) => a.webhook !== 'sent')).toBe(true);
      // Let the hanging request fail (connection closed) before the relay closes: the hub then
      // waits on a backoff timer, which close() cancels.
      await h.close();
      await waitFor(() => r.relay.alerts.list({ limit: 100 }).some((a) => a.webhook === 'retrying'), 10_000, 'the hung request failed and is backing off');
    });

    const port = await freePort();
    let down = 0;
    await withRelay(basePolicy({ webhook: `http://127.0.0.1:${port}/hook` }), async (r, sink) => {
      down = await timeTwenty(r, sink);
      await waitFor(() => r.logs.some((l) => l.event === 'alert_webhook_failed'), 5_000, 'a logged webhook failure');
      expect(r.relay.alerts.list({ limit: 100 }).every((a) => a.webhook !== 'sent')).toBe(true);
    });

    const report = `baseline ${baseline.toFixed(0)} ms, hanging webhook ${hanging.toFixed(0)} ms, down webhook ${down.toFixed(0)} ms`;
    for (const t of [hanging, down]) {
      expect(t, report).toBeLessThan(2_000);
      expect(t, report).toBeLessThan(Math.max(2 * baseline, baseline + 150));
    }
  }, 60_000);

  it('a rejected policy reload raises a policy_rejected alert (and the webhook gets it)', async () => {
    const h = await startTestHook();
    await withRelay(basePolicy({ webhook: h.url }), async (r) => {
      const version = r.relay.policy.current.version;
      writeFileSync(r.policyFile, 'version: 1\nrecipients: [company.com\nunknown_recipients: allow-everything\n');
      const errors = r.relay.policy.reload();
      expect(errors.length).toBeGreaterThan(0);
      expect(r.relay.policy.current.version).toBe(version);
      const found = await alerts(r, 'policy_rejected');
      expect(found.length).toBeGreaterThanOrEqual(1); // the file watcher may reload it once more
      const a = found.at(-1);
      expect(a).toMatchObject({ kind: 'policy_rejected', severity: 'high' });
      expect(a.summary).toMatch(/policy file .*policy\.yaml has errors; the previous policy stays in force: .*policy\.yaml:\d+:\d+: /);
      expect(String(a.details.errors[0])).toMatch(/policy\.yaml:\d+:\d+: /);
      const ev = await adminGet(r, `/api/events/${a.event_id}`);
      expect(ev.body).toMatchObject({ kind: 'policy', action: 'policy_rejected', policy_version: version });
      await waitFor(() => h.requests.some((q) => q.body?.postguard?.kind === 'policy_rejected'), 10_000, 'the webhook gets it');
      const body = h.requests.find((q) => q.body?.postguard?.kind === 'policy_rejected')!.body;
      expect(body.text).toMatch(/^\[postguard\] high: policy file /);
      // Still enforcing the previous policy.
      const info = (await send(r, { from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' })) as Info;
      expect(info.rejected).toEqual([ATTACKER]);
      await webhookSettled(r);
    });
  });

  it('closing the relay while a webhook request is in flight: nothing touches the closed store afterwards', async () => {
    // AlertHub.close() stops the queue, but a POST already awaiting its answer resumes pump()
    // after relay.close() has closed the database; pump() then runs `UPDATE alerts …` on a
    // finalized statement and, being fire-and-forget (`void this.pump()`), rejects unhandled.
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const h = await startTestHook(() => 'hang');
      await withRelay(basePolicy({ webhook: h.url }), async (r) => {
        const info = (await send(r, { from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' })) as Info;
        expect(info.rejected).toEqual([ATTACKER]);
        await waitFor(() => h.requests.length >= 1, 10_000, 'the webhook request in flight');
      }); // relay closed with the request still unanswered
      await h.close(); // now the request fails
      await sleep(300);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled.map((e) => String(e))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('secrets never appear in clear in logs, alerts, webhook bodies or the audit', () => {
  const AWS = ['AKIA', 'IOSFODNN7', 'EXAMPLE'].join('');
  const GITHUB = ['ghp_', 'a1B2c3D4e5F6g7H8', 'i9J0k1L2m3N4o5P6q7R8'].join('');
  const PEM_BODY = ['MIIEvQIBADANBgkqhkiG9w0BAQEFAASC', 'BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj'].join('');
  const PEM = ['-----BEGIN ', 'PRIVATE KEY-----\n', PEM_BODY, '\n-----END PRIVATE KEY-----'].join('');
  const PASSWORD = ['Vq7#pLx2', '!Rz9Tm4K'].join('');
  const CARD = ['4111', '1111', '1111', '1111'].join(' ');

  const SECRETS: { name: string; detector: string; text: string; inSubject: boolean }[] = [
    { name: 'aws', detector: 'aws', text: `aws key ${AWS} here`, inSubject: true },
    { name: 'github', detector: 'github', text: `token ${GITHUB} here`, inSubject: true },
    { name: 'pem', detector: 'private_key', text: `key:\n${PEM}\n`, inSubject: false },
    { name: 'password', detector: 'password', text: `db password=${PASSWORD} thanks`, inSubject: true },
    { name: 'card', detector: 'card', text: `card ${CARD} exp 12/29`, inSubject: true },
  ];

  /** What must never appear: the secrets and distinctive pieces of them. */
  const CLEAR = [
    AWS, 'IOSFODNN7EXAMPLE', 'IOSFODNN7',
    GITHUB, 'a1B2c3D4e5F6g7H8', 'i9J0k1L2m3N4',
    PEM_BODY, 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASC', 'BKcwggSjAgEAAoIBAQC7',
    PASSWORD, 'pLx2!Rz9', 'Vq7#pLx2',
    CARD, '4111111111111111', '4111 1111 1111', '411111111111',
  ];

  function messages(): { label: string; detector: string; mail: SendMailOptions }[] {
    const out: { label: string; detector: string; mail: SendMailOptions }[] = [];
    const base = { from: 'agent@company.com', to: 'colleague@company.com' };
    for (const s of SECRETS) {
      if (s.inSubject) out.push({ label: `${s.name} in subject`, detector: s.detector, mail: { ...base, subject: s.text, text: 'see subject' } });
      out.push({ label: `${s.name} in body`, detector: s.detector, mail: { ...base, subject: 'note', text: s.text } });
      out.push({ label: `${s.name} in attachment`, detector: s.detector, mail: { ...base, subject: 'attached', text: 'see attachment', attachments: [{ filename: 'notes.txt', content: s.text, contentType: 'text/plain' }] } });
    }
    return out;
  }

  async function scan(r: TestRelay, h: Hook, expectedAlerts: number): Promise<void> {
    await waitFor(() => h.requests.length >= expectedAlerts, 15_000, 'every alert at the webhook');
    const alertsBody = JSON.stringify((await adminGet(r, '/api/alerts?limit=1000')).body);
    const eventsBody = JSON.stringify((await adminGet(r, '/api/events?limit=1000')).body);
    const places: [string, string[]][] = [
      ['log line', r.logs.map((l) => JSON.stringify(l))],
      ['GET /api/alerts', [alertsBody]],
      ['GET /api/events', [eventsBody]],
      ['webhook body', h.requests.map((q) => q.raw)],
      ['alerts table', r.relay.alerts.list({ limit: 1000 }).map((a) => JSON.stringify(a))],
    ];
    const leaks: string[] = [];
    for (const [where, texts] of places) {
      for (const t of texts) {
        // JSON escapes nothing in these secrets but the newline of the PEM; check both forms.
        for (const c of CLEAR) if (t.includes(c) || t.includes(JSON.stringify(c).slice(1, -1))) leaks.push(`${where}: ${c} in ${t.slice(0, 300)}`);
      }
    }
    expect(leaks).toEqual([]);
    // And the scan saw what it should: the masked forms are there.
    expect(alertsBody).toContain('AKIA…(20 chars)');
    expect(alertsBody).toContain('card …1111');
    expect(alertsBody).toContain(`…(${PASSWORD.length} chars)`);
    expect(eventsBody).toContain('AKIA…(20 chars)');
    expect(r.logs.length).toBeGreaterThan(10);
    await webhookSettled(r);
  }

  const startTestHook = hookPerTest();

  it('enforce mode: every such message is blocked (554), each secret detected; nothing in clear anywhere', async () => {
    const h = await startTestHook();
    await withRelay(basePolicy({ webhook: h.url }), async (r, sink) => {
      const list = messages();
      for (const m of list) {
        const res = (await send(r, m.mail)) as Failure;
        expect(res.responseCode, m.label).toBe(554);
        expect(res.response, m.label).toMatch(/secret or credential in content/);
        const ev = (await adminGet(r, `/api/events/${idOf(res.response!)}`)).body;
        expect(ev.detectors.map((d: { detector: string }) => d.detector), m.label).toContain(m.detector);
        const where = m.label.endsWith('subject') ? 'subject' : m.label.endsWith('body') ? 'text' : 'attachment notes.txt';
        expect(ev.detectors.find((d: { detector: string }) => d.detector === m.detector).where, m.label).toBe(where);
      }
      expect(sink.messages).toHaveLength(0);
      expect(await alerts(r, 'blocked')).toHaveLength(list.length);
      await scan(r, h, list.length);
    });
  }, 60_000);

  it('monitor mode: every such message is delivered (the sink has the secrets); nothing in clear anywhere else', async () => {
    const h = await startTestHook();
    await withRelay(basePolicy({ webhook: h.url, mode: 'monitor' }), async (r, sink) => {
      const list = messages();
      for (const m of list) {
        const res = (await send(r, m.mail)) as Info;
        expect(res.response, m.label).toMatch(/^250 2\.0\.0 Delivered/);
        const ev = (await adminGet(r, `/api/events/${idOf(res.response)}`)).body;
        expect(ev).toMatchObject({ decision: 'deliver', would_action: 'block' });
        expect(ev.detectors.map((d: { detector: string }) => d.detector), m.label).toContain(m.detector);
      }
      expect(sink.messages).toHaveLength(list.length);
      const delivered = sink.messages.map((m) => m.raw.toString('utf8')).join('\n');
      for (const s of [AWS, GITHUB, PEM_BODY, PASSWORD, CARD]) expect(delivered).toContain(s); // that is the message
      expect(await alerts(r, 'would_block')).toHaveLength(list.length);
      await scan(r, h, list.length);
    });
  }, 60_000);
});
