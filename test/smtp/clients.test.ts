// Real third-party SMTP clients against a real relay and a real STARTTLS upstream sink, all on
// 127.0.0.1: swaks (Perl, Net::SSLeay), python3 smtplib and openssl s_client. Each client must
// verify the relay's certificate against the relay CA written to disk (and fail without it), and
// the postmark-mcp attack (an extra envelope recipient phan@giftshop.club next to an allowed
// colleague) must end with the colleague's copy only: not one "giftshop" byte reaches the sink.
//
// Children run asynchronously (spawn) with hard timeouts: the relay lives in this process, so a
// synchronous child would deadlock it.

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/policy/password.js';
import { Interactive, finalReplies, run, sleep, type RunResult } from '../helpers/raw-smtp.js';
import { startTestRelay, upstreamEnv, type TestRelay } from '../helpers/relay.js';
import { startSink, type Sink } from '../helpers/sink.js';

const FROM = 'agent@company.com';
const COLLEAGUE = 'colleague@company.com';
const PHAN = 'phan@giftshop.club';
const PHAN_550 = `550 5.7.1 Recipient <${PHAN}> is not allowed by policy`;

const AGENT = 'bot';
const AGENT_PASSWORD = 'correct horse battery staple';
const AGENT_SENDER = 'bot@company.com';

const STRIP_POLICY = `version: 1
mode: enforce
recipients:
  domains:
    - company.com
unknown_recipients: strip
`;

const agentPolicy = (): string => `version: 1
mode: enforce
recipients:
  domains:
    - company.com
unknown_recipients: strip
agents:
  ${AGENT}:
    password_hash: "${hashPassword(AGENT_PASSWORD)}"
    senders:
      - ${AGENT_SENDER}
`;

const tmp = mkdtempSync(join(tmpdir(), 'pg-clients-'));

let sink: Sink;
let relay: TestRelay;
let agentRelay: TestRelay;
/** The relay's CA, as clients get it (GET /api/ca or certs/ca.pem), written to disk. */
let caFile: string;
let agentCaFile: string;

beforeAll(async () => {
  sink = await startSink();
  const env = upstreamEnv(sink);
  [relay, agentRelay] = await Promise.all([startTestRelay({ policy: STRIP_POLICY, env }), startTestRelay({ policy: agentPolicy(), env })]);
  caFile = join(tmp, 'relay-ca.pem');
  writeFileSync(caFile, relay.caPem);
  agentCaFile = join(tmp, 'agent-relay-ca.pem');
  writeFileSync(agentCaFile, agentRelay.caPem);
});

afterAll(async () => {
  await relay?.close();
  await agentRelay?.close();
  await sink?.close();
});

beforeEach(() => {
  sink.messages.length = 0;
});

let seq = 0;
const marker = (): string => `clients-${process.pid}-${++seq}-${Date.now()}`;

/** The attack's outcome at the sink: one message, the colleague only, no trace of giftshop. */
function expectColleagueOnly(mark: string, from = FROM): void {
  expect(sink.messages).toHaveLength(1);
  const m = sink.messages[0]!;
  expect(m.from).toBe(from);
  expect(m.to).toEqual([COLLEAGUE]);
  const raw = m.raw.toString('latin1');
  expect(raw).toContain(mark);
  expect(raw).not.toMatch(/giftshop/i);
  expect(m.to.join(' ')).not.toMatch(/phan/i);
}

