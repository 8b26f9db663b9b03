// Hostile SMTP input against a real relay and a real upstream sink, all on 127.0.0.1:
//   - SMTP smuggling (bare CR/LF end-of-data variants followed by a smuggled transaction)
//   - malformed commands and abrupt disconnects
//   - malformed MIME
//   - address tricks in RCPT TO and in To:/Cc: headers, in strip and in block mode
// Every case asserts the reply codes AND what the upstream sink received.

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { domainToASCII } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Interactive, RawSmtp, finalReplies, message, sleep, type Reply } from '../helpers/raw-smtp.js';
import { startTestRelay, upstreamEnv, type TestRelay } from '../helpers/relay.js';
import { startSink, type Sink, type SinkMessage } from '../helpers/sink.js';

const policy = (unknown: 'strip' | 'block'): string => `version: 1
mode: enforce
recipients:
  domains:
    - company.com
unknown_recipients: ${unknown}
`;

const FROM = 'agent@company.com';
const COLLEAGUE = 'colleague@company.com';

interface Setup {
  relay: TestRelay;
  sink: Sink;
  caFile: string;
}

async function setup(unknown: 'strip' | 'block'): Promise<Setup> {
  const sink = await startSink();
  const relay = await startTestRelay({ policy: policy(unknown), env: upstreamEnv(sink) });
  const caFile = join(mkdtempSync(join(tmpdir(), 'pg-hostile-')), 'relay-ca.pem');
  writeFileSync(caFile, relay.caPem);
  return { relay, sink, caFile };
}

async function teardown(s: Setup | undefined): Promise<void> {
  await s?.relay?.close();
  await s?.sink?.close();
}

/** One strip-mode setup for a describe block, torn down after it; with `clearSink`, the sink is emptied before each test. */
function sharedSetup(opts: { clearSink: boolean }): Setup {
  const s = {} as Setup;
  beforeAll(async () => {
    Object.assign(s, await setup('strip'));
  });
  afterAll(() => teardown(s));
  if (opts.clearSink) {
    beforeEach(() => {
      s.sink.messages.length = 0;
    });
  }
  return s;
}

/** Connect to the plaintext port and EHLO. */
async function open(s: Setup): Promise<RawSmtp> {
  const { client, greeting } = await RawSmtp.connect(s.relay.smtpPort);
  expect(greeting.code).toBe(220);
  const ehlo = await client.cmd('EHLO hostile.test');
  expect(ehlo.code).toBe(250);
  return client;
}

let seq = 0;
/** A clean, unique message; the marker lets a test find exactly its own message at the sink. */
function clean(extra: Record<string, string> = {}): { data: string; marker: string } {
  const marker = `marker-${process.pid}-${++seq}-${Date.now()}`;
  return { marker, data: message({ From: `<${FROM}>`, To: `<${COLLEAGUE}>`, Subject: `clean ${marker}`, 'Message-ID': `<${marker}@company.com>`, ...extra }, `clean body ${marker}\r\n`) };
}

const envelopeText = (m: SinkMessage): string => `${m.from} ${m.to.join(' ')}`;

/** No message at the sink names phan or giftshop in its envelope. */
function expectNoPhanInEnvelopes(sink: Sink): void {
  for (const m of sink.messages) expect(envelopeText(m)).not.toMatch(/phan|giftshop/i);
}

/** The next reply is an error (4xx or 5xx), or the relay closes the connection instead. */
async function expectErrorReplyOrClose(c: RawSmtp): Promise<void> {
  const outcome = await Promise.race([c.read().then((r) => r.code, () => 'closed' as const), c.closed.then(() => 'closed' as const)]);
  if (outcome !== 'closed') {
    expect(outcome).toBeGreaterThanOrEqual(400);
    expect(outcome).toBeLessThan(600);
  }
}

/** The relay closes the connection within 5 s. */
async function expectClosedSoon(c: RawSmtp): Promise<void> {
  await Promise.race([c.closed, sleep(5000)]);
  expect(c.isClosed).toBe(true);
}

/** The relay still accepts and delivers a clean message on a fresh connection. */
async function expectRelayWorks(s: Setup): Promise<void> {
  const c = await open(s);
  const { data, marker } = clean();
  const before = s.sink.messages.length;
  const r = await c.transaction(FROM, [COLLEAGUE], data);
  await c.quit();
  expect(r.final?.code, r.final?.lines.join('\n')).toBe(250);
  expect(s.sink.messages.length).toBe(before + 1);
  const got = s.sink.messages[s.sink.messages.length - 1]!;
  expect(got.to).toEqual([COLLEAGUE]);
  expect(got.raw.toString('utf8')).toContain(marker);
}

// ---------------------------------------------------------------------------------------------
// SMTP smuggling
// ---------------------------------------------------------------------------------------------

const SMUGGLED = 'MAIL FROM:<x@company.com>\r\nRCPT TO:<phan@giftshop.club>\r\nDATA\r\nFrom: <x@company.com>\r\nTo: <phan@giftshop.club>\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n';

