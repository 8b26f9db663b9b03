import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REASONS } from '../../src/policy/decide.js';
import { runAgent } from '../helpers/agent.js';
import { curl, post } from '../helpers/http-client.js';
import type { HttpsSink, SinkRequest } from '../helpers/https-sink.js';
import { lastEvent, startProvider, type ProviderRig, expectRefused } from '../helpers/provider.js';
import { adminGet, companyPolicy, type TestRelay } from '../helpers/relay.js';

const HOST = 'email.us-east-1.amazonaws.com';
const SES_XMLNS = 'http://ses.amazonaws.com/doc/2010-12-01/';

// The AWS SDK gives node-http-handler an https.Agent of its own, and NODE_USE_ENV_PROXY only reaches
// Node's global agents: without `proxyEnv` the SDK would go around the relay (see the report, S29).
const CLIENT_OPTIONS = `{ region: 'us-east-1', credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'secret' }, maxAttempts: 1,
  requestHandler: { httpsAgent: new (await import('node:https')).Agent({ keepAlive: true, proxyEnv: process.env }) } }`;
const v2 = (code: string) => `
  const sdk = await import('@aws-sdk/client-sesv2');
  const c = new sdk.SESv2Client(${CLIENT_OPTIONS});
  ${code}`;
const v1 = (code: string) => `
  const sdk = await import('@aws-sdk/client-ses');
  const c = new sdk.SESClient(${CLIENT_OPTIONS});
  ${code}`;

/** What SES answers: v2 JSON, v1 the query API's XML for the action sent. */
function respond(req: SinkRequest) {
  if (req.url.startsWith('/v2/email/outbound-bulk-emails')) return { body: { BulkEmailEntryResults: [{ Status: 'SUCCESS', MessageId: 'v2-bulk-1' }] } };
  if (req.url.startsWith('/v2/')) return { body: { MessageId: 'v2-msg-1' } };
  const action = new URLSearchParams(req.body.toString('utf8')).get('Action') ?? new URL(req.url, 'https://x').searchParams.get('Action') ?? '';
  const result = action === 'SendBulkTemplatedEmail' ? '<Status><member><Status>Success</Status><MessageId>v1-bulk-1</MessageId></member></Status>' : '<MessageId>v1-msg-1</MessageId>';
  return {
    headers: { 'content-type': 'text/xml' },
    body: `<${action}Response xmlns="${SES_XMLNS}"><${action}Result>${result}</${action}Result><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></${action}Response>`,
  };
}

// Unsigned requests (no Authorization), the way only a raw client sends them: the strip path.
const FORM = 'application/x-www-form-urlencoded';
const postJson = (r: TestRelay, path: string, doc: unknown) => post(r, `https://${HOST}${path}`, JSON.stringify(doc), 'application/json');
const postForm = (r: TestRelay, fields: Record<string, string>, path = '/') => post(r, `https://${HOST}${path}`, new URLSearchParams(fields).toString(), FORM);

const mime = (headers: string) => `${headers}\r\nFrom: agent@company.com\r\nSubject: Q3\r\nContent-Type: text/plain\r\n\r\nnumbers\r\n`;
const form = (req: SinkRequest) => Object.fromEntries(new URLSearchParams(req.body.toString('utf8')));

