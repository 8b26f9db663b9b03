// Mailjet through the proxy with Mailjet's own SDK (node-mailjet, axios: it sends absolute-form
// https:// requests to HTTPS_PROXY) and curl for raw shapes, against a fake api.mailjet.com.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent } from '../helpers/agent.js';
import { postJson } from '../helpers/http-client.js';
import type { HttpsSink, SinkRequest } from '../helpers/https-sink.js';
import { lastEvent, startProvider, type ProviderRig, expectRefused } from '../helpers/provider.js';
import { companyPolicy, type TestRelay } from '../helpers/relay.js';

const HOSTS = ['api.mailjet.com', 'api.us.mailjet.com'];
const URL = `https://${HOSTS[0]}`;

/**
 * `body` is the request body (a JS expression); the SDK call's `{response, body}` is cut to `body`.
 * axios does its own HTTPS_PROXY handling (absolute-form requests to the proxy), which Node 24's
 * NODE_USE_ENV_PROXY=1 agent then refuses (the Host header is not the proxy's authority): an
 * agent running node-mailjet runs without it, as here.
 */
const send = (body: string, version = 'v3.1', host = '') => `
  const Mailjet = (await import('node-mailjet')).default;
  const mj = Mailjet.apiConnect('pub-key', 'priv-key'${host ? `, { config: { host: '${host}' } }` : ''});
  return (await mj.post('send', { version: '${version}' }).request(${body})).body;`;

const msg = (extra = '') => `{ From: { Email: 'agent@company.com', Name: 'Agent' }, To: [{ Email: 'alice@company.com' }], Subject: 'Q3', TextPart: 'numbers'${extra ? `, ${extra}` : ''} }`;

const mailjet = (r: TestRelay, script: string) => runAgent(r, script, { NODE_USE_ENV_PROXY: '' });

const respond = (req: SinkRequest) => (req.url.startsWith('/v3.1/')
  ? { body: { Messages: (req.json?.Messages ?? []).map(() => ({ Status: 'success', To: [{ Email: 'alice@company.com', MessageID: 1 }] })) } }
  : { body: { Sent: [{ Email: 'alice@company.com', MessageID: 1 }] } });