const show = (r: RunResult): string => `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}${r.timedOut ? ' TIMED OUT' : ''}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

// ---------------------------------------------------------------------------------------------
// swaks
// ---------------------------------------------------------------------------------------------

// swaks 20201014.0 (the installed version) has no --cc/--bcc (added in 20240103); `--to a,b`
// puts both addresses in the envelope, which is exactly the silent-BCC shape. Its default To:
// header would name both, so --header replaces it with the colleague only. --tls-verify is
// supported: without it swaks does not check the certificate at all; with it, the chain is
// verified against --tls-ca-path (or OpenSSL's default store).
function swaks(port: number, mode: '--tls' | '--tlsc', extra: string[], mark: string): Promise<RunResult> {
  return run(
    'swaks',
    [
      '--server', '127.0.0.1', '--port', String(port), mode,
      '--ehlo', 'swaks.test',
      '--from', FROM,
      '--to', `${COLLEAGUE},${PHAN}`,
      '--header', `To: <${COLLEAGUE}>`,
      '--header', `Subject: swaks ${mark}`,
      '--timeout', '10',
      ...extra,
    ],
    { timeoutMs: 25_000 },
  );
}

describe('swaks', () => {
  it('version is the one these tests were written for (flags: --tls-verify, --tls-ca-path, --tlsc)', async () => {
    const r = await run('swaks', ['--version'], { timeoutMs: 10_000 });
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toMatch(/swaks version \d{8}/);
  });

  for (const mode of ['--tls', '--tlsc'] as const) {
    const label = mode === '--tls' ? 'STARTTLS port (--tls)' : 'implicit-TLS port (--tlsc)';
    const port = (): number => (mode === '--tls' ? relay.smtpPort : relay.smtpsPort);

    it(`${label}, --tls-verify with the relay CA: colleague delivered, phan refused with 550 5.7.1, no "giftshop" byte at the sink`, async () => {
      const mark = marker();
      const r = await swaks(port(), mode, ['--tls-verify', '--tls-ca-path', caFile], mark);
      expect(r.timedOut).toBe(false);
      expect(r.code, show(r)).toBe(0);
      expect(r.stdout).toMatch(/=== TLS started with cipher TLSv1\.[23]/);
      expect(r.stdout).toContain('=== TLS peer DN="/CN=postguard.local"');
      // "<~" = read over TLS; "<~*" = an error reply.
      expect(r.stdout).toContain(`~> RCPT TO:<${COLLEAGUE}>`);
      expect(r.stdout).toContain(`~> RCPT TO:<${PHAN}>`);
      expect(r.stdout).toContain(`<~* ${PHAN_550}`);
      expect(r.stdout).toMatch(/<~ {2}250 2\.0\.0 Delivered by postguard \[[0-9a-f-]{36}\]/);
      expectColleagueOnly(mark);
      expect(sink.messages[0]!.raw.toString('latin1')).toMatch(/with ESMTPS id /);
    });

    it(`${label}, --tls-verify without the relay CA: TLS verification fails, nothing is sent`, async () => {
      const mark = marker();
      // No --tls-ca-path: OpenSSL's default store, which does not hold the relay's private CA.
      const r = await swaks(port(), mode, ['--tls-verify'], mark);
      expect(r.timedOut).toBe(false);
      expect(r.code, show(r)).not.toBe(0);
      expect(`${r.stdout}${r.stderr}`).toMatch(/TLS startup failed .*certificate verify failed/);
      expect(r.stdout).not.toContain('MAIL FROM');
      await sleep(50);
      expect(sink.messages).toHaveLength(0);
    });

    it(`${label}, --tls-verify with another CA (the sink's): TLS verification fails, nothing is sent`, async () => {
      const mark = marker();
      const r = await swaks(port(), mode, ['--tls-verify', '--tls-ca-path', sink.caFile], mark);
      expect(r.code, show(r)).not.toBe(0);
      expect(`${r.stdout}${r.stderr}`).toMatch(/certificate verify failed/);
      expect(r.stdout).not.toContain('MAIL FROM');
      await sleep(50);
      expect(sink.messages).toHaveLength(0);
    });
  }

  it('AUTH PLAIN after STARTTLS: good credentials → 235 and delivery from the agent sender; bad password → 535 5.7.8, nothing sent', async () => {
    const mark = marker();
    const base = ['--server', '127.0.0.1', '--port', String(agentRelay.smtpPort), '--tls', '--tls-verify', '--tls-ca-path', agentCaFile, '--ehlo', 'swaks.test', '--auth', 'PLAIN', '--auth-user', AGENT, '--from', AGENT_SENDER, '--to', `${COLLEAGUE},${PHAN}`, '--header', `To: <${COLLEAGUE}>`, '--header', `Subject: swaks auth ${mark}`, '--timeout', '10'];
    const good = await run('swaks', [...base, '--auth-password', AGENT_PASSWORD], { timeoutMs: 25_000 });
    expect(good.code, show(good)).toBe(0);
    expect(good.stdout).toMatch(/<~ {2}235 /);
    expect(good.stdout).toContain(`<~* ${PHAN_550}`);
    expectColleagueOnly(mark, AGENT_SENDER);

    sink.messages.length = 0;
    const bad = await run('swaks', [...base, '--auth-password', 'wrong password'], { timeoutMs: 25_000 });
    expect(bad.code, show(bad)).not.toBe(0);
    expect(bad.stdout).toContain('<~* 535 5.7.8 Authentication credentials invalid');
    expect(bad.stdout).not.toContain('MAIL FROM');
    await sleep(50);
    expect(sink.messages).toHaveLength(0);
  });
});