/** Each payload: a body with a non-CRLF "end of data" followed by a smuggled transaction. */
const SMUGGLING: { name: string; sep: string; reason: RegExp }[] = [
  { name: '\\n.\\r\\n (bare LF before the dot)', sep: '\n.\r\n', reason: /bare LF/ },
  { name: '\\r.\\r (bare CRs around the dot)', sep: '\r.\r', reason: /bare CR/ },
  { name: '\\n.\\n (bare LFs around the dot)', sep: '\n.\n', reason: /bare LF/ },
  { name: '\\r\\r\\n.\\r\\r\\n (CR CR LF)', sep: '\r\r\n.\r\r\n', reason: /bare CR/ },
  { name: '\\r\\n.\\n (bare LF after the dot)', sep: '\r\n.\n', reason: /bare LF/ },
  { name: '\\r\\n.\\r (bare CR after the dot)', sep: '\r\n.\r', reason: /bare CR/ },
];

function smugglingData(sep: string): string {
  return `From: <${FROM}>\r\nTo: <${COLLEAGUE}>\r\nSubject: innocent\r\n\r\nfirst message${sep}${SMUGGLED}`;
}

function expectSmugglingRefused(final: Reply | null, reason: RegExp): void {
  expect(final?.code, final?.lines.join('\n')).toBe(554);
  expect(final!.text).toMatch(/^5\.6\.0 /);
  expect(final!.text).toMatch(reason);
}

