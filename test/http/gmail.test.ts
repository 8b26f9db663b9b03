import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent } from '../helpers/agent.js';
import { curl, post, postJson } from '../helpers/http-client.js';
import type { HttpsSink, SinkRequest } from '../helpers/https-sink.js';
import { lastEvent, startProvider, type ProviderRig, expectRefused } from '../helpers/provider.js';
import { companyPolicy, type TestRelay } from '../helpers/relay.js';

const HOSTS = ['gmail.googleapis.com', 'www.googleapis.com'];

/** An RFC 2822 message as agents build it for `raw` (Gmail's own examples use LF line endings). */
function message(o: { to?: string; bcc?: string; eol?: string; body?: string } = {}): string {
  const eol = o.eol ?? '\r\n';
  const lines = ['From: agent@company.com', `To: ${o.to ?? 'alice@company.com'}`, ...(o.bcc ? [`Bcc: ${o.bcc}`] : []), 'Subject: Q3', 'Content-Type: text/plain; charset=utf-8', '', o.body ?? 'numbers'];
  return lines.join(eol);
}
const b64url = (s: string) => Buffer.from(s).toString('base64url');
const decoded = (req: SinkRequest) => Buffer.from(req.json.raw, 'base64url').toString('utf8');

/** The SDK as an agent uses it: an OAuth2 client holding an access token, gaxios on HTTPS_PROXY. */
const SDK = `
  const { gmail, auth } = await import('@googleapis/gmail');
  const a = new auth.OAuth2();
  a.setCredentials({ access_token: 'ya29.token' });
  const g = gmail({ version: 'v1', auth: a });
`;