// ---------------------------------------------------------------------------------------------
// python3 smtplib
// ---------------------------------------------------------------------------------------------

// One script for every case: JSON in argv, JSON out on stdout (bytes decoded), exceptions as
// {"error": class name, "code": smtp_code, "message": ...}.
const PY = String.raw`
import json, smtplib, ssl, sys
a = json.loads(sys.argv[1])
out = {}
def dec(v):
    return v.decode('utf-8', 'replace') if isinstance(v, bytes) else v
try:
    ctx = ssl.create_default_context(cafile=a['ca'])
    if a['mode'] == 'starttls':
        s = smtplib.SMTP('127.0.0.1', a['port'], local_hostname='python.test', timeout=10)
        s.ehlo()
        out['starttls_offered'] = s.has_extn('starttls')
        code, msg = s.starttls(context=ctx)
        out['starttls'] = [code, dec(msg)]
        s.ehlo()
    else:
        s = smtplib.SMTP_SSL('127.0.0.1', a['port'], local_hostname='python.test', timeout=10, context=ctx)
        s.ehlo()
    out['tls'] = s.sock.version()
    out['auth_offered'] = s.has_extn('auth')
    if a.get('user') is not None:
        code, msg = s.login(a['user'], a['password'])
        out['login'] = [code, dec(msg)]
    refused = s.sendmail(a['from'], a['to'], a['msg'])
    out['refused'] = {k: [v[0], dec(v[1])] for k, v in refused.items()}
    s.quit()
except smtplib.SMTPRecipientsRefused as e:
    out['error'] = type(e).__name__
    out['recipients'] = {k: [v[0], dec(v[1])] for k, v in e.recipients.items()}
except smtplib.SMTPResponseException as e:
    out['error'] = type(e).__name__
    out['code'] = e.smtp_code
    out['message'] = dec(e.smtp_error)
except Exception as e:
    out['error'] = type(e).__name__
    out['message'] = str(e)
print(json.dumps(out))
`;
const pyFile = join(tmp, 'client.py');
writeFileSync(pyFile, PY);

interface PyArgs {
  mode: 'starttls' | 'ssl';
  port: number;
  ca: string;
  from?: string;
  to?: string[];
  user?: string;
  password?: string;
  mark: string;
}

async function python(args: PyArgs): Promise<Record<string, any>> {
  const msg = `From: <${args.from ?? FROM}>\r\nTo: <${COLLEAGUE}>\r\nSubject: python ${args.mark}\r\nMessage-ID: <${args.mark}@company.com>\r\n\r\nhello from smtplib ${args.mark}\r\n`;
  const payload = { from: FROM, to: [COLLEAGUE, PHAN], ...args, msg };
  // -I: isolated mode, no user site-packages or PYTHON* variables.
  const r = await run('python3', ['-I', pyFile, JSON.stringify(payload)], { timeoutMs: 25_000 });
  expect(r.timedOut).toBe(false);
  expect(r.code, show(r)).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, any>;
}

