// What no single message shows, over real SMTP: the per-agent message limit (451 4.7.1), the bulk
// unknown-domain limit, and the constant-extra-recipient (silent BCC) detector.

import { readFileSync } from 'node:fs';
import type { SendMailOptions } from 'nodemailer';
import { describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/policy/password.js';
import { adminGet, alerts, idOf, send, transport, withRelay, type Failure, type Info, type TestRelay } from '../helpers/relay.js';

const ATTACKER = 'phan@giftshop.club';
const DROP = 'drop@partner.example';

function isFailure(x: Info | Failure): x is Failure {
  return x instanceof Error;
}

/** n messages over one pooled connection, in order; failures are returned, not thrown. */
async function sendMany(r: TestRelay, n: number, mail: (i: number) => SendMailOptions): Promise<(Info | Failure)[]> {
  const t = transport(r, { pool: true, maxConnections: 1, maxMessages: Infinity });
  const out: (Info | Failure)[] = [];
  try {
    for (let i = 0; i < n; i++) out.push(await t.sendMail(mail(i)).then((x) => x as Info, (e: Failure) => e));
  } finally {
    t.close();
  }
  return out;
}

async function events(r: TestRelay, action: string): Promise<any[]> {
  const { body } = await adminGet(r, `/api/events?limit=1000&action=${action}`);
  return body.events as any[];
}

// ---------------------------------------------------------------------------------------------

describe('limits.messages', () => {
  const limited = (extra = '') => `version: 1
recipients: [company.com]
unknown_recipients: strip
limits:
  messages: {max: 3, window: 1h${extra}}
`;

  it('messages 1–3 are delivered, the 4th gets 451 4.7.1: audited limited, alert limited', async () => {
    await withRelay(limited(), async (r, sink) => {
      const results: (Info | Failure)[] = [];
      for (let i = 1; i <= 4; i++) results.push(await send(r, { from: 'agent@company.com', to: 'colleague@company.com', subject: `m${i}`, text: 'x' }));
      for (const ok of results.slice(0, 3)) {
        expect(isFailure(ok), String((ok as Failure).message)).toBe(false);
        expect((ok as Info).response).toMatch(/^250 2\.0\.0 Delivered by postguard/);
      }
      const fourth = results[3] as Failure;
      expect(isFailure(fourth)).toBe(true);
      expect(fourth.responseCode).toBe(451);
      expect(fourth.response).toMatch(/^451 4\.7\.1 Try again later: message rate limit for this agent reached \(rule limits\.messages\) \[[0-9a-f-]{36}\]$/);
      expect(sink.messages.map((m) => /^Subject: (.*)$/m.exec(m.raw.toString())![1])).toEqual(['m1', 'm2', 'm3']);

      const ev = await events(r, 'limited');
      expect(ev).toHaveLength(1);
      expect(ev[0]).toMatchObject({ id: idOf(fourth.response!), kind: 'message', decision: 'tempfail', rule: 'limits.messages', reason: 'message rate limit for this agent reached', limits: ['limits.messages'] });
      const a = await alerts(r, 'limited');
      expect(a).toHaveLength(1);
      expect(a[0]).toMatchObject({ kind: 'limited', event_id: ev[0].id, channel: 'smtp', severity: 'normal' });
      expect(a[0].summary).toMatch(/deferred \(451\).*rule limits\.messages/);
      expect(a[0].details.limits).toEqual(['limits.messages']);

      // A refused message is not counted, but the window still holds three: still 451.
      const fifth = (await send(r, { from: 'agent@company.com', to: 'colleague@company.com', subject: 'm5', text: 'x' })) as Failure;
      expect(fifth.responseCode).toBe(451);
      expect(sink.messages).toHaveLength(3);
    });
  });

  it('the budget is per agent (SMTP AUTH): each agent gets its own', async () => {
    const policy = `version: 1
recipients: [company.com]
agents:
  bot-a:
    password_hash: "${hashPassword('pass-a-0123')}"
  bot-b:
    password_hash: "${hashPassword('pass-b-0123')}"
limits:
  messages: {max: 2, window: 1h}
`;
    await withRelay(policy, async (r, sink) => {
      const as = (user: string) => ({ auth: { user, pass: user === 'bot-a' ? 'pass-a-0123' : 'pass-b-0123' } });
      const codes = async (user: string): Promise<(number | string)[]> => {
        const out: (number | string)[] = [];
        for (let i = 0; i < 3; i++) {
          const res = await send(r, { from: `${user}@company.com`, to: 'colleague@company.com', subject: `${user} ${i}`, text: 'x' }, as(user));
          out.push(isFailure(res) ? (res.responseCode ?? res.message) : 250);
        }
        return out;
      };
      expect(await codes('bot-a')).toEqual([250, 250, 451]);
      expect(await codes('bot-b')).toEqual([250, 250, 451]);
      expect(sink.messages).toHaveLength(4);
      const ev = await events(r, 'limited');
      expect(ev.map((e) => e.agent).sort()).toEqual(['bot-a', 'bot-b']);
      const a = await alerts(r, 'limited');
      expect(a.map((x) => x.agent).sort()).toEqual(['bot-a', 'bot-b']);
      expect(a.find((x) => x.agent === 'bot-a').summary).toContain('agent bot-a');
    });
  });

  it('action block → 554 5.7.1, audited blocked, alert blocked', async () => {
    await withRelay(limited(', action: block'), async (r, sink) => {
      const results: (Info | Failure)[] = [];
      for (let i = 1; i <= 4; i++) results.push(await send(r, { from: 'agent@company.com', to: 'colleague@company.com', subject: `m${i}`, text: 'x' }));
      expect(results.slice(0, 3).every((x) => !isFailure(x))).toBe(true);
      const fourth = results[3] as Failure;
      expect(fourth.responseCode).toBe(554);
      expect(fourth.response).toMatch(/^554 5\.7\.1 Message refused by postguard policy \(message rate limit for this agent reached; rule limits\.messages\)/);
      expect(sink.messages).toHaveLength(3);
      const ev = await events(r, 'blocked');
      expect(ev).toHaveLength(1);
      expect(ev[0]).toMatchObject({ decision: 'block', rule: 'limits.messages' });
      expect(await events(r, 'limited')).toEqual([]);
      const a = await alerts(r, 'blocked');
      expect(a).toHaveLength(1);
      expect(a[0].event_id).toBe(ev[0].id);
    });
  });
});

describe('limits.bulk_unknown_domains', () => {
  it('strip mode, max_domains 2: d1 and d2 are stripped and pass, a third distinct unknown domain blocks (554)', async () => {
    const policy = `version: 1
recipients: [company.com]
unknown_recipients: strip
limits:
  bulk_unknown_domains: {max_domains: 2, window: 1h}
`;
    await withRelay(policy, async (r, sink) => {
      const mail = (domain: string) => ({ from: 'agent@company.com', to: 'colleague@company.com', bcc: `someone@${domain}`, subject: `to ${domain}`, text: 'x' });
      for (const d of ['d1.example', 'd2.example']) {
        const res = await send(r, mail(d));
        expect(isFailure(res), String((res as Failure).message)).toBe(false);
        expect((res as Info).accepted).toEqual(['colleague@company.com']);
        expect((res as Info).rejected).toEqual([`someone@${d}`]);
      }
      expect(sink.messages.map((m) => m.to)).toEqual([['colleague@company.com'], ['colleague@company.com']]);

      const third = (await send(r, mail('d3.example'))) as Failure;
      expect(third.responseCode).toBe(554);
      expect(third.response).toMatch(/^554 5\.7\.1 .*too many unknown recipient domains for this agent; rule limits\.bulk_unknown_domains/);
      expect(sink.messages).toHaveLength(2);
      const blocked = await events(r, 'blocked');
      expect(blocked).toHaveLength(1);
      expect(blocked[0]).toMatchObject({ id: idOf(third.response!), rule: 'limits.bulk_unknown_domains', reason: 'too many unknown recipient domains for this agent', limits: ['limits.bulk_unknown_domains'] });
      const a = await alerts(r, 'blocked');
      expect(a).toHaveLength(1);
      expect(a[0]).toMatchObject({ event_id: blocked[0].id });
      expect(a[0].details.limits).toEqual(['limits.bulk_unknown_domains']);
      expect(a[0].summary).toContain('someone@d3.example');
      // The strips before it raised their own alerts.
      expect(await alerts(r, 'stripped')).toHaveLength(2);

      // Mail without unknown recipients still flows; any unknown domain is now over the limit.
      const clean = await send(r, { from: 'agent@company.com', to: 'colleague@company.com', subject: 'clean', text: 'x' });
      expect(isFailure(clean)).toBe(false);
      expect(sink.messages).toHaveLength(3);
      const again = (await send(r, mail('d1.example'))) as Failure;
      expect(again.responseCode).toBe(554);
      expect(sink.messages).toHaveLength(3);
    });
  });

  it('the seed policy has it on with 5 domains: the 6th distinct unknown domain trips limits.bulk_unknown_domains', async () => {
    const seed = readFileSync(new URL('../../policies/seed-postmark-mcp.yaml', import.meta.url), 'utf8');
    await withRelay(seed, async (r, sink) => {
      expect(r.relay.policy.current.limits.bulkUnknownDomains).toEqual({ maxDomains: 5, windowMs: 3_600_000, action: 'block' });
      const ids: string[] = [];
      for (let i = 1; i <= 6; i++) {
        const res = (await send(r, { from: 'agent@company.com', to: 'colleague@company.com', cc: `x@d${i}.example`, subject: `d${i}`, text: 'x' })) as Failure;
        expect(res.responseCode).toBe(554); // external forwarding is blocked by the seed anyway
        ids.push(idOf(res.response!));
      }
      expect(sink.messages).toHaveLength(0);
      for (const [i, id] of ids.entries()) {
        const { body } = await adminGet(r, `/api/events/${id}`);
        expect(body.action).toBe('blocked');
        expect(body.limits, `message ${i + 1}`).toEqual(i < 5 ? [] : ['limits.bulk_unknown_domains']);
      }
      const a = (await alerts(r, 'blocked')).find((x) => x.event_id === ids[5]);
      expect(a.details.limits).toEqual(['limits.bulk_unknown_domains']);
      expect(a.summary).toContain('limits: limits.bulk_unknown_domains');
      expect(a.severity).toBe('high'); // the seed's alert_priority
      // Internal mail still flows.
      const ok = await send(r, { from: 'agent@company.com', to: 'colleague@company.com', cc: 'ops@subsidiaries.com', text: 'x' });
      expect(isFailure(ok)).toBe(false);
      expect(sink.messages).toHaveLength(1);
    });
  });
});

describe('constant extra recipient (the silent-BCC signature)', () => {
  const allowed = (extra = '', mode = 'enforce') => `version: 1
mode: ${mode}
recipients: [company.com, partner.example]
unknown_recipients: strip
${extra}`;
  const rideAlong = (extraRcpt: string) => (i: number): SendMailOptions => ({ from: 'agent@company.com', to: `colleague${i}@company.com`, bcc: extraRcpt, subject: `report ${i}`, text: `hello ${i}` });

  it('an allowed address BCCed onto 50 varying messages: all delivered, one alert naming it', async () => {
    await withRelay(allowed(), async (r, sink) => {
      const results = await sendMany(r, 50, rideAlong(DROP));
      expect(results.filter(isFailure).map((e) => e.message)).toEqual([]);
      expect(results.every((x) => /^250 2\.0\.0 Delivered/.test((x as Info).response))).toBe(true);
      expect(sink.messages).toHaveLength(50);
      sink.messages.forEach((m, i) => expect(m.to).toEqual([`colleague${i}@company.com`, DROP]));

      const found = await alerts(r, 'constant_extra_recipient');
      expect(found).toHaveLength(1);
      expect(found[0]).toMatchObject({ kind: 'constant_extra_recipient', severity: 'high', channel: 'smtp', agent: null });
      expect(found[0].summary).toContain(DROP);
      expect(found[0].summary).toMatch(/silent-BCC/);
      expect(found[0].details).toMatchObject({ address: DROP, count: 10, window: 10, distinctPrimaries: 10 });
      // Raised on the 10th message (min_messages), pointing at its audit record.
      expect(found[0].event_id).toBe(idOf((results[9] as Info).response));
      expect((await adminGet(r, `/api/events/${found[0].event_id}`)).body).toMatchObject({ action: 'delivered', decision: 'deliver' });
      // Nothing else was alert-worthy.
      expect((await alerts(r)).map((a) => a.kind)).toEqual(['constant_extra_recipient']);
      expect(r.logs.filter((l) => l.event === 'alert' && l.alert === 'constant_extra_recipient')).toHaveLength(1);
    });
  }, 60_000);

  it('a team thread (alice, cc bob and carol, 50 times) raises no such alert', async () => {
    await withRelay(allowed(), async (r, sink) => {
      const results = await sendMany(r, 50, (i) => ({ from: 'agent@company.com', to: 'alice@company.com', cc: ['bob@company.com', 'carol@company.com'], subject: `Re: plan (${i})`, text: 'ok' }));
      expect(results.filter(isFailure)).toEqual([]);
      expect(sink.messages).toHaveLength(50);
      expect(sink.messages.every((m) => m.to.join() === 'alice@company.com,bob@company.com,carol@company.com')).toBe(true);
      expect(await alerts(r, 'constant_extra_recipient')).toEqual([]);
      expect(await alerts(r)).toEqual([]);
    });
  }, 60_000);

  it('strip mode: the attacker refused at RCPT on every message still trips it (alert only)', async () => {
    await withRelay(allowed(), async (r, sink) => {
      const results = await sendMany(r, 50, rideAlong(ATTACKER));
      expect(results.filter(isFailure)).toEqual([]);
      expect(results.every((x) => (x as Info).rejected.join() === ATTACKER)).toBe(true);
      expect(sink.messages).toHaveLength(50);
      expect(sink.messages.every((m) => !m.to.includes(ATTACKER))).toBe(true);
      const found = await alerts(r, 'constant_extra_recipient');
      expect(found).toHaveLength(1);
      expect(found[0].details.address).toBe(ATTACKER);
      expect(await alerts(r, 'stripped')).toHaveLength(50);
    });
  }, 60_000);

  it('monitor mode: the attacker as the constant extra is delivered, and the alert fires too', async () => {
    const policy = `version: 1
mode: monitor
recipients: [company.com]
unknown_recipients: block
`;
    await withRelay(policy, async (r, sink) => {
      const results = await sendMany(r, 50, rideAlong(ATTACKER));
      expect(results.filter(isFailure)).toEqual([]);
      expect(sink.messages).toHaveLength(50);
      sink.messages.forEach((m, i) => expect(m.to).toEqual([`colleague${i}@company.com`, ATTACKER]));
      const found = await alerts(r, 'constant_extra_recipient');
      expect(found).toHaveLength(1);
      expect(found[0].details).toMatchObject({ address: ATTACKER, count: 10, window: 10 });
      expect(found[0].summary).toContain(ATTACKER);
      expect(await alerts(r, 'would_block')).toHaveLength(50);
    });
  }, 60_000);

  it('`constant_recipient: off` disables it', async () => {
    await withRelay(allowed('limits:\n  constant_recipient: off\n'), async (r, sink) => {
      const results = await sendMany(r, 50, rideAlong(DROP));
      expect(results.filter(isFailure)).toEqual([]);
      expect(sink.messages).toHaveLength(50);
      expect(await alerts(r)).toEqual([]);
    });
  }, 60_000);

  it('`ignore` exempts an address; others are still watched', async () => {
    await withRelay(allowed(`limits:\n  constant_recipient:\n    ignore: [${DROP}]\n`), async (r, sink) => {
      const results = await sendMany(r, 30, (i) => ({ ...rideAlong(DROP)(i), bcc: [DROP, 'audit@partner.example'] }));
      expect(results.filter(isFailure)).toEqual([]);
      expect(sink.messages).toHaveLength(30);
      const found = await alerts(r, 'constant_extra_recipient');
      expect(found.map((a) => a.details.address)).toEqual(['audit@partner.example']);
    });
  }, 60_000);

  it('a lower min_messages / share fires earlier', async () => {
    await withRelay(allowed('limits:\n  constant_recipient: {messages: 20, min_messages: 5, share: 0.5}\n'), async (r) => {
      const results = await sendMany(r, 8, rideAlong(DROP));
      expect(results.filter(isFailure)).toEqual([]);
      const found = await alerts(r, 'constant_extra_recipient');
      expect(found).toHaveLength(1);
      expect(found[0].event_id).toBe(idOf((results[4] as Info).response));
      expect(found[0].details).toMatchObject({ address: DROP, count: 5, window: 5 });
    });
  });
});
