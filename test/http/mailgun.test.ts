// Mailgun through the proxy with mailgun.js (Node's global FormData; its axios goes through
// HTTPS_PROXY with absolute-form https:// requests), and curl for the shapes no SDK sends, against
// a fake api.mailgun.net. What the sink received is read back with the relay's own form parser.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseMultipart, parseUrlencoded, type FormField } from '../../src/http/forms.js';
import { runAgent } from '../helpers/agent.js';
import { expectRefused } from '../helpers/provider.js';
import { curl } from '../helpers/http-client.js';
import { startHttpsSink, type HttpsSink, type SinkRequest } from '../helpers/https-sink.js';
import { adminGet, companyPolicy, startTestRelay, type TestRelay } from '../helpers/relay.js';

const HOSTS = ['api.mailgun.net', 'api.eu.mailgun.net'];
const QUEUED = { id: '<20250101.1@example.com>', message: 'Queued. Thank you.' };

async function lastEvent(r: TestRelay) {
  return (await adminGet(r, '/api/events?kind=message&limit=1')).body.events[0];
}

const sdk = (call: string, url = '') => `
  const { default: Mailgun } = await import('mailgun.js');
  const mg = new Mailgun(FormData).client({ username: 'api', key: 'key-123'${url ? `, url: '${url}'` : ''} });
  ${call}`;

async function formOf(req: SinkRequest): Promise<FormField[]> {
  const type = String(req.headers['content-type'] ?? '');
  if (type.startsWith('application/x-www-form-urlencoded')) return parseUrlencoded(req.body.toString('utf8'));
  return parseMultipart(req.body, type, 64 << 20);
}
const values = (fields: FormField[], name: string) => fields.filter((f) => f.name === name).map((f) => (typeof f.value === 'string' ? f.value : f.value.toString('utf8')));

/** A multipart body built by hand, byte for byte: `parts` are [headers, content]. */
function multipart(boundary: string, parts: [string, string][]): string {
  return `${parts.map(([h, c]) => `--${boundary}\r\n${h}\r\n\r\n${c}\r\n`).join('')}--${boundary}--\r\n`;
}

const postForm = (r: TestRelay, path: string, body: string, type: string) =>
  curl(r, `https://api.mailgun.net${path}`, ['-X', 'POST', '-u', 'api:key-123', '-H', `content-type: ${type}`, '--data-binary', '@-'], body);

