// Which writes are mail, to whom: SMTP anywhere in a write, mail-API requests read by the relay's
// own provider adapters (over several writes, chunked, gzip), plain connects to SMTP ports.

import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { Classifier, connectFinding, killFinding, RelaySet, scanAddresses, smtpFacts, type Finding } from '../../src/monitor/classify.js';
import type { ConnectEvent, LoaderEvent } from '../../src/monitor/loader.js';
import type { Write } from '../../src/monitor/stream.js';
import { assemble, fixture } from './replay.js';

async function classify(writes: Write[], c = new Classifier()): Promise<Finding[]> {
  const out: Finding[] = [];
  for (const w of writes) out.push(...(await c.write(w)));
  return out;
}

const fromFixture = (name: string, filter: (e: LoaderEvent) => boolean = () => true) => classify(assemble(fixture(name).filter(filter)).writes);
const addresses = (f: Finding) => f.recipients.map((r) => r.address).sort();

let n = 0;
function tls(data: string | Buffer, over: Partial<Write> = {}): Write {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
  return {
    kind: 'tls', pid: 77, tid: 77, comm: 'node', cgroupId: 5, tsNs: 1, stream: over.stream ?? `s${n++}`, fn: 'SSL_write',
    destination: { addr: '127.0.0.1', port: 443, family: 4 }, sni: null, len: buf.length, data: buf, truncated: false, ...over,
  };
}

describe('SMTP in plaintext', () => {
  it('finds commands in the middle of a write, not only at its start', () => {
    const f = smtpFacts('220 banner echoed back\r\nsome noise\r\nRCPT TO:<phan@giftshop.club>\r\nmore\r\n');
    expect(f?.recipients.map((r) => r.address)).toEqual(['phan@giftshop.club']);
    expect(f?.recipients[0]).toMatchObject({ field: 'envelope', source: 'RCPT TO' });
  });

  it('reads an s_client session sent as one write: sender, every recipient, normalized', async () => {
    const [f, ...more] = await fromFixture('s-client.ndjson');
    expect(more).toHaveLength(0);
    expect(f).toMatchObject({ protocol: 'smtp-tls', pid: 7171, comm: 'openssl', sender: 'agent@company.com', action: 'alerted' });
    expect(addresses(f!)).toEqual(['bob.smith@company.com', 'phan@giftshop.club']);
    expect(f!.destination).toEqual({ addr: '127.0.0.1', port: 4465, family: 4 });
  });

  it('joins a command split across two writes, and reads it once', async () => {
    const c = new Classifier();
    expect(await c.write(tls('EHLO x\r\nRCPT TO:<ph', { stream: 'split' }))).toHaveLength(1); // EHLO: a session
    const [f] = await c.write(tls('an@giftshop.club>\r\n', { stream: 'split' }));
    expect(addresses(f!)).toEqual(['phan@giftshop.club']);
  });

  it('plain SMTP writes are smtp-plain', async () => {
    const found = await fromFixture('plain-smtp.ndjson');
    expect(found.every((f) => f.protocol === 'smtp-plain')).toBe(true);
    expect(found.flatMap(addresses)).toEqual(expect.arrayContaining(['phan@giftshop.club', 'bob@company.com']));
  });

  it('text that merely mentions SMTP is not a session', () => {
    expect(smtpFacts('we discussed the RCPT TO command yesterday\r\n')).toBeNull();
    expect(smtpFacts('{"text":"MAIL FROM:<a@b.example>"}')).toBeNull();
  });

  it('keeps an address the strict parser refuses, as written', () => {
    const f = smtpFacts('RCPT TO:<a@b@evil.example>\r\n');
    expect(f?.recipients[0]).toMatchObject({ address: 'a@b@evil.example', mailbox: null });
  });
});

