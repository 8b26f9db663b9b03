// The postmark-mcp scenario over SMTP, end to end: nodemailer → relay → a real upstream sink.

import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import nodemailer from 'nodemailer';
import { hashPassword } from '../../src/policy/password.js';
import { adminGet, closeRelayAndSink, startRelayAndSink, startTestRelay, transport, upstreamEnv, waitFor, withRelay, type TestRelay } from '../helpers/relay.js';
import { startSink, type Sink } from '../helpers/sink.js';

const ATTACKER = 'phan@giftshop.club';

const policy = (unknown: string, extra = '') => `version: 1
recipients:
  domains: [company.com, "*.company.com"]
unknown_recipients: ${unknown}
secrets:
  - detectors: all
    action: block
${extra}`;

/** A fixed message with CRLF line endings, so byte-for-byte comparison is exact. */
const RAW = [
  'From: Agent <agent@company.com>',
  'To: Colleague <colleague@company.com>',
  `Bcc: ${ATTACKER}`,
  'Subject: Quarterly numbers',
  'Message-ID: <fixed-1@company.com>',
  'MIME-Version: 1.0',
  'Content-Type: text/plain; charset=utf-8',
  '',
  'Hello colleague,',
  '.leading dot line survives dot-stuffing',
  'Regards',
  '',
].join('\r\n');

/** Split the two trace headers the relay adds from the rest of what the sink received. */
function untrace(raw: Buffer): { received: string; xPostguard: string; rest: string } {
  const text = raw.toString('utf8');
  const m = /^(Received: [^\r]*(?:\r\n\t[^\r]*)*)\r\n(X-Postguard: ([0-9a-f-]{36}))\r\n/.exec(text);
  expect(m, 'trace headers at the top').not.toBeNull();
  return { received: m![1]!, xPostguard: m![3]!, rest: text.slice(m![0].length) };
}