describe('Gmail API through the proxy', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let strip: TestRelay;
  let block: TestRelay;
  let drafts = 0;
  beforeAll(async () => {
    ({ sink, r: strip } = rig = await startProvider(HOSTS, companyPolicy(), (req) => (/\/drafts(\/r-[^/]+)?(\?|$)/.test(req.url) && req.method !== 'GET' && !/drafts\/send/.test(req.url)
      ? { body: { id: req.method === 'PUT' ? /drafts\/(r-[^/?]+)/.exec(req.url)![1] : `r-${++drafts}`, message: { id: 'm-d', threadId: 't-1', labelIds: ['DRAFT'] } } }
      : { body: { id: 'm-1', threadId: 't-1', labelIds: ['SENT'] } })));
    block = await rig.relay(companyPolicy({ unknown: 'block' }));
  });
  afterAll(() => rig?.close());

  it('strips the attacker Bcc from raw MIME: Gmail never sees it, To intact', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      const r = await g.users.messages.send({ userId: 'me', requestBody: { raw: ${JSON.stringify(b64url(message({ bcc: 'phan@giftshop.club' })))} } });
      return r.data;
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.value.id).toBe('m-1');
    expect(sink.requests).toHaveLength(1);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/gmail/v1/users/me/messages/send');
    expect(sent.headers.authorization).toBe('Bearer ya29.token');
    expect(sent.body.toString()).not.toContain('giftshop');
    const raw = decoded(sent);
    expect(raw).not.toMatch(/giftshop|^bcc:/im);
    expect(raw).toMatch(/^To: alice@company\.com\r$/m);
    expect(raw).toContain('numbers');
    expect(await lastEvent(strip)).toMatchObject({ channel: 'http', provider: 'gmail', endpoint: 'messages.send', action: 'stripped', status: 200, recipients: { stripped: ['phan@giftshop.club'] } });
  });

  it('block mode: the SDK reports postguard’s 403 and Gmail receives nothing', async () => {
    sink.requests.length = 0;
    const res = await runAgent(block, `${SDK}
      await g.users.messages.send({ userId: 'me', requestBody: { raw: ${JSON.stringify(b64url(message({ bcc: 'phan@giftshop.club' })))} } });
    `);
    expect(res.ok).toBe(false);
    expect(res.value.status).toBe(403);
    expect(res.value.message).toContain('postguard');
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(block)).toMatchObject({ provider: 'gmail', action: 'blocked', status: 403 });
  });

  it('reads LF-only raw messages (as Gmail does) and strips the Bcc from them', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      return (await g.users.messages.send({ userId: 'me', requestBody: { raw: ${JSON.stringify(b64url(message({ bcc: 'Phan <phan@giftshop.club>', eol: '\n' })))}, threadId: 't-1' } })).data;
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const raw = decoded(sink.requests[0]!);
    expect(raw).not.toContain('giftshop');
    expect(raw).toMatch(/^To: alice@company\.com\r?$/m);
    expect(sink.requests[0]!.json.threadId).toBe('t-1');
    expect(await lastEvent(strip)).toMatchObject({ action: 'stripped', recipients: { stripped: ['phan@giftshop.club'] } });
  });

  it('the legacy www.googleapis.com root is inspected too', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `
      const { gmail, auth } = await import('@googleapis/gmail');
      const a = new auth.OAuth2();
      a.setCredentials({ access_token: 'ya29.token' });
      const g = gmail({ version: 'v1', auth: a, rootUrl: 'https://www.googleapis.com/' });
      return (await g.users.messages.send({ userId: 'me', requestBody: { raw: ${JSON.stringify(b64url(message({ bcc: 'phan@giftshop.club' })))} } })).data;
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests[0]!.headers.host).toBe('www.googleapis.com');
    expect(decoded(sink.requests[0]!)).not.toContain('giftshop');
  });

  it('upload, uploadType=media: the message/rfc822 body is inspected and stripped', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      return (await g.users.messages.send({ userId: 'me', media: { mimeType: 'message/rfc822', body: ${JSON.stringify(message({ bcc: 'phan@giftshop.club' }))} } })).data;
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/upload/gmail/v1/users/me/messages/send?uploadType=media');
    expect(sent.headers['content-type']).toBe('message/rfc822');
    expect(sent.body.toString()).not.toContain('giftshop');
    expect(sent.body.toString()).toMatch(/^To: alice@company\.com\r$/m);
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'messages.send.upload', action: 'stripped' });
  });

  it('upload, uploadType=multipart: metadata kept, the message part stripped', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      return (await g.users.messages.send({ userId: 'me', requestBody: { threadId: 't-9' }, media: { mimeType: 'message/rfc822', body: ${JSON.stringify(message({ bcc: 'phan@giftshop.club' }))} } })).data;
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/upload/gmail/v1/users/me/messages/send?uploadType=multipart');
    const boundary = /^multipart\/related; boundary=(postguard-[0-9a-f]+)$/.exec(String(sent.headers['content-type']))![1]!;
    const parts = sent.body.toString().split(`--${boundary}`);
    expect(parts).toHaveLength(4); // '', metadata, message, '--'
    expect(parts[1]).toContain('{"threadId":"t-9"}');
    expect(parts[2]).toMatch(/^\r\nContent-Type: message\/rfc822\r\n\r\n/);
    expect(parts[2]).toMatch(/^To: alice@company\.com\r$/m);
    expect(sent.body.toString()).not.toContain('giftshop');
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'messages.send.upload', action: 'stripped' });
  });

  it('upload, multipart: a boundary hidden behind a bare LF (a second reading) is refused', async () => {
    sink.requests.length = 0;
    const b = 'xyz';
    const body = `--${b}\r\nContent-Type: application/json\r\n\r\n{}\r\n--${b}\r\nContent-Type: message/rfc822\r\n\r\n${message()}\n--${b}\r\nContent-Type: message/rfc822\r\n\r\n${message({ to: 'phan@giftshop.club' })}\r\n--${b}--`;
    const res = await post(strip, 'https://gmail.googleapis.com/upload/gmail/v1/users/me/messages/send?uploadType=multipart', body, `multipart/related; boundary=${b}`);
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body).error.message).toMatch(/^postguard: blocked by policy/);
    expect(sink.requests).toHaveLength(0);
    expect((await lastEvent(strip)).problems).toEqual(['request.multipart: multipart/related upload has its boundary inside a part']);
  });

  it('upload, uploadType=resumable is refused: the message would come in later requests', async () => {
    sink.requests.length = 0;
    const res = await postJson(strip, 'https://gmail.googleapis.com/upload/gmail/v1/users/me/messages/send?uploadType=resumable', '{}', ['x-upload-content-type: message/rfc822']);
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body).error).toMatchObject({ code: 403, status: 'PERMISSION_DENIED' });
    expect(JSON.parse(res.body).error.message).toMatch(/^postguard: /);
    expect(sink.requests).toHaveLength(0);
    expect((await lastEvent(strip)).problems[0]).toMatch(/^request.upload: uploadType=resumable sends the message in later requests/);
  });

  it('drafts.create is inspected like a send: the attacker Bcc is stripped before the draft is stored', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      return (await g.users.drafts.create({ userId: 'me', requestBody: { message: { raw: ${JSON.stringify(b64url(message({ bcc: 'phan@giftshop.club' })))} } } })).data;
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.value.id).toMatch(/^r-\d+$/);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/gmail/v1/users/me/drafts');
    expect(Buffer.from(sent.json.message.raw, 'base64url').toString()).not.toContain('giftshop');
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'drafts.create', action: 'stripped' });
  });

  it('drafts.send of a draft never created through postguard is blocked', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      await g.users.drafts.send({ userId: 'me', requestBody: { id: 'r-made-elsewhere' } });
    `);
    expect(res.ok).toBe(false);
    expect(res.value.status).toBe(403);
    expect(res.value.message).toContain('postguard');
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'drafts.send', action: 'blocked', reason: 'sends a stored draft the relay never inspected' });
  });

  it('drafts.send of an unseen draft is blocked even with an allowed message sent along', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      await g.users.drafts.send({ userId: 'me', requestBody: { id: 'r-made-elsewhere', message: { raw: ${JSON.stringify(b64url(message()))} } } });
    `);
    expectRefused(res, sink);
    expect(await lastEvent(strip)).toMatchObject({ action: 'blocked', reason: 'sends a stored draft the relay never inspected' });
  });

  it('a draft created through postguard can be sent by id with its message', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      const raw = ${JSON.stringify(b64url(message()))};
      const d = (await g.users.drafts.create({ userId: 'me', requestBody: { message: { raw } } })).data;
      return (await g.users.drafts.send({ userId: 'me', requestBody: { id: d.id, message: { raw } } })).data;
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.value.labelIds).toEqual(['SENT']);
    expect(sink.requests.map((r) => r.url)).toEqual(['/gmail/v1/users/me/drafts', '/gmail/v1/users/me/drafts/send']);
    expect(sink.requests[1]!.json.id).toMatch(/^r-\d+$/);
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'drafts.send', action: 'forwarded', status: 200 });
  });

  // A stored draft's recipients were inspected when it was made, but the inspector judges drafts.send
  // on the recipients in the request: `{id}` alone names none and is refused as "no allowed
  // recipients left". Turn into `it` once inspect.ts counts a seen draft's recipients (see report).
  it('a draft created through postguard can be sent by id alone', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      const d = (await g.users.drafts.create({ userId: 'me', requestBody: { message: { raw: ${JSON.stringify(b64url(message()))} } } })).data;
      return (await g.users.drafts.send({ userId: 'me', requestBody: { id: d.id } })).data;
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests.map((r) => r.url)).toEqual(['/gmail/v1/users/me/drafts', '/gmail/v1/users/me/drafts/send']);
  });

  it('drafts.update (PUT) replaces the draft with an inspected message and remembers it', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      const u = (await g.users.drafts.update({ userId: 'me', id: 'r-old', requestBody: { id: 'r-old', message: { raw: ${JSON.stringify(b64url(message({ bcc: 'phan@giftshop.club' })))} } } })).data;
      return (await g.users.drafts.send({ userId: 'me', requestBody: { id: u.id, message: { raw: ${JSON.stringify(b64url(message()))} } } })).data;
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests.map((r) => `${r.method} ${r.url}`)).toEqual(['PUT /gmail/v1/users/me/drafts/r-old', 'POST /gmail/v1/users/me/drafts/send']);
    expect(Buffer.from(sink.requests[0]!.json.message.raw, 'base64url').toString()).not.toContain('giftshop');
  });

  it('drafts, upload multipart: the uploaded draft message is inspected (block mode refuses it)', async () => {
    sink.requests.length = 0;
    const res = await runAgent(block, `${SDK}
      await g.users.drafts.create({ userId: 'me', requestBody: { message: { threadId: 't-1' } }, media: { mimeType: 'message/rfc822', body: ${JSON.stringify(message({ bcc: 'phan@giftshop.club' }))} } });
    `);
    expectRefused(res, sink);
    expect(await lastEvent(block)).toMatchObject({ endpoint: 'drafts.create.upload', action: 'blocked' });
  });

  it('drafts, upload: update strips the uploaded message, and drafts.send by upload then passes for that draft', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      const u = (await g.users.drafts.update({ userId: 'me', id: 'r-up', requestBody: { id: 'r-up' }, media: { mimeType: 'message/rfc822', body: ${JSON.stringify(message({ bcc: 'phan@giftshop.club' }))} } })).data;
      return (await g.users.drafts.send({ userId: 'me', requestBody: { id: u.id }, media: { mimeType: 'message/rfc822', body: ${JSON.stringify(message())} } })).data;
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(sink.requests.map((r) => `${r.method} ${r.url}`)).toEqual(['PUT /upload/gmail/v1/users/me/drafts/r-up?uploadType=multipart', 'POST /upload/gmail/v1/users/me/drafts/send?uploadType=multipart']);
    expect(sink.requests[0]!.body.toString()).not.toContain('giftshop');
    expect(sink.requests[0]!.body.toString()).toContain('{"id":"r-up"}');
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'drafts.send.upload', action: 'forwarded' });
    const unseen = await runAgent(strip, `${SDK}
      await g.users.drafts.send({ userId: 'me', requestBody: { id: 'r-elsewhere' }, media: { mimeType: 'message/rfc822', body: ${JSON.stringify(message())} } });
    `);
    expect(unseen.value.message).toContain('postguard');
    expect(sink.requests).toHaveLength(2);
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'drafts.send.upload', action: 'blocked', reason: 'sends a stored draft the relay never inspected' });
  });

  it('an unknown key in the message is refused with 403 and nothing is forwarded', async () => {
    sink.requests.length = 0;
    const res = await runAgent(strip, `${SDK}
      await g.users.messages.send({ userId: 'me', requestBody: { raw: ${JSON.stringify(b64url(message()))}, payload: { headers: [{ name: 'Bcc', value: 'phan@giftshop.club' }] } } });
    `);
    expect(res.ok).toBe(false);
    expect(res.value.status).toBe(403);
    expect(res.value.message).toMatch(/postguard/);
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(strip)).toMatchObject({ action: 'blocked', rule: 'input' });
  });

  it('messages.import and batch requests are refused; reads pass', async () => {
    sink.requests.length = 0;
    const imp = await postJson(strip, 'https://gmail.googleapis.com/gmail/v1/users/me/messages/import', JSON.stringify({ raw: b64url(message()) }));
    expect(imp.status).toBe(403);
    expect(JSON.parse(imp.body).error.message).toMatch(/postguard: POST \/gmail\/v1\/users\/me\/messages\/import is not a send endpoint/);
    const batch = await post(strip, 'https://www.googleapis.com/batch/gmail/v1', '--b--', 'multipart/mixed; boundary=b');
    expect(batch.status).toBe(403);
    expect(JSON.parse(batch.body).error.message).toMatch(/^postguard: /);
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(strip)).toMatchObject({ endpoint: 'batch', action: 'blocked', problems: [expect.stringMatching(/^request.batch: Gmail batch requests are not inspected/)] });
    const read = await curl(strip, 'https://gmail.googleapis.com/gmail/v1/users/me/drafts');
    expect(read.status).toBe(200);
    expect(sink.requests).toHaveLength(1);
  });
});