describe('python3 smtplib', () => {
  it('SMTP + starttls(create_default_context(cafile=relay CA)): sendmail returns {phan: 550}, the sink gets the colleague only', async () => {
    const mark = marker();
    const out = await python({ mode: 'starttls', port: relay.smtpPort, ca: caFile, mark });
    expect(out.error, JSON.stringify(out)).toBeUndefined();
    expect(out.starttls_offered).toBe(true);
    expect(out.starttls[0]).toBe(220);
    expect(out.tls).toMatch(/^TLSv1\.[23]$/);
    expect(out.refused).toEqual({ [PHAN]: [550, `5.7.1 Recipient <${PHAN}> is not allowed by policy`] });
    expectColleagueOnly(mark);
  });

  it('SMTP_SSL on the implicit-TLS port: sendmail returns {phan: 550}, the sink gets the colleague only', async () => {
    const mark = marker();
    const out = await python({ mode: 'ssl', port: relay.smtpsPort, ca: caFile, mark });
    expect(out.error, JSON.stringify(out)).toBeUndefined();
    expect(out.tls).toMatch(/^TLSv1\.[23]$/);
    expect(out.refused).toEqual({ [PHAN]: [550, `5.7.1 Recipient <${PHAN}> is not allowed by policy`] });
    expectColleagueOnly(mark);
  });

  it('only phan as recipient → SMTPRecipientsRefused {phan: 550}, nothing delivered', async () => {
    const mark = marker();
    const out = await python({ mode: 'starttls', port: relay.smtpPort, ca: caFile, to: [PHAN], mark });
    expect(out.error).toBe('SMTPRecipientsRefused');
    expect(out.recipients).toEqual({ [PHAN]: [550, `5.7.1 Recipient <${PHAN}> is not allowed by policy`] });
    await sleep(50);
    expect(sink.messages).toHaveLength(0);
  });

  for (const mode of ['starttls', 'ssl'] as const) {
    it(`${mode === 'ssl' ? 'SMTP_SSL' : 'starttls'} with another CA (the sink's) → SSLCertVerificationError, nothing delivered`, async () => {
      const mark = marker();
      const out = await python({ mode, port: mode === 'ssl' ? relay.smtpsPort : relay.smtpPort, ca: sink.caFile, mark });
      expect(out.error).toBe('SSLCertVerificationError');
      expect(out.message).toMatch(/CERTIFICATE_VERIFY_FAILED/);
      await sleep(50);
      expect(sink.messages).toHaveLength(0);
    });
  }

  it('AUTH: login() with good credentials → 235, sendmail as the agent sender strips phan', async () => {
    const mark = marker();
    const out = await python({ mode: 'starttls', port: agentRelay.smtpPort, ca: agentCaFile, user: AGENT, password: AGENT_PASSWORD, from: AGENT_SENDER, mark });
    expect(out.error, JSON.stringify(out)).toBeUndefined();
    expect(out.auth_offered).toBe(true);
    expect(out.login[0]).toBe(235);
    expect(out.refused).toEqual({ [PHAN]: [550, `5.7.1 Recipient <${PHAN}> is not allowed by policy`] });
    expectColleagueOnly(mark, AGENT_SENDER);
  });

  it('AUTH over implicit TLS (SMTP_SSL + login) works the same', async () => {
    const mark = marker();
    const out = await python({ mode: 'ssl', port: agentRelay.smtpsPort, ca: agentCaFile, user: AGENT, password: AGENT_PASSWORD, from: AGENT_SENDER, mark });
    expect(out.error, JSON.stringify(out)).toBeUndefined();
    expect(out.login[0]).toBe(235);
    expectColleagueOnly(mark, AGENT_SENDER);
  });

  it('AUTH: bad password → SMTPAuthenticationError 535 5.7.8, nothing delivered', async () => {
    const out = await python({ mode: 'starttls', port: agentRelay.smtpPort, ca: agentCaFile, user: AGENT, password: 'not the password', from: AGENT_SENDER, mark: marker() });
    expect(out.error).toBe('SMTPAuthenticationError');
    expect(out.code).toBe(535);
    expect(out.message).toMatch(/^5\.7\.8 /);
    await sleep(50);
    expect(sink.messages).toHaveLength(0);
  });

  it('AUTH: unknown user → SMTPAuthenticationError 535, nothing delivered', async () => {
    const out = await python({ mode: 'starttls', port: agentRelay.smtpPort, ca: agentCaFile, user: 'intruder', password: AGENT_PASSWORD, from: AGENT_SENDER, mark: marker() });
    expect(out.error).toBe('SMTPAuthenticationError');
    expect(out.code).toBe(535);
    await sleep(50);
    expect(sink.messages).toHaveLength(0);
  });

  it('AUTH required when the policy defines agents: sendmail without login → SMTPSenderRefused 530 5.7.0', async () => {
    const out = await python({ mode: 'starttls', port: agentRelay.smtpPort, ca: agentCaFile, from: AGENT_SENDER, mark: marker() });
    expect(out.error).toBe('SMTPSenderRefused');
    expect(out.code).toBe(530);
    expect(out.message).toMatch(/^5\.7\.0 Authentication required/);
    await sleep(50);
    expect(sink.messages).toHaveLength(0);
  });

  it('AUTH: a logged-in agent using a sender it is not allowed → SMTPSenderRefused 550 5.7.1', async () => {
    const out = await python({ mode: 'starttls', port: agentRelay.smtpPort, ca: agentCaFile, user: AGENT, password: AGENT_PASSWORD, from: 'ceo@company.com', mark: marker() });
    expect(out.error).toBe('SMTPSenderRefused');
    expect(out.code).toBe(550);
    expect(out.message).toMatch(/^5\.7\.1 Sender <ceo@company\.com> is not allowed for agent bot/);
    await sleep(50);
    expect(sink.messages).toHaveLength(0);
  });
});

