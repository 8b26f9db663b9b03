// Resend through the proxy with Resend's own SDK (and curl for raw shapes), against a fake
// api.resend.com. The SDK returns `{data, error}` instead of throwing: a refusal is `error`.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent } from '../helpers/agent.js';
import { postJson } from '../helpers/http-client.js';
import type { HttpsSink, SinkRequest } from '../helpers/https-sink.js';
import { lastEvent, startProvider, type ProviderRig } from '../helpers/provider.js';
import { companyPolicy, type TestRelay } from '../helpers/relay.js';

const HOST = 'api.resend.com';
const URL = `https://${HOST}`;

const sdk = (call: string) => `
  const { Resend } = await import('resend');
  const resend = new Resend('re_123');
  ${call}`;

const respond = (req: SinkRequest) => (req.url === '/emails/batch' ? { body: { data: (req.json as unknown[]).map((_, i) => ({ id: `b-${i}` })) } } : { body: { id: 'e-1' } });

describe('Resend, strip mode', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let r: TestRelay;
  beforeAll(async () => ({ sink, r } = rig = await startProvider([HOST], companyPolicy(), respond)));
  afterAll(() => rig?.close());

  it('strips the attacker BCC: the provider never sees it', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, sdk(`return await resend.emails.send({ from: 'agent@company.com', to: 'alice@company.com', bcc: 'phan@giftshop.club', subject: 'Q3', text: 'numbers' }, { idempotencyKey: 'k-1' });`));
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.value).toMatchObject({ data: { id: 'e-1' }, error: null });
    expect(sink.requests).toHaveLength(1);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/emails');
    expect(sent.headers.authorization).toBe('Bearer re_123');
    expect(sent.headers['idempotency-key']).toBe('k-1');
    expect(sent.body.toString()).not.toContain('giftshop');
    expect(sent.json).toEqual({ from: 'agent@company.com', to: 'alice@company.com', subject: 'Q3', text: 'numbers' });
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ channel: 'http', provider: 'resend', endpoint: 'emails', action: 'stripped', status: 200 });
    expect(ev.recipients.stripped).toEqual(['phan@giftshop.club']);
    expect(ev.recipients.kept).toEqual(['alice@company.com']);
  });

  it('S24: one `to` string holding a comma list is read as two recipients, and only the attacker goes', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, sdk(`return await resend.emails.send({ from: 'agent@company.com', to: 'alice@company.com, phan@giftshop.club', subject: 's', html: '<p>x</p>' });`));
    expect(res.ok && res.value.error === null, JSON.stringify(res)).toBe(true);
    expect(sink.requests[0]!.json.to).toBe('alice@company.com');
    expect((await lastEvent(r)).recipients.stripped).toEqual(['phan@giftshop.club']);
  });

  it('arrays keep their form: the attacker is taken out of a cc array and a comma list inside one entry', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, sdk(`return await resend.emails.send({ from: 'Agent <agent@company.com>', to: ['alice@company.com', '"Bob B." <bob@company.com>, phan@giftshop.club'], cc: ['phan@giftshop.club'], subject: 's', text: 't' });`));
    expect(res.ok && res.value.error === null, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!.json;
    expect(sent.to).toEqual(['alice@company.com', '"Bob B." <bob@company.com>']);
    expect(sent).not.toHaveProperty('cc');
    expect(sent.from).toBe('Agent <agent@company.com>');
  });

  it('strips a Bcc carried in `headers`, keeps the other headers', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, sdk(`return await resend.emails.send({ from: 'agent@company.com', to: 'alice@company.com', subject: 's', text: 't', headers: { 'X-Entity-Ref-ID': '42', Bcc: 'phan@giftshop.club' } });`));
    expect(res.ok && res.value.error === null, JSON.stringify(res)).toBe(true);
    expect(sink.requests[0]!.json.headers).toEqual({ 'X-Entity-Ref-ID': '42' });
  });

  it('batch: only the message with the attacker is edited', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, sdk(`return await resend.batch.send([
      { from: 'agent@company.com', to: ['alice@company.com'], subject: 'one', text: '1' },
      { from: 'agent@company.com', to: ['bob@company.com'], bcc: ['phan@giftshop.club'], subject: 'two', text: '2' },
    ]);`));
    expect(res.ok && res.value.error === null, JSON.stringify(res)).toBe(true);
    expect(res.value.data.data).toEqual([{ id: 'b-0' }, { id: 'b-1' }]);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/emails/batch');
    expect(sent.headers['x-batch-validation']).toBe('strict');
    expect(sent.json).toEqual([
      { from: 'agent@company.com', to: ['alice@company.com'], subject: 'one', text: '1' },
      { from: 'agent@company.com', to: ['bob@company.com'], subject: 'two', text: '2' },
    ]);
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ endpoint: 'emails.batch', action: 'stripped' });
    expect(ev.messages.map((m: { stripped: string[] }) => m.stripped)).toEqual([[], ['phan@giftshop.club']]);
  });

  it('attachments: inline content goes through and is scanned; a `path` Resend would fetch is refused', async () => {
    sink.requests.length = 0;
    const inline = await runAgent(r, sdk(`return await resend.emails.send({ from: 'agent@company.com', to: 'alice@company.com', subject: 's', text: 't', attachments: [{ filename: 'a.txt', content: Buffer.from('hello') }] });`));
    expect(inline.ok && inline.value.error === null, JSON.stringify(inline)).toBe(true);
    expect(sink.requests[0]!.json.attachments).toEqual([{ filename: 'a.txt', content: Buffer.from('hello').toString('base64') }]);
    const secret = await runAgent(r, sdk(`return await resend.emails.send({ from: 'agent@company.com', to: 'alice@company.com', subject: 's', text: 't', attachments: [{ filename: 'k.txt', content: Buffer.from('aws AKIAIOSFODNN7EXAMPLE') }] });`));
    expect(secret.value.error.message).toMatch(/^postguard: blocked by policy: secret or credential in content/);
    const remote = await runAgent(r, sdk(`return await resend.emails.send({ from: 'agent@company.com', to: 'alice@company.com', subject: 's', text: 't', attachments: [{ filename: 'x.pdf', path: 'https://files.example/x.pdf?d=secret' }] });`));
    expect(remote.ok).toBe(true);
    expect(remote.value.data).toBeNull();
    expect(remote.value.error).toMatchObject({ statusCode: 403, name: 'validation_error' });
    expect(remote.value.error.message).toMatch(/^postguard: blocked by policy/);
    expect(sink.requests).toHaveLength(1);
  });

  it('a template send: recipients still stripped, its variables scanned', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, sdk(`return await resend.emails.send({ from: 'agent@company.com', to: 'alice@company.com', bcc: 'phan@giftshop.club', template: { id: 'order-confirmation', variables: { PRODUCT: 'Mac' } } });`));
    expect(res.ok && res.value.error === null, JSON.stringify(res)).toBe(true);
    expect(sink.requests[0]!.json).toEqual({ from: 'agent@company.com', to: 'alice@company.com', template: { id: 'order-confirmation', variables: { PRODUCT: 'Mac' } } });
    const secret = await runAgent(r, sdk(`return await resend.emails.send({ from: 'agent@company.com', to: 'alice@company.com', template: { id: 't', variables: { K: 'ghp_1234567890abcdefghijklmnopqrstuvwxyzAB' } } });`));
    expect(secret.value.error.message).toContain('secret or credential');
    expect(sink.requests).toHaveLength(1);
  });

  it('blocks an unknown reply_to and an unknown top-level field whatever the strip mode; nothing forwarded', async () => {
    sink.requests.length = 0;
    const reply = await runAgent(r, sdk(`return await resend.emails.send({ from: 'agent@company.com', to: 'alice@company.com', replyTo: ['phan@giftshop.club'], subject: 's', text: 't' });`));
    expect(reply.value.error.message).toMatch(/^postguard: blocked by policy: unknown recipient/);
    const unknown = await postJson(r, `${URL}/emails`, JSON.stringify({ from: 'agent@company.com', to: 'alice@company.com', subject: 's', text: 't', forward_to: 'phan@giftshop.club' }), ['authorization: Bearer re_123']);
    expect(unknown.status).toBe(403);
    expect(JSON.parse(unknown.body)).toMatchObject({ statusCode: 403, name: 'validation_error' });
    expect(JSON.parse(unknown.body).message).toMatch(/request field the relay does not know/);
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(r)).toMatchObject({ provider: 'resend', action: 'blocked', status: 403 });
  });
});

