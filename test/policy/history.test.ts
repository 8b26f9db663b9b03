// AgentHistory (per-agent counters for the limits, and the constant-extra-recipient detector) and
// decide() fed with a HistorySnapshot. Pure: clocks are passed in, nothing touches the network.

import { describe, expect, it } from 'vitest';
import { parseMailbox, type Mailbox } from '../../src/core/address.js';
import type { MailIntent, Recipient, RecipientField } from '../../src/core/intent.js';
import { decide, REASONS } from '../../src/policy/decide.js';
import { AgentHistory, EMPTY_HISTORY, type HistorySnapshot } from '../../src/policy/history.js';
import { parsePolicy } from '../../src/policy/load.js';
import { parsePattern } from '../../src/policy/patterns.js';
import { formatPolicyError, type Limits, type Pattern, type Policy } from '../../src/policy/types.js';

// ---------------------------------------------------------------------------------------------
// Builders

function mb(text: string): Mailbox {
  const m = parseMailbox(text);
  if (!m.ok) throw new Error(`${text}: ${m.error}`);
  return m.value;
}

function pattern(text: string): Pattern {
  const p = parsePattern(text);
  if (!p.ok) throw new Error(`${text}: ${p.error}`);
  return p.value;
}

const HOUR = 3_600_000;
const T0 = 1_700_000_000_000;

function limits(over: Partial<Limits> = {}): Limits {
  return {
    messages: { max: 3, windowMs: HOUR, action: 'tempfail' },
    bulkUnknownDomains: { maxDomains: 2, windowMs: HOUR, action: 'block' },
    constantRecipient: { messages: 50, minMessages: 10, share: 0.6, ignore: [] },
    ...over,
  };
}

function policyOf(text: string): Policy {
  const r = parsePolicy('test.yaml', text);
  if (!r.ok) throw new Error(r.errors.map(formatPolicyError).join('\n'));
  return r.policy;
}

const FIELD: Record<'envelope' | 'to' | 'cc', { delivers: boolean; strippable: boolean; source: string }> = {
  envelope: { delivers: true, strippable: true, source: 'RCPT TO' },
  to: { delivers: false, strippable: true, source: 'To header' },
  cc: { delivers: false, strippable: true, source: 'Cc header' },
};

function rcpt(address: string, field: 'envelope' | 'to' | 'cc'): Recipient {
  return { mailbox: mb(address), field: field as RecipientField, ...FIELD[field] };
}

/** An SMTP intent the way the channel builds it: every To/Cc/Bcc in the envelope; To/Cc also as headers. */
function smtp(s: { agent?: string | null; to?: string[]; cc?: string[]; bcc?: string[] }): MailIntent {
  const recipients: Recipient[] = [];
  for (const a of s.to ?? []) recipients.push(rcpt(a, 'envelope'), rcpt(a, 'to'));
  for (const a of s.cc ?? []) recipients.push(rcpt(a, 'envelope'), rcpt(a, 'cc'));
  for (const a of s.bcc ?? []) recipients.push(rcpt(a, 'envelope'));
  return {
    id: 'test',
    channel: 'smtp',
    agent: s.agent ?? null,
    senders: [{ mailbox: mb('agent@company.com'), field: 'mail-from' }],
    recipients,
    subject: '',
    texts: [],
    attachments: [],
    problems: [],
    size: 0,
  };
}

const history = (messages: number, domains: string[] = []): HistorySnapshot => ({ messages, unknownDomains: new Set(domains) });

// ---------------------------------------------------------------------------------------------
// AgentHistory: snapshot / record