describe('mail-API requests, read by the provider adapters', () => {
  it('a Postmark POST with the postmark-mcp Bcc: provider postmark, the Bcc among the recipients', async () => {
    const found = await fromFixture('node-postmark.ndjson', (e) => !('pid' in e) || e.pid === 4242);
    expect(found).toHaveLength(1); // the GET /server is a read
    const f = found[0]!;
    expect(f).toMatchObject({ protocol: 'mail-api', provider: 'postmark', endpoint: 'email', method: 'POST', path: '/email', host: 'api.postmarkapp.com', sni: 'api.postmarkapp.com', sender: 'agent@company.com', send: true, detail: null });
    expect(addresses(f)).toEqual(['alice@company.com', 'phan@giftshop.club']);
    expect(f.recipients.find((r) => r.address === 'phan@giftshop.club')?.field).toBe('bcc');
    expect(f.content).toContain('Revenue is up');
    expect(f.plaintext).toMatch(/^POST \/email HTTP\/1\.1\r\n/);
  });

  it('a capture recorded from the real loader (node https.request, WANT_READ retries included) reads as one Postmark send with the Bcc', async () => {
    // Recorded with bpf/egressd on this machine kind: exec (stop-on-exec), connect, bind, then three
    // identical SSL_write entries (two WANT_READ retries during the handshake).
    const events = fixture('recorded-node-postmark.ndjson');
    expect(events.filter((e) => e.type === 'ssl_write')).toHaveLength(3);
    const { writes } = assemble(events);
    expect(writes).toHaveLength(1);
    const found = await classify(writes);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ protocol: 'mail-api', provider: 'postmark', endpoint: 'email', host: 'api.postmarkapp.com', sni: 'api.postmarkapp.com', sender: 'agent@company.com' });
    expect(addresses(found[0]!)).toEqual(['alice@company.com', 'phan@giftshop.club']);
  });

  it('SendGrid JSON: headers and a 200 KB body in separate writes, the Bcc setting in the last record', async () => {
    const [f, ...more] = await fromFixture('node-sendgrid-200k.ndjson');
    expect(more).toHaveLength(0);
    expect(f).toMatchObject({ protocol: 'mail-api', provider: 'sendgrid', endpoint: 'mail.send', host: 'api.sendgrid.com', detail: null });
    expect(addresses(f!)).toEqual(['bob@company.com', 'exfil@evil.example']);
  });

  it('a body cut by the capture limit is still a finding: recipients by pattern, and it says so', async () => {
    const events = fixture('node-sendgrid-200k.ndjson').filter((e) => e.type !== 'ssl_write' || e.len !== 200_000 || e.offset < 4 * 16384);
    const [f] = await classify(assemble(events, { maxChunks: 4 }).writes);
    expect(f).toMatchObject({ provider: 'sendgrid', endpoint: 'mail.send' });
    expect(f!.detail).toMatch(/not fully captured/);
    expect(addresses(f!)).toEqual(['agent@company.com', 'bob@company.com']);
  });

  it('a Postmark batch with a Bcc header (curl, late bind)', async () => {
    const [f] = await fromFixture('curl-late-bind.ndjson');
    expect(f).toMatchObject({ provider: 'postmark', endpoint: 'email.batch', comm: 'curl' });
    expect(f!.destination).toEqual({ addr: '127.0.0.1', port: 44303, family: 4 });
    expect(addresses(f!)).toEqual(['carol@company.com', 'dave@company.com', 'phan@giftshop.club']);
  });

  it('a chunked body over several writes (https.request with req.write), then a pipelined request', async () => {
    const c = new Classifier();
    const s = 'chunked';
    const body = JSON.stringify({ from: 'agent@company.com', to: ['alice@company.com'], bcc: 'phan@giftshop.club', subject: 's', text: 't' });
    expect(await c.write(tls('POST /emails HTTP/1.1\r\nHost: api.resend.com\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n', { stream: s }))).toEqual([]);
    expect(await c.write(tls(`${body.length.toString(16)}\r\n${body}\r\n`, { stream: s }))).toEqual([]);
    const get = 'GET /emails/123 HTTP/1.1\r\nHost: api.resend.com\r\n\r\n';
    const second = JSON.stringify({ from: 'agent@company.com', to: 'x@evil.example', subject: 's', text: 't' });
    const [f, g, ...more] = await c.write(tls(`0\r\n\r\n${get}POST /emails HTTP/1.1\r\nHost: api.resend.com\r\nContent-Type: application/json\r\nContent-Length: ${second.length}\r\n\r\n${second}`, { stream: s }));
    expect(more).toHaveLength(0);
    expect(f).toMatchObject({ provider: 'resend', endpoint: 'emails' });
    expect(addresses(f!)).toEqual(['alice@company.com', 'phan@giftshop.club']);
    expect(addresses(g!)).toEqual(['x@evil.example']);
  });

  it('a gzip body is decoded as the relay decodes it', async () => {
    const body = gzipSync(JSON.stringify({ personalizations: [{ to: [{ email: 'bob@company.com' }], bcc: [{ email: 'phan@giftshop.club' }] }], from: { email: 'agent@company.com' }, subject: 's', content: [{ type: 'text/plain', value: 'x' }] }));
    const head = `POST /v3/mail/send HTTP/1.1\r\nHost: api.sendgrid.com\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: ${body.length}\r\n\r\n`;
    const [f] = await new Classifier().write(tls(Buffer.concat([Buffer.from(head), body])));
    expect(f!.detail).toBeNull();
    expect(addresses(f!)).toEqual(['bob@company.com', 'phan@giftshop.club']);
  });

  it('the host is taken from the SNI when the Host header names none it knows (or the target is absolute)', async () => {
    const body = JSON.stringify({ From: 'a@company.com', To: 'b@company.com', Bcc: 'phan@giftshop.club', Subject: 's', TextBody: 't' });
    const [bySni] = await new Classifier().write(tls(`POST /email HTTP/1.1\r\nHost: 10.0.0.5\r\nContent-Length: ${body.length}\r\n\r\n${body}`, { sni: 'api.postmarkapp.com' }));
    expect(bySni).toMatchObject({ provider: 'postmark', host: 'api.postmarkapp.com' });
    const [absolute] = await new Classifier().write(tls(`POST https://api.postmarkapp.com/email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nContent-Length: ${body.length}\r\n\r\n${body}`));
    expect(absolute).toMatchObject({ provider: 'postmark', endpoint: 'email' });
  });

  it('a write to an endpoint the relay does not know is a finding (the relay refuses those)', async () => {
    const body = JSON.stringify({ email: 'collector@evil.example', enabled: true });
    const [f] = await new Classifier().write(tls(`PATCH /v3/mail_settings/forward_bounce HTTP/1.1\r\nHost: api.sendgrid.com\r\nContent-Length: ${body.length}\r\n\r\n${body}`));
    expect(f).toMatchObject({ provider: 'sendgrid', endpoint: null });
    expect(f!.detail).toMatch(/not a send endpoint/);
    expect(addresses(f!)).toEqual(['collector@evil.example']);
  });

  it('a body the adapter refuses (a duplicate key) is still reported, recipients by pattern', async () => {
    const body = '{"From":"a@company.com","To":"b@company.com","To":"phan@giftshop.club","Subject":"s","TextBody":"t"}';
    const [f] = await new Classifier().write(tls(`POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nContent-Length: ${body.length}\r\n\r\n${body}`));
    expect(f!.detail).toMatch(/could not be read/);
    expect(addresses(f!)).toContain('phan@giftshop.club');
  });

  it('a request whose body never arrives is read as it is after the wait', async () => {
    let now = 0;
    const c = new Classifier({ requestWaitMs: 1000, now: () => now });
    const part = '{"From":"a@company.com","To":"phan@giftshop.club"';
    expect(await c.write(tls(`POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nContent-Length: 500\r\n\r\n${part}`, { stream: 'slow' }))).toEqual([]);
    now = 999;
    expect(await c.tick()).toEqual([]);
    now = 1000;
    const [f] = await c.tick();
    expect(f!.detail).toMatch(/not fully captured/);
    expect(addresses(f!)).toEqual(['a@company.com', 'phan@giftshop.club']);
  });

  it('HTTP/2 to a mail-API host: reported, recipients by pattern in the frames', async () => {
    const c = new Classifier();
    const [f] = await c.write(tls('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00', { sni: 'api.resend.com', stream: 'h2' }));
    expect(f).toMatchObject({ protocol: 'mail-api', provider: 'resend' });
    expect(f!.detail).toMatch(/HTTP\/2/);
    const [g] = await c.write(tls('\x00\x00\x40\x00\x01\x00\x00\x00\x01{"to":"phan@giftshop.club"}', { sni: 'api.resend.com', stream: 'h2' }));
    expect(addresses(g!)).toEqual(['phan@giftshop.club']);
  });

  it('traffic to other hosts is not mail, unless it carries SMTP commands', async () => {
    const c = new Classifier();
    const llm = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'Write to alice@company.com: RCPT TO:<x@y.example>' }] });
    expect(await c.write(tls(`POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: ${llm.length}\r\n\r\n${llm}`))).toEqual([]);
    // SMTP lines smuggled in an HTTP body to some server: an SMTP server would run them.
    const [f] = await c.write(tls('POST / HTTP/1.1\r\nHost: mx.evil.example\r\nContent-Length: 60\r\n\r\nEHLO x\r\nMAIL FROM:<a@company.com>\r\nRCPT TO:<phan@giftshop.club>\r\n'));
    expect(f).toMatchObject({ protocol: 'smtp-tls' });
  });
});

