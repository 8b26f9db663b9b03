// Findings of the security review, each pinned by a test: bounce-path exfiltration, partial upstream
// refusals, oversized headers, secrets in headers, and a message released twice.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, adminGet, closeRelayAndSink, startRelayAndSink, startTestRelay, transport, upstreamEnv, waitFor, type TestRelay } from '../helpers/relay.js';
import { startSink, type Sink } from '../helpers/sink.js';
import { hashPassword } from '../../src/policy/password.js';

const POLICY = (extra = '') => `version: 1
recipients: [company.com]
unknown_recipients: strip
secrets:
  - detectors: all
    action: block
${extra}`;

const code = (e: unknown) => (e as { responseCode?: number }).responseCode;

describe('review findings (sync mode)', () => {
  let r: TestRelay;
  let sink: Sink;
  beforeAll(async () => {
    ({ r, sink } = await startRelayAndSink(POLICY()));
  });
  afterAll(() => closeRelayAndSink(r, sink));

  it('a MAIL FROM outside the allowed recipients is refused when no senders list is set (bounces would carry the message there)', async () => {
    const err = await transport(r).sendMail({ from: 'phan@giftshop.club', to: 'colleague@company.com', text: 'x' }).catch((e) => e);
    expect(code(err)).toBe(550);
    const bounceless = await transport(r).sendMail({ envelope: { from: '', to: ['colleague@company.com'] }, raw: 'From: a@company.com\r\nSubject: x\r\n\r\nx\r\n' });
    expect(bounceless.response).toMatch(/^250 /);
  });

  it('receipt headers naming an unknown address block the message', async () => {
    for (const header of ['Disposition-Notification-To', 'Return-Receipt-To', 'Errors-To']) {
      const err = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', headers: { [header]: 'phan@giftshop.club' }, text: 'x' }).catch((e) => e);
      expect(code(err), header).toBe(554);
    }
    expect(sink.messages.filter((m) => m.raw.toString().includes('giftshop'))).toHaveLength(0);
  });

  it('an upstream that refuses some recipients: 250 for the rest, audited partially_delivered and alerted', async () => {
    sink.refuseRcpt.set('b@company.com', 451).set('c@company.com', 550);
    try {
      const info = await transport(r).sendMail({ from: 'agent@company.com', to: ['a@company.com', 'b@company.com', 'c@company.com'], text: 'x' });
      expect(info.response).toMatch(/Delivered by postguard to 1 of 3 recipients/);
      const ev = await adminGet(r, '/api/events?action=partially_delivered');
      expect(ev.body.events[0].upstream.rejected.map((x: { address: string; code: number }) => [x.address, x.code])).toEqual([['b@company.com', 451], ['c@company.com', 550]]);
      const alerts = await adminGet(r, '/api/alerts?kind=upstream_rejected');
      expect(alerts.body.alerts[0].summary).toMatch(/b@company\.com, c@company\.com/);
    } finally {
      sink.refuseRcpt.clear();
    }
  });

  it('an oversized address header is refused quickly instead of stalling the relay', async () => {
    const to = Array.from({ length: 5000 }, (_, i) => `person${i}@company.com`).join(', ');
    const t0 = performance.now();
    const err = await transport(r).sendMail({ envelope: { from: 'agent@company.com', to: ['colleague@company.com'] }, raw: `From: agent@company.com\r\nTo: ${to}\r\nSubject: x\r\n\r\nx\r\n` }).catch((e) => e);
    expect(code(err)).toBe(554);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('a secret in any header (not only the body) blocks the message', async () => {
    const token = ['ghp_', 'a1B2c3D4e5'.repeat(4)].join('');
    const err = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', headers: { 'X-Debug': `auth ${token}` }, text: 'x' }).catch((e) => e);
    expect(code(err)).toBe(554);
    expect(JSON.stringify((await adminGet(r, '/api/events?action=blocked&limit=1')).body)).not.toContain(token);
  });
});

describe('review findings (queue mode and quarantine)', () => {
  it('queue mode retries only the recipients the upstream refused temporarily', async () => {
    const sink = await startSink();
    const r = await startTestRelay({ policy: POLICY(), env: { ...upstreamEnv(sink), POSTGUARD_DELIVERY: 'queue', POSTGUARD_QUEUE_RETRY_BASE: '50ms', POSTGUARD_QUEUE_RETRY_MAX: '100ms' } });
    try {
      sink.refuseRcpt.set('b@company.com', 451).set('c@company.com', 550);
      const info = await transport(r).sendMail({ from: 'agent@company.com', to: ['a@company.com', 'b@company.com', 'c@company.com'], text: 'x' });
      expect(info.response).toMatch(/^250 2\.0\.0 Queued/);
      await waitFor(() => sink.messages.length === 1, 5000);
      expect(sink.messages[0]!.to).toEqual(['a@company.com']);
      sink.refuseRcpt.delete('b@company.com');
      await waitFor(() => sink.messages.length === 2, 5000);
      expect(sink.messages[1]!.to).toEqual(['b@company.com']); // c was refused for good: not retried
      await new Promise((res) => setTimeout(res, 300));
      expect(sink.messages).toHaveLength(2);
    } finally {
      await r.close();
      await sink.close();
    }
  });

  it('two concurrent releases of one held message deliver it once', async () => {
    const { r, sink } = await startRelayAndSink(POLICY().replace('unknown_recipients: strip', 'unknown_recipients: quarantine'));
    try {
      const held = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: 'phan@giftshop.club', text: 'x' });
      const id = /\[([0-9a-f-]{36})\]$/.exec(held.response)![1]!;
      const release = () => fetch(`http://127.0.0.1:${r.adminPort}/api/quarantine/${id}/release`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }).then((res) => res.status);
      const statuses = (await Promise.all([release(), release(), release()])).sort();
      expect(statuses).toEqual([200, 409, 409]);
      await new Promise((res) => setTimeout(res, 200));
      expect(sink.messages).toHaveLength(1);
      expect(sink.messages[0]!.to).toEqual(['colleague@company.com']);
    } finally {
      await closeRelayAndSink(r, sink);
    }
  });
});

describe('password guessing', () => {
  it('after 20 failed AUTHs in a minute a client gets 454 without a password check, even with the right password', async () => {
    const r = await startTestRelay({ policy: `version: 1\nrecipients: [company.com]\nagents:\n  bot:\n    password_hash: "${hashPassword('right')}"\n` });
    try {
      const attempt = (pass: string) =>
        transport(r, { auth: { user: 'bot', pass } }).sendMail({ from: 'bot@company.com', to: 'colleague@company.com', text: 'x' }).then((i) => Number(i.response.slice(0, 3)), (e) => code(e));
      const guesses = [];
      for (let i = 0; i < 20; i++) guesses.push(await attempt(`guess-${i}`));
      expect(guesses).toEqual(Array(20).fill(535));
      expect(await attempt('right')).toBe(454);
    } finally {
      await r.close();
    }
  });
});