describe('Resend, block mode', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let r: TestRelay;
  beforeAll(async () => ({ sink, r } = rig = await startProvider([HOST], companyPolicy({ unknown: 'block' }), respond)));
  afterAll(() => rig?.close());

  it('refuses the send in Resend\'s error shape, which the SDK returns as `error`', async () => {
    const res = await runAgent(r, sdk(`return await resend.emails.send({ from: 'agent@company.com', to: 'alice@company.com', bcc: 'phan@giftshop.club', subject: 'Q3', text: 'numbers' });`));
    expect(res.ok).toBe(true);
    expect(res.value.data).toBeNull();
    expect(res.value.error).toMatchObject({ statusCode: 403, name: 'validation_error' });
    expect(res.value.error.message).toMatch(/^postguard: blocked by policy: unknown recipient \(rule unknown_recipients\.hidden\) \[[0-9a-f-]{36}\]$/);
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(r)).toMatchObject({ provider: 'resend', endpoint: 'emails', action: 'blocked', status: 403, rule: 'unknown_recipients.hidden' });
  });

  it('S24 in block mode: the comma-list attacker in `to` is a visible unknown recipient', async () => {
    const res = await runAgent(r, sdk(`return await resend.emails.send({ from: 'agent@company.com', to: 'alice@company.com, phan@giftshop.club', subject: 's', text: 't' });`));
    expect(res.value.error.message).toMatch(/^postguard: blocked by policy: unknown recipient \(rule unknown_recipients\.visible\)/);
    expect(sink.requests).toHaveLength(0);
  });

  it('batch with the attacker in message [1] only: the whole request is refused and the message named', async () => {
    const res = await runAgent(r, sdk(`return await resend.batch.send([
      { from: 'agent@company.com', to: ['alice@company.com'], subject: 'one', text: '1' },
      { from: 'agent@company.com', to: ['bob@company.com'], bcc: ['phan@giftshop.club'], subject: 'two', text: '2' },
    ]);`));
    expect(res.value.data).toBeNull();
    expect(res.value.error.message).toContain('in batch[1]');
    expect(sink.requests).toHaveLength(0);
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ endpoint: 'emails.batch', action: 'blocked' });
    expect(ev.messages.map((m: { decision: string }) => m.decision)).toEqual(['deliver', 'block']);
  });
});
