// SparkPost through the proxy, against a fake api.sparkpost.com. There is no maintained official
// Node SDK (the `sparkpost` package is old and built on `request`), so the agent here is curl, as
// SparkPost's own examples are.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postJson } from '../helpers/http-client.js';
import type { HttpsSink, SinkRequest } from '../helpers/https-sink.js';
import { lastEvent, startProvider, type ProviderRig } from '../helpers/provider.js';
import { companyPolicy, type TestRelay } from '../helpers/relay.js';

const HOSTS = ['api.sparkpost.com', 'api.eu.sparkpost.com', 'acme.api.e.sparkpost.com'];
const URL = `https://${HOSTS[0]}/api/v1/transmissions`;
const AUTH = ['authorization: sp-api-key'];

const content = { from: { email: 'agent@company.com', name: 'Agent' }, subject: 'Q3', text: 'numbers' };
const alice = { address: { email: 'alice@company.com', name: 'Alice' } };
const transmit = (r: TestRelay, body: unknown, url = URL) => postJson(r, url, JSON.stringify(body), AUTH);

const respond = (req: SinkRequest) => ({ body: { results: { total_rejected_recipients: 0, total_accepted_recipients: req.json?.recipients?.length ?? 0, id: '11668787484950529' } } });

describe('SparkPost, strip mode', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let r: TestRelay;
  beforeAll(async () => ({ sink, r } = rig = await startProvider(HOSTS, companyPolicy(), respond)));
  afterAll(() => rig?.close());

  it('the classic hidden BCC (a second recipient shown as header_to alice) is stripped', async () => {
    sink.requests.length = 0;
    const res = await transmit(r, { recipients: [alice, { address: { email: 'phan@giftshop.club', header_to: 'alice@company.com' } }], content });
    expect(res.status, res.body).toBe(200);
    expect(JSON.parse(res.body).results.total_accepted_recipients).toBe(1);
    expect(sink.requests).toHaveLength(1);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/api/v1/transmissions');
    expect(sent.headers.authorization).toBe('sp-api-key');
    expect(sent.body.toString()).not.toContain('giftshop');
    expect(sent.json).toEqual({ recipients: [alice], content });
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ channel: 'http', provider: 'sparkpost', endpoint: 'transmissions', action: 'stripped', status: 200 });
    expect(ev.recipients.stripped).toEqual(['phan@giftshop.club']);
    expect(ev.recipients.kept).toEqual(['alice@company.com']);
    expect(ev.recipients.verdicts.find((v: { address: string }) => v.address === 'phan@giftshop.club')).toMatchObject({ hidden: true, outcome: 'strip', source: 'recipients[1].address.email' });
  });

  it('an address string entry, an attacker in header_to and in a CC header are each removed', async () => {
    sink.requests.length = 0;
    const res = await transmit(r, {
      recipients: [alice, 'phan@giftshop.club', { address: { email: 'bob@company.com', header_to: 'alice@company.com, phan@giftshop.club' } }].map((x) => (typeof x === 'string' ? { address: x } : x)),
      content: { ...content, headers: { CC: 'bob@company.com, phan@giftshop.club', 'X-Ref': '1' } },
    }, `${URL}?num_rcpt_errors=3`);
    expect(res.status, res.body).toBe(200);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/api/v1/transmissions?num_rcpt_errors=3');
    expect(sent.body.toString()).not.toContain('giftshop');
    expect(sent.json.recipients).toEqual([alice, { address: { email: 'bob@company.com', header_to: 'alice@company.com' } }]);
    expect(sent.json.content.headers).toEqual({ CC: 'bob@company.com', 'X-Ref': '1' });
  });

  it('email_rfc822: a Bcc header in the raw message is taken out, the rest sent byte for byte', async () => {
    sink.requests.length = 0;
    const raw = 'From: agent@company.com\r\nTo: alice@company.com\r\nBcc: phan@giftshop.club\r\nSubject: Q3\r\nContent-Type: text/plain\r\n\r\nnumbers\r\n';
    const res = await transmit(r, { recipients: [alice], content: { email_rfc822: raw } });
    expect(res.status, res.body).toBe(200);
    const sent = sink.requests[0]!.json;
    expect(sent.content.email_rfc822).toBe('From: agent@company.com\r\nTo: alice@company.com\r\nSubject: Q3\r\nContent-Type: text/plain\r\n\r\nnumbers\r\n');
    const ev = await lastEvent(r);
    expect(ev.action).toBe('stripped');
    expect(ev.recipients.stripped).toEqual(['phan@giftshop.club']);
  });

  it('return_path (where bounces, with the message, go) on an unknown domain is removed', async () => {
    sink.requests.length = 0;
    const res = await transmit(r, { return_path: 'bounces@giftshop.club', recipients: [{ ...alice, return_path: 'x@giftshop.club' }], content, campaign_id: 'q3', options: { open_tracking: false, transactional: true } });
    expect(res.status, res.body).toBe(200);
    const sent = sink.requests[0]!.json;
    expect(sent).toEqual({ recipients: [alice], content, campaign_id: 'q3', options: { open_tracking: false, transactional: true } });
  });

  it('recipients: {list_id} (a stored list postguard cannot see) is refused, strip mode or not', async () => {
    sink.requests.length = 0;
    const res = await transmit(r, { recipients: { list_id: 'christmas_sales' }, content });
    expect(res.status).toBe(403);
    const err = JSON.parse(res.body).errors[0];
    expect(err).toMatchObject({ code: '403' });
    expect(err.message).toMatch(/^postguard: blocked by policy/);
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(r)).toMatchObject({ provider: 'sparkpost', action: 'blocked', status: 403 });
  });

  it('refuses an unknown top-level key, an X-MSYS-API header and a secret in an attachment; nothing forwarded', async () => {
    sink.requests.length = 0;
    const unknown = await transmit(r, { recipients: [alice], content, archive: [{ email: 'phan@giftshop.club' }] });
    expect(unknown.status).toBe(403);
    expect(JSON.parse(unknown.body).errors[0].message).toMatch(/request field the relay does not know/);
    const msys = await transmit(r, { recipients: [alice], content: { ...content, headers: { 'X-MSYS-API': '{"archive":[{"email":"phan@giftshop.club"}]}' } } });
    expect(msys.status).toBe(403);
    const file = await transmit(r, { recipients: [alice], content: { ...content, attachments: [{ name: 'k.txt', type: 'text/plain', data: Buffer.from('AKIAIOSFODNN7EXAMPLE').toString('base64') }] } });
    expect(file.status).toBe(403);
    expect(JSON.parse(file.body).errors[0].message).toContain('secret or credential');
    expect(sink.requests).toHaveLength(0);
  });

  it('the EU host and an Enterprise tenant host are inspected the same way', async () => {
    sink.requests.length = 0;
    const body = { recipients: [alice, { address: { email: 'phan@giftshop.club', header_to: 'alice@company.com' } }], content };
    for (const host of HOSTS.slice(1)) expect((await transmit(r, body, `https://${host}/api/v1/transmissions`)).status).toBe(200);
    expect(sink.requests.map((q) => q.headers.host)).toEqual(HOSTS.slice(1));
    for (const q of sink.requests) expect(q.body.toString()).not.toContain('giftshop');
  });
});