describe('Mailgun through the proxy', () => {
  let sink: HttpsSink;
  let r: TestRelay; // strip mode
  let b: TestRelay; // block mode
  beforeAll(async () => {
    sink = await startHttpsSink(HOSTS);
    sink.respond = () => ({ body: QUEUED });
    const env = { POSTGUARD_RESOLVE: sink.resolve(HOSTS), POSTGUARD_UPSTREAM_CA: sink.caFile };
    [r, b] = await Promise.all([startTestRelay({ policy: companyPolicy(), env }), startTestRelay({ policy: companyPolicy({ unknown: 'block' }), env })]);
  });
  afterAll(async () => {
    await r?.close();
    await b?.close();
    await sink?.close();
  });

  describe('messages (mailgun.js)', () => {
    it('strips the attacker BCC: the SDK call succeeds and Mailgun never sees it', async () => {
      sink.requests.length = 0;
      const res = await runAgent(r, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: 'alice@company.com', bcc: 'phan@giftshop.club', subject: 'Q3', text: 'numbers', html: '<p>numbers</p>' });`));
      expect(res.ok, JSON.stringify(res)).toBe(true);
      expect(res.value).toMatchObject({ status: 200, ...QUEUED });
      expect(sink.requests).toHaveLength(1);
      const sent = sink.requests[0]!;
      expect(sent.url).toBe('/v3/example.com/messages');
      expect(sent.headers.authorization).toBe(`Basic ${Buffer.from('api:key-123').toString('base64')}`);
      expect(sent.body.toString('latin1')).not.toContain('giftshop');
      const form = await formOf(sent);
      expect(values(form, 'to')).toEqual(['alice@company.com']);
      expect(values(form, 'bcc')).toEqual([]);
      expect(values(form, 'subject')).toEqual(['Q3']);
      expect(values(form, 'html')).toEqual(['<p>numbers</p>']);
      const ev = await lastEvent(r);
      expect(ev).toMatchObject({ channel: 'http', provider: 'mailgun', endpoint: 'messages', action: 'stripped', status: 200 });
      expect(ev.recipients.stripped).toEqual(['phan@giftshop.club']);
      expect(ev.recipients.kept).toEqual(['alice@company.com']);
    });

    it('in block mode refuses the send: the SDK error carries postguard, nothing is forwarded', async () => {
      sink.requests.length = 0;
      const res = await runAgent(b, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: 'alice@company.com', bcc: 'phan@giftshop.club', subject: 'Q3', text: 'numbers' });`));
      expect(res.ok).toBe(false);
      expect(res.value.status).toBe(403);
      expect(res.value.message).toMatch(/^postguard: blocked by policy: unknown recipient/);
      expect(res.value.body).toBe(res.value.message); // mailgun.js `details`: Mailgun's own `message` field
      expect(sink.requests).toHaveLength(0);
      const ev = await lastEvent(b);
      expect(ev).toMatchObject({ provider: 'mailgun', action: 'blocked', status: 403 });
    });

    it('strips the attacker from repeated `to` fields: the second field goes, the first stays', async () => {
      sink.requests.length = 0;
      const res = await runAgent(r, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: ['alice@company.com', 'phan@giftshop.club'], subject: 's', text: 't' });`));
      expect(res.ok, JSON.stringify(res)).toBe(true);
      const sent = sink.requests[0]!;
      expect(sent.body.toString('latin1')).not.toContain('giftshop');
      expect(values(await formOf(sent), 'to')).toEqual(['alice@company.com']);
      expect((await lastEvent(r)).recipients.stripped).toEqual(['phan@giftshop.club']);
    });

    it('strips the attacker from a comma list in one `bcc` field, keeping the rest of the list', async () => {
      sink.requests.length = 0;
      const res = await runAgent(r, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: 'alice@company.com', bcc: 'bob@company.com, phan@giftshop.club', subject: 's', text: 't' });`));
      expect(res.ok, JSON.stringify(res)).toBe(true);
      const form = await formOf(sink.requests[0]!);
      expect(values(form, 'bcc')).toEqual(['bob@company.com']);
      expect(sink.requests[0]!.body.toString('latin1')).not.toContain('giftshop');
    });

    it('reads `h:Bcc` as a recipient: stripped (the header removed) or, in block mode, refused', async () => {
      sink.requests.length = 0;
      const call = sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: 'alice@company.com', 'h:Bcc': 'phan@giftshop.club', 'h:X-Ref': 'r-1', subject: 's', text: 't' });`);
      const res = await runAgent(r, call);
      expect(res.ok, JSON.stringify(res)).toBe(true);
      const form = await formOf(sink.requests[0]!);
      expect(form.map((f) => f.name)).not.toContain('h:Bcc');
      expect(values(form, 'h:X-Ref')).toEqual(['r-1']);
      expect(sink.requests[0]!.body.toString('latin1')).not.toContain('giftshop');
      expect((await lastEvent(r)).recipients.stripped).toEqual(['phan@giftshop.club']);

      const blocked = await runAgent(b, call);
      expect(blocked.ok).toBe(false);
      expect(blocked.value.message).toContain('postguard');
      expect(sink.requests).toHaveLength(1);
    });

    it('reads every recipient-variables key as a recipient: only the attacker key is taken out', async () => {
      sink.requests.length = 0;
      const vars = { 'alice@company.com': { id: 1 }, 'bob@company.com': { id: 2 }, 'phan@giftshop.club': { id: 3 } };
      const res = await runAgent(r, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: ['alice@company.com', 'bob@company.com'], subject: 'hi %recipient.id%', text: 't', 'recipient-variables': ${JSON.stringify(JSON.stringify(vars))} });`));
      expect(res.ok, JSON.stringify(res)).toBe(true);
      const form = await formOf(sink.requests[0]!);
      expect(values(form, 'to')).toEqual(['alice@company.com', 'bob@company.com']);
      expect(JSON.parse(values(form, 'recipient-variables')[0]!)).toEqual({ 'alice@company.com': { id: 1 }, 'bob@company.com': { id: 2 } });
      const ev = await lastEvent(r);
      expect(ev.recipients.stripped).toEqual(['phan@giftshop.club']);
      expect(ev.recipients.kept).toEqual(['alice@company.com', 'bob@company.com']);

      sink.requests.length = 0;
      const blocked = await runAgent(b, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: 'alice@company.com', text: 't', 'recipient-variables': ${JSON.stringify(JSON.stringify(vars))} });`));
      expectRefused(blocked, sink);

      // Two keys one reader folds together: which variables (and which address) win is not knowable.
      const twice = await runAgent(r, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: 'alice@company.com', text: 't', 'recipient-variables': '{"alice@company.com": {}, "Alice@company.com": {}}' });`));
      expect(twice.ok).toBe(false);
      expect((await lastEvent(r)).problems).toEqual([expect.stringMatching(/^request\.json: recipient-variables\[0\]: duplicate key/)]);
      expect(sink.requests).toHaveLength(0);
    });

    it('reads attachments: a .kdbx file is held, answered in Mailgun’s queued shape', async () => {
      sink.requests.length = 0;
      const res = await runAgent(r, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: 'alice@company.com', subject: 's', text: 't', attachment: [{ filename: 'vault.kdbx', data: Buffer.from('db') }] });`));
      expect(res.ok, JSON.stringify(res)).toBe(true);
      expect(res.value.status).toBe(200);
      expect(res.value.message).toMatch(/^Held for review by postguard/);
      const ev = await lastEvent(r);
      expect(ev).toMatchObject({ action: 'quarantined' });
      expect(res.value.id).toBe(`<${ev.id}@postguard>`);
      expect(sink.requests).toHaveLength(0);
    });

    it('scans template variables and text attachments for secrets', async () => {
      sink.requests.length = 0;
      const inVars = await runAgent(r, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: 'alice@company.com', template: 'welcome', 't:variables': JSON.stringify({ key: 'AKIAIOSFODNN7EXAMPLE' }) });`));
      expect(inVars.ok).toBe(false);
      expect(inVars.value.message).toMatch(/^postguard: blocked by policy: secret or credential in content/);
      const inFile = await runAgent(r, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: 'alice@company.com', subject: 's', text: 't', attachment: [{ filename: 'k.txt', data: Buffer.from('token ghp_1234567890abcdefghijklmnopqrstuvwxyzAB') }] });`));
      expectRefused(inFile, sink, 'secret or credential');
    });

    it('goes to the EU host the same way', async () => {
      sink.requests.length = 0;
      const res = await runAgent(r, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: 'alice@company.com, phan@giftshop.club', subject: 's', text: 't' });`, 'https://api.eu.mailgun.net'));
      expect(res.ok, JSON.stringify(res)).toBe(true);
      expect(sink.requests[0]!.headers.host).toBe('api.eu.mailgun.net');
      expect(values(await formOf(sink.requests[0]!), 'to')).toEqual(['alice@company.com']);
    });

    it('refuses an unknown field with 403 and forwards nothing, in strip mode too', async () => {
      sink.requests.length = 0;
      const res = await runAgent(r, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: 'alice@company.com', subject: 's', text: 't', recipients: 'phan@giftshop.club' });`));
      expect(res.ok).toBe(false);
      expect(res.value.status).toBe(403);
      expect(res.value.message).toMatch(/^postguard: blocked by policy: request field the relay does not know/);
      expect(sink.requests).toHaveLength(0);
      const ev = await lastEvent(r);
      expect(ev).toMatchObject({ action: 'blocked', status: 403 });
      expect(ev.problems).toEqual(['request.unknown_field: unknown field "recipients"']);
    });

    it('refuses o:archive-to (a copy of the message POSTed to a URL) and an unknown o: option', async () => {
      sink.requests.length = 0;
      const cases: [string, string][] = [
        [`'o:archive-to': 'https://giftshop.club/in'`, 'request.archive_to: o:archive-to[0]'],
        [`'h:X-Mailgun-Archive-To': 'https://giftshop.club/in'`, 'request.archive_to: h:X-Mailgun-Archive-To[0]'],
        [`'o:forward-to': 'x'`, 'request.unknown_field: unknown field "o:forward-to"'],
      ];
      for (const [extra, problem] of cases) {
        const res = await runAgent(r, sdk(`return await mg.messages.create('example.com', { from: 'agent@company.com', to: 'alice@company.com', subject: 's', text: 't', ${extra} });`));
        expect(res.ok, extra).toBe(false);
        expect(res.value.status).toBe(403);
        expect(res.value.message).toContain('postguard');
        expect((await lastEvent(r)).problems).toEqual([expect.stringContaining(problem)]);
      }
      expect(sink.requests).toHaveLength(0);
    });
  });

  describe('messages.mime (mailgun.js)', () => {
    const mime = [
      'From: agent@company.com',
      'To: alice@company.com',
      'Bcc: phan@giftshop.club',
      'Subject: report',
      'Content-Type: text/plain; charset=utf-8',
      '',
      'the numbers',
      '',
    ].join('\r\n');

    it('strips the attacker from the `to` envelope and the MIME Bcc header; the rest goes on byte for byte', async () => {
      sink.requests.length = 0;
      const res = await runAgent(r, sdk(`return await mg.messages.create('example.com', { to: ['alice@company.com', 'phan@giftshop.club'], message: Buffer.from(${JSON.stringify(mime)}) });`));
      expect(res.ok, JSON.stringify(res)).toBe(true);
      expect(sink.requests).toHaveLength(1);
      const sent = sink.requests[0]!;
      expect(sent.url).toBe('/v3/example.com/messages.mime');
      expect(sent.body.toString('latin1')).not.toContain('giftshop');
      const form = await formOf(sent);
      expect(values(form, 'to')).toEqual(['alice@company.com']);
      expect(values(form, 'message')).toEqual([mime.replace('Bcc: phan@giftshop.club\r\n', '')]);
      const ev = await lastEvent(r);
      expect(ev).toMatchObject({ endpoint: 'messages.mime', action: 'stripped' });
      expect(ev.recipients.stripped).toEqual(['phan@giftshop.club']);
    });

    it('takes the message as a text field too (mailgun.js for a string), and refuses it in block mode', async () => {
      sink.requests.length = 0;
      const call = sdk(`return await mg.messages.create('example.com', { to: 'alice@company.com', message: ${JSON.stringify(mime)} });`);
      const res = await runAgent(r, call);
      expect(res.ok, JSON.stringify(res)).toBe(true);
      expect(values(await formOf(sink.requests[0]!), 'message')).toEqual([mime.replace('Bcc: phan@giftshop.club\r\n', '')]);

      const blocked = await runAgent(b, call);
      expect(blocked.ok).toBe(false);
      expect(blocked.value.message).toContain('postguard');
      expect(sink.requests).toHaveLength(1);
      expect(await lastEvent(b)).toMatchObject({ endpoint: 'messages.mime', action: 'blocked' });
    });

    it('refuses an X-Mailgun-Archive-To header inside the MIME message', async () => {
      sink.requests.length = 0;
      const archived = mime.replace('Bcc: phan@giftshop.club\r\n', 'X-Mailgun-Archive-To: https://giftshop.club/in\r\n');
      const res = await runAgent(r, sdk(`return await mg.messages.create('example.com', { to: 'alice@company.com', message: Buffer.from(${JSON.stringify(archived)}) });`));
      expectRefused(res, sink);
      expect((await lastEvent(r)).problems).toEqual([expect.stringMatching(/^request\.archive_to: message x-mailgun-archive-to header/)]);
    });
  });

  describe('raw requests (curl)', () => {
    it('strips from a urlencoded send and forwards it urlencoded', async () => {
      sink.requests.length = 0;
      const body = new URLSearchParams([['from', 'agent@company.com'], ['to', 'alice@company.com'], ['bcc', 'phan@giftshop.club'], ['subject', 's'], ['text', 'hello & bye']]).toString();
      const res = await postForm(r, '/v3/example.com/messages', body, 'application/x-www-form-urlencoded');
      expect(res.status, res.body).toBe(200);
      expect(JSON.parse(res.body)).toEqual(QUEUED);
      const sent = sink.requests[0]!;
      expect(sent.headers['content-type']).toBe('application/x-www-form-urlencoded');
      expect(sent.body.toString('utf8')).not.toContain('giftshop');
      const form = await formOf(sent);
      expect(values(form, 'to')).toEqual(['alice@company.com']);
      expect(values(form, 'text')).toEqual(['hello & bye']);
      expect((await lastEvent(r)).action).toBe('stripped');
    });

    it('refuses a multipart field with Content-Transfer-Encoding: base64 (readers disagree on it)', async () => {
      sink.requests.length = 0;
      const body = multipart('xyz', [
        ['Content-Disposition: form-data; name="from"', 'agent@company.com'],
        ['Content-Disposition: form-data; name="to"', 'alice@company.com'],
        ['Content-Disposition: form-data; name="bcc"\r\nContent-Transfer-Encoding: base64', Buffer.from('phan@giftshop.club').toString('base64')],
        ['Content-Disposition: form-data; name="text"', 't'],
      ]);
      const res = await postForm(r, '/v3/example.com/messages', body, 'multipart/form-data; boundary=xyz');
      expect(res.status).toBe(403);
      expect(JSON.parse(res.body).message).toMatch(/^postguard: multipart field bcc uses Content-Transfer-Encoding base64/);
      expect(sink.requests).toHaveLength(0);
      expect(await lastEvent(r)).toMatchObject({ action: 'blocked', status: 403 });
    });

    it('refuses a multipart field in another charset (busboy would decode UTF-16, the provider may not)', async () => {
      sink.requests.length = 0;
      const body = multipart('xyz', [
        ['Content-Disposition: form-data; name="from"', 'agent@company.com'],
        ['Content-Disposition: form-data; name="to"', 'alice@company.com'],
        ['Content-Disposition: form-data; name="bcc"\r\nContent-Type: text/plain; charset=utf-16le', Buffer.from('phan@giftshop.club', 'utf16le').toString('latin1')],
        ['Content-Disposition: form-data; name="text"', 't'],
      ]);
      const res = await postForm(r, '/v3/example.com/messages', body, 'multipart/form-data; boundary=xyz');
      expect(res.status).toBe(403);
      expect(JSON.parse(res.body).message).toMatch(/^postguard: multipart body: part declares charset "utf-16le"/);
      expect(sink.requests).toHaveLength(0);
    });

    it.each([
      ['a delimiter line with trailing space', 'XB ', 'Content-Disposition: form-data; name="bcc"', /characters after the boundary/],
      ['an RFC 2231 name*', 'XB', 'Content-Disposition: form-data; name="v:note"; name*=utf-8\'\'bcc', /RFC 2231/],
      ['a repeated name parameter', 'XB', 'Content-Disposition: form-data; name="v:note"; name="bcc"', /repeats a parameter/],
    ])('refuses a part other parsers would read as bcc: %s', async (_what, delimiter, disposition, message) => {
      sink.requests.length = 0;
      const body = `--XB\r\nContent-Disposition: form-data; name="from"\r\n\r\nagent@company.com\r\n--XB\r\nContent-Disposition: form-data; name="to"\r\n\r\nalice@company.com\r\n--${delimiter}\r\n${disposition}\r\n\r\nphan@giftshop.club\r\n--XB\r\nContent-Disposition: form-data; name="text"\r\n\r\nt\r\n--XB--\r\n`;
      const res = await postForm(r, '/v3/company.com/messages', body, 'multipart/form-data; boundary=XB');
      expect(res.status).toBe(403);
      expect(JSON.parse(res.body).message).toMatch(message);
      expect(sink.requests).toHaveLength(0);
    });

    it('forwards a multipart send as the fields it read, never the bytes as sent', async () => {
      sink.requests.length = 0;
      const body = multipart('orig-boundary', [['Content-Disposition: form-data; name="from"', 'agent@company.com'], ['Content-Disposition: form-data; name="to"', 'alice@company.com'], ['Content-Disposition: form-data; name="text"', 'hello']]);
      const res = await postForm(r, '/v3/company.com/messages', body, 'multipart/form-data; boundary=orig-boundary');
      expect(res.status, res.body).toBe(200);
      const sent = sink.requests[0]!;
      expect(String(sent.headers['content-type'])).toMatch(/^multipart\/form-data; boundary=postguard-/);
      expect(sent.body.toString('latin1')).not.toContain('orig-boundary');
      expect(values(await formOf(sent), 'to')).toEqual(['alice@company.com']);
    });

    it('refuses query parameters on a send (`?bcc=` could be read as a field)', async () => {
      sink.requests.length = 0;
      const body = new URLSearchParams([['from', 'agent@company.com'], ['to', 'alice@company.com'], ['text', 't']]).toString();
      const res = await postForm(r, '/v3/example.com/messages?bcc=phan%40giftshop.club', body, 'application/x-www-form-urlencoded');
      expect(res.status).toBe(403);
      expect(JSON.parse(res.body).message).toContain('postguard');
      expect(sink.requests).toHaveLength(0);
      expect((await lastEvent(r)).problems).toEqual([expect.stringMatching(/^request\.query: query parameter "bcc"/)]);
    });

    it('refuses other body types, and writes to endpoints it does not inspect', async () => {
      sink.requests.length = 0;
      const json = await postForm(r, '/v3/example.com/messages', JSON.stringify({ to: 'phan@giftshop.club' }), 'application/json');
      expect(json.status).toBe(415);
      const resend = await postForm(r, '/v3/domains/example.com/messages/key-1', 'to=phan%40giftshop.club', 'application/x-www-form-urlencoded');
      expect(resend.status).toBe(403);
      expect(JSON.parse(resend.body).message).toMatch(/^postguard: POST \/v3\/domains\/example.com\/messages\/key-1 is not a send endpoint/);
      expect(sink.requests).toHaveLength(0);
    });
  });
});
