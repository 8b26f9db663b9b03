// Monitor mode end to end: nothing changes on the wire (every recipient the agent asked for gets
// the message), but the audit names what enforce mode would have done and an alert is raised.

import { writeFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { adminGet, alertFor, companyPolicy, closeRelayAndSink, idOf, startRelayAndSink, transport, type TestRelay } from '../helpers/relay.js';
import type { Sink } from '../helpers/sink.js';

const ATTACKER = 'phan@giftshop.club';
const AWS = ['AKIA', 'IOSFODNN7', 'EXAMPLE'].join('');

const policy = (unknown: string, mode = 'monitor') => companyPolicy({ unknown, mode });

describe('monitor mode', () => {
  let sink: Sink;
  let r: TestRelay;
  beforeAll(async () => {
    ({ r, sink } = await startRelayAndSink(policy('block')));
  });
  afterAll(() => closeRelayAndSink(r, sink));
  afterEach(() => {
    sink.messages.length = 0;
  });

  const reload = (text: string) => {
    writeFileSync(r.policyFile, text);
    expect(r.relay.policy.reload()).toEqual([]);
  };

  it('unknown_recipients block: the Bcc to the attacker is delivered to both; audited deliver / would block; alert would_block', async () => {
    reload(policy('block'));
    expect(r.relay.policy.current.mode).toBe('monitor');
    const info = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, subject: 'numbers', text: 'hello' });
    expect(info.accepted).toEqual(['colleague@company.com', ATTACKER]);
    expect(info.rejected).toEqual([]);
    expect(info.response).toMatch(/^250 2\.0\.0 Delivered by postguard/);
    expect(sink.messages).toHaveLength(1);
    expect(sink.messages[0]!.to).toEqual(['colleague@company.com', ATTACKER]);
    expect(sink.messages[0]!.raw.toString()).toContain('Subject: numbers');

    const id = idOf(info.response);
    const ev = (await adminGet(r, `/api/events/${id}`)).body;
    expect(ev).toMatchObject({ kind: 'message', action: 'delivered', decision: 'deliver', would_action: 'block', mode: 'monitor', rule: 'unknown_recipients.hidden', reason: 'unknown recipient' });
    expect(ev.recipients.kept).toEqual(['colleague@company.com', ATTACKER]);
    expect(ev.recipients.stripped).toEqual([]);
    expect(ev.recipients.verdicts).toContainEqual(expect.objectContaining({ address: ATTACKER, hidden: true, allowedBy: null, outcome: 'block' }));

    const a = await alertFor(r, id);
    expect(a).toHaveLength(1);
    expect(a[0]).toMatchObject({ kind: 'would_block', channel: 'smtp', event_id: id });
    expect(a[0].summary).toMatch(/^monitor mode: would have blocked a smtp message/);
    expect(a[0].summary).toContain(ATTACKER);
    expect(a[0].details).toMatchObject({ mode: 'monitor', rule: 'unknown_recipients.hidden', unknown_recipients: [ATTACKER] });
    // Nothing was actually blocked.
    expect((await adminGet(r, '/api/events?action=blocked')).body.events).toEqual([]);
    expect((await adminGet(r, '/api/alerts?kind=blocked')).body.alerts).toEqual([]);
  });

  it('unknown_recipients strip: RCPT accepted (no 550), delivered to both; would_strip lists the attacker; alert would_strip', async () => {
    reload(policy('strip'));
    const info = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, subject: 'strip?', text: 'hello' });
    expect(info.accepted).toEqual(['colleague@company.com', ATTACKER]);
    expect(info.rejected).toEqual([]);
    expect(sink.messages).toHaveLength(1);
    expect(sink.messages[0]!.to).toEqual(['colleague@company.com', ATTACKER]);

    const id = idOf(info.response);
    const ev = (await adminGet(r, `/api/events/${id}`)).body;
    expect(ev).toMatchObject({ action: 'delivered', decision: 'deliver', would_action: 'deliver', mode: 'monitor', reason: 'unknown recipients stripped' });
    expect(ev.recipients.would_strip).toEqual([ATTACKER]);
    expect(ev.recipients.stripped).toEqual([]);
    expect(ev.recipients.kept).toEqual(['colleague@company.com', ATTACKER]);

    const a = await alertFor(r, id);
    expect(a).toHaveLength(1);
    expect(a[0]).toMatchObject({ kind: 'would_strip', event_id: id });
    expect(a[0].summary).toMatch(/^monitor mode: would have stripped recipients of a smtp message/);
    expect(a[0].details.stripped).toEqual([ATTACKER]);

    // No transaction ended with a refusal either.
    expect((await adminGet(r, '/api/events?action=rejected')).body.events).toEqual([]);
  });

  it('a secret: delivered, alert would_block with the masked finding, never the secret', async () => {
    reload(policy('strip'));
    const info = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', subject: 'deploy', text: `use ${AWS} for prod` });
    expect(info.response).toMatch(/^250 2\.0\.0 Delivered/);
    expect(sink.messages).toHaveLength(1);
    expect(sink.messages[0]!.raw.toString()).toContain(AWS); // delivered as sent: monitor mode
    const id = idOf(info.response);
    const ev = (await adminGet(r, `/api/events/${id}`)).body;
    expect(ev).toMatchObject({ decision: 'deliver', would_action: 'block', rule: 'secrets[0]', reason: 'secret or credential in content' });
    expect(ev.detectors).toEqual([expect.objectContaining({ detector: 'aws', where: 'text', masked: 'AKIA…(20 chars)' })]);
    const a = await alertFor(r, id);
    expect(a).toHaveLength(1);
    expect(a[0].kind).toBe('would_block');
    expect(a[0].details.detectors).toEqual([{ rule: 'secrets[0]', detector: 'aws', where: 'text', masked: 'AKIA…(20 chars)' }]);
    expect(JSON.stringify(a[0])).not.toContain(AWS);
    expect(JSON.stringify(ev)).not.toContain(AWS);
    expect(r.logs.some((l) => JSON.stringify(l).includes(AWS))).toBe(false);
  });

  it('unknown_recipients quarantine / a quarantine attachment rule: delivered, nothing held, alert would_quarantine', async () => {
    reload(policy('quarantine'));
    const info = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' });
    expect(info.response).toMatch(/^250 2\.0\.0 Delivered/);
    expect(sink.messages.at(-1)!.to).toEqual(['colleague@company.com', ATTACKER]);
    const a = await alertFor(r, idOf(info.response));
    expect(a.map((x) => x.kind)).toEqual(['would_quarantine']);

    const att = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', text: 'db', attachments: [{ filename: 'prod.kdbx', content: Buffer.from([1, 2, 3]) }] });
    expect(att.response).toMatch(/^250 2\.0\.0 Delivered/);
    expect((await alertFor(r, idOf(att.response))).map((x) => x.kind)).toEqual(['would_quarantine']);
    expect((await adminGet(r, `/api/events/${idOf(att.response)}`)).body).toMatchObject({ decision: 'deliver', would_action: 'quarantine', rule: 'attachments[0]' });
    expect(sink.messages).toHaveLength(2);
    expect((await adminGet(r, '/api/quarantine')).body.messages).toEqual([]);
  });

  it('an allowed message raises no alert and is audited without a would-action', async () => {
    reload(policy('block'));
    const info = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', cc: 'boss@company.com', text: 'fine' });
    expect(info.accepted).toEqual(['colleague@company.com', 'boss@company.com']);
    const id = idOf(info.response);
    expect((await adminGet(r, `/api/events/${id}`)).body).toMatchObject({ decision: 'deliver', would_action: 'deliver', mode: 'monitor', reason: 'all recipients allowed' });
    expect(await alertFor(r, id)).toEqual([]);
  });

  it('switching back to enforce applies at once: the same message is now refused', async () => {
    reload(policy('block', 'enforce'));
    const err = await transport(r).sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, text: 'x' }).catch((e: Error & { responseCode?: number }) => e);
    expect((err as { responseCode?: number }).responseCode).toBe(554);
    expect(sink.messages).toHaveLength(0);
    reload(policy('block'));
  });
});