describe('Amazon SES through the proxy', () => {
  let rig: ProviderRig;
  let sink: HttpsSink;
  let r: TestRelay;
  let rb: TestRelay;
  beforeAll(async () => {
    ({ sink, r } = rig = await startProvider([HOST], companyPolicy(), respond));
    rb = await rig.relay(companyPolicy({ unknown: 'block' }));
  });
  afterAll(() => rig?.close());
  const fresh = () => void (sink.requests.length = 0);

  describe('v2 SDK (SESv2Client, signed)', () => {
    it('an allowed send goes through byte for byte, signature intact', async () => {
      fresh();
      const res = await runAgent(r, v2(`return await c.send(new sdk.SendEmailCommand({ FromEmailAddress: 'agent@company.com', Destination: { ToAddresses: ['alice@company.com'] }, Content: { Simple: { Subject: { Data: 'Q3' }, Body: { Text: { Data: 'numbers' } } } } }));`));
      expect(res.ok, JSON.stringify(res)).toBe(true);
      expect(res.value.MessageId).toBe('v2-msg-1');
      expect(sink.requests).toHaveLength(1);
      const sent = sink.requests[0]!;
      expect(sent.url).toBe('/v2/email/outbound-emails');
      expect(sent.headers.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDTEST\//);
      expect(createHash('sha256').update(sent.body).digest('hex')).toBe(sent.headers['x-amz-content-sha256']);
      expect(sent.json.Destination).toEqual({ ToAddresses: ['alice@company.com'] });
      expect(await lastEvent(r)).toMatchObject({ provider: 'ses', endpoint: 'v2.SendEmail', action: 'forwarded', status: 200 });
    });

    it('an attacker Bcc blocks the signed send even in strip mode: it cannot be rewritten', async () => {
      fresh();
      const res = await runAgent(r, v2(`return await c.send(new sdk.SendEmailCommand({ FromEmailAddress: 'agent@company.com', Destination: { ToAddresses: ['alice@company.com'], BccAddresses: ['phan@giftshop.club'] }, Content: { Simple: { Subject: { Data: 'Q3' }, Body: { Text: { Data: 'numbers' } } } } }));`));
      expect(res.ok).toBe(false);
      expect(res.value).toMatchObject({ name: 'AccessDeniedException', status: 403 });
      expect(res.value.message).toContain('postguard');
      expect(res.value.message).toContain(REASONS.unstrippable);
      expect(sink.requests).toHaveLength(0);
      const ev = await lastEvent(r);
      expect(ev).toMatchObject({ provider: 'ses', action: 'blocked', reason: REASONS.unstrippable, status: 403 });
      expect(ev.recipients.verdicts).toContainEqual(expect.objectContaining({ address: 'phan@giftshop.club', source: 'Destination.BccAddresses[0]', outcome: 'block' }));
    });

    it('raw MIME with a Bcc header and no Destination: SES would deliver to it, so it blocks', async () => {
      fresh();
      const raw = mime('To: alice@company.com\r\nBcc: phan@giftshop.club');
      const res = await runAgent(r, v2(`return await c.send(new sdk.SendEmailCommand({ Content: { Raw: { Data: Buffer.from(${JSON.stringify(raw)}) } } }));`));
      expectRefused(res, sink);
      const ev = await lastEvent(r);
      expect(ev).toMatchObject({ action: 'blocked', reason: REASONS.unstrippable });
      expect(ev.recipients.verdicts).toContainEqual(expect.objectContaining({ address: 'phan@giftshop.club', field: 'bcc', source: 'Content.Raw.Data bcc header' }));
    });

    it('FeedbackForwardingEmailAddress at an unknown domain is blocked (bounces carry the message)', async () => {
      fresh();
      const res = await runAgent(r, v2(`return await c.send(new sdk.SendEmailCommand({ FromEmailAddress: 'agent@company.com', FeedbackForwardingEmailAddress: 'phan@giftshop.club', Destination: { ToAddresses: ['alice@company.com'] }, Content: { Simple: { Subject: { Data: 'Q3' }, Body: { Text: { Data: 'numbers' } } } } }));`));
      expectRefused(res, sink);
      const ev = await lastEvent(r);
      expect(ev.action).toBe('blocked');
      expect(ev.recipients.verdicts).toContainEqual(expect.objectContaining({ address: 'phan@giftshop.club', field: 'notify', source: 'FeedbackForwardingEmailAddress', outcome: 'block' }));
    });

    it('template data is content: a secret in it blocks', async () => {
      fresh();
      const key = ['AKIA', 'IOSFODNN7', 'EXAMPLE'].join('');
      const res = await runAgent(r, v2(`return await c.send(new sdk.SendEmailCommand({ FromEmailAddress: 'agent@company.com', Destination: { ToAddresses: ['alice@company.com'] }, Content: { Template: { TemplateName: 'report', TemplateData: JSON.stringify({ key: '${key}' }) } } }));`));
      expect(res.ok).toBe(false);
      expect(res.value.message).toContain(REASONS.secret);
      expect(sink.requests).toHaveLength(0);
      expect(await lastEvent(r)).toMatchObject({ action: 'blocked', reason: REASONS.secret });
    });

    it('bulk: an allowed send goes through', async () => {
      fresh();
      const res = await runAgent(r, v2(`return await c.send(new sdk.SendBulkEmailCommand({ FromEmailAddress: 'agent@company.com', DefaultContent: { Template: { TemplateName: 'report', TemplateData: '{}' } }, BulkEmailEntries: [{ Destination: { ToAddresses: ['alice@company.com'] } }, { Destination: { ToAddresses: ['bob@company.com'] } }] }));`));
      expect(res.ok, JSON.stringify(res)).toBe(true);
      expect(res.value.BulkEmailEntryResults[0].MessageId).toBe('v2-bulk-1');
      expect(sink.requests).toHaveLength(1);
      expect(sink.requests[0]!.url).toBe('/v2/email/outbound-bulk-emails');
      expect(await lastEvent(r)).toMatchObject({ endpoint: 'v2.SendBulkEmail', action: 'forwarded' });
    });
  });

  describe('v1 SDK (SESClient, query API, signed)', () => {
    it('an allowed SendEmail goes through and the SDK reads the XML reply', async () => {
      fresh();
      const res = await runAgent(r, v1(`return await c.send(new sdk.SendEmailCommand({ Source: 'agent@company.com', Destination: { ToAddresses: ['alice@company.com'] }, Message: { Subject: { Data: 'Q3' }, Body: { Text: { Data: 'numbers' } } } }));`));
      expect(res.ok, JSON.stringify(res)).toBe(true);
      expect(res.value.MessageId).toBe('v1-msg-1');
      expect(sink.requests).toHaveLength(1);
      const sent = sink.requests[0]!;
      expect(createHash('sha256').update(sent.body).digest('hex')).toBe(sent.headers['x-amz-content-sha256']);
      expect(form(sent)).toMatchObject({ Action: 'SendEmail', 'Destination.ToAddresses.member.1': 'alice@company.com' });
      expect(await lastEvent(r)).toMatchObject({ endpoint: 'v1.query', action: 'forwarded' });
    });

    it('SendEmail with an attacker Bcc is blocked, in the query API error shape', async () => {
      fresh();
      const res = await runAgent(r, v1(`return await c.send(new sdk.SendEmailCommand({ Source: 'agent@company.com', Destination: { ToAddresses: ['alice@company.com'], BccAddresses: ['phan@giftshop.club'] }, Message: { Subject: { Data: 'Q3' }, Body: { Text: { Data: 'numbers' } } } }));`));
      expect(res.ok).toBe(false);
      expect(res.value).toMatchObject({ name: 'AccessDenied', status: 403 });
      expect(res.value.message).toContain('postguard');
      expect(sink.requests).toHaveLength(0);
      const ev = await lastEvent(r);
      expect(ev).toMatchObject({ action: 'blocked', reason: REASONS.unstrippable });
      expect(ev.recipients.verdicts).toContainEqual(expect.objectContaining({ address: 'phan@giftshop.club', source: 'Destination.BccAddresses.member.1' }));
    });

    it('SendRawEmail with a MIME Bcc header and no Destinations is blocked', async () => {
      fresh();
      const raw = mime('To: alice@company.com\r\nBcc: phan@giftshop.club');
      const res = await runAgent(r, v1(`return await c.send(new sdk.SendRawEmailCommand({ RawMessage: { Data: Buffer.from(${JSON.stringify(raw)}) } }));`));
      expectRefused(res, sink);
      expect((await lastEvent(r)).recipients.verdicts).toContainEqual(expect.objectContaining({ address: 'phan@giftshop.club', source: 'RawMessage.Data bcc header', outcome: 'block' }));
    });

    it('ReturnPath at an unknown domain is blocked', async () => {
      fresh();
      const res = await runAgent(r, v1(`return await c.send(new sdk.SendTemplatedEmailCommand({ Source: 'agent@company.com', ReturnPath: 'phan@giftshop.club', Destination: { ToAddresses: ['alice@company.com'] }, Template: 'report', TemplateData: '{}' }));`));
      expectRefused(res, sink);
      expect((await lastEvent(r)).recipients.verdicts).toContainEqual(expect.objectContaining({ address: 'phan@giftshop.club', field: 'notify', source: 'ReturnPath', outcome: 'block' }));
    });

    it('SendTemplatedEmail to an allowed recipient goes through', async () => {
      fresh();
      const res = await runAgent(r, v1(`return await c.send(new sdk.SendTemplatedEmailCommand({ Source: 'agent@company.com', Destination: { ToAddresses: ['alice@company.com'] }, Template: 'report', TemplateData: '{"q":3}' }));`));
      expect(res.ok, JSON.stringify(res)).toBe(true);
      expect(res.value.MessageId).toBe('v1-msg-1');
      expect(form(sink.requests[0]!)).toMatchObject({ Action: 'SendTemplatedEmail', TemplateData: '{"q":3}' });
    });

    it('a read the query API takes as POST (GetSendQuota) passes; an account action (VerifyEmailIdentity) is refused with a message the SDK shows', async () => {
      fresh();
      const read = await runAgent(r, v1(`return await c.send(new sdk.GetSendQuotaCommand({}));`));
      expect(read.ok, JSON.stringify(read)).toBe(true);
      expect(sink.requests).toHaveLength(1);
      expect(form(sink.requests[0]!).Action).toBe('GetSendQuota');
      expect((await adminGet(r, '/api/events?kind=http&limit=1')).body.events[0]).toMatchObject({ action: 'passed', endpoint: 'v1.query' });
      fresh();
      const verify = await runAgent(r, v1(`return await c.send(new sdk.VerifyEmailIdentityCommand({ EmailAddress: 'phan@giftshop.club' }));`));
      expectRefused(verify, sink);
    });

  });

  describe('unsigned requests (curl): the strip path', () => {
    it('v2: the attacker Bcc is stripped and the rest sent', async () => {
      fresh();
      const res = await postJson(r, '/v2/email/outbound-emails', { FromEmailAddress: 'agent@company.com', Destination: { ToAddresses: ['alice@company.com'], BccAddresses: ['phan@giftshop.club'] }, Content: { Simple: { Subject: { Data: 'Q3' }, Body: { Text: { Data: 'numbers' } } } } });
      expect(res.status, res.body).toBe(200);
      expect(sink.requests).toHaveLength(1);
      const sent = sink.requests[0]!;
      expect(sent.body.toString()).not.toContain('giftshop');
      expect(sent.json.Destination).toEqual({ ToAddresses: ['alice@company.com'] });
      const ev = await lastEvent(r);
      expect(ev).toMatchObject({ action: 'stripped', endpoint: 'v2.SendEmail' });
      expect(ev.recipients.stripped).toEqual(['phan@giftshop.club']);
    });

    it('v2 Headers: a Bcc entry is stripped (the list goes once empty); a Return-Path entry at an unknown domain blocks', async () => {
      fresh();
      const send = (headers: unknown[]) => postJson(r, '/v2/email/outbound-emails', { FromEmailAddress: 'agent@company.com', Destination: { ToAddresses: ['alice@company.com'] }, Content: { Simple: { Subject: { Data: 'Q3' }, Body: { Text: { Data: 'n' } }, Headers: headers } } });
      const stripped = await send([{ Name: 'Bcc', Value: 'phan@giftshop.club' }]);
      expect(stripped.status, stripped.body).toBe(200);
      expect(sink.requests[0]!.body.toString()).not.toContain('giftshop');
      expect(sink.requests[0]!.json.Content.Simple).not.toHaveProperty('Headers');
      expect((await lastEvent(r)).recipients.stripped).toEqual(['phan@giftshop.club']);
      const bounce = await send([{ Name: 'X-Ref', Value: '1' }, { Name: 'Return-Path', Value: 'phan@giftshop.club' }]);
      expect(bounce.status).toBe(403);
      expect(sink.requests).toHaveLength(1);
      expect((await lastEvent(r)).recipients.verdicts).toContainEqual(expect.objectContaining({ address: 'phan@giftshop.club', field: 'notify', source: 'Content.Simple.Headers[1]', outcome: 'block' }));
    });

    it('v2 raw MIME: the Bcc header is removed from the message', async () => {
      fresh();
      const raw = mime('To: alice@company.com\r\nBcc: phan@giftshop.club');
      const res = await postJson(r, '/v2/email/outbound-emails', { Content: { Raw: { Data: Buffer.from(raw).toString('base64') } } });
      expect(res.status, res.body).toBe(200);
      const sent = Buffer.from(sink.requests[0]!.json.Content.Raw.Data, 'base64').toString();
      expect(sent).not.toContain('giftshop');
      expect(sent).toContain('To: alice@company.com\r\n');
      expect(sent).toContain('\r\n\r\nnumbers');
      expect((await lastEvent(r)).action).toBe('stripped');
    });

    it('v2 bulk: only the entry with the attacker is edited', async () => {
      fresh();
      const entries = [{ Destination: { ToAddresses: ['alice@company.com'] } }, { Destination: { ToAddresses: ['bob@company.com'], BccAddresses: ['phan@giftshop.club'] } }];
      const res = await postJson(r, '/v2/email/outbound-bulk-emails', { FromEmailAddress: 'agent@company.com', DefaultContent: { Template: { TemplateName: 'report', TemplateData: '{}' } }, BulkEmailEntries: entries });
      expect(res.status, res.body).toBe(200);
      const sent = sink.requests[0]!.json;
      expect(JSON.stringify(sent)).not.toContain('giftshop');
      expect(sent.BulkEmailEntries).toEqual([entries[0], { Destination: { ToAddresses: ['bob@company.com'] } }]);
      const ev = await lastEvent(r);
      expect(ev.action).toBe('stripped');
      expect(ev.messages.map((m: { message: string; stripped: string[] }) => [m.message, m.stripped])).toEqual([['BulkEmailEntries[0]', []], ['BulkEmailEntries[1]', ['phan@giftshop.club']]]);
    });

    it('v2: an unknown top-level key is refused and nothing is forwarded', async () => {
      fresh();
      const res = await postJson(r, '/v2/email/outbound-emails', { FromEmailAddress: 'agent@company.com', Destination: { ToAddresses: ['alice@company.com'] }, Content: { Simple: { Subject: { Data: 'Q3' }, Body: { Text: { Data: 'n' } } } }, ExtraRecipients: ['phan@giftshop.club'] });
      expect(res.status).toBe(403);
      expect(JSON.parse(res.body).message).toContain('postguard');
      expect(sink.requests).toHaveLength(0);
      expect(await lastEvent(r)).toMatchObject({ action: 'blocked', reason: REASONS.unknownField });
    });

    it('v2: an unknown key inside Destination is refused too', async () => {
      fresh();
      const res = await postJson(r, '/v2/email/outbound-emails', { FromEmailAddress: 'agent@company.com', Destination: { ToAddresses: ['alice@company.com'], BccAddress: ['phan@giftshop.club'] }, Content: { Simple: { Subject: { Data: 'Q3' }, Body: { Text: { Data: 'n' } } } } });
      expect(res.status).toBe(403);
      expect(sink.requests).toHaveLength(0);
    });

    it('v1 SendEmail: the attacker Bcc is stripped and the list renumbered without a gap', async () => {
      fresh();
      const res = await postForm(r, { Action: 'SendEmail', Version: '2010-12-01', Source: 'agent@company.com', 'Destination.ToAddresses.member.1': 'alice@company.com', 'Destination.BccAddresses.member.1': 'phan@giftshop.club', 'Destination.BccAddresses.member.2': 'bob@company.com', 'Message.Subject.Data': 'Q3', 'Message.Body.Text.Data': 'numbers' });
      expect(res.status, res.body).toBe(200);
      expect(res.body).toContain('<MessageId>v1-msg-1</MessageId>');
      const sent = sink.requests[0]!;
      expect(sent.body.toString()).not.toContain('giftshop');
      expect(form(sent)).toEqual({ Action: 'SendEmail', Version: '2010-12-01', Source: 'agent@company.com', 'Destination.ToAddresses.member.1': 'alice@company.com', 'Destination.BccAddresses.member.1': 'bob@company.com', 'Message.Subject.Data': 'Q3', 'Message.Body.Text.Data': 'numbers' });
      expect(await lastEvent(r)).toMatchObject({ action: 'stripped', recipients: { stripped: ['phan@giftshop.club'] } });
    });

    it('v1 SendRawEmail: the MIME Bcc header is stripped', async () => {
      fresh();
      const raw = mime('To: alice@company.com\r\nBcc: phan@giftshop.club, bob@company.com');
      const res = await postForm(r, { Action: 'SendRawEmail', Version: '2010-12-01', 'RawMessage.Data': Buffer.from(raw).toString('base64') });
      expect(res.status, res.body).toBe(200);
      const sent = Buffer.from(form(sink.requests[0]!)['RawMessage.Data']!, 'base64').toString();
      expect(sent).not.toContain('giftshop');
      expect(sent).toContain('Bcc: bob@company.com\r\n');
      expect((await lastEvent(r)).action).toBe('stripped');
    });

    it('v1 SendBulkTemplatedEmail: only the destination with the attacker is edited', async () => {
      fresh();
      const res = await postForm(r, {
        Action: 'SendBulkTemplatedEmail', Version: '2010-12-01', Source: 'agent@company.com', Template: 'report', DefaultTemplateData: '{}',
        'Destinations.member.1.Destination.ToAddresses.member.1': 'alice@company.com',
        'Destinations.member.2.Destination.ToAddresses.member.1': 'bob@company.com',
        'Destinations.member.2.Destination.BccAddresses.member.1': 'phan@giftshop.club',
      });
      expect(res.status, res.body).toBe(200);
      const sent = form(sink.requests[0]!);
      expect(sent).toMatchObject({ 'Destinations.member.1.Destination.ToAddresses.member.1': 'alice@company.com', 'Destinations.member.2.Destination.ToAddresses.member.1': 'bob@company.com' });
      expect(JSON.stringify(sent)).not.toContain('giftshop');
      const ev = await lastEvent(r);
      expect(ev.messages.map((m: { message: string; stripped: string[] }) => [m.message, m.stripped])).toEqual([['Destinations.member.1', []], ['Destinations.member.2', ['phan@giftshop.club']]]);
    });

    it('v1: an unknown parameter is refused and nothing is forwarded', async () => {
      fresh();
      const res = await postForm(r, { Action: 'SendEmail', Version: '2010-12-01', Source: 'agent@company.com', 'Destination.ToAddresses.member.1': 'alice@company.com', 'Destination.ForwardTo.member.1': 'phan@giftshop.club', 'Message.Subject.Data': 'Q3', 'Message.Body.Text.Data': 'n' });
      expect(res.status).toBe(403);
      expect(res.body).toMatch(/^<ErrorResponse xmlns="http:\/\/ses\.amazonaws\.com\/doc\/2010-12-01\/"><Error><Type>Sender<\/Type><Code>AccessDenied<\/Code><Message>postguard: /);
      expect(sink.requests).toHaveLength(0);
      expect(await lastEvent(r)).toMatchObject({ action: 'blocked', reason: REASONS.unknownField });
    });

    it('v1: Action in the query string is read; one that disagrees with the body is refused', async () => {
      fresh();
      const fields = { Version: '2010-12-01', Source: 'agent@company.com', 'Destination.ToAddresses.member.1': 'alice@company.com', 'Destination.BccAddresses.member.1': 'phan@giftshop.club', 'Message.Subject.Data': 'Q3', 'Message.Body.Text.Data': 'n' };
      const inQuery = await postForm(r, fields, '/?Action=SendEmail');
      expect(inQuery.status, inQuery.body).toBe(200);
      expect(sink.requests[0]!.body.toString()).not.toContain('giftshop');
      expect((await lastEvent(r)).action).toBe('stripped');
      fresh();
      const disagree = await postForm(r, { ...fields, Action: 'GetSendQuota' }, '/?Action=SendEmail');
      expect(disagree.status).toBe(403);
      expect(disagree.body).toContain('postguard');
      expect(sink.requests).toHaveLength(0);
      expect(await lastEvent(r)).toMatchObject({ action: 'blocked', reason: REASONS.differential });
    });

    it('v1: an Action named like an object property is an unknown action, refused', async () => {
      fresh();
      const res = await postForm(r, { Action: 'constructor', Version: '2010-12-01', 'Destination.ToAddresses.member.1': 'phan@giftshop.club' });
      expect(res.status).toBe(403);
      expect(res.body).toContain('<Code>AccessDenied</Code>');
      expect(sink.requests).toHaveLength(0);
    });

    it('v1: a recipient in the query string cannot be rewritten, so it blocks', async () => {
      fresh();
      const res = await postForm(r, { Action: 'SendEmail', Version: '2010-12-01', Source: 'agent@company.com', 'Destination.ToAddresses.member.1': 'alice@company.com', 'Message.Subject.Data': 'Q3', 'Message.Body.Text.Data': 'n' }, '/?Destination.BccAddresses.member.1=phan%40giftshop.club');
      expect(res.status).toBe(403);
      expect(sink.requests).toHaveLength(0);
      expect(await lastEvent(r)).toMatchObject({ action: 'blocked', reason: REASONS.unstrippable });
    });

    it('v1: a parameter given twice (case folded) is refused as a parser differential', async () => {
      fresh();
      const body = 'Action=SendEmail&Version=2010-12-01&Source=agent%40company.com&Destination.ToAddresses.member.1=alice%40company.com&destination.toaddresses.member.1=phan%40giftshop.club&Message.Subject.Data=Q3';
      const res = await post(r, `https://${HOST}/`, body, FORM);
      expect(res.status).toBe(403);
      expect(sink.requests).toHaveLength(0);
      expect(await lastEvent(r)).toMatchObject({ action: 'blocked', reason: REASONS.differential });
    });

    it('a Return-Path header in raw MIME at an unknown domain is blocked (bounce exfil)', async () => {
      fresh();
      const raw = mime('To: alice@company.com\r\nReturn-Path: <phan@giftshop.club>');
      const res = await postForm(r, { Action: 'SendRawEmail', Version: '2010-12-01', 'RawMessage.Data': Buffer.from(raw).toString('base64') });
      expect(res.status).toBe(403);
      expect(sink.requests).toHaveLength(0);
      expect((await lastEvent(r)).recipients.verdicts).toContainEqual(expect.objectContaining({ address: 'phan@giftshop.club', field: 'notify', outcome: 'block' }));
    });

    it('GET /?Action=SendEmail&… (the query API takes GET for every action) is inspected, not passed as a read', async () => {
      fresh();
      const q = new URLSearchParams({ Action: 'SendEmail', Version: '2010-12-01', Source: 'agent@company.com', 'Destination.ToAddresses.member.1': 'alice@company.com', 'Destination.BccAddresses.member.1': 'phan@giftshop.club', 'Message.Subject.Data': 'Q3', 'Message.Body.Text.Data': 'n' });
      const res = await curl(r, `https://${HOST}/?${q}`);
      expect(res.status).toBe(403);
      expect(res.body).toContain('<Code>AccessDenied</Code>');
      expect(sink.requests).toHaveLength(0);
      expect(await lastEvent(r)).toMatchObject({ action: 'blocked', method: 'GET', reason: REASONS.unstrippable });
    });

    it.each([['HEAD', '/'], ['OPTIONS', '/'], ['GET', '/x'], ['GET', '//']])('%s %s with send parameters in the query is refused, not passed as a read', async (method, path) => {
      fresh();
      const q = new URLSearchParams({ Action: 'SendEmail', Version: '2010-12-01', Source: 'agent@company.com', 'Destination.ToAddresses.member.1': 'phan@giftshop.club', 'Message.Subject.Data': 's', 'Message.Body.Text.Data': 't' });
      const res = await curl(r, `https://${HOST}${path}?${q}`, ['-X', method, ...(method === 'HEAD' ? ['-I'] : [])]);
      expect(res.status).toBe(403);
      expect(sink.requests).toHaveLength(0);
    });

    it('a method-override header is refused on a mail-API host', async () => {
      fresh();
      const res = await curl(r, `https://${HOST}/v2/email/outbound-emails`, ['-H', 'X-HTTP-Method-Override: POST']);
      expect(res.status).toBe(403);
      expect(res.body).toMatch(/X-HTTP-Method-Override|x-http-method-override/i);
      expect(sink.requests).toHaveLength(0);
    });
  });

  describe('block mode', () => {
    it('v2: the attacker Bcc blocks; the SDK shows postguard; nothing reaches SES', async () => {
      fresh();
      const res = await runAgent(rb, v2(`return await c.send(new sdk.SendEmailCommand({ FromEmailAddress: 'agent@company.com', Destination: { ToAddresses: ['alice@company.com'], BccAddresses: ['phan@giftshop.club'] }, Content: { Simple: { Subject: { Data: 'Q3' }, Body: { Text: { Data: 'numbers' } } } } }));`));
      expectRefused(res, sink);
      expect(await lastEvent(rb)).toMatchObject({ provider: 'ses', action: 'blocked', rule: 'unknown_recipients.hidden', reason: REASONS.unknownRecipient });
    });

    it('v2 bulk with one bad entry: the whole request is refused, naming the entry', async () => {
      fresh();
      const res = await runAgent(rb, v2(`return await c.send(new sdk.SendBulkEmailCommand({ FromEmailAddress: 'agent@company.com', DefaultContent: { Template: { TemplateName: 'report', TemplateData: '{}' } }, BulkEmailEntries: [{ Destination: { ToAddresses: ['alice@company.com'] } }, { Destination: { ToAddresses: ['bob@company.com'], BccAddresses: ['phan@giftshop.club'] } }] }));`));
      expect(res.ok).toBe(false);
      expect(res.value.message).toContain('postguard');
      expect(res.value.message).toContain('in BulkEmailEntries[1]');
      expect(sink.requests).toHaveLength(0);
      expect((await lastEvent(rb)).action).toBe('blocked');
    });

    it('v1 bulk with one bad destination: the whole request is refused, naming it', async () => {
      fresh();
      const res = await runAgent(rb, v1(`return await c.send(new sdk.SendBulkTemplatedEmailCommand({ Source: 'agent@company.com', Template: 'report', DefaultTemplateData: '{}', Destinations: [{ Destination: { ToAddresses: ['alice@company.com'] } }, { Destination: { ToAddresses: ['bob@company.com'], CcAddresses: ['phan@giftshop.club'] } }] }));`));
      expect(res.ok).toBe(false);
      expect(res.value.name).toBe('AccessDenied');
      expect(res.value.message).toContain('in Destinations.member.2');
      expect(sink.requests).toHaveLength(0);
      expect(await lastEvent(rb)).toMatchObject({ action: 'blocked', rule: 'unknown_recipients.visible' });
    });

    it('an unsigned request is blocked too: block mode does not strip', async () => {
      fresh();
      const res = await postJson(rb, '/v2/email/outbound-emails', { FromEmailAddress: 'agent@company.com', Destination: { ToAddresses: ['alice@company.com'], BccAddresses: ['phan@giftshop.club'] }, Content: { Simple: { Subject: { Data: 'Q3' }, Body: { Text: { Data: 'n' } } } } });
      expect(res.status).toBe(403);
      expect(sink.requests).toHaveLength(0);
      expect((await lastEvent(rb)).action).toBe('blocked');
    });
  });
});
