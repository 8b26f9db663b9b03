import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent, type AgentResult } from '../helpers/agent.js';
import { postJson } from '../helpers/http-client.js';
import type { HttpsSink } from '../helpers/https-sink.js';
import { lastEvent, startProvider, type ProviderRig, expectRefused } from '../helpers/provider.js';
import { adminGet, companyPolicy, type TestRelay } from '../helpers/relay.js';

const HOSTS = ['api.sendgrid.com', 'api.eu.sendgrid.com'];
const AWS = ['AKIA', 'IOSFODNN7', 'EXAMPLE'].join('');

/** @sendgrid/mail in the agent's process; a refusal is rethrown as the SDK prints it (ResponseError#toString). */
function sendMail(r: TestRelay, call: string, setup = ''): Promise<AgentResult> {
  return runAgent(r, `
    const sgMail = (await import('@sendgrid/mail')).default;
    sgMail.setApiKey('SG.test-key');
    ${setup}
    try {
      const out = await ${call};
      const list = Array.isArray(out[0]) ? out : [out];
      return list.map(([res]) => res.statusCode);
    } catch (e) {
      const err = new Error(String(e));
      err.status = e.code;
      err.response = e.response;
      throw err;
    }
  `);
}

const base = `from: 'agent@company.com', subject: 'Q3', text: 'numbers'`;

