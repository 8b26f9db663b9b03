// Postmark through the proxy with Postmark's own SDK (and curl for raw shapes), against a fake
// api.postmarkapp.com. The postmark-mcp backdoor in person: a silent Bcc on every send.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent } from '../helpers/agent.js';
import { postJson } from '../helpers/http-client.js';
import type { HttpsSink } from '../helpers/https-sink.js';
import { lastEvent, startProvider, type ProviderRig, expectRefused } from '../helpers/provider.js';
import { adminGet, companyPolicy, type TestRelay } from '../helpers/relay.js';

const HOST = 'api.postmarkapp.com';
const URL = `https://${HOST}`;
const ok = () => ({ body: { To: 'x', SubmittedAt: new Date().toISOString(), MessageID: 'm-1', ErrorCode: 0, Message: 'OK' } });

const sdk = (call: string) => `
  const { ServerClient } = await import('postmark');
  const c = new ServerClient('server-token');
  ${call}`;

describe('Postmark, strip mode', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let r: TestRelay;
  beforeAll(async () => ({ sink, r } = rig = await startProvider([HOST], companyPolicy(), (req) => (req.url === '/email/batch' || req.url === '/email/batchWithTemplates' ? { body: [{ ErrorCode: 0, MessageID: 'b-1' }] } : ok()))));
  afterAll(() => rig?.close());

  it('strips the attacker BCC: the provider never sees it', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, sdk(`return await c.sendEmail({ From: 'agent@company.com', To: 'alice@company.com', Bcc: 'phan@giftshop.club', Subject: 'Q3', TextBody: 'numbers' });`));
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.value.MessageID).toBe('m-1');
    expect(sink.requests).toHaveLength(1);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/email');
    expect(sent.headers['x-postmark-server-token']).toBe('server-token');
    expect(sent.body.toString()).not.toContain('giftshop');
    expect(sent.json).toMatchObject({ From: 'agent@company.com', To: 'alice@company.com', Subject: 'Q3', TextBody: 'numbers' });
    expect(Number(sent.headers['content-length'])).toBe(sent.body.length);
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ channel: 'http', provider: 'postmark', endpoint: 'email', action: 'stripped', status: 200, agent: null });
    expect(ev.recipients.stripped).toEqual(['phan@giftshop.club']);
    expect(ev.recipients.kept).toEqual(['alice@company.com']);
  });

  it('keeps a Bcc to an allowed address and passes an all-allowed send unchanged', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, sdk(`return await c.sendEmail({ From: 'agent@company.com', To: 'alice@company.com', Cc: 'Bob <bob@company.com>', Bcc: 'audit@company.com', Subject: 'ok', HtmlBody: '<b>hi</b>' });`));
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests[0]!.json).toMatchObject({ To: 'alice@company.com', Cc: 'Bob <bob@company.com>', Bcc: 'audit@company.com' });
    expect((await lastEvent(r)).action).toBe('forwarded');
  });

  it('strips one address out of a comma list, keeping the others with their names', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, sdk(`return await c.sendEmail({ From: 'agent@company.com', To: '"Alice A." <alice@company.com>, phan@giftshop.club, bob@company.com', Subject: 's', TextBody: 't' });`));
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests[0]!.json.To).toBe('"Alice A." <alice@company.com>, bob@company.com');
  });

  it('binds keys case-insensitively as Postmark does: a lower-case `bcc` is stripped too', async () => {
    sink.requests.length = 0;
    const res = await postJson(r, `${URL}/email`, JSON.stringify({ From: 'agent@company.com', To: 'alice@company.com', bcc: 'phan@giftshop.club', Subject: 's', TextBody: 't' }));
    expect(res.status).toBe(200);
    expect(sink.requests[0]!.body.toString()).not.toContain('giftshop');
  });

  it('strips a Bcc carried as a custom header (Headers[])', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, sdk(`return await c.sendEmail({ From: 'agent@company.com', To: 'alice@company.com', Subject: 's', TextBody: 't', Headers: [{ Name: 'X-Trace', Value: '1' }, { Name: 'Bcc', Value: 'phan@giftshop.club' }] });`));
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests[0]!.json.Headers).toEqual([{ Name: 'X-Trace', Value: '1' }]);
  });

  it('batch: only the message with the attacker is edited', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, sdk(`return await c.sendEmailBatch([
      { From: 'agent@company.com', To: 'alice@company.com', Subject: 'one', TextBody: '1' },
      { From: 'agent@company.com', To: 'bob@company.com', Bcc: 'phan@giftshop.club', Subject: 'two', TextBody: '2' },
    ]);`));
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/email/batch');
    expect(sent.json).toHaveLength(2);
    expect(sent.json[0]).toMatchObject({ To: 'alice@company.com', Subject: 'one' });
    expect(sent.json[1]).toMatchObject({ To: 'bob@company.com', Subject: 'two' });
    expect(sent.body.toString()).not.toContain('giftshop');
    const ev = await lastEvent(r);
    expect(ev.endpoint).toBe('email.batch');
    expect(ev.messages.map((m: { stripped: string[] }) => m.stripped)).toEqual([[], ['phan@giftshop.club']]);
  });

  it('withTemplate and batchWithTemplates: recipients stripped, template model scanned', async () => {
    sink.requests.length = 0;
    const one = await runAgent(r, sdk(`return await c.sendEmailWithTemplate({ From: 'agent@company.com', To: 'alice@company.com', Bcc: 'phan@giftshop.club', TemplateAlias: 'welcome', TemplateModel: { name: 'Alice' } });`));
    expect(one.ok, JSON.stringify(one)).toBe(true);
    expect(sink.requests[0]!.url).toBe('/email/withTemplate');
    expect(sink.requests[0]!.json).toMatchObject({ To: 'alice@company.com', TemplateAlias: 'welcome' });
    expect(sink.requests[0]!.body.toString()).not.toContain('giftshop');
    const batch = await runAgent(r, sdk(`return await c.sendEmailBatchWithTemplates([
      { From: 'agent@company.com', To: 'alice@company.com', TemplateAlias: 'w', TemplateModel: {} },
      { From: 'agent@company.com', To: 'bob@company.com', Cc: 'phan@giftshop.club', TemplateAlias: 'w', TemplateModel: {} },
    ]);`));
    expect(batch.ok, JSON.stringify(batch)).toBe(true);
    expect(sink.requests[1]!.url).toBe('/email/batchWithTemplates');
    expect(sink.requests[1]!.json.Messages[1].To).toBe('bob@company.com');
    expect(sink.requests[1]!.body.toString()).not.toContain('giftshop');
    const secret = await runAgent(r, sdk(`return await c.sendEmailWithTemplate({ From: 'agent@company.com', To: 'alice@company.com', TemplateAlias: 'w', TemplateModel: { key: 'AKIAIOSFODNN7EXAMPLE' } });`));
    expect(secret.ok).toBe(false);
    expect(secret.value.message).toMatch(/postguard: blocked by policy: secret or credential in content/);
    expect(sink.requests).toHaveLength(2);
  });

  it('bulk: per-entry recipients stripped; shared content is read once for every entry', async () => {
    sink.requests.length = 0;
    const res = await postJson(r, `${URL}/email/bulk`, JSON.stringify({
      From: 'agent@company.com', Subject: 'news {{n}}', TextBody: 'hi', MessageStream: 'broadcast',
      Messages: [{ To: 'alice@company.com', TemplateModel: { n: 1 } }, { To: 'bob@company.com', Bcc: 'phan@giftshop.club', TemplateModel: { n: 2 } }],
    }));
    expect(res.status).toBe(200);
    expect(sink.requests[0]!.json.Messages).toEqual([{ To: 'alice@company.com', TemplateModel: { n: 1 } }, { To: 'bob@company.com', Bcc: '', TemplateModel: { n: 2 } }]);
  });

  it('blocks an unknown ReplyTo, a secret in the body, and an unknown field, whatever the strip mode', async () => {
    sink.requests.length = 0;
    const reply = await runAgent(r, sdk(`return await c.sendEmail({ From: 'agent@company.com', To: 'alice@company.com', ReplyTo: 'phan@giftshop.club', Subject: 's', TextBody: 't' });`));
    expect(reply.ok).toBe(false);
    expect(reply.value.message).toMatch(/postguard: blocked by policy: unknown recipient/);
    const secret = await runAgent(r, sdk(`return await c.sendEmail({ From: 'agent@company.com', To: 'alice@company.com', Subject: 's', TextBody: 'token ghp_1234567890abcdefghijklmnopqrstuvwxyzAB' });`));
    expect(secret.ok).toBe(false);
    expect(secret.value.message).toContain('secret or credential');
    const unknown = await postJson(r, `${URL}/email`, JSON.stringify({ From: 'agent@company.com', To: 'alice@company.com', Subject: 's', TextBody: 't', Recipients: ['phan@giftshop.club'] }));
    expect(unknown.status).toBe(403);
    expect(JSON.parse(unknown.body)).toMatchObject({ ErrorCode: 1403 });
    expect(JSON.parse(unknown.body).Message).toMatch(/request field the relay does not know/);
    expect(sink.requests).toHaveLength(0);
  });

  it('refuses writes to endpoints it does not know (account settings), lets reads through', async () => {
    sink.requests.length = 0;
    const write = await postJson(r, `${URL}/webhooks`, JSON.stringify({ Url: 'https://evil.example/hook' }));
    expect(write.status).toBe(403);
    expect(JSON.parse(write.body).Message).toMatch(/not a send endpoint postguard knows for Postmark/);
    const read = await runAgent(r, sdk(`return await c.getDeliveryStatistics();`));
    expect(read.ok, JSON.stringify(read)).toBe(true);
    expect(sink.requests.map((q) => `${q.method} ${q.url}`)).toEqual(['GET /deliveryStats']);
    const ev = (await adminGet(r, '/api/events?kind=http&limit=1')).body.events[0];
    expect(ev).toMatchObject({ action: 'passed', method: 'GET', path: '/deliveryStats', status: 200 });
  });
});