describe('connects and kills', () => {
  const relays = new RelaySet();
  relays.add('127.0.0.1', 2525);
  const connect = (port: number, over: Partial<ConnectEvent> = {}): ConnectEvent => ({
    type: 'connect', pid: 9, tid: 9, cgroup_id: 5, comm: 'python3', ts_ns: 1, fd: 3, daddr: '127.0.0.1', dport: port, family: 4, proto: 'tcp', ...over,
  });

  it('a plain connect to 587 is a bypass of protocol connect', () => {
    expect(connectFinding(connect(587), relays)).toMatchObject({ protocol: 'connect', pid: 9, destination: { addr: '127.0.0.1', port: 587 } });
    for (const port of [25, 465, 2525]) expect(connectFinding(connect(port, { daddr: '192.0.2.1' }), relays)?.protocol).toBe('connect');
  });

  it('not: the relay, other ports, UDP', () => {
    expect(connectFinding(connect(2525), relays)).toBeNull();
    expect(connectFinding(connect(2525, { daddr: '::ffff:127.0.0.1', family: 6 }), relays)).toBeNull();
    expect(connectFinding(connect(443), relays)).toBeNull();
    expect(connectFinding(connect(25, { proto: 'udp' }), relays)).toBeNull();
  });

  it('a kill names what the process was stopped for', () => {
    const base = { type: 'kill' as const, pid: 9, tid: 9, cgroup_id: 5, comm: 'node', ts_ns: 1, signal: 9, daddr: '127.0.0.1', dport: 443, family: 4 as const };
    expect(killFinding({ ...base, reason: 'marker', fn: 'SSL_write', marker: 'api.postmarkapp.com' })).toMatchObject({ protocol: 'mail-api', provider: 'postmark', action: 'killed' });
    expect(killFinding({ ...base, reason: 'marker', fn: 'SSL_write', marker: 'RCPT TO:' })).toMatchObject({ protocol: 'smtp-tls', action: 'killed' });
    expect(killFinding({ ...base, reason: 'smtp_connect', syscall: 'connect', dport: 25 })).toMatchObject({ protocol: 'connect', action: 'killed', fn: 'connect' });
  });
});

describe('the relay set', () => {
  it('a wildcard listen is every local address, not every address', () => {
    const r = new RelaySet();
    r.add('0.0.0.0', 2525);
    r.add('[::1]', 2465);
    expect(r.has({ addr: '127.0.0.1', port: 2525, family: 4 })).toBe(true);
    expect(r.has({ addr: '192.0.2.77', port: 2525, family: 4 })).toBe(false);
    expect(r.has({ addr: '::1', port: 2465, family: 6 })).toBe(true);
    expect(r.has({ addr: '127.0.0.1', port: 2465, family: 4 })).toBe(false);
  });

  it('scanAddresses finds address-shaped text, normalized', () => {
    expect(scanAddresses('{"to":"Alice@EXAMPLE.com","x":"bob@b.example"} not@an').map((r) => r.address)).toEqual(['Alice@example.com', 'bob@b.example']);
  });
});
