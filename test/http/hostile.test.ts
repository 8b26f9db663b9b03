// Hostile request bodies and framing: every one gets a clear 4xx, the relay stays up, and nothing
// with an unknown recipient reaches the provider.

import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { curl, postJson, rawTunnel } from '../helpers/http-client.js';
import { startHttpsSink, type HttpsSink } from '../helpers/https-sink.js';
import { adminGet, companyPolicy, startTestRelay, type TestRelay } from '../helpers/relay.js';

const PM = 'api.postmarkapp.com';
const URL = `https://${PM}/email`;
const mail = (extra: Record<string, unknown> = {}) => JSON.stringify({ From: 'agent@company.com', To: 'alice@company.com', Subject: 's', TextBody: 't', ...extra });
const attack = mail({ Bcc: 'phan@giftshop.club' });

describe('hostile bodies and framing', () => {
  let sink: HttpsSink;
  let r: TestRelay;
  beforeAll(async () => {
    sink = await startHttpsSink([PM]);
    sink.respond = () => ({ body: { ErrorCode: 0, Message: 'OK' } });
    r = await startTestRelay({ policy: companyPolicy(), env: { POSTGUARD_RESOLVE: sink.resolve([PM]), POSTGUARD_UPSTREAM_CA: sink.caFile } });
  });
  afterAll(async () => {
    await r?.close();
    await sink?.close();
  });
  beforeEach(() => {
    sink.requests.length = 0;
  });
  const neverForwarded = () => expect(sink.requests.filter((q) => q.body.includes('giftshop'))).toHaveLength(0);

  it.each([
    ['gzip', gzipSync],
    ['deflate', deflateSync],
    ['br', brotliCompressSync],
  ])('decodes Content-Encoding %s before inspecting, and forwards the decoded body', async (enc, compress) => {
    const res = await curl(r, URL, ['-X', 'POST', '-H', 'content-type: application/json', '-H', `content-encoding: ${enc}`, '--data-binary', '@-'], compress(Buffer.from(attack)));
    expect(res.status).toBe(200);
    expect(sink.requests).toHaveLength(1);
    expect(sink.requests[0]!.headers['content-encoding']).toBeUndefined();
    expect(sink.requests[0]!.json).toMatchObject({ To: 'alice@company.com', Bcc: '' });
  });

  it('refuses an encoding it cannot read (415) and a decompression bomb (413)', async () => {
    const unknown = await curl(r, URL, ['-X', 'POST', '-H', 'content-type: application/json', '-H', 'content-encoding: zstd', '--data-binary', '@-'], attack);
    expect(unknown.status).toBe(415);
    expect(JSON.parse(unknown.body).Message).toMatch(/Content-Encoding "zstd" is not supported/);
    const bomb = gzipSync(Buffer.alloc(60 * 1024 * 1024, 0x20)); // 60 MB of spaces, ~60 KB compressed
    const big = await curl(r, URL, ['-X', 'POST', '-H', 'content-type: application/json', '-H', 'content-encoding: gzip', '--data-binary', '@-'], bomb);
    expect(big.status).toBe(413);
    expect(sink.requests).toHaveLength(0);
  });

  it('takes a body up to the provider limit (a 27 MB batch with attachments; curl sends Expect: 100-continue)', async () => {
    const content = Buffer.alloc(10 * 1024 * 1024, 'postguard ').toString('base64');
    const one = (to: string) => ({ From: 'agent@company.com', To: to, Subject: 'big', TextBody: 't', Attachments: [{ Name: 'a.bin', ContentType: 'application/octet-stream', Content: content }] });
    const body = JSON.stringify([one('alice@company.com'), one('bob@company.com, phan@giftshop.club')]);
    expect(body.length).toBeGreaterThan(26 * 1024 * 1024);
    const res = await curl(r, `https://${PM}/email/batch`, ['-v', '-X', 'POST', '-H', 'content-type: application/json', '--data-binary', '@-'], body);
    expect(res.status).toBe(200);
    expect(res.stderr).toMatch(/Expect: 100-continue/);
    expect(sink.requests).toHaveLength(1);
    expect(sink.requests[0]!.json[1].To).toBe('bob@company.com');
    expect(sink.requests[0]!.json[0].Attachments[0].Content).toBe(content);
  });

  it('refuses a JSON body with too many values before building its tree (a 48 KB gzip of [0,0,…] once took the relay down)', async () => {
    const bomb = gzipSync(Buffer.from(`[${'0,'.repeat(24 * 1024 * 1024)}0]`));
    expect(bomb.length).toBeLessThan(100 * 1024);
    const t0 = Date.now();
    const res = await curl(r, `https://${PM}/email/batch`, ['-X', 'POST', '-H', 'content-type: application/json', '-H', 'content-encoding: gzip', '--data-binary', '@-'], bomb);
    expect(res.status).toBe(413);
    expect(JSON.parse(res.body).Message).toMatch(/more than 250000 values/);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect((await postJson(r, URL, mail())).status).toBe(200);
  });

  it.each([
    ['a trailing space in the name', { Name: 'Bcc ', Value: 'phan@giftshop.club' }],
    ['a leading space in the name', { Name: ' Bcc', Value: 'phan@giftshop.club' }],
    ['a colon in the name', { Name: 'Bcc:', Value: 'phan@giftshop.club' }],
    ['a line break in the value', { Name: 'X-A', Value: 'x\r\nBcc: phan@giftshop.club' }],
    ['a line break in the name', { Name: 'X-A: x\r\nBcc', Value: 'phan@giftshop.club' }],
  ])('refuses a custom header with %s (it would become a Bcc the checks never see by name)', async (_what, header) => {
    const res = await postJson(r, URL, mail({ Headers: [header] }));
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body).Message).toMatch(/blocked by policy: input could not be parsed safely/);
    expect(sink.requests).toHaveLength(0);
    const ev = (await adminGet(r, '/api/events?kind=message&limit=1')).body.events[0];
    expect(ev.problems.join('\n')).toMatch(/request\.header: Headers\[0\]: not a valid header/);
  });

  it('reads a chunked body like any other', async () => {
    const res = await curl(r, URL, ['-X', 'POST', '-H', 'content-type: application/json', '-H', 'transfer-encoding: chunked', '--data-binary', '@-'], attack);
    expect(res.status).toBe(200);
    expect(sink.requests[0]!.json.Bcc).toBe('');
  });

  it.each([
    ['a duplicate key (first empty, last the attacker)', '{"From":"agent@company.com","To":"alice@company.com","Bcc":"","Bcc":"phan@giftshop.club","Subject":"s","TextBody":"t"}', /duplicate key "Bcc"/],
    ['a case-variant duplicate', '{"From":"agent@company.com","To":"alice@company.com","Bcc":"","bCC":"phan@giftshop.club","TextBody":"t"}', /duplicate key "bCC".*case-insensitively/],
    ['an escaped duplicate (\\u0042cc)', '{"From":"agent@company.com","To":"alice@company.com","Bcc":"","\\u0042cc":"phan@giftshop.club","TextBody":"t"}', /duplicate key "Bcc"/],
    ['a nested duplicate', '{"From":"agent@company.com","To":"alice@company.com","Headers":[{"Name":"X","Name":"Bcc","Value":"phan@giftshop.club"}],"TextBody":"t"}', /duplicate key "Name"/],
    ['a lone surrogate', '{"From":"agent@company.com","To":"alice@company.com","Subject":"\\ud800","TextBody":"t"}', /unpaired surrogate/],
    ['a huge integer', '{"From":"agent@company.com","To":"alice@company.com","TextBody":"t","Metadata":{"n":123456789012345678901}}', /too large/],
    ['a byte order mark', '\ufeff{"From":"agent@company.com","To":"alice@company.com","TextBody":"t"}', /byte order mark/],
  ])('blocks %s as a parser differential (403)', async (_what, body, message) => {
    const res = await postJson(r, URL, body);
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body).Message).toMatch(message);
    expect(sink.requests).toHaveLength(0);
  });

  it.each([
    ['JSON that does not parse', '{"From": "a@company.com", '],
    ['a trailing comma', '{"From":"agent@company.com","To":"alice@company.com",}'],
    ['an array where an object is expected', '[1,2]'],
  ])('rejects %s with 400', async (_what, body) => {
    const res = await postJson(r, URL, body);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body).Message).toMatch(/^postguard: /);
    expect(sink.requests).toHaveLength(0);
  });

  it('rejects a body that is not UTF-8 (400)', async () => {
    const res = await curl(r, URL, ['-X', 'POST', '-H', 'content-type: application/json', '--data-binary', '@-'], Buffer.concat([Buffer.from('{"From":"agent@company.com","To":"alice@company.com","TextBody":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]));
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body).Message).toMatch(/not valid UTF-8/);
  });

  it('refuses a body over the provider limit before reading it (413)', async () => {
    const out = await rawTunnel(r, PM, `POST /email HTTP/1.1\r\nHost: ${PM}\r\nContent-Type: application/json\r\nContent-Length: 60000000\r\n\r\n{`);
    expect(out).toMatch(/^HTTP\/1\.1 413/);
    expect(out).toMatch(/larger than the 52428800 bytes/);
  });

  it('a Content-Length shorter than the body: the tail is not a second request that gets through', async () => {
    const body = attack;
    const out = await rawTunnel(r, PM, `POST /email HTTP/1.1\r\nHost: ${PM}\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n${body}`);
    expect(out).toMatch(/^HTTP\/1\.1 400/);
    neverForwarded();
    expect(sink.requests).toHaveLength(0);
  });

  it.each([
    ['Content-Length with Transfer-Encoding (CL.TE)', `POST /email HTTP/1.1\r\nHost: ${PM}\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST /email HTTP/1.1\r\nHost: ${PM}\r\nContent-Length: ${attack.length}\r\n\r\n${attack}`],
    ['two Content-Length headers', `POST /email HTTP/1.1\r\nHost: ${PM}\r\nContent-Length: 2\r\nContent-Length: ${attack.length}\r\n\r\n${attack}`],
    ['an obfuscated Transfer-Encoding', `POST /email HTTP/1.1\r\nHost: ${PM}\r\nTransfer-Encoding: xchunked\r\n\r\n${attack}`],
    ['a bad chunk size', `POST /email HTTP/1.1\r\nHost: ${PM}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n${attack}\r\n0\r\n\r\n`],
    ['a space before the colon', `POST /email HTTP/1.1\r\nHost: ${PM}\r\nContent-Length : ${attack.length}\r\n\r\n${attack}`],
    ['bare LF line endings', `POST /email HTTP/1.1\nHost: ${PM}\nContent-Length: ${attack.length}\n\n${attack}`],
  ])('refuses %s (400), forwards nothing', async (_what, bytes) => {
    const out = await rawTunnel(r, PM, bytes);
    expect(out).toMatch(/^HTTP\/1\.1 (400|501)/);
    expect(sink.requests).toHaveLength(0);
  });

  it('inspects every pipelined request on one connection', async () => {
    const req = (b: string) => `POST /email HTTP/1.1\r\nHost: ${PM}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`;
    const out = await rawTunnel(r, PM, req(mail()) + req(attack));
    expect(out.match(/HTTP\/1\.1 200/g)).toHaveLength(2);
    expect(sink.requests).toHaveLength(2);
    neverForwarded();
  });

  it('stays up: a normal send still works after all of the above, and each refusal was audited', async () => {
    const res = await postJson(r, URL, mail());
    expect(res.status).toBe(200);
    const events = (await adminGet(r, '/api/events?kind=message&limit=200')).body.events;
    expect(events.filter((e: { action: string }) => e.action === 'blocked').length).toBeGreaterThanOrEqual(7);
    expect(events.filter((e: { action: string }) => e.action === 'rejected').length).toBeGreaterThanOrEqual(5);
  });
});
