import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent, type AgentResult } from '../helpers/agent.js';
import { postJson } from '../helpers/http-client.js';
import type { HttpsSink } from '../helpers/https-sink.js';
import { lastEvent, startProvider, type ProviderRig, expectRefused } from '../helpers/provider.js';
import { companyPolicy, type TestRelay } from '../helpers/relay.js';

const HOSTS = ['api.brevo.com', 'api.sendinblue.com'];
const AWS = ['AKIA', 'IOSFODNN7', 'EXAMPLE'].join('');

/**
 * @getbrevo/brevo v6 in the agent's process (global fetch, so Node's env proxy applies). A
 * BrevoError's parsed body is `err.body`; it is handed on where runAgent reports bodies.
 */
function sendTransac(r: TestRelay, request: string, client = `{ apiKey: 'xkeysib-test', maxRetries: 0 }`): Promise<AgentResult> {
  return runAgent(r, `
    const { BrevoClient } = await import('@getbrevo/brevo');
    const brevo = new BrevoClient(${client});
    try {
      return await brevo.transactionalEmails.sendTransacEmail(${request});
    } catch (e) {
      e.response = { body: e.body };
      throw e;
    }
  `);
}

const base = `sender: { email: 'agent@company.com', name: 'Agent' }, subject: 'Q3', textContent: 'numbers'`;