describe('AgentHistory.snapshot and record', () => {
  it('an agent never seen has the empty history', () => {
    const h = new AgentHistory();
    const s = h.snapshot('nobody', limits(), T0);
    expect(s.messages).toBe(0);
    expect([...s.unknownDomains]).toEqual([]);
    expect(s).toBe(EMPTY_HISTORY);
  });

  it('counts accepted messages inside the messages window only', () => {
    const h = new AgentHistory();
    const l = limits();
    h.record('a', l, T0, { accepted: true, unknownDomains: [] });
    h.record('a', l, T0 + 1000, { accepted: true, unknownDomains: [] });
    h.record('a', l, T0 + 2000, { accepted: false, unknownDomains: [] }); // refused: not counted
    expect(h.snapshot('a', l, T0 + 3000).messages).toBe(2);
    // The first falls out of the window exactly one hour later; the second a second after that.
    expect(h.snapshot('a', l, T0 + HOUR).messages).toBe(1);
    expect(h.snapshot('a', l, T0 + HOUR + 1000).messages).toBe(0);
  });

  it('counts the distinct unknown domains tried in the bulk window, accepted or not', () => {
    const h = new AgentHistory();
    const l = limits();
    h.record('a', l, T0, { accepted: true, unknownDomains: ['d1.example'] });
    h.record('a', l, T0 + 10, { accepted: false, unknownDomains: ['d2.example', 'd1.example'] });
    h.record('a', l, T0 + 20, { accepted: true, unknownDomains: ['d1.example'] });
    const s = h.snapshot('a', l, T0 + 30);
    expect([...s.unknownDomains].sort()).toEqual(['d1.example', 'd2.example']);
    expect(s.messages).toBe(2);
    // After the window only the newest d1 remains... and then nothing.
    expect([...h.snapshot('a', l, T0 + HOUR + 15).unknownDomains]).toEqual(['d1.example']);
    expect([...h.snapshot('a', l, T0 + HOUR + 25).unknownDomains]).toEqual([]);
  });

  it('keeps each agent (key) separate', () => {
    const h = new AgentHistory();
    const l = limits();
    for (let i = 0; i < 3; i++) h.record('billing-bot', l, T0 + i, { accepted: true, unknownDomains: ['x.example'] });
    expect(h.snapshot('billing-bot', l, T0 + 10).messages).toBe(3);
    expect(h.snapshot('support-bot', l, T0 + 10).messages).toBe(0);
    expect([...h.snapshot('support-bot', l, T0 + 10).unknownDomains]).toEqual([]);
  });

  it('a policy without a messages or bulk limit reports nothing for them', () => {
    const h = new AgentHistory();
    const none = limits({ messages: null, bulkUnknownDomains: null });
    h.record('a', limits(), T0, { accepted: true, unknownDomains: ['d1.example'] });
    const s = h.snapshot('a', none, T0 + 1);
    expect(s.messages).toBe(0);
    expect(s.unknownDomains.size).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// AgentHistory.observe: the constant-extra-recipient detector

describe('AgentHistory.observe (constant extra recipient)', () => {
  const l = limits();
  const DROP = 'drop@partner.example';

  it('flags an address riding along on varying mail, once, at min_messages', () => {
    const h = new AgentHistory();
    const found: { at: number; anomalies: ReturnType<AgentHistory['observe']> }[] = [];
    for (let i = 1; i <= 50; i++) {
      const a = h.observe('agent', l, [mb(`colleague${i}@company.com`)], [mb(DROP)]);
      if (a.length) found.push({ at: i, anomalies: a });
    }
    expect(found).toHaveLength(1);
    expect(found[0]!.at).toBe(10);
    expect(found[0]!.anomalies).toEqual([{ address: DROP, count: 10, window: 10, distinctPrimaries: 10 }]);
  });

  it('does not flag a team thread: the same people on every message', () => {
    const h = new AgentHistory();
    for (let i = 0; i < 60; i++) {
      expect(h.observe('agent', l, [mb('alice@company.com')], [mb('bob@company.com'), mb('carol@company.com')])).toEqual([]);
    }
  });

  it('does not flag an extra that is on less than `share` of the window', () => {
    const h = new AgentHistory();
    for (let i = 0; i < 60; i++) {
      const extras = i % 2 === 0 ? [mb(DROP)] : []; // 50 %, below 60 %
      expect(h.observe('agent', l, [mb(`c${i}@company.com`)], extras)).toEqual([]);
    }
  });

  it('`ignore` exempts an address (and a domain pattern)', () => {
    const h = new AgentHistory();
    const ignoring = limits({ constantRecipient: { messages: 50, minMessages: 10, share: 0.6, ignore: [pattern(DROP), pattern('archive.company.com')] } });
    const out: string[] = [];
    for (let i = 0; i < 30; i++) {
      for (const a of h.observe('agent', ignoring, [mb(`c${i}@company.com`)], [mb(DROP), mb('log@archive.company.com'), mb('phan@giftshop.club')])) out.push(a.address);
    }
    expect(out).toEqual(['phan@giftshop.club']);
  });

  it('off (null) disables the detector', () => {
    const h = new AgentHistory();
    const off = limits({ constantRecipient: null });
    for (let i = 0; i < 30; i++) expect(h.observe('agent', off, [mb(`c${i}@company.com`)], [mb(DROP)])).toEqual([]);
  });

  it('is per agent: two agents each under min_messages do not add up', () => {
    const h = new AgentHistory();
    for (let i = 0; i < 9; i++) {
      expect(h.observe('a', l, [mb(`a${i}@company.com`)], [mb(DROP)])).toEqual([]);
      expect(h.observe('b', l, [mb(`b${i}@company.com`)], [mb(DROP)])).toEqual([]);
    }
    expect(h.observe('a', l, [mb('a9@company.com')], [mb(DROP)]).map((x) => x.address)).toEqual([DROP]);
  });

  it('flags again after the address fell below the threshold and came back', () => {
    const h = new AgentHistory();
    const small = limits({ constantRecipient: { messages: 10, minMessages: 5, share: 0.6, ignore: [] } });
    const hits: number[] = [];
    let n = 0;
    const send = (extra: boolean) => {
      n++;
      if (h.observe('agent', small, [mb(`c${n}@company.com`)], extra ? [mb(DROP)] : []).length) hits.push(n);
    };
    for (let i = 0; i < 5; i++) send(true); // flagged at 5
    // Still above the share with each further message carrying it: no repeat.
    for (let i = 0; i < 3; i++) send(true);
    for (let i = 0; i < 10; i++) send(false); // window clean
    for (let i = 0; i < 6; i++) send(true); // back: 6 of 10 → flagged once more
    expect(hits).toHaveLength(2);
    expect(hits[0]).toBe(5);
    expect(hits[1]!).toBeGreaterThan(18);
  });

  it('the window is bounded by `messages`: a recipient from long ago does not count', () => {
    const h = new AgentHistory();
    const small = limits({ constantRecipient: { messages: 10, minMessages: 5, share: 0.6, ignore: [] } });
    // 4 with the extra, then 10 without, then 4 more with: never 5 inside any window of 10 at 60 %.
    const out: string[] = [];
    let n = 0;
    for (const extra of [...Array(4).fill(true), ...Array(10).fill(false), ...Array(4).fill(true)] as boolean[]) {
      n++;
      for (const a of h.observe('agent', small, [mb(`c${n}@company.com`)], extra ? [mb(DROP)] : [])) out.push(a.address);
    }
    expect(out).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// decide() with a HistorySnapshot

const BASE = `version: 1
recipients: [company.com]
unknown_recipients: strip
`;

describe('decide() with limits.messages', () => {
  const p = (action = 'tempfail', extra = '') => policyOf(`${BASE}limits:\n  messages: {max: 3, window: 1h, action: ${action}}\n${extra}`);

  it('parses the limit', () => {
    expect(p().limits.messages).toEqual({ max: 3, windowMs: HOUR, action: 'tempfail' });
  });

  it('below max: delivered, no limit tripped', () => {
    for (const n of [0, 1, 2]) {
      const d = decide(smtp({ to: ['colleague@company.com'] }), p(), history(n));
      expect(d.action).toBe('deliver');
      expect(d.limits).toEqual([]);
      expect(d.alert).toBe(false);
    }
  });

  it('at max: tempfail, rule limits.messages, the rate reason', () => {
    const d = decide(smtp({ to: ['colleague@company.com'] }), p(), history(3));
    expect(d).toMatchObject({ action: 'tempfail', rule: 'limits.messages', reason: REASONS.rate, limits: ['limits.messages'], alert: true });
    expect(decide(smtp({ to: ['colleague@company.com'] }), p(), history(50)).action).toBe('tempfail');
  });

  it('action block and quarantine escalate accordingly; alert only delivers but reports the limit', () => {
    expect(decide(smtp({ to: ['colleague@company.com'] }), p('block'), history(3))).toMatchObject({ action: 'block', rule: 'limits.messages' });
    expect(decide(smtp({ to: ['colleague@company.com'] }), p('quarantine'), history(3))).toMatchObject({ action: 'quarantine', rule: 'limits.messages' });
    const alertOnly = decide(smtp({ to: ['colleague@company.com'] }), p('alert'), history(3));
    expect(alertOnly).toMatchObject({ action: 'deliver', rule: 'recipients', limits: ['limits.messages'], alert: true });
  });

  it('without a history argument nothing is limited (EMPTY_HISTORY)', () => {
    expect(decide(smtp({ to: ['colleague@company.com'] }), p()).action).toBe('deliver');
  });

  it('a more severe verdict wins over the tempfail', () => {
    const withBlock = policyOf(`version: 1\nrecipients: [company.com]\nunknown_recipients: block\nlimits:\n  messages: {max: 1}\n`);
    const d = decide(smtp({ to: ['colleague@company.com'], bcc: ['phan@giftshop.club'] }), withBlock, history(5));
    expect(d.action).toBe('block');
    expect(d.rule).toBe('unknown_recipients.hidden');
    expect(d.limits).toContain('limits.messages');
  });

  it('monitor mode: delivers, would tempfail', () => {
    const d = decide(smtp({ to: ['colleague@company.com'] }), policyOf(`${BASE}mode: monitor\nlimits:\n  messages: {max: 3}\n`), history(3));
    expect(d).toMatchObject({ action: 'deliver', wouldAction: 'tempfail', mode: 'monitor', rule: 'limits.messages', limits: ['limits.messages'] });
  });
});

describe('decide() with limits.bulk_unknown_domains', () => {
  const p = policyOf(`${BASE}limits:\n  bulk_unknown_domains: {max_domains: 2, window: 1h}\n`);

  it('parses the limit (default action block)', () => {
    expect(p.limits.bulkUnknownDomains).toEqual({ maxDomains: 2, windowMs: HOUR, action: 'block' });
  });

  it('up to max_domains distinct unknown domains: stripped and delivered', () => {
    const d1 = decide(smtp({ to: ['colleague@company.com'], bcc: ['x@d1.example'] }), p, history(0));
    expect(d1).toMatchObject({ action: 'deliver', stripped: ['x@d1.example'], limits: [] });
    const d2 = decide(smtp({ to: ['colleague@company.com'], bcc: ['x@d2.example'] }), p, history(1, ['d1.example']));
    expect(d2).toMatchObject({ action: 'deliver', stripped: ['x@d2.example'], limits: [] });
  });

  it('a third distinct unknown domain: blocked by limits.bulk_unknown_domains', () => {
    const d = decide(smtp({ to: ['colleague@company.com'], bcc: ['x@d3.example'] }), p, history(2, ['d1.example', 'd2.example']));
    expect(d).toMatchObject({ action: 'block', rule: 'limits.bulk_unknown_domains', reason: REASONS.bulk, limits: ['limits.bulk_unknown_domains'] });
  });

  it('three new unknown domains in one message trip it too', () => {
    const d = decide(smtp({ to: ['colleague@company.com'], bcc: ['a@d1.example', 'b@d2.example', 'c@d3.example'] }), p, history(0));
    expect(d.action).toBe('block');
    expect(d.rule).toBe('limits.bulk_unknown_domains');
  });

  it('a domain already tried does not count twice, and a message without unknown recipients never trips it', () => {
    const again = decide(smtp({ to: ['colleague@company.com'], bcc: ['y@d1.example'] }), p, history(2, ['d1.example', 'd2.example']));
    expect(again).toMatchObject({ action: 'deliver', limits: [] });
    const clean = decide(smtp({ to: ['colleague@company.com'] }), p, history(9, ['d1.example', 'd2.example', 'd3.example', 'd4.example']));
    expect(clean).toMatchObject({ action: 'deliver', limits: [] });
  });

  it('the seed policy turns it on with 5 domains (action block)', async () => {
    const { readFileSync } = await import('node:fs');
    const seed = policyOf(readFileSync(new URL('../../policies/seed-postmark-mcp.yaml', import.meta.url), 'utf8'));
    expect(seed.limits.bulkUnknownDomains).toEqual({ maxDomains: 5, windowMs: HOUR, action: 'block' });
    const five = ['d1', 'd2', 'd3', 'd4', 'd5'].map((d) => `${d}.example`);
    expect(decide(smtp({ to: ['colleague@company.com'], cc: ['x@d5.example'] }), seed, history(0, five.slice(0, 4))).limits).toEqual([]);
    expect(decide(smtp({ to: ['colleague@company.com'], cc: ['x@d6.example'] }), seed, history(0, five)).limits).toEqual(['limits.bulk_unknown_domains']);
  });

  it('the default constant_recipient detector is on; `off` turns it off', () => {
    expect(p.limits.constantRecipient).toEqual({ messages: 50, minMessages: 10, share: 0.6, ignore: [] });
    expect(policyOf(`${BASE}limits:\n  constant_recipient: off\n`).limits.constantRecipient).toBeNull();
    const custom = policyOf(`${BASE}limits:\n  constant_recipient: {messages: 20, min_messages: 5, share: 0.5, ignore: [drop@partner.example]}\n`).limits.constantRecipient!;
    expect(custom).toMatchObject({ messages: 20, minMessages: 5, share: 0.5 });
    expect(custom.ignore.map((x) => x.text)).toEqual(['drop@partner.example']);
  });
});