describe('strip mode: the postmark-mcp BCC never reaches the attacker', () => {
  let sink: Sink;
  let r: TestRelay;
  beforeAll(async () => {
    ({ r, sink } = await startRelayAndSink(policy('strip')));
  });
  afterAll(() => closeRelayAndSink(r, sink));
  afterEach(() => {
    sink.messages.length = 0;
    sink.transactions = 0;
  });

  it('nodemailer bcc: colleague gets it, attacker refused at RCPT, nothing of the attacker upstream', async () => {
    const info = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, subject: 'hi', text: 'hello' });
    expect(info.accepted).toEqual(['colleague@company.com']);
    expect(info.rejected).toEqual([ATTACKER]);
    expect(String((info as { rejectedErrors?: Error[] }).rejectedErrors?.[0]?.message)).toMatch(/550 5\.7\.1/);
    expect(sink.messages).toHaveLength(1);
    expect(sink.messages[0]!.to).toEqual(['colleague@company.com']);
    expect(sink.messages[0]!.raw.toString()).not.toMatch(/giftshop/i);
  });

  it('relays the bytes unchanged apart from the Bcc header and the trace headers', async () => {
    const info = await transport(r).sendMail({ envelope: { from: 'agent@company.com', to: ['colleague@company.com', ATTACKER] }, raw: RAW });
    expect(info.rejected).toEqual([ATTACKER]);
    expect(sink.messages).toHaveLength(1);
    const { received, xPostguard, rest } = untrace(sink.messages[0]!.raw);
    expect(rest).toBe(RAW.replace(`Bcc: ${ATTACKER}\r\n`, ''));
    expect(received).toMatch(/^Received: from \S+ \(\[127\.0\.0\.1\]\)\r\n\tby postguard\.local \(postguard\) with ESMTPS id \S+\r\n\tfor <colleague@company\.com>;\r\n\t\w{3}, \d{2} \w{3} \d{4} [\d:]{8} \+0000$/);
    // The X-Postguard id is the audit record's.
    const ev = await adminGet(r, `/api/events/${xPostguard}`);
    expect(ev.status).toBe(200);
    expect(ev.body).toMatchObject({ id: xPostguard, kind: 'message', channel: 'smtp', action: 'delivered', decision: 'deliver', reason: 'unknown recipients stripped' });
    expect(ev.body.recipients.kept).toEqual(['colleague@company.com']);
    expect(ev.body.recipients.stripped).toEqual([ATTACKER]);
    expect(ev.body.upstream.status).toBe('delivered');
  });

  it('implicit TLS (SMTPS) verified against the relay CA', async () => {
    const info = await nodemailer.createTransport({ host: '127.0.0.1', port: r.smtpsPort, secure: true, tls: { ca: r.caPem } }).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' });
    expect(info.accepted).toEqual(['colleague@company.com']);
    expect(sink.messages.map((m) => m.to)).toEqual([['colleague@company.com']]);
  });

  it('refuses to talk TLS to a client that does not trust the relay CA (certificate is really verified)', async () => {
    await expect(nodemailer.createTransport({ host: '127.0.0.1', port: r.smtpPort, requireTLS: true }).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', text: 'x' })).rejects.toThrow(/self[- ]signed|unable to verify|certificate/i);
    await expect(nodemailer.createTransport({ host: '127.0.0.1', port: r.smtpsPort, secure: true }).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', text: 'x' })).rejects.toThrow(/self[- ]signed|unable to verify|certificate/i);
    expect(sink.messages).toHaveLength(0);
  });

  it('blocks an AWS key and a private key in the body (554), masked in the audit', async () => {
    const aws = ['AKIA', 'IOSFODNN7', 'EXAMPLE'].join('');
    const pem = ['-----BEGIN ', 'PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----'].join('');
    for (const secret of [`here is the key ${aws} for prod`, `key:\n${pem}\n`]) {
      const err = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', subject: 'creds', text: secret }).catch((e: Error & { responseCode?: number; response?: string }) => e);
      expect((err as { responseCode?: number }).responseCode).toBe(554);
      expect(String((err as { response?: string }).response)).toMatch(/secret or credential in content/);
    }
    expect(sink.messages).toHaveLength(0);
    const { body } = await adminGet(r, '/api/events?action=blocked');
    const text = JSON.stringify(body);
    expect(body.events.length).toBeGreaterThanOrEqual(2);
    expect(text).not.toContain(aws);
    expect(text).not.toContain('MIIEvQIBADANBgkqhkiG9w0BAQEFAASC');
    expect(body.events[0].detectors[0]).toMatchObject({ detector: 'private_key' });
  });

  it('cut-through: a message withdrawn after its upstream transaction opened is never delivered, and later ones arrive intact', async () => {
    const secret = ['sk_live_', '4eC39HqLyjWDarjtT1zdp7dc'].join('');
    // 8 at once, so every pooled upstream connection has had a transaction opened and then withdrawn.
    const blocked = await Promise.all(Array.from({ length: 8 }, (_, i) =>
      transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', subject: `withdrawn ${i}`, text: `stripe ${secret}` }).catch((e: { responseCode?: number }) => e.responseCode)));
    expect(blocked).toEqual(Array(8).fill(554));
    expect(sink.transactions, 'upstream transactions were opened early for the withdrawn messages').toBeGreaterThan(0);
    const sent = await Promise.all(Array.from({ length: 8 }, (_, i) =>
      transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', subject: `after ${i}`, text: `body ${i}` })));
    expect(sent.every((info) => /^250 /.test(info.response))).toBe(true);
    expect(sink.messages).toHaveLength(8);
    const subjects = sink.messages.map((m) => /^Subject: (.*)$/m.exec(m.raw.toString())![1]).sort();
    expect(subjects).toEqual(Array.from({ length: 8 }, (_, i) => `after ${i}`));
    for (const m of sink.messages) {
      expect(m.raw.toString()).not.toContain(secret);
      expect(m.raw.toString().match(/^Subject: /gm)).toHaveLength(1); // no message glued onto another
    }
  });

  it('X-SMTPAPI naming an unknown recipient is blocked even in strip mode (cannot be stripped)', async () => {
    const err = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', headers: { 'X-SMTPAPI': JSON.stringify({ to: [ATTACKER] }) }, text: 'x' }).catch((e: Error) => e);
    expect((err as { responseCode?: number }).responseCode).toBe(554);
    expect(sink.messages).toHaveLength(0);
  });

  it('a spoofed From header is blocked when the policy restricts senders', async () => {
    writeFileSync(r.policyFile, policy('strip', 'senders: ["*@company.com"]'));
    expect(r.relay.policy.reload()).toEqual([]);
    const err = await transport(r).sendMail({ envelope: { from: 'agent@company.com', to: ['colleague@company.com'] }, raw: RAW.replace('From: Agent <agent@company.com>', 'From: CEO <ceo@other.example>') }).catch((e: Error) => e);
    expect((err as { responseCode?: number }).responseCode).toBe(554);
    expect(String((err as { response?: string }).response)).toMatch(/sender not allowed/);
    const mailFrom = await transport(r).sendMail({ from: 'x@other.example', to: 'colleague@company.com', text: 'x' }).catch((e: Error) => e);
    expect((mailFrom as { responseCode?: number }).responseCode).toBe(550);
    expect(sink.messages).toHaveLength(0);
    writeFileSync(r.policyFile, policy('strip'));
    r.relay.policy.reload();
  });
});

describe('block and quarantine modes', () => {
  let sink: Sink;
  let r: TestRelay;
  beforeAll(async () => {
    ({ r, sink } = await startRelayAndSink(policy('block')));
  });
  afterAll(() => closeRelayAndSink(r, sink));

  it('block: the whole message is refused after DATA with 554 5.7.1 and nothing reaches the sink', async () => {
    const err = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' }).catch((e: Error) => e);
    expect((err as { responseCode?: number }).responseCode).toBe(554);
    expect(String((err as { response?: string }).response)).toMatch(/^554 5\.7\.1 .*unknown recipient.*unknown_recipients\.hidden/);
    expect(sink.messages).toHaveLength(0);
    const { body } = await adminGet(r, '/api/events?action=blocked');
    expect(body.events[0].recipients.verdicts).toContainEqual(expect.objectContaining({ address: ATTACKER, hidden: true, outcome: 'block' }));
  });

  it('block: allowed mail still flows', async () => {
    const info = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', cc: 'boss@eu.company.com', text: 'x' });
    expect(info.accepted).toEqual(['colleague@company.com', 'boss@eu.company.com']);
    expect(sink.messages.at(-1)!.to).toEqual(['colleague@company.com', 'boss@eu.company.com']);
  });

  it('quarantine: answered 250, held, visible in /api/quarantine, not delivered', async () => {
    writeFileSync(r.policyFile, policy('quarantine'));
    expect(r.relay.policy.reload()).toEqual([]);
    const before = sink.messages.length;
    const info = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' });
    expect(info.response).toMatch(/^250 2\.0\.0 Held for review/);
    expect(sink.messages.length).toBe(before);
    const { body } = await adminGet(r, '/api/quarantine');
    expect(body.messages[0]).toMatchObject({ channel: 'smtp', reason: 'unknown recipient', rule: 'unknown_recipients.hidden' });
    // Held with every recipient asked for; release filters them through the policy in force then.
    expect(body.messages[0].envelope.to).toEqual(['colleague@company.com', ATTACKER]);
  });
});

describe('agents: SMTP AUTH and allowed senders', () => {
  let sink: Sink;
  let r: TestRelay;
  beforeAll(async () => {
    ({ r, sink } = await startRelayAndSink(`version: 1
recipients: [company.com]
agents:
  billing-bot:
    password_hash: "${hashPassword('s3cret-billing')}"
    senders: [billing@company.com]
  support-bot:
    password_hash: "${hashPassword('s3cret-support')}"
    senders: ["*@support.company.com"]
    recipients: [customer@client.example]
`));
  });
  afterAll(() => closeRelayAndSink(r, sink));

  it('requires AUTH when the policy defines agents', async () => {
    const err = await transport(r).sendMail({ from: 'billing@company.com', to: 'colleague@company.com', text: 'x' }).catch((e: Error) => e);
    expect((err as { responseCode?: number }).responseCode).toBe(530);
  });

  it('rejects a wrong password with 535', async () => {
    const err = await transport(r, { auth: { user: 'billing-bot', pass: 'nope' } }).sendMail({ from: 'billing@company.com', to: 'colleague@company.com', text: 'x' }).catch((e: Error) => e);
    expect((err as { responseCode?: number }).responseCode).toBe(535);
  });

  it('wrong passwords are checked off the event loop: a burst of bad AUTHs does not hold up other clients', async () => {
    const attempts = Array.from({ length: 16 }, (_, i) =>
      transport(r, { auth: { user: 'billing-bot', pass: `guess-${i}` } }).sendMail({ from: 'billing@company.com', to: 'colleague@company.com', text: 'x' }).catch((e: { responseCode?: number }) => e.responseCode));
    await new Promise((res) => setTimeout(res, 30)); // the guesses are in flight (each scrypt costs ~50 ms)
    const t0 = performance.now();
    const greeting = await new Promise<string>((resolve, reject) => {
      const s = connect(r.smtpPort, '127.0.0.1');
      s.once('data', (d) => (resolve(d.toString()), s.destroy()));
      s.once('error', reject);
    });
    const waited = performance.now() - t0;
    expect(greeting).toMatch(/^220 /);
    expect(waited).toBeLessThan(300); // with scrypt on the event loop this waits for every guess (~0.8 s); loaded CI machines add ~100 ms
    expect(await Promise.all(attempts)).toEqual(Array(16).fill(535));
  });

  it('each agent sends only as its own senders and to its own recipients', async () => {
    const ok = await transport(r, { auth: { user: 'billing-bot', pass: 's3cret-billing' } }).sendMail({ from: 'billing@company.com', to: 'colleague@company.com', text: 'x' });
    expect(ok.accepted).toEqual(['colleague@company.com']);
    const spoof = await transport(r, { auth: { user: 'billing-bot', pass: 's3cret-billing' } }).sendMail({ from: 'ceo@company.com', to: 'colleague@company.com', text: 'x' }).catch((e: Error) => e);
    expect((spoof as { responseCode?: number }).responseCode).toBe(550);
    expect(String((spoof as { response?: string }).response)).toMatch(/5\.7\.1 Sender <ceo@company\.com> is not allowed for agent billing-bot/);
    // support-bot may write to its customer; billing-bot may not.
    const support = await transport(r, { auth: { user: 'support-bot', pass: 's3cret-support' } }).sendMail({ from: 'help@support.company.com', to: 'customer@client.example', text: 'x' });
    expect(support.accepted).toEqual(['customer@client.example']);
    const billing = await transport(r, { auth: { user: 'billing-bot', pass: 's3cret-billing' } }).sendMail({ from: 'billing@company.com', to: ['customer@client.example', 'colleague@company.com'], text: 'x' });
    expect(billing.rejected).toEqual(['customer@client.example']);
    expect(sink.messages.map((m) => m.to)).toEqual([['colleague@company.com'], ['customer@client.example'], ['colleague@company.com']]);
    const { body } = await adminGet(r, '/api/events?action=delivered&limit=1');
    expect(body.events[0].agent).toBe('billing-bot');
  });
});

describe('upstream failures: never acknowledge what was not delivered', () => {
  it('upstream down → 451 4.4.1, audited as tempfail; upstream back → delivered', async () => {
    const sink = await startSink();
    const port = sink.port;
    await sink.close();
    const r = await startTestRelay({ policy: policy('strip'), env: upstreamEnv(sink) });
    try {
      const err = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', text: 'x' }).catch((e: Error) => e);
      expect((err as { responseCode?: number }).responseCode).toBe(451);
      expect(String((err as { response?: string }).response)).toMatch(/^451 4\.4\.1/);
      const { body } = await adminGet(r, '/api/events?action=tempfail');
      expect(body.events).toHaveLength(1);
      // The client keeps the message and retries; once the upstream is back it is delivered.
      const again = await startSink({ port, caDir: sink.caDir });
      const info = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', text: 'x' });
      expect(info.response).toMatch(/^250 2\.0\.0 Delivered/);
      expect(again.messages).toHaveLength(1);
      await r.close(); // first: its pooled upstream connection would hold the sink open
      await again.close();
    } finally {
      await r.close();
    }
  });

  it('upstream permanent refusal → 554, and an untrusted upstream certificate → 451 (TLS is verified)', async () => {
    const sink = await startSink();
    const other = await startSink(); // a different CA than the one the relay trusts
    const r = await startTestRelay({ policy: policy('strip'), env: { ...upstreamEnv(sink), POSTGUARD_UPSTREAM_CA: other.caFile } });
    try {
      const err = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', text: 'x' }).catch((e: Error) => e);
      expect((err as { responseCode?: number }).responseCode).toBe(451);
      expect(sink.messages).toHaveLength(0);
      const { body } = await adminGet(r, '/api/events?action=tempfail');
      expect(body.events[0].upstream.response).toMatch(/certificate|self[- ]signed|verify/i);
    } finally {
      await r.close();
    }
    const r2 = await startTestRelay({ policy: policy('strip'), env: upstreamEnv(sink) });
    try {
      sink.failWith = 550;
      const err = await transport(r2).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', text: 'x' }).catch((e: Error) => e);
      expect((err as { responseCode?: number }).responseCode).toBe(554);
    } finally {
      await r2.close();
      await sink.close();
      await other.close();
    }
  });
});

describe('capture mode, size limit, seed policy, hot reload', () => {
  it('without an upstream, allowed mail is captured in the outbox and the attacker is still stripped', async () => {
    const r = await startTestRelay({ policy: policy('strip') });
    try {
      const info = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' });
      expect(info.response).toMatch(/^250 2\.0\.0 Captured/);
      const { body } = await adminGet(r, '/api/outbox');
      expect(body.messages).toHaveLength(1);
      expect(body.messages[0].envelope.to).toEqual(['colleague@company.com']);
      const raw = r.relay.store.outboxRaw(body.messages[0].id)!.toString();
      expect(raw).not.toMatch(/giftshop/);
      expect(raw).toMatch(/^Received: /);
    } finally {
      await r.close();
    }
  });

  it('storage failure in capture mode → 451, never 250; the relay recovers', async () => {
    const r = await startTestRelay({ policy: policy('strip') });
    try {
      r.relay.store.db.exec('PRAGMA query_only = ON'); // every write now fails, as on a full or read-only disk
      const err = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', text: 'x' }).catch((e: Error) => e);
      expect((err as { responseCode?: number }).responseCode).toBe(451);
      expect(String((err as { response?: string }).response)).toMatch(/^451 4\.3\.0 Temporary internal error/);
      expect(r.logs.some((l) => l.event === 'smtp_internal_error')).toBe(true);
      r.relay.store.db.exec('PRAGMA query_only = OFF');
      const info = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', text: 'x' });
      expect(info.response).toMatch(/^250 2\.0\.0 Captured/);
      const { body } = await adminGet(r, '/api/outbox');
      expect(body.messages).toHaveLength(1);
    } finally {
      await r.close();
    }
  });

  it('a message over the size limit gets 552', async () => {
    const r = await startTestRelay({ policy: policy('strip'), env: { POSTGUARD_MAX_MESSAGE_SIZE: '2000' } });
    try {
      const err = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', text: 'y'.repeat(5000) }).catch((e: Error) => e);
      expect((err as { responseCode?: number }).responseCode).toBe(552);
    } finally {
      await r.close();
    }
  });

  it('the seed email_security_policy: BCC to the attacker blocks the message; internal mail flows', async () => {
    const seed = readFileSync(new URL('../../policies/seed-postmark-mcp.yaml', import.meta.url), 'utf8');
    await withRelay(seed, async (r, sink) => {
      const err = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' }).catch((e: Error) => e);
      expect((err as { responseCode?: number }).responseCode).toBe(554);
      const ok = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', cc: 'ops@subsidiaries.com', text: 'x' });
      expect(ok.accepted).toHaveLength(2);
      const key = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', text: `token ghp_${'a1B2c3D4e5'.repeat(4)}` }).catch((e: Error) => e);
      expect((key as { responseCode?: number }).responseCode).toBe(554);
      const held = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', text: 'see attached', attachments: [{ filename: 'prod.kdbx', content: Buffer.from([1, 2, 3]) }] });
      expect(held.response).toMatch(/Held for review/);
      expect(sink.messages).toHaveLength(1);
    });
  });

  it('hot reload: a broken file keeps the previous policy and raises an alert; a good file applies', async () => {
    const r = await startTestRelay({ policy: policy('strip') });
    try {
      const version = r.relay.policy.current.version;
      writeFileSync(r.policyFile, 'version: 1\nrecipients: [company.com\nunknown_recipients: allow-everything\n');
      await waitFor(() => r.logs.some((l) => l.alert === 'policy_rejected'), 5000, 'the policy_rejected alert');
      expect(r.relay.policy.current.version).toBe(version);
      const alert = r.logs.find((l) => l.alert === 'policy_rejected')!;
      expect(String((alert.errors as string[])[0])).toMatch(/policy\.yaml:\d+:\d+: /);
      // Still enforcing the old policy.
      const info = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' });
      expect(info.rejected).toEqual([ATTACKER]);
      writeFileSync(r.policyFile, policy('block'));
      await waitFor(() => r.relay.policy.current.version !== version, 5000, 'the new policy');
      const err = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' }).catch((e: Error) => e);
      expect((err as { responseCode?: number }).responseCode).toBe(554);
      const { body } = await adminGet(r, '/api/events?kind=policy');
      expect(body.events.map((e: { action: string }) => e.action)).toEqual(['policy_reloaded', 'policy_rejected']);
    } finally {
      await r.close();
    }
  });
});