describe('Brevo through the proxy, official SDK', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let r: TestRelay;
  let rb: TestRelay;
  beforeAll(async () => {
    ({ sink, r } = rig = await startProvider(HOSTS, companyPolicy(), (req) => ({ status: 201, body: req.json?.messageVersions ? { messageIds: ['<m-1@smtp-relay.mailin.fr>', '<m-2@smtp-relay.mailin.fr>'] } : { messageId: '<m-1@smtp-relay.mailin.fr>' } })));
    rb = await rig.relay(companyPolicy({ unknown: 'block' }));
  });
  afterAll(() => rig?.close());

  it('strips the attacker BCC: Brevo never sees it', async () => {
    sink.requests.length = 0;
    const res = await sendTransac(r, `{ ${base}, to: [{ email: 'alice@company.com', name: 'Alice' }], bcc: [{ email: 'phan@giftshop.club' }] }`);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.value).toEqual({ messageId: '<m-1@smtp-relay.mailin.fr>' });
    expect(sink.requests).toHaveLength(1);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/v3/smtp/email');
    expect(sent.headers['api-key']).toBe('xkeysib-test');
    expect(sent.body.toString('utf8')).not.toContain('giftshop');
    expect(sent.json.to).toEqual([{ email: 'alice@company.com', name: 'Alice' }]);
    expect(sent.json.bcc).toBeUndefined();
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ channel: 'http', provider: 'brevo', endpoint: 'smtp.email', action: 'stripped', status: 201 });
    expect(ev.recipients.stripped).toEqual(['phan@giftshop.club']);
  });

  it('block mode: the SDK call fails with postguard\'s reason and nothing reaches Brevo', async () => {
    sink.requests.length = 0;
    const res = await sendTransac(rb, `{ ${base}, to: [{ email: 'alice@company.com' }], bcc: [{ email: 'phan@giftshop.club' }] }`);
    expect(res.ok).toBe(false);
    expect(res.value.name).toBe('BrevoError');
    expect(res.value.status).toBe(403);
    expect(res.value.message).toContain('postguard: blocked by policy');
    expect(res.value.body).toMatchObject({ code: 'permission_denied' });
    expect(sink.requests).toHaveLength(0);
    expect(await lastEvent(rb)).toMatchObject({ provider: 'brevo', action: 'blocked', status: 403 });
  });

  const versions = `{ ${base}, htmlContent: '<p>numbers</p>', messageVersions: [
    { to: [{ email: 'alice@company.com' }], params: { n: 1 } },
    { to: [{ email: 'bob@company.com' }], bcc: [{ email: 'phan@giftshop.club' }], subject: 'Q3 for Bob' },
  ] }`;

  it('attacker only in messageVersions[1].bcc: only that version is edited', async () => {
    sink.requests.length = 0;
    const res = await sendTransac(r, versions);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.value.messageIds).toHaveLength(2);
    const sent = sink.requests[0]!;
    expect(sent.body.toString('utf8')).not.toContain('giftshop');
    expect(sent.json.messageVersions).toEqual([
      { to: [{ email: 'alice@company.com' }], params: { n: 1 } },
      { to: [{ email: 'bob@company.com' }], subject: 'Q3 for Bob' },
    ]);
    const ev = await lastEvent(r);
    expect(ev.action).toBe('stripped');
    expect(ev.messages).toEqual([
      expect.objectContaining({ message: 'messageVersions[0]', decision: 'deliver', stripped: [] }),
      expect.objectContaining({ message: 'messageVersions[1]', decision: 'deliver', stripped: ['phan@giftshop.club'] }),
    ]);
  });

  it('attacker only in messageVersions[1].bcc, block mode: the whole request is refused, naming it', async () => {
    sink.requests.length = 0;
    const res = await sendTransac(rb, versions);
    expect(res.ok).toBe(false);
    expect(res.value.message).toContain('postguard: blocked by policy');
    expect(res.value.message).toContain('in messageVersions[1]');
    expect(sink.requests).toHaveLength(0);
    expect((await lastEvent(rb)).action).toBe('blocked');
  });

  it('a top-level to that Brevo ignores beside messageVersions is still read (and stripped)', async () => {
    sink.requests.length = 0;
    const res = await sendTransac(r, `{ ${base}, to: [{ email: 'phan@giftshop.club' }], messageVersions: [{ to: [{ email: 'alice@company.com' }] }] }`);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!;
    expect(sent.body.toString('utf8')).not.toContain('giftshop');
    expect(sent.json.to).toBeUndefined();
    expect(sent.json.messageVersions).toEqual([{ to: [{ email: 'alice@company.com' }] }]);
    expect((await lastEvent(r)).recipients.stripped).toEqual(['phan@giftshop.club']);
  });

  it('a Bcc header in headers{} is a recipient: stripped, the other headers kept', async () => {
    sink.requests.length = 0;
    const res = await sendTransac(r, `{ ${base}, to: [{ email: 'alice@company.com' }], headers: { Bcc: 'phan@giftshop.club', 'Idempotency-Key': 'abc-123' } }`);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    const sent = sink.requests[0]!;
    expect(sent.body.toString('utf8')).not.toContain('giftshop');
    expect(sent.json.headers).toEqual({ 'Idempotency-Key': 'abc-123' });
    expect((await lastEvent(r)).recipients.stripped).toEqual(['phan@giftshop.club']);
  });

  it('replyTo at an unknown domain is blocked', async () => {
    sink.requests.length = 0;
    const res = await sendTransac(r, `{ ${base}, to: [{ email: 'alice@company.com' }], replyTo: { email: 'phan@giftshop.club' } }`);
    expectRefused(res, sink, 'postguard: blocked by policy');
    const ev = await lastEvent(r);
    expect(ev.recipients.verdicts).toContainEqual(expect.objectContaining({ address: 'phan@giftshop.club', field: 'reply-to', outcome: 'block' }));
  });

  it('an attachment Brevo would fetch by URL is refused; base64 content is scanned', async () => {
    sink.requests.length = 0;
    const byUrl = await sendTransac(r, `{ ${base}, to: [{ email: 'alice@company.com' }], attachment: [{ url: 'https://files.giftshop.club/x.pdf?d=q3', name: 'x.pdf' }] }`);
    expect(byUrl.ok).toBe(false);
    expect(byUrl.value.message).toContain('postguard: blocked by policy');
    expect(await lastEvent(r)).toMatchObject({ action: 'blocked', rule: 'input' });
    expect((await lastEvent(r)).problems[0]).toMatch(/^request\.attachment_url: attachment\[0\]\.url/);
    const secret = Buffer.from(`aws_access_key_id=${AWS}\n`).toString('base64');
    const inline = await sendTransac(r, `{ ${base}, to: [{ email: 'alice@company.com' }], attachment: [{ content: '${secret}', name: 'creds.txt' }] }`);
    expect(inline.ok).toBe(false);
    expect(await lastEvent(r)).toMatchObject({ action: 'blocked', rule: 'secrets[0]' });
    expect(sink.requests).toHaveLength(0);
  });

  it('template params are scanned; the legacy api.sendinblue.com host is inspected the same way', async () => {
    sink.requests.length = 0;
    const client = `{ apiKey: 'xkeysib-test', maxRetries: 0, baseUrl: 'https://api.sendinblue.com/v3' }`;
    const leak = await sendTransac(r, `{ templateId: 7, to: [{ email: 'alice@company.com' }], params: { key: '${AWS}' } }`, client);
    expect(leak.ok).toBe(false);
    expect(await lastEvent(r)).toMatchObject({ host: 'api.sendinblue.com', action: 'blocked', rule: 'secrets[0]' });
    expect(sink.requests).toHaveLength(0);
    const ok = await sendTransac(r, `{ templateId: 7, to: [{ email: 'alice@company.com' }], cc: [{ email: 'phan@giftshop.club' }], params: { n: 1 } }`, client);
    expect(ok.ok, JSON.stringify(ok)).toBe(true);
    expect(sink.requests).toHaveLength(1);
    expect(sink.requests[0]!.headers.host).toBe('api.sendinblue.com');
    expect(sink.requests[0]!.json).toEqual({ templateId: 7, to: [{ email: 'alice@company.com' }], params: { n: 1 } });
  });

  it('template writes (where a stored reply-to would come from) are refused', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, `
      const { BrevoClient } = await import('@getbrevo/brevo');
      const brevo = new BrevoClient({ apiKey: 'xkeysib-test', maxRetries: 0 });
      return await brevo.transactionalEmails.updateSmtpTemplate({ templateId: 7, replyTo: 'phan@giftshop.club' });
    `);
    expectRefused(res, sink, 'postguard: PUT /v3/smtp/templates/7 is not a send endpoint');
    expect(await lastEvent(r)).toMatchObject({ provider: 'brevo', action: 'blocked', rule: 'http.endpoints' });
  });

  it('an unknown top-level key is refused with 403 and nothing is forwarded', async () => {
    sink.requests.length = 0;
    const json = JSON.stringify({ sender: { email: 'agent@company.com' }, to: [{ email: 'alice@company.com' }], subject: 'Q3', textContent: 'numbers', bccList: [{ email: 'phan@giftshop.club' }] });
    const res = await postJson(r, 'https://api.brevo.com/v3/smtp/email', json, ['api-key: xkeysib-test']);
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body)).toMatchObject({ code: 'permission_denied', message: expect.stringContaining('postguard: blocked by policy') });
    expect(sink.requests).toHaveLength(0);
    const ev = await lastEvent(r);
    expect(ev).toMatchObject({ action: 'blocked', rule: 'input' });
    expect(ev.problems).toEqual(['request.unknown_field: body: unknown field "bccList"']);
  });
});