describe('Postmark, block mode', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let r: TestRelay;
  beforeAll(async () => ({ sink, r } = rig = await startProvider([HOST], companyPolicy({ unknown: 'block' }), ok)));
  afterAll(() => rig?.close());

  it('rejects the send with a 403 in Postmark\'s error shape, which the SDK reports', async () => {
    const res = await runAgent(r, sdk(`return await c.sendEmail({ From: 'agent@company.com', To: 'alice@company.com', Bcc: 'phan@giftshop.club', Subject: 'Q3', TextBody: 'numbers' });`));
    expect(res.ok).toBe(false);
    expect(res.value.status).toBe(403);
    expect(res.value.message).toMatch(/^postguard: blocked by policy: unknown recipient \(rule unknown_recipients\.hidden\) \[[0-9a-f-]{36}\]$/);
    expect(sink.requests).toHaveLength(0);
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ provider: 'postmark', action: 'blocked', status: 403, rule: 'unknown_recipients.hidden' });
    const alerts = (await adminGet(r, `/api/alerts?limit=5`)).body.alerts;
    expect(alerts.some((a: { event_id: string; kind: string }) => a.event_id === ev.id && a.kind === 'blocked')).toBe(true);
  });

  it('batch with one bad message: the whole request is refused and the message named', async () => {
    const res = await runAgent(r, sdk(`return await c.sendEmailBatch([
      { From: 'agent@company.com', To: 'alice@company.com', Subject: 'one', TextBody: '1' },
      { From: 'agent@company.com', To: 'bob@company.com', Bcc: 'phan@giftshop.club', Subject: 'two', TextBody: '2' },
    ]);`));
    expectRefused(res, sink, 'in batch[1]');
  });
});