describe('Mailjet, strip mode', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let r: TestRelay;
  beforeAll(async () => ({ sink, r } = rig = await startProvider(HOSTS, companyPolicy(), respond)));
  afterAll(() => rig?.close());

  it('v3.1: strips the attacker BCC, the provider never sees it', async () => {
    sink.requests.length = 0;
    const res = await mailjet(r, send(`{ Messages: [${msg(`Bcc: [{ Email: 'phan@giftshop.club', Name: 'P' }]`)}] }`));
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.value.Messages[0].Status).toBe('success');
    expect(sink.requests).toHaveLength(1);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/v3.1/send');
    expect(sent.headers.authorization).toBe(`Basic ${Buffer.from('pub-key:priv-key').toString('base64')}`);
    expect(sent.body.toString()).not.toContain('giftshop');
    expect(sent.json).toEqual({ Messages: [{ From: { Email: 'agent@company.com', Name: 'Agent' }, To: [{ Email: 'alice@company.com' }], Subject: 'Q3', TextPart: 'numbers' }] });
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ channel: 'http', provider: 'mailjet', endpoint: 'send.v3.1', action: 'stripped', status: 200 });
    expect(ev.recipients.stripped).toEqual(['phan@giftshop.club']);
    expect(ev.recipients.kept).toEqual(['alice@company.com']);
  });

  it('Globals.Bcc reaches every message: stripped from Globals, both messages go on', async () => {
    sink.requests.length = 0;
    const res = await mailjet(r, send(`{
      Globals: { From: { Email: 'agent@company.com' }, Bcc: [{ Email: 'audit@company.com' }, { Email: 'phan@giftshop.club' }], Headers: { 'X-Campaign': 'q3' } },
      Messages: [{ To: [{ Email: 'alice@company.com' }], Subject: 'one', TextPart: '1' }, { To: [{ Email: 'bob@company.com' }], Subject: 'two', TextPart: '2' }],
    }`));
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!;
    expect(sent.body.toString()).not.toContain('giftshop');
    expect(sent.json.Globals).toEqual({ From: { Email: 'agent@company.com' }, Bcc: [{ Email: 'audit@company.com' }], Headers: { 'X-Campaign': 'q3' } });
    expect(sent.json.Messages).toEqual([{ To: [{ Email: 'alice@company.com' }], Subject: 'one', TextPart: '1' }, { To: [{ Email: 'bob@company.com' }], Subject: 'two', TextPart: '2' }]);
    const ev = await lastEvent(r);
    expect(ev.action).toBe('stripped');
    expect(ev.messages.map((m: { kept: string[] }) => m.kept)).toEqual([['alice@company.com', 'audit@company.com'], ['bob@company.com', 'audit@company.com']]);
    expect(ev.messages.map((m: { stripped: string[] }) => m.stripped)).toEqual([['phan@giftshop.club'], ['phan@giftshop.club']]);
  });

  it('the attacker in Messages[1].Bcc only: only that message is edited', async () => {
    sink.requests.length = 0;
    const res = await mailjet(r, send(`{ Messages: [${msg(`Bcc: [{ Email: 'audit@company.com' }]`)}, ${msg(`Bcc: [{ Email: 'phan@giftshop.club' }]`)}] }`));
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!.json;
    expect(sent.Messages[0].Bcc).toEqual([{ Email: 'audit@company.com' }]);
    expect(sent.Messages[1]).not.toHaveProperty('Bcc');
    expect(sent.Messages[1].To).toEqual([{ Email: 'alice@company.com' }]);
    expect((await lastEvent(r)).messages.map((m: { stripped: string[] }) => m.stripped)).toEqual([[], ['phan@giftshop.club']]);
  });

  it('a Bcc in Headers and a TemplateErrorReporting address to the attacker are both removed', async () => {
    sink.requests.length = 0;
    const res = await mailjet(r, send(`{ Messages: [${msg(`Headers: { 'X-Ref': '7', Bcc: 'phan@giftshop.club' }, TemplateID: 42, TemplateLanguage: true, Variables: { n: 1 }, TemplateErrorReporting: { Email: 'phan@giftshop.club' }`)}] }`));
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!;
    expect(sent.body.toString()).not.toContain('giftshop');
    expect(sent.json.Messages[0].Headers).toEqual({ 'X-Ref': '7' });
    expect(sent.json.Messages[0]).not.toHaveProperty('TemplateErrorReporting');
    expect(sent.json.Messages[0]).toMatchObject({ TemplateID: 42, Variables: { n: 1 } });
  });

  it('attachments are decoded and scanned; the US host is inspected the same way', async () => {
    sink.requests.length = 0;
    const clean = await mailjet(r, send(`{ Messages: [${msg(`Attachments: [{ ContentType: 'text/plain', Filename: 'a.txt', Base64Content: Buffer.from('hello').toString('base64') }]`)}] }`, 'v3.1', 'api.us.mailjet.com'));
    expect(clean.ok, JSON.stringify(clean)).toBe(true);
    expect(sink.requests[0]!.headers.host).toBe('api.us.mailjet.com');
    const secret = await mailjet(r, send(`{ Messages: [${msg(`Attachments: [{ ContentType: 'text/plain', Filename: 'k.txt', Base64Content: Buffer.from('AKIAIOSFODNN7EXAMPLE').toString('base64') }]`)}] }`));
    expect(secret.ok).toBe(false);
    expect(secret.value.message).toContain('postguard: blocked by policy: secret or credential in content');
    expect(sink.requests).toHaveLength(1);
  });

  it('v3 send: Recipients[] and header-style To/Bcc strings, the attacker stripped from each', async () => {
    sink.requests.length = 0;
    const res = await mailjet(r, send(`{ FromEmail: 'agent@company.com', FromName: 'Agent', Subject: 's', 'Text-part': 't', Recipients: [{ Email: 'alice@company.com' }, { Email: 'phan@giftshop.club' }] }`, 'v3'));
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.value.Sent).toHaveLength(1);
    expect(sink.requests[0]!.url).toBe('/v3/send');
    expect(sink.requests[0]!.json.Recipients).toEqual([{ Email: 'alice@company.com' }]);
    const strings = await mailjet(r, send(`{ FromEmail: 'agent@company.com', Subject: 's', 'Html-part': '<p>t</p>', To: '"Alice" <alice@company.com>, phan@giftshop.club', Bcc: 'phan@giftshop.club', Headers: { 'Reply-To': 'alice@company.com' } }`, 'v3'));
    expect(strings.ok, JSON.stringify(strings)).toBe(true);
    const sent = sink.requests[1]!;
    expect(sent.body.toString()).not.toContain('giftshop');
    expect(sent.json.To).toBe('"Alice" <alice@company.com>');
    expect(sent.json).not.toHaveProperty('Bcc');
    expect((await lastEvent(r)).endpoint).toBe('send.v3');
  });

  it('an unknown top-level key (v3.1 and v3) is refused with 403 and nothing is forwarded', async () => {
    sink.requests.length = 0;
    const auth = [`authorization: Basic ${Buffer.from('pub-key:priv-key').toString('base64')}`];
    const v31 = await postJson(r, `${URL}/v3.1/send`, JSON.stringify({ Messages: [{ From: { Email: 'agent@company.com' }, To: [{ Email: 'alice@company.com' }], TextPart: 't' }], Archive: [{ Email: 'phan@giftshop.club' }] }), auth);
    expect(v31.status).toBe(403);
    const body = JSON.parse(v31.body);
    expect(body).toMatchObject({ StatusCode: 403, ErrorCode: 'postguard-403' });
    expect(body.ErrorIdentifier).toMatch(/^[0-9a-f-]{36}$/);
    expect(body.ErrorMessage).toMatch(/request field the relay does not know/);
    const v3 = await postJson(r, `${URL}/v3/send`, JSON.stringify({ FromEmail: 'agent@company.com', Recipients: [{ Email: 'alice@company.com' }], 'Text-part': 't', 'Mj-Archive': 'phan@giftshop.club' }), auth);
    expect(v3.status).toBe(403);
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(r)).toMatchObject({ provider: 'mailjet', endpoint: 'send.v3', action: 'blocked', status: 403 });
  });

  it("Mailjet's own X-MJ-* headers as custom headers are refused (X-MJ-TemplateErrorReporting mails a copy to an address)", async () => {
    sink.requests.length = 0;
    const auth = [`authorization: Basic ${Buffer.from('pub-key:priv-key').toString('base64')}`];
    const res = await postJson(r, `${URL}/v3.1/send`, JSON.stringify({ Messages: [{ From: { Email: 'agent@company.com' }, To: [{ Email: 'alice@company.com' }], TextPart: 't', Headers: { 'X-MJ-TemplateErrorReporting': 'phan@giftshop.club' } }] }), auth);
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body).ErrorMessage).toMatch(/postguard: blocked by policy/);
    expect(sink.requests).toHaveLength(0);
    expect((await lastEvent(r)).problems.join('\n')).toMatch(/X-MJ-TemplateErrorReporting header is not accepted/);
  });
});