describe('SMTP smuggling', () => {
  const s = sharedSetup({ clearSink: true });

  for (const p of SMUGGLING) {
    it(`plaintext: ${p.name} + smuggled MAIL/RCPT/DATA → 554 5.6.0, nothing delivered, session still usable`, async () => {
      const c = await open(s);
      const r = await c.transaction(FROM, [COLLEAGUE], smugglingData(p.sep));
      expect(r.rcpts.map((x) => x.code)).toEqual([250]);
      expectSmugglingRefused(r.final, p.reason);
      await sleep(100);
      // The smuggled commands were DATA, never commands: the server answered nothing else.
      expect(c.queued).toBe(0);
      expect(s.sink.messages).toHaveLength(0);

      // Same connection: a clean message is delivered, to the colleague only.
      const { data, marker } = clean();
      const r2 = await c.transaction(FROM, [COLLEAGUE], data);
      expect(r2.final?.code, r2.final?.lines.join('\n')).toBe(250);
      await c.quit();
      expect(s.sink.messages).toHaveLength(1);
      expect(s.sink.messages[0]!.to).toEqual([COLLEAGUE]);
      expect(s.sink.messages[0]!.raw.toString('latin1')).toContain(marker);
      expect(s.sink.messages[0]!.raw.toString('latin1')).not.toMatch(/giftshop|smuggled/);
      expectNoPhanInEnvelopes(s.sink);
    });
  }

  it('whole smuggling session pipelined in one write (\\n.\\r\\n) → 554, then the clean pipelined message is the only delivery', async () => {
    const c = await open(s);
    const { data, marker } = clean();
    c.write(
      `MAIL FROM:<${FROM}>\r\nRCPT TO:<${COLLEAGUE}>\r\nDATA\r\n${smugglingData('\n.\r\n')}.\r\n` +
        `MAIL FROM:<${FROM}>\r\nRCPT TO:<${COLLEAGUE}>\r\nDATA\r\n${data}.\r\n`,
    );
    const codes: number[] = [];
    const replies: Reply[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await c.read();
      replies.push(r);
      codes.push(r.code);
    }
    await sleep(100);
    expect(c.queued).toBe(0);
    c.destroy(); // whether the session still answers afterwards: see 'two complete transactions pipelined'
    expect(codes).toEqual([250, 250, 354, 554, 250, 250, 354, 250]);
    expect(replies[3]!.text).toMatch(/^5\.6\.0 .*bare LF/);
    expect(s.sink.messages).toHaveLength(1);
    expect(s.sink.messages[0]!.to).toEqual([COLLEAGUE]);
    expect(s.sink.messages[0]!.raw.toString('latin1')).toContain(marker);
    expectNoPhanInEnvelopes(s.sink);
  });

  /** The smuggling payload is refused whole, and the same session then delivers a clean message. */
  async function refusedThenClean(c: RawSmtp, ending: string, why: RegExp): Promise<void> {
    expect((await c.cmd('EHLO hostile.test')).code).toBe(250);
    const r = await c.transaction(FROM, [COLLEAGUE], smugglingData(ending));
    expectSmugglingRefused(r.final, why);
    await sleep(100);
    expect(c.queued).toBe(0);
    expect(s.sink.messages).toHaveLength(0);
    const { data } = clean();
    const r2 = await c.transaction(FROM, [COLLEAGUE], data);
    expect(r2.final?.code).toBe(250);
    await c.quit();
    expect(s.sink.messages).toHaveLength(1);
    expect(s.sink.messages[0]!.to).toEqual([COLLEAGUE]);
  }

  it('after STARTTLS (node tls): \\n.\\r\\n smuggling → 554 5.6.0, nothing delivered, clean message then delivered', async () => {
    const c = await open(s);
    expect((await c.starttls(s.relay.caPem)).code).toBe(220);
    await refusedThenClean(c, '\n.\r\n', /bare LF/);
  });

  it('implicit TLS port: \\r.\\r smuggling → 554 5.6.0, nothing delivered, clean message then delivered', async () => {
    const { client: c, greeting } = await RawSmtp.connect(s.relay.smtpsPort, { tlsCa: s.relay.caPem });
    expect(greeting.code).toBe(220);
    await refusedThenClean(c, '\r.\r', /bare CR/);
  });

  it('a bare LF inside the header block and a lone CR at the very end of DATA are refused too', async () => {
    const c = await open(s);
    const r1 = await c.transaction(FROM, [COLLEAGUE], `From: <${FROM}>\nTo: <${COLLEAGUE}>\r\nSubject: x\r\n\r\nbody\r\n`);
    expectSmugglingRefused(r1.final, /bare LF/);
    // Body ends in "\r" + the terminator "\r\n.\r\n": the CR before the final CRLF is bare.
    const r2 = await c.transaction(FROM, [COLLEAGUE], `From: <${FROM}>\r\nTo: <${COLLEAGUE}>\r\nSubject: x\r\n\r\nbody\r\r\n`);
    expectSmugglingRefused(r2.final, /bare CR/);
    await c.quit();
    expect(s.sink.messages).toHaveLength(0);
  });

  it('openssl s_client -starttls smtp with exact bytes (no -crlf): \\n.\\r\\n smuggling → 554 5.6.0, smuggled RCPT never answered, clean message delivered', async () => {
    const { marker, data } = clean();
    // s_client does EHLO + STARTTLS itself and verifies the relay's certificate; every byte
    // written to its stdin then goes through unchanged. Each step waits for the previous reply.
    const sc = new Interactive('openssl', ['s_client', '-starttls', 'smtp', '-connect', `127.0.0.1:${s.relay.smtpPort}`, '-CAfile', s.caFile, '-verify_return_error', '-quiet', '-ign_eof'], 25_000);
    try {
      sc.write('EHLO sclient.test\r\n');
      await sc.waitForReplies(1);
      sc.write(`MAIL FROM:<${FROM}>\r\nRCPT TO:<${COLLEAGUE}>\r\nDATA\r\n`);
      await sc.waitForReplies(4);
      sc.write(`${smugglingData('\n.\r\n')}.\r\n`);
      await sc.waitForReplies(5);
      await sleep(100);
      // Nothing answered the smuggled MAIL/RCPT/DATA.
      expect(finalReplies(sc.stdout)).toHaveLength(5);
      expect(s.sink.messages).toHaveLength(0);
      sc.write(`MAIL FROM:<${FROM}>\r\nRCPT TO:<${COLLEAGUE}>\r\nDATA\r\n`);
      await sc.waitForReplies(8);
      sc.write(`${data}.\r\n`);
      await sc.waitForReplies(9);
      sc.write('QUIT\r\n');
      const res = await sc.done;
      expect(res.timedOut).toBe(false);
      expect(res.code, res.stderr).toBe(0);
      expect(res.stderr).not.toMatch(/verify error/);
      const codes = finalReplies(res.stdout).map((r) => r.code);
      // EHLO 250, MAIL 250, RCPT 250, DATA 354, 554, MAIL 250, RCPT 250, DATA 354, 250, QUIT 221.
      expect(codes, res.stdout).toEqual([250, 250, 250, 354, 554, 250, 250, 354, 250, 221]);
      expect(res.stdout).toMatch(/554 5\.6\.0 [^\r\n]*bare LF/);
      expect(res.stdout).not.toMatch(/phan|giftshop/i);
    } finally {
      sc.kill();
    }
    expect(s.sink.messages).toHaveLength(1);
    expect(s.sink.messages[0]!.to).toEqual([COLLEAGUE]);
    expect(s.sink.messages[0]!.raw.toString('latin1')).toContain(marker);
    expect(s.sink.messages[0]!.raw.toString('latin1')).not.toMatch(/giftshop|smuggled/);
  });

  it('two complete transactions pipelined in one write (non-RFC-2920 client): both answered, and the session still answers the next command', async () => {
    const c = await open(s);
    const a = clean();
    const b = clean();
    c.write(`MAIL FROM:<${FROM}>\r\nRCPT TO:<${COLLEAGUE}>\r\nDATA\r\n${a.data}.\r\nMAIL FROM:<${FROM}>\r\nRCPT TO:<${COLLEAGUE}>\r\nDATA\r\n${b.data}.\r\n`);
    const codes: number[] = [];
    for (let i = 0; i < 8; i++) codes.push((await c.read()).code);
    expect(codes).toEqual([250, 250, 354, 250, 250, 250, 354, 250]);
    expect(s.sink.messages).toHaveLength(2);
    // The session must not wedge: a later command gets its answer.
    const noop = await c.cmd('NOOP', 3_000).then((r) => r.code, (e: Error) => e.message.split('\n')[0]!);
    c.destroy();
    expect(noop).toBe(250);
  });
});

