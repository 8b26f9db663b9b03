import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent } from '../helpers/agent.js';
import type { HttpsSink } from '../helpers/https-sink.js';
import { lastEvent, startProvider, type ProviderRig, expectRefused } from '../helpers/provider.js';
import { companyPolicy, type TestRelay } from '../helpers/relay.js';

const HOST = 'graph.microsoft.com';

/** The SDK as an agent uses it: a bearer token, Node's fetch on HTTPS_PROXY. */
const SDK = `
  const { Client } = await import('@microsoft/microsoft-graph-client');
  const c = Client.init({ authProvider: (done) => done(null, 'eyJ.token') });
`;

const to = (...a: string[]) => a.map((address) => ({ emailAddress: { address } }));
const mail = (extra: Record<string, unknown> = {}) => ({ subject: 'Q3', body: { contentType: 'Text', content: 'numbers' }, toRecipients: to('alice@company.com'), ...extra });

describe('Microsoft Graph mail through the proxy, official SDK', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let strip: TestRelay;
  let block: TestRelay;
  let drafts = 0;
  beforeAll(async () => {
    ({ sink, r: strip } = rig = await startProvider([HOST], companyPolicy(), (req) => {
      if (req.method === 'POST' && /\/messages$/i.test(req.url)) return { status: 201, body: { id: `AAMkAD-draft-${++drafts}=`, isDraft: true } };
      if (req.method === 'PATCH') return { body: { id: decodeURIComponent(/messages\/([^/?]+)/.exec(req.url)![1]!), isDraft: true } };
      return { status: 202, headers: { 'content-type': 'text/plain' }, body: '' };
    }));
    block = await rig.relay(companyPolicy({ unknown: 'block' }));
  });
  afterAll(() => rig?.close());

  it('strips the attacker bccRecipients: Graph never sees it', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      return await c.api('/me/sendMail').post({ message: ${JSON.stringify(mail({ bccRecipients: to('phan@giftshop.club') }))}, saveToSentItems: false });
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests).toHaveLength(1);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/v1.0/me/sendMail');
    expect(sent.headers.authorization).toBe('Bearer eyJ.token');
    expect(sent.body.toString()).not.toContain('giftshop');
    expect(sent.json.message.toRecipients).toEqual(to('alice@company.com'));
    expect(sent.json.message).not.toHaveProperty('bccRecipients');
    expect(sent.json.saveToSentItems).toBe(false);
    expect(await lastEvent(strip)).toMatchObject({ channel: 'http', provider: 'graph', endpoint: 'sendMail', action: 'stripped', status: 202, recipients: { stripped: ['phan@giftshop.club'] } });
  });

  it('block mode: the SDK error carries postguard’s message and Graph receives nothing', async () => {
    sink.requests.length = 0;
    const res = await runAgent(block, `${SDK}
      await c.api('/me/sendMail').post({ message: ${JSON.stringify(mail({ bccRecipients: to('phan@giftshop.club') }))} });
    `);
    expect(res.ok).toBe(false);
    expect(res.value.status).toBe(403);
    expect(res.value.message).toContain('postguard');
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(block)).toMatchObject({ provider: 'graph', action: 'blocked', status: 403 });
  });

  it('a Bcc in internetMessageHeaders counts as a recipient and is removed; other headers stay', async () => {
    sink.requests.length = 0;
    const headers = [{ name: 'x-trace', value: 'abc' }, { name: 'Bcc', value: 'phan@giftshop.club' }];
    const res = await runAgent(strip, `${SDK}
      return await c.api('/me/sendMail').post({ message: ${JSON.stringify(mail({ internetMessageHeaders: headers }))} });
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests[0]!.json.message.internetMessageHeaders).toEqual([{ name: 'x-trace', value: 'abc' }]);
    expect(await lastEvent(strip)).toMatchObject({ action: 'stripped', recipients: { stripped: ['phan@giftshop.club'] } });
    const blocked = await runAgent(block, `${SDK}
      await c.api('/me/sendMail').post({ message: ${JSON.stringify(mail({ internetMessageHeaders: headers }))} });
    `);
    expect(blocked.value.message).toContain('postguard');
    expect(sink.requests).toHaveLength(1);
  });

  it('MIME body (text/plain, base64): the Bcc header is stripped, To intact', async () => {
    sink.requests.length = 0;
    const mime = Buffer.from('From: agent@company.com\r\nTo: Alice <alice@company.com>\r\nBcc: phan@giftshop.club\r\nSubject: Q3\r\n\r\nnumbers\r\n').toString('base64');
    const res = await runAgent(strip, `${SDK}
      return await c.api('/me/sendMail').header('Content-Type', 'text/plain').post(${JSON.stringify(mime)});
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!;
    expect(sent.headers['content-type']).toBe('text/plain');
    const raw = Buffer.from(sent.body.toString(), 'base64').toString();
    expect(raw).not.toMatch(/giftshop|^bcc:/im);
    expect(raw).toContain('To: Alice <alice@company.com>\r\n');
    expect(raw).toContain('\r\n\r\nnumbers');
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'sendMail', action: 'stripped', recipients: { stripped: ['phan@giftshop.club'] } });
  });

  it('/users/{upn}/sendMail on beta, in any case and by qualified name, is inspected', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      return await c.api('/USERS/agent@company.com/microsoft.graph.SENDMAIL').version('beta').post({ message: ${JSON.stringify(mail({ ccRecipients: to('phan@giftshop.club') }))} });
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests[0]!.url).toBe('/beta/USERS/agent@company.com/microsoft.graph.SENDMAIL');
    expect(sink.requests[0]!.body.toString()).not.toContain('giftshop');
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'sendMail', action: 'stripped' });
  });

  it('send of a draft never created through postguard is blocked', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      await c.api('/me/messages/AAMkAD-made-elsewhere=/send').post();
    `);
    expect(res.ok).toBe(false);
    expect(res.value.status).toBe(403);
    expect(res.value.message).toContain('postguard');
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'messages.send', action: 'blocked', reason: 'sends a stored draft the relay never inspected' });
  });

  it('PATCH of a draft never created through postguard is blocked, even with allowed recipients', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      await c.api('/me/messages/AAMkAD-made-elsewhere=').patch({ toRecipients: ${JSON.stringify(to('alice@company.com'))} });
    `);
    expectRefused(res, sink);
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'messages.update', action: 'blocked', reason: 'sends a stored draft the relay never inspected' });
  });

  it('a draft is inspected when created, then edited through postguard with the attacker stripped', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      const d = await c.api('/me/messages').post(${JSON.stringify(mail({ bccRecipients: to('phan@giftshop.club') }))});
      return await c.api('/me/messages/' + d.id).patch({ toRecipients: ${JSON.stringify(to('alice@company.com', 'phan@giftshop.club'))} });
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests.map((r) => `${r.method} ${r.url}`)).toEqual(['POST /v1.0/me/messages', `PATCH /v1.0/me/messages/${res.value.id}`]);
    expect(sink.requests.map((r) => r.body.toString()).join()).not.toContain('giftshop');
    expect(sink.requests[1]!.json.toRecipients).toEqual(to('alice@company.com'));
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'messages.update', action: 'stripped' });
  });

  // The stored draft's recipients were inspected when it was made, but the inspector judges the
  // bodiless send on the recipients in the request — none — and refuses it as "no allowed
  // recipients left". Turn into `it` once inspect.ts counts a seen draft's recipients (see report).
  it('a draft created through postguard can then be sent by id', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      const d = await c.api('/me/messages').post(${JSON.stringify(mail())});
      return await c.api('/me/messages/' + d.id + '/send').post();
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests.map((r) => r.url)).toEqual(['/v1.0/me/messages', expect.stringMatching(/^\/v1\.0\/me\/messages\/.+\/send$/)]);
  });

  it('forward: toRecipients and the comment are inspected, the attacker stripped', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      return await c.api('/me/messages/AAMkAD-inbox-1=/forward').post({ comment: 'fyi', toRecipients: ${JSON.stringify(to('alice@company.com', 'phan@giftshop.club'))} });
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests[0]!.json).toEqual({ comment: 'fyi', toRecipients: to('alice@company.com') });
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'messages.forward', action: 'stripped' });
  });

  it('reply, createReply and $batch are refused: their recipients or sub-requests are not in view', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      const out = [];
      for (const [p, b] of [['/me/messages/AAMkAD-inbox-1=/reply', { comment: 'ok' }], ['/me/messages/AAMkAD-inbox-1=/createReplyAll', {}], ['/$batch', { requests: [] }]]) {
        try { await c.api(p).post(b); out.push('sent'); } catch (e) { out.push(e.statusCode + ' ' + e.message); }
      }
      return out;
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    for (const line of res.value) expect(line).toMatch(/^403 postguard: blocked by policy/);
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(strip)).toMatchObject({ endpoint: '$batch', action: 'blocked', problems: [expect.stringMatching(/^request.batch: Graph \$batch requests are not inspected/)] });
  });

  it('an unknown top-level key is refused with 403 and nothing is forwarded', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      await c.api('/me/sendMail').post({ message: ${JSON.stringify(mail())}, bccRecipients: ${JSON.stringify(to('phan@giftshop.club'))} });
    `);
    expect(res.ok).toBe(false);
    expect(res.value.status).toBe(403);
    expect(res.value.message).toContain('postguard');
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(strip)).toMatchObject({ action: 'blocked', rule: 'input', problems: ['request.unknown_field: body: unknown field "bccRecipients"'] });
  });
});