describe('SendGrid through the proxy, official SDK', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let r: TestRelay;
  let rb: TestRelay;
  beforeAll(async () => {
    ({ sink, r } = rig = await startProvider(HOSTS, companyPolicy(), () => ({ status: 202, body: '' })));
    rb = await rig.relay(companyPolicy({ unknown: 'block' }));
  });
  afterAll(() => rig?.close());

  it('strips the attacker BCC: SendGrid never sees it', async () => {
    sink.requests.length = 0;
    const res = await sendMail(r, `sgMail.send({ to: 'alice@company.com', bcc: 'phan@giftshop.club', ${base} })`);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.value).toEqual([202]);
    expect(sink.requests).toHaveLength(1);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/v3/mail/send');
    expect(sent.headers.authorization).toBe('Bearer SG.test-key');
    expect(sent.body.toString('utf8')).not.toContain('giftshop');
    expect(sent.json.personalizations).toEqual([{ to: [{ email: 'alice@company.com' }] }]);
    expect(sent.json.content).toEqual([{ type: 'text/plain', value: 'numbers' }]);
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ channel: 'http', provider: 'sendgrid', endpoint: 'mail.send', action: 'stripped', status: 202 });
    expect(ev.recipients.stripped).toEqual(['phan@giftshop.club']);
  });

  it('block mode: the SDK call fails with postguard\'s reason and nothing reaches SendGrid', async () => {
    sink.requests.length = 0;
    const res = await sendMail(rb, `sgMail.send({ to: 'alice@company.com', bcc: 'phan@giftshop.club', ${base} })`);
    expect(res.ok).toBe(false);
    expect(res.value.status).toBe(403);
    expect(res.value.message).toContain('postguard: blocked by policy');
    expect(res.value.body.errors[0].message).toContain('postguard');
    expect(sink.requests).toHaveLength(0);
    const ev = await lastEvent(rb);
    expect(ev).toMatchObject({ provider: 'sendgrid', action: 'blocked', status: 403 });
  });

  const twoEnvelopes = `sgMail.send({ from: 'agent@company.com', subject: 'Q3', content: [{ type: 'text/plain', value: 'numbers' }], personalizations: [
    { to: [{ email: 'alice@company.com' }], cc: [{ email: 'carol@company.com' }] },
    { to: [{ email: 'bob@company.com' }], bcc: [{ email: 'phan@giftshop.club' }], customArgs: { n: '1' } },
  ] })`;

  it('attacker only in personalizations[1].bcc: only that personalization is edited', async () => {
    sink.requests.length = 0;
    const res = await sendMail(r, twoEnvelopes);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!;
    expect(sent.body.toString('utf8')).not.toContain('giftshop');
    expect(sent.json.personalizations).toEqual([
      { to: [{ email: 'alice@company.com' }], cc: [{ email: 'carol@company.com' }] },
      { to: [{ email: 'bob@company.com' }], custom_args: { n: '1' } },
    ]);
    const ev = await lastEvent(r);
    expect(ev.action).toBe('stripped');
    expect(ev.messages).toEqual([
      expect.objectContaining({ message: 'personalizations[0]', decision: 'deliver', stripped: [] }),
      expect.objectContaining({ message: 'personalizations[1]', decision: 'deliver', stripped: ['phan@giftshop.club'] }),
    ]);
    expect(ev.recipients.verdicts).toContainEqual(expect.objectContaining({ address: 'phan@giftshop.club', source: 'personalizations[1].bcc[0]', outcome: 'strip' }));
  });

  it('attacker only in personalizations[1].bcc, block mode: the whole request is refused, naming it', async () => {
    sink.requests.length = 0;
    const res = await sendMail(rb, twoEnvelopes);
    expectRefused(res, sink, 'in personalizations[1]');
    expect((await lastEvent(rb)).action).toBe('blocked');
  });

  it('sendMultiple with mail_settings.bcc: the retired BCC setting is stripped from every copy', async () => {
    sink.requests.length = 0;
    const res = await sendMail(r, `sgMail.sendMultiple({ to: ['alice@company.com', 'bob@company.com'], ${base}, mailSettings: { bcc: { enable: true, email: 'phan@giftshop.club' }, sandboxMode: { enable: false } } })`);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!;
    expect(sent.body.toString('utf8')).not.toContain('giftshop');
    expect(sent.json.personalizations.map((p: any) => p.to[0].email)).toEqual(['alice@company.com', 'bob@company.com']);
    expect(sent.json.mail_settings).toEqual({ sandbox_mode: { enable: false } });
    const ev = await lastEvent(r);
    expect(ev.action).toBe('stripped');
    expect(ev.recipients.verdicts).toContainEqual(expect.objectContaining({ source: 'mail_settings.bcc.email', outcome: 'strip' }));
  });

  it('send([...]) sends each message on its own; the EU host is inspected the same way', async () => {
    sink.requests.length = 0;
    const res = await sendMail(r, `sgMail.send([{ to: 'alice@company.com', ${base} }, { to: 'bob@company.com', bcc: 'phan@giftshop.club', ${base} }])`, `sgMail.client.setDataResidency('eu');`);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.value).toEqual([202, 202]);
    expect(sink.requests).toHaveLength(2);
    for (const s of sink.requests) {
      expect(s.headers.host).toBe('api.eu.sendgrid.com');
      expect(s.body.toString('utf8')).not.toContain('giftshop');
    }
    const { body } = await adminGet(r, '/api/events?kind=message&limit=2');
    expect(body.events.map((e: any) => [e.host, e.action]).sort()).toEqual([['api.eu.sendgrid.com', 'forwarded'], ['api.eu.sendgrid.com', 'stripped']]);
  });

  // `To` as well as `to`: how SendGrid matches the key's case is not the relay's to guess.
  it.each(['to', 'To'])('X-SMTPAPI %s in headers{} is delivery-driving and cannot be stripped: blocked even in strip mode', async (key) => {
    sink.requests.length = 0;
    const res = await sendMail(r, `sgMail.send({ to: 'alice@company.com', ${base}, headers: { 'X-SMTPAPI': JSON.stringify({ ${key}: ['phan@giftshop.club'] }) } })`);
    expect(res.ok).toBe(false);
    expect(res.value.status).toBe(403);
    expect(res.value.message).toContain('postguard: blocked by policy');
    expect(sink.requests).toHaveLength(0);
    const ev = await lastEvent(r);
    expect(ev.action).toBe('blocked');
    expect(ev.recipients.verdicts).toContainEqual(expect.objectContaining({ address: 'phan@giftshop.club', field: 'x-smtpapi', outcome: 'block' }));
  });

  it('S22: X-SMTPAPI naming `to` twice (last-wins elsewhere) is refused, not read one way', async () => {
    sink.requests.length = 0;
    const smtpapi = '{"to":["alice@company.com"],"to":["phan@giftshop.club"]}';
    const res = await sendMail(r, `sgMail.send({ to: 'alice@company.com', ${base}, headers: { 'X-SMTPAPI': ${JSON.stringify(smtpapi)} } })`);
    expectRefused(res, sink, 'postguard: blocked by policy');
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ action: 'blocked', rule: 'input' });
    expect(ev.problems).toContainEqual(expect.stringMatching(/^header\.x-smtpapi: headers\.X-SMTPAPI: duplicate key "to"/));
  });

  it('X-SMTPAPI filters (the bcc app takes an address) are refused', async () => {
    sink.requests.length = 0;
    const smtpapi = JSON.stringify({ filters: { bcc: { settings: { enable: 1, email: 'phan@giftshop.club' } } } });
    const res = await sendMail(r, `sgMail.send({ to: 'alice@company.com', ${base}, headers: { 'X-SMTPAPI': ${JSON.stringify(smtpapi)} } })`);
    expectRefused(res, sink);
    expect(await lastEvent(r)).toMatchObject({ action: 'blocked', rule: 'input' });
  });

  it('a Bcc header inside headers{} is a recipient: stripped from the mail headers', async () => {
    sink.requests.length = 0;
    const res = await sendMail(r, `sgMail.send({ to: 'alice@company.com', ${base}, headers: { Bcc: 'phan@giftshop.club', 'X-Ref': 'q3' } })`);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!;
    // (@sendgrid/mail also copies `headers` onto the HTTP request itself; SendGrid ignores those.)
    expect(sent.body.toString('utf8')).not.toContain('giftshop');
    expect(sent.json.headers).toEqual({ 'X-Ref': 'q3' });
    expect((await lastEvent(r)).recipients.stripped).toEqual(['phan@giftshop.club']);
  });

  it('reply_to at an unknown domain is blocked (a reply address is never rewritten)', async () => {
    sink.requests.length = 0;
    const res = await sendMail(r, `sgMail.send({ to: 'alice@company.com', replyTo: 'phan@giftshop.club', ${base} })`);
    expectRefused(res, sink, 'postguard: blocked by policy');
    const ev = await lastEvent(r);
    expect(ev.action).toBe('blocked');
    expect(ev.recipients.verdicts).toContainEqual(expect.objectContaining({ address: 'phan@giftshop.club', field: 'reply-to', outcome: 'block' }));
  });

  it('a reply_to a substitution tag would rewrite is refused', async () => {
    sink.requests.length = 0;
    const res = await sendMail(r, `sgMail.send({ to: 'alice@company.com', replyTo: 'rt@company.com', ${base}, substitutionWrappers: ['', ''], substitutions: { 'rt@company.com': 'phan@giftshop.club' } })`);
    expectRefused(res, sink, 'postguard: blocked by policy');
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ action: 'blocked', rule: 'input' });
    expect(ev.problems[0]).toMatch(/^request\.substituted_reply_to: personalizations\[0\]/);
  });

  it('template data and attachments are read by the secret detectors', async () => {
    sink.requests.length = 0;
    const attachment = Buffer.from(`aws_access_key_id=${AWS}\n`).toString('base64');
    const res = await sendMail(r, `sgMail.send({ to: 'alice@company.com', ${base}, attachments: [{ content: '${attachment}', filename: 'creds.txt', type: 'text/plain' }] })`);
    expect(res.ok).toBe(false);
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(r)).toMatchObject({ action: 'blocked', rule: 'secrets[0]' });
    const tpl = await sendMail(r, `sgMail.send({ to: 'alice@company.com', from: 'agent@company.com', templateId: 'd-123', dynamicTemplateData: { key: '${AWS}' } })`);
    expectRefused(tpl, sink, 'postguard: blocked by policy');
    expect(await lastEvent(r)).toMatchObject({ action: 'blocked', rule: 'secrets[0]' });
  });

  it('PATCH /v3/mail_settings/forward_bounce (bounces, with the message, to an address) is refused', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, `
      const client = (await import('@sendgrid/client')).default;
      client.setApiKey('SG.test-key');
      try {
        return await client.request({ method: 'PATCH', url: '/v3/mail_settings/forward_bounce', body: { enabled: true, email: 'phan@giftshop.club' } });
      } catch (e) { const err = new Error(String(e)); err.status = e.code; throw err; }
    `);
    expect(res.ok).toBe(false);
    expect(res.value.status).toBe(403);
    expect(res.value.message).toContain('postguard: PATCH /v3/mail_settings/forward_bounce is not a send endpoint');
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(r)).toMatchObject({ provider: 'sendgrid', action: 'blocked', rule: 'http.endpoints', path: '/v3/mail_settings/forward_bounce' });
  });

  it('an unknown top-level key is refused with 403 and nothing is forwarded', async () => {
    sink.requests.length = 0;
    const json = JSON.stringify({
      personalizations: [{ to: [{ email: 'alice@company.com' }] }], from: { email: 'agent@company.com' }, subject: 'Q3',
      content: [{ type: 'text/plain', value: 'numbers' }], bcc_list: [{ email: 'phan@giftshop.club' }],
    });
    const res = await postJson(r, 'https://api.sendgrid.com/v3/mail/send', json, ['authorization: Bearer SG.test-key']);
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body).errors[0].message).toContain('postguard: blocked by policy: request field the relay does not know');
    expect(sink.requests).toHaveLength(0);
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ action: 'blocked', rule: 'input' });
    expect(ev.problems).toEqual(['request.unknown_field: body: unknown field "bcc_list"']);
  });
});