describe('Mailjet, block mode', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let r: TestRelay;
  beforeAll(async () => ({ sink, r } = rig = await startProvider(HOSTS, companyPolicy({ unknown: 'block' }), respond)));
  afterAll(() => rig?.close());

  it('refuses the send with a 403 in Mailjet\'s error shape, which the SDK throws', async () => {
    const res = await mailjet(r, send(`{ Messages: [${msg(`Bcc: [{ Email: 'phan@giftshop.club' }]`)}] }`));
    expect(res.ok).toBe(false);
    expect(res.value.status).toBe(403);
    expect(res.value.message).toMatch(/^Unsuccessful: Status Code: "403" Message: "postguard: blocked by policy: unknown recipient \(rule unknown_recipients\.hidden\) \[[0-9a-f-]{36}\]"$/);
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(r)).toMatchObject({ provider: 'mailjet', action: 'blocked', status: 403, rule: 'unknown_recipients.hidden' });
  });

  it('the attacker in Messages[1].Bcc only: the whole request is refused and the message named', async () => {
    const res = await mailjet(r, send(`{ Messages: [${msg()}, ${msg(`Bcc: [{ Email: 'phan@giftshop.club' }]`)}] }`));
    expectRefused(res, sink, 'in Messages[1]');
  });

  it('the attacker in Globals.Bcc: refused, named on the first message it reaches', async () => {
    const res = await mailjet(r, send(`{ Globals: { Bcc: [{ Email: 'phan@giftshop.club' }] }, Messages: [${msg()}, ${msg()}] }`));
    expect(res.ok).toBe(false);
    expect(res.value.message).toMatch(/postguard: blocked by policy: unknown recipient/);
    expect(res.value.message).toContain('in Messages[0]');
    expect(sink.requests).toHaveLength(0);
    const ev = await lastEvent(r);
    expect(ev.messages.map((m: { decision: string }) => m.decision)).toEqual(['block', 'block']);
  });
});