// ---------------------------------------------------------------------------------------------
// openssl s_client
// ---------------------------------------------------------------------------------------------

describe('openssl s_client', () => {
  const sclient = (port: number, extra: string[]): Interactive =>
    new Interactive('openssl', ['s_client', ...extra, '-connect', `127.0.0.1:${port}`, '-verify_return_error', '-quiet', '-ign_eof'], 25_000);

  /** A whole attack session, one step per reply (exact bytes, CRLF written by us). */
  async function attackSession(sc: Interactive, mark: string, offset = 0): Promise<RunResult> {
    try {
      sc.write('EHLO sclient.test\r\n');
      await sc.waitForReplies(offset + 1);
      sc.write(`MAIL FROM:<${FROM}>\r\n`);
      await sc.waitForReplies(offset + 2);
      sc.write(`RCPT TO:<${COLLEAGUE}>\r\n`);
      await sc.waitForReplies(offset + 3);
      sc.write(`RCPT TO:<${PHAN}>\r\n`);
      await sc.waitForReplies(offset + 4);
      sc.write('DATA\r\n');
      await sc.waitForReplies(offset + 5);
      sc.write(`From: <${FROM}>\r\nTo: <${COLLEAGUE}>\r\nSubject: s_client ${mark}\r\n\r\nhello ${mark}\r\n.\r\n`);
      await sc.waitForReplies(offset + 6);
      sc.write('QUIT\r\n');
      return await sc.done;
    } finally {
      sc.kill();
    }
  }

  it('-starttls smtp -CAfile <relay CA> -verify_return_error: chain verifies, the session strips phan with 550, sink gets the colleague only', async () => {
    const mark = marker();
    const res = await attackSession(sclient(relay.smtpPort, ['-starttls', 'smtp', '-CAfile', caFile]), mark);
    expect(res.timedOut).toBe(false);
    expect(res.code, show(res)).toBe(0);
    expect(res.stderr).toMatch(/depth=1 CN = postguard interception CA[^\n]*\nverify return:1\ndepth=0 CN = postguard\.local\nverify return:1/);
    expect(res.stderr).not.toMatch(/verify error/);
    const replies = finalReplies(res.stdout);
    expect(replies.map((r) => r.code), res.stdout).toEqual([250, 250, 250, 550, 354, 250, 221]);
    expect(replies[3]!.line).toBe(PHAN_550);
    expectColleagueOnly(mark);
  });

  it('implicit-TLS port with -CAfile <relay CA>: chain verifies, same outcome', async () => {
    const mark = marker();
    const sc = sclient(relay.smtpsPort, ['-CAfile', caFile]);
    await sc.waitForReplies(1); // the 220 banner arrives over TLS
    const res = await attackSession(sc, mark, 1).catch((e: Error) => ({ code: -1, signal: null, stdout: sc.stdout, stderr: `${sc.stderr}\n${e.message}`, timedOut: false }) as RunResult);
    expect(res.code, show(res)).toBe(0);
    expect(res.stderr).not.toMatch(/verify error/);
    const codes = finalReplies(res.stdout).map((r) => r.code);
    // banner 220, then EHLO … QUIT as above
    expect(codes, res.stdout).toEqual([220, 250, 250, 250, 550, 354, 250, 221]);
    expectColleagueOnly(mark);
  });

  it('the relay leaf is valid for 127.0.0.1 and localhost (-verify_ip / -verify_hostname) and not for another name', async () => {
    const probe = (extra: string[]): Promise<RunResult> =>
      run('openssl', ['s_client', '-starttls', 'smtp', '-connect', `127.0.0.1:${relay.smtpPort}`, '-CAfile', caFile, '-verify_return_error', ...extra], { input: 'QUIT\r\n', timeoutMs: 15_000 });
    const ip = await probe(['-verify_ip', '127.0.0.1']);
    expect(ip.code, show(ip)).toBe(0);
    expect(ip.stdout).toContain('Verify return code: 0 (ok)');
    const host = await probe(['-verify_hostname', 'localhost']);
    expect(host.code, show(host)).toBe(0);
    expect(host.stdout).toContain('Verify return code: 0 (ok)');
    const other = await probe(['-verify_hostname', 'smtp.giftshop.club']);
    expect(other.code, show(other)).not.toBe(0);
    expect(`${other.stdout}${other.stderr}`).toMatch(/hostname mismatch/);
  });

  for (const [label, port, extra] of [
    ['-starttls smtp', (): number => relay.smtpPort, ['-starttls', 'smtp']],
    ['implicit TLS', (): number => relay.smtpsPort, []],
  ] as const) {
    it(`${label} with a wrong CA (the sink's) → verification error, handshake aborted, nothing delivered`, async () => {
      const res = await run('openssl', ['s_client', ...extra, '-connect', `127.0.0.1:${port()}`, '-CAfile', sink.caFile, '-verify_return_error', '-quiet', '-ign_eof'], {
        input: `EHLO sclient.test\r\nMAIL FROM:<${FROM}>\r\nRCPT TO:<${COLLEAGUE}>\r\nDATA\r\nSubject: must not arrive\r\n\r\nx\r\n.\r\nQUIT\r\n`,
        timeoutMs: 15_000,
      });
      expect(res.timedOut).toBe(false);
      expect(res.code, show(res)).not.toBe(0);
      expect(res.stderr).toMatch(/verify error:num=\d+:unable to get local issuer certificate/);
      expect(finalReplies(res.stdout).filter((r) => r.code === 250)).toHaveLength(0);
      await sleep(50);
      expect(sink.messages).toHaveLength(0);
    });
  }
});