describe('SparkPost, block mode', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let r: TestRelay;
  beforeAll(async () => ({ sink, r } = rig = await startProvider(HOSTS, companyPolicy({ unknown: 'block' }), respond)));
  afterAll(() => rig?.close());

  it('refuses the hidden BCC with a 403 in SparkPost\'s error shape; nothing forwarded', async () => {
    const res = await transmit(r, { recipients: [alice, { address: { email: 'phan@giftshop.club', header_to: 'alice@company.com' } }], content });
    expect(res.status).toBe(403);
    const body = JSON.parse(res.body);
    expect(body.errors).toHaveLength(1);
    expect(body.errors[0].message).toMatch(/^postguard: blocked by policy: unknown recipient \(rule unknown_recipients\.hidden\) \[[0-9a-f-]{36}\]$/);
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(r)).toMatchObject({ provider: 'sparkpost', action: 'blocked', status: 403, rule: 'unknown_recipients.hidden' });
  });

  it('an attacker named only in header_to (display) is a visible unknown recipient: refused', async () => {
    const res = await transmit(r, { recipients: [{ address: { email: 'alice@company.com', header_to: 'phan@giftshop.club' } }], content });
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body).errors[0].message).toMatch(/unknown recipient \(rule unknown_recipients\.visible\)/);
    expect(sink.requests).toHaveLength(0);
  });
});