// ---------------------------------------------------------------------------------------------
// Malformed commands
// ---------------------------------------------------------------------------------------------

/** Deterministic pseudo-random bytes (xorshift32), so a failure can be reproduced. */
function junk(n: number, seed = 0x2545f491): Buffer {
  const out = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

describe('malformed commands never crash the relay', () => {
  const s = sharedSetup({ clearSink: false });

  it('garbage command lines → 500 each, and the session still works', async () => {
    const c = await open(s);
    for (const line of ['FOOBAR', 'HELLO WORLD', '!!!!', 'MAIL', 'RCPT', '\t \t']) {
      const r = await c.cmd(line);
      expect(r.code, `${JSON.stringify(line)} → ${r.lines.join('|')}`).toBeGreaterThanOrEqual(500);
      expect(r.code).toBeLessThan(600);
    }
    expect((await c.cmd('NOOP')).code).toBe(250);
    await c.quit();
  });

  it('a 5000-byte command line → 5xx; a 5000-byte MAIL FROM address → 5xx; no MAIL is accepted', async () => {
    const c = await open(s);
    const r1 = await c.cmd('X'.repeat(5000));
    expect(r1.code).toBe(500);
    const r2 = await c.cmd(`MAIL FROM:<${'a'.repeat(5000)}@company.com>`);
    expect(r2.code).toBeGreaterThanOrEqual(500);
    expect(r2.code).toBeLessThan(600);
    // No transaction was opened by the refused MAIL.
    const r3 = await c.cmd(`RCPT TO:<${COLLEAGUE}>`);
    expect(r3.code).toBe(503);
    expect((await c.cmd('NOOP')).code).toBe(250);
    await c.quit();
  });

  it('a 20000-byte line (over the 16 KiB command limit) → an error reply or a close, never a hang', async () => {
    const c = await open(s);
    c.write(`${'Y'.repeat(20_000)}\r\n`);
    await expectErrorReplyOrClose(c);
    c.destroy();
    await expectRelayWorks(s);
  });

  it('NUL bytes in commands and addresses → 5xx, nothing accepted', async () => {
    const c = await open(s);
    const r1 = await c.cmd(Buffer.from('NO\0OP', 'latin1'));
    expect(r1.code).toBeGreaterThanOrEqual(500);
    const r2 = await c.cmd(Buffer.from(`MAIL FROM:<ag\0ent@company.com>`, 'latin1'));
    expect(r2.code).toBeGreaterThanOrEqual(500);
    expect(r2.code).toBeLessThan(600);
    expect((await c.cmd(`MAIL FROM:<${FROM}>`)).code).toBe(250);
    const r3 = await c.cmd(Buffer.from(`RCPT TO:<colleague\0@company.com>`, 'latin1'));
    expect(r3.code).toBeGreaterThanOrEqual(500);
    expect(r3.code).toBeLessThan(600);
    const r4 = await c.cmd(Buffer.from(`RCPT TO:<colleague@company.com\0phan@giftshop.club>`, 'latin1'));
    expect(r4.code).toBeGreaterThanOrEqual(500);
    expect(r4.code).toBeLessThan(600);
    // No recipient was accepted, so DATA is refused.
    expect((await c.cmd('DATA')).code).toBe(503);
    await c.quit();
    expectNoPhanInEnvelopes(s.sink);
  });

  it('`MAIL FROM:<a@b` (unterminated) → 501', async () => {
    const c = await open(s);
    const r = await c.cmd('MAIL FROM:<a@b');
    expect(r.code).toBe(501);
    const r2 = await c.cmd(`MAIL FROM:<${FROM}`);
    expect(r2.code).toBe(501);
    expect((await c.cmd(`RCPT TO:<${COLLEAGUE}>`)).code).toBe(503);
    await c.quit();
  });

  it('RCPT before MAIL → 503; DATA before MAIL → 503; DATA before RCPT → 503', async () => {
    const c = await open(s);
    expect((await c.cmd(`RCPT TO:<${COLLEAGUE}>`)).code).toBe(503);
    expect((await c.cmd('DATA')).code).toBe(503);
    expect((await c.cmd(`MAIL FROM:<${FROM}>`)).code).toBe(250);
    expect((await c.cmd('DATA')).code).toBe(503);
    // The transaction is still intact: a RCPT and DATA now work.
    const before = s.sink.messages.length;
    expect((await c.cmd(`RCPT TO:<${COLLEAGUE}>`)).code).toBe(250);
    expect((await c.cmd('DATA')).code).toBe(354);
    const { data, marker } = clean();
    c.write(`${data}.\r\n`);
    expect((await c.read()).code).toBe(250);
    await c.quit();
    expect(s.sink.messages.length).toBe(before + 1);
    expect(s.sink.messages[s.sink.messages.length - 1]!.raw.toString('latin1')).toContain(marker);
  });

  it('binary junk → 5xx replies or 421 and a close, never a hang', async () => {
    const c = await open(s);
    const j = junk(4096);
    c.write(Buffer.concat([j, Buffer.from('\r\n'), junk(2048, 7), Buffer.from('\r\n')]));
    await expectErrorReplyOrClose(c);
    c.destroy();
    await expectRelayWorks(s);
  });

  it('ten unrecognized commands in a row → 421 and the relay closes that connection', async () => {
    const c = await open(s);
    const codes: number[] = [];
    for (let i = 0; i < 10; i++) codes.push((await c.cmd(`BOGUS${i}`)).code);
    expect(codes.slice(0, 9).every((x) => x === 500)).toBe(true);
    expect(codes[9]).toBe(421);
    await expectClosedSoon(c);
    await expectRelayWorks(s);
  });

  it('an HTTP request on the SMTP port → 421 and a close', async () => {
    const { client: c, greeting } = await RawSmtp.connect(s.relay.smtpPort);
    expect(greeting.code).toBe(220);
    c.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: hostile-test\r\n\r\n');
    const r = await c.read();
    expect(r.code).toBe(421);
    await expectClosedSoon(c);
    // A POST after a valid EHLO is refused the same way.
    const c2 = await open(s);
    const r2 = await c2.cmd('POST /api/send HTTP/1.0');
    expect(r2.code).toBe(421);
    c2.destroy();
    await expectRelayWorks(s);
  });

  it('abrupt disconnect in the middle of DATA → nothing delivered; the relay keeps working', async () => {
    const before = s.sink.messages.length;
    const c = await open(s);
    expect((await c.cmd(`MAIL FROM:<${FROM}>`)).code).toBe(250);
    expect((await c.cmd(`RCPT TO:<${COLLEAGUE}>`)).code).toBe(250);
    expect((await c.cmd('DATA')).code).toBe(354);
    c.write(`From: <${FROM}>\r\nTo: <${COLLEAGUE}>\r\nSubject: half\r\n\r\nhalf a mess`);
    await sleep(50);
    c.destroy();
    await sleep(200);
    expect(s.sink.messages.length).toBe(before);
    await expectRelayWorks(s);
  });

  it('after every malformed input above, a clean message is still accepted and delivered', async () => {
    await expectRelayWorks(s);
    expectNoPhanInEnvelopes(s.sink);
  });

  it('a relay with a connection cut in DATA still closes promptly (no stuck in-flight message)', async () => {
    const t = await setup('strip');
    try {
      const c = await open(t);
      expect((await c.cmd(`MAIL FROM:<${FROM}>`)).code).toBe(250);
      expect((await c.cmd(`RCPT TO:<${COLLEAGUE}>`)).code).toBe(250);
      expect((await c.cmd('DATA')).code).toBe(354);
      c.write('Subject: cut\r\n\r\npartial');
      await sleep(50);
      c.destroy();
      await sleep(100);
      const started = Date.now();
      await t.relay.close();
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(t.sink.messages).toHaveLength(0);
    } finally {
      await t.sink.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Malformed MIME
// ---------------------------------------------------------------------------------------------

function nested(depth: number): string {
  let body = 'Content-Type: text/plain\r\n\r\ninnermost\r\n';
  for (let i = depth - 1; i >= 0; i--) {
    body = `Content-Type: multipart/mixed; boundary="b${i}"\r\n\r\n--b${i}\r\n${body}--b${i}--\r\n`;
  }
  return body;
}

const MIME_CASES: { name: string; data: () => string; expect: 'any' | 250 | 554 }[] = [
  {
    name: 'multipart with a boundary that never appears',
    expect: 'any',
    data: () => message({ From: `<${FROM}>`, To: `<${COLLEAGUE}>`, Subject: 'broken boundary', 'MIME-Version': '1.0', 'Content-Type': 'multipart/mixed; boundary="declared"' }, '--other\r\nContent-Type: text/plain\r\n\r\ntext\r\n--other--\r\n'),
  },
  {
    name: 'multipart without a closing boundary and a part without headers',
    expect: 'any',
    data: () => message({ From: `<${FROM}>`, To: `<${COLLEAGUE}>`, Subject: 'unclosed', 'MIME-Version': '1.0', 'Content-Type': 'multipart/mixed; boundary="x"' }, '--x\r\nContent-Type: text/plain\r\n\r\npart one\r\n--x\r\n\r\npart two with no headers\r\n'),
  },
  {
    name: 'multipart with an empty boundary parameter',
    expect: 'any',
    data: () => message({ From: `<${FROM}>`, To: `<${COLLEAGUE}>`, Subject: 'empty boundary', 'MIME-Version': '1.0', 'Content-Type': 'multipart/mixed; boundary=""' }, '--\r\n\r\nx\r\n----\r\n'),
  },
  {
    name: 'invalid base64 in a text part and an attachment',
    expect: 'any',
    data: () =>
      message(
        { From: `<${FROM}>`, To: `<${COLLEAGUE}>`, Subject: 'bad base64', 'MIME-Version': '1.0', 'Content-Type': 'multipart/mixed; boundary="q"' },
        '--q\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!not*base64@@@@====abc\r\n--q\r\nContent-Type: application/octet-stream; name="a.bin"\r\nContent-Disposition: attachment; filename="a.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n%%%%$$$$\r\n--q--\r\n',
      ),
  },
  {
    name: 'header line without a colon',
    expect: 554,
    data: () => `From: <${FROM}>\r\nTo: <${COLLEAGUE}>\r\nThis header has no colon\r\nSubject: no colon\r\n\r\nbody\r\n`,
  },
  {
    name: '10000 header lines',
    expect: 'any',
    data: () => {
      const lines = [`From: <${FROM}>`, `To: <${COLLEAGUE}>`, 'Subject: many headers'];
      for (let i = 0; i < 10_000; i++) lines.push(`X-Filler-${i}: value ${i}`);
      return message(lines, 'body\r\n');
    },
  },
  {
    name: '200 nested multiparts',
    expect: 'any',
    data: () => `From: <${FROM}>\r\nTo: <${COLLEAGUE}>\r\nSubject: nested\r\nMIME-Version: 1.0\r\n${nested(200)}`,
  },
  {
    name: 'headers only, no body and no blank line',
    expect: 'any',
    data: () => `From: <${FROM}>\r\nTo: <${COLLEAGUE}>\r\nSubject: no body\r\n`,
  },
  {
    name: 'empty DATA',
    expect: 'any',
    data: () => '',
  },
];

describe('malformed MIME gets a clear reply and the relay keeps working', () => {
  const s = sharedSetup({ clearSink: true });

  for (const m of MIME_CASES) {
    it(`${m.name} → ${m.expect === 'any' ? '2xx or 5xx' : m.expect}, sink consistent with the reply`, async () => {
      const c = await open(s);
      const started = Date.now();
      const r = await c.transaction(FROM, [COLLEAGUE], m.data());
      await c.quit();
      const code = r.final?.code;
      expect(Date.now() - started).toBeLessThan(15_000);
      if (m.expect === 'any') expect([250, 554, 552]).toContain(code);
      else expect(code, r.final?.lines.join('\n')).toBe(m.expect);
      if (code === 250) {
        expect(s.sink.messages).toHaveLength(1);
        expect(s.sink.messages[0]!.to).toEqual([COLLEAGUE]);
      } else {
        expect(r.final!.text).toMatch(/^5\.\d\.\d /);
        expect(s.sink.messages).toHaveLength(0);
      }
      if (m.expect === 554) expect(r.final!.text).toMatch(/5\.7\.1 .*input could not be parsed safely.*rule input/);
      await expectRelayWorks(s);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Address tricks
// ---------------------------------------------------------------------------------------------

const HOMOGRAPH = 'сompany.com'; // U+0441 CYRILLIC SMALL LETTER ES + "ompany.com"
const HOMOGRAPH_ACE = domainToASCII(HOMOGRAPH);

/**
 * How the relay must judge each address.
 *  unknown: a valid mailbox outside company.com → strip mode 550 at RCPT; block mode 250 at RCPT, 554 after DATA
 *  invalid: refused as an address (the relay's 553, or smtp-server's 501 syntax check) in every mode
 *  allowed: a valid mailbox in company.com → accepted and delivered with envelope `as`
 * `rcpt` applies to `RCPT TO:<addr>`, `header` to a To:/Cc: value (envelope: colleague only).
 */
interface Trick {
  addr: string;
  /** Header value, when it differs from addr. */
  header?: string;
  rcpt: 'unknown' | 'invalid' | 'allowed';
  header_: 'unknown' | 'invalid' | 'allowed';
  /** For `allowed` RCPT rows: the envelope address the sink must see. */
  as?: string;
  /** For `unknown` RCPT rows: the normalized mailbox the 550 must name. */
  judgedAs?: string;
}

const TRICKS: Trick[] = [
  { addr: 'PHAN@GIFTSHOP.CLUB', rcpt: 'unknown', header_: 'unknown', judgedAs: 'PHAN@giftshop.club' },
  // smtp-server's own syntax check refuses a trailing dot at RCPT (501); in a header it is stripped.
  { addr: 'phan@giftshop.club.', rcpt: 'invalid', header_: 'unknown' },
  { addr: '"phan"@giftshop.club', rcpt: 'unknown', header_: 'unknown', judgedAs: 'phan@giftshop.club' },
  { addr: '@company.com:phan@giftshop.club', header: '<@company.com:phan@giftshop.club>', rcpt: 'unknown', header_: 'unknown', judgedAs: 'phan@giftshop.club' },
  { addr: 'phan%giftshop.club@company.com', rcpt: 'invalid', header_: 'invalid' },
  { addr: 'phan@company.com@giftshop.club', rcpt: 'invalid', header_: 'invalid' },
  { addr: '"phan@giftshop.club"@company.com', rcpt: 'invalid', header_: 'invalid' },
  { addr: `phan@${HOMOGRAPH}`, rcpt: 'invalid', header_: 'invalid' },
  { addr: `phan@${HOMOGRAPH_ACE}`, rcpt: 'invalid', header_: 'invalid' },
  { addr: 'phan@company.com(comment)giftshop.club', rcpt: 'invalid', header_: 'invalid' },
  { addr: '=?utf-8?q?phan=40giftshop.club?=@company.com', rcpt: 'invalid', header_: 'invalid' },
  { addr: 'phan@[127.0.0.1]', rcpt: 'invalid', header_: 'invalid' },
  { addr: 'phan!giftshop.club@company.com', rcpt: 'invalid', header_: 'invalid' },
  // Positive rows: normalize to an allowed mailbox.
  // At RCPT smtp-server's syntax check answers 501 before the relay sees it (fails closed); in a header it is normalized.
  { addr: 'Colleague@COMPANY.COM.', rcpt: 'invalid', header_: 'allowed', as: 'Colleague@company.com' },
  { addr: 'Colleague@COMPANY.COM', rcpt: 'allowed', header_: 'allowed', as: 'Colleague@company.com' },
  { addr: '"colleague"@company.com', rcpt: 'allowed', header_: 'allowed', as: 'colleague@company.com' },
  { addr: '@relay.example:colleague@company.com', header: '<@relay.example:colleague@company.com>', rcpt: 'allowed', header_: 'allowed', as: 'colleague@company.com' },
];

describe('address tricks', () => {
  let strip: Setup;
  let block: Setup;
  beforeAll(async () => {
    [strip, block] = await Promise.all([setup('strip'), setup('block')]);
  });
  afterAll(async () => {
    await Promise.all([teardown(strip), teardown(block)]);
  });

  it('the homograph fixture really is a punycode domain', () => {
    expect(HOMOGRAPH).not.toBe('company.com');
    expect(HOMOGRAPH_ACE).toMatch(/^xn--ompany-[a-z0-9]+\.com$/);
  });

  for (const mode of ['strip', 'block'] as const) {
    const s = (): Setup => (mode === 'strip' ? strip : block);

    for (const t of TRICKS) {
      it(`${mode} mode, RCPT TO:<${t.addr}> → ${t.rcpt}`, async () => {
        const env = s();
        env.sink.messages.length = 0;
        const c = await open(env);
        const { data, marker } = clean();
        const to = t.rcpt === 'allowed' ? [t.addr] : [COLLEAGUE, t.addr];
        const r = await c.transaction(FROM, to, data);
        await c.quit();
        expect(r.mail.code).toBe(250);
        const trickReply = r.rcpts[r.rcpts.length - 1]!;
        const shown = `${trickReply.code} ${trickReply.text}`;
        if (t.rcpt === 'allowed') {
          expect(trickReply.code, shown).toBe(250);
          expect(r.final?.code, r.final?.lines.join('\n')).toBe(250);
          expect(env.sink.messages).toHaveLength(1);
          expect(env.sink.messages[0]!.to).toEqual([t.as]);
          expect(env.sink.messages[0]!.raw.toString('latin1')).toContain(marker);
          return;
        }
        expect(r.rcpts[0]!.code).toBe(250); // the colleague
        if (t.rcpt === 'invalid') {
          expect([501, 553], shown).toContain(trickReply.code);
          if (trickReply.code === 553) expect(trickReply.text).toMatch(/^5\.1\.3 Recipient address refused/);
          // The colleague still gets the message; the refused address gets nothing.
          expect(r.final?.code, r.final?.lines.join('\n')).toBe(250);
          expect(env.sink.messages).toHaveLength(1);
          expect(env.sink.messages[0]!.to).toEqual([COLLEAGUE]);
        } else if (mode === 'strip') {
          expect(trickReply.code, shown).toBe(550);
          expect(trickReply.text).toMatch(/^5\.7\.1 /);
          expect(trickReply.text).toContain(`<${t.judgedAs}>`);
          expect(r.final?.code, r.final?.lines.join('\n')).toBe(250);
          expect(env.sink.messages).toHaveLength(1);
          expect(env.sink.messages[0]!.to).toEqual([COLLEAGUE]);
        } else {
          // Block mode: the RCPT is taken so the whole message can be judged, then refused.
          expect(trickReply.code, shown).toBe(250);
          expect(r.final?.code, r.final?.lines.join('\n')).toBe(554);
          expect(r.final!.text).toMatch(/^5\.7\.1 Message refused by postguard policy \(unknown recipient; rule unknown_recipients/);
          expect(env.sink.messages).toHaveLength(0);
        }
        expectNoPhanInEnvelopes(env.sink);
      });

      for (const field of ['To', 'Cc'] as const) {
        const value = t.header ?? t.addr;
        it(`${mode} mode, header ${field}: ${value} (envelope: colleague only) → ${t.header_}`, async () => {
          const env = s();
          env.sink.messages.length = 0;
          const c = await open(env);
          const headers: Record<string, string> = field === 'To' ? { To: value } : { To: `<${COLLEAGUE}>`, Cc: value };
          const { data, marker } = clean(headers);
          const r = await c.transaction(FROM, [COLLEAGUE], data);
          await c.quit();
          expect(r.rcpts.map((x) => x.code)).toEqual([250]);
          const blocked = t.header_ === 'invalid' || (t.header_ === 'unknown' && mode === 'block');
          if (blocked) {
            expect(r.final?.code, r.final?.lines.join('\n')).toBe(554);
            expect(r.final!.text).toMatch(t.header_ === 'invalid' ? /^5\.7\.1 .*input could not be parsed safely; rule input/ : /^5\.7\.1 .*unknown recipient; rule unknown_recipients\.visible/);
            expect(env.sink.messages).toHaveLength(0);
          } else {
            // Strip mode with a display-only mention (or an allowed address): delivered to the envelope only.
            expect(r.final?.code, r.final?.lines.join('\n')).toBe(250);
            expect(env.sink.messages).toHaveLength(1);
            expect(env.sink.messages[0]!.to).toEqual([COLLEAGUE]);
            expect(env.sink.messages[0]!.raw.toString('latin1')).toContain(marker);
          }
          expectNoPhanInEnvelopes(env.sink);
        });
      }
    }
  }

  it('block mode: `To: Team: colleague@company.com, phan@giftshop.club;` with envelope colleague only → 554, nothing delivered', async () => {
    block.sink.messages.length = 0;
    const c = await open(block);
    const { data } = clean({ To: 'Team: colleague@company.com, phan@giftshop.club;' });
    const r = await c.transaction(FROM, [COLLEAGUE], data);
    await c.quit();
    expect(r.rcpts.map((x) => x.code)).toEqual([250]);
    expect(r.final?.code, r.final?.lines.join('\n')).toBe(554);
    expect(r.final!.text).toMatch(/^5\.7\.1 .*unknown recipient; rule unknown_recipients\.visible/);
    expect(block.sink.messages).toHaveLength(0);
  });

  it('block mode: two To: headers, the second naming phan → 554, nothing delivered', async () => {
    block.sink.messages.length = 0;
    const c = await open(block);
    const m = clean();
    const data = m.data.replace(`To: <${COLLEAGUE}>\r\n`, `To: <${COLLEAGUE}>\r\nTo: <phan@giftshop.club>\r\n`);
    expect(data.match(/^To: /gm)).toHaveLength(2);
    const r = await c.transaction(FROM, [COLLEAGUE], data);
    await c.quit();
    expect(r.final?.code, r.final?.lines.join('\n')).toBe(554);
    expect(r.final!.text).toMatch(/^5\.7\.1 .*unknown recipient/);
    expect(block.sink.messages).toHaveLength(0);
  });

  it('block mode: a folded To: header hiding phan on a continuation line → 554, nothing delivered', async () => {
    block.sink.messages.length = 0;
    const c = await open(block);
    const { data } = clean({ To: `<${COLLEAGUE}>,\r\n\t<phan@giftshop.club>` });
    const r = await c.transaction(FROM, [COLLEAGUE], data);
    await c.quit();
    expect(r.final?.code, r.final?.lines.join('\n')).toBe(554);
    expect(block.sink.messages).toHaveLength(0);
  });

  it('block mode: a Bcc: header naming phan (envelope colleague only) → 554, nothing delivered', async () => {
    block.sink.messages.length = 0;
    const c = await open(block);
    const { data } = clean({ Bcc: '<phan@giftshop.club>' });
    const r = await c.transaction(FROM, [COLLEAGUE], data);
    await c.quit();
    expect(r.final?.code, r.final?.lines.join('\n')).toBe(554);
    expect(block.sink.messages).toHaveLength(0);
  });

  it('strip mode: a Bcc: header naming phan → delivered to the colleague, Bcc header removed, no "giftshop" byte relayed', async () => {
    strip.sink.messages.length = 0;
    const c = await open(strip);
    const { data, marker } = clean({ Bcc: '<phan@giftshop.club>' });
    const r = await c.transaction(FROM, [COLLEAGUE, 'phan@giftshop.club'], data);
    await c.quit();
    expect(r.rcpts.map((x) => x.code)).toEqual([250, 550]);
    expect(r.final?.code, r.final?.lines.join('\n')).toBe(250);
    expect(strip.sink.messages).toHaveLength(1);
    expect(strip.sink.messages[0]!.to).toEqual([COLLEAGUE]);
    const raw = strip.sink.messages[0]!.raw.toString('latin1');
    expect(raw).toContain(marker);
    expect(raw).not.toMatch(/giftshop/i);
    expect(raw).not.toMatch(/^Bcc:/im);
  });
});
