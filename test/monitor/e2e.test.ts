// Root end-to-end test of the eBPF monitor: the real `postguard monitor` CLI (dist/cli.js, which
// runs bpf/egressd) watching a cgroup this test creates, real TLS clients started inside it (node
// tls/https/fetch, python ssl, curl, openssl s_client) talking to local servers on loopback, and a
// running relay receiving the reports. Every client has a timeout; every kill/stop goes only to
// processes in the test cgroup, which is removed at the end.
//
// Needs root, bpf/egressd, a cgroup2 mount and kernel BTF. Without them the suite is skipped — or,
// with CI=true, fails naming what is missing.

import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { pinDirFor } from '../../src/monitor/monitor.js';
import { loadOrCreateCa } from '../../src/tls/ca.js';
import { cgroup2Mount, createTestCgroup, e2eBlocker, type CgProcess, type Exit, type TestCgroup } from '../helpers/cgroup.js';
import { adminGet, ADMIN_TOKEN, companyPolicy, startTestRelay, type TestRelay } from '../helpers/relay.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CONNECT_PY = join(ROOT, 'bpf', 'test', 'connect.py');
const BAD = 'phan@giftshop.club';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const blocker = e2eBlocker();
const mustRun = process.env.CI === 'true';

if (blocker && mustRun) {
  describe('eBPF monitor end to end (root)', () => {
    it('can run on this machine (CI=true: not skipped)', () => {
      throw new Error(`the root e2e cannot run: ${blocker}`);
    });
  });
}

// --- clients (written to a temporary directory, run inside the cgroup) --------------------------------

/**
 * An SMTP client. argv[2] is JSON: port, mode (tls | starttls | plain), ca (file), servername, and
 * either `lines` (one write each, each waiting for the server's reply) or `pipeline` (one write right
 * after the TLS handshake, before the greeting is read). Prints the replies.
 */
const SMTP_CLIENT = `
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
const o = JSON.parse(process.argv[2]);
const ca = o.ca ? readFileSync(o.ca) : undefined;
const tlsOpts = { servername: o.servername, ca, checkServerIdentity: () => undefined };
let sock;
let buf = '';
let waiter = null;
const check = () => {
  if (waiter && /(^|\\n)\\d{3} [^\\n]*\\n$/.test(buf)) { const r = buf; buf = ''; const w = waiter; waiter = null; w(r); }
};
const listen = (s) => {
  s.on('data', (d) => { buf += d; check(); });
  s.on('error', (e) => { console.error('ERR', e.code ?? e.message); process.exit(3); });
};
const reply = () => new Promise((r) => { waiter = r; check(); });
const send = async (line) => { sock.write(line); const r = await reply(); process.stdout.write(r); };
if (o.mode === 'tls') {
  sock = tls.connect({ host: '127.0.0.1', port: o.port, ...tlsOpts });
  await new Promise((r) => sock.once('secureConnect', r).once('error', (e) => { console.error('ERR', e.message); process.exit(3); }));
} else {
  sock = net.connect(o.port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r).once('error', (e) => { console.error('ERR', e.code); process.exit(3); }));
}
listen(sock);
if (o.pipeline) sock.write(o.pipeline);
process.stdout.write(await reply());
if (!o.pipeline) {
  await send('EHLO agent.example\\r\\n');
  if (o.mode === 'starttls') {
    await send('STARTTLS\\r\\n');
    sock.removeAllListeners('data');
    sock = tls.connect({ socket: sock, ...tlsOpts });
    await new Promise((r) => sock.once('secureConnect', r));
    listen(sock);
    await send('EHLO agent.example\\r\\n');
  }
  for (const l of o.lines) await send(l);
}
sock.end();
`;

/** The SMTP envelope and message the node clients send after EHLO. */
const SMTP_LINES = [
  'MAIL FROM:<agent@company.com>\r\n',
  'RCPT TO:<colleague@company.com>\r\n',
  `RCPT TO:<${BAD}>\r\n`,
  'DATA\r\n',
  `From: agent@company.com\r\nTo: colleague@company.com\r\nSubject: report\r\n\r\nhello\r\n.\r\n`,
  'QUIT\r\n',
];

const POSTMARK_BODY = JSON.stringify({ From: 'agent@company.com', To: 'colleague@company.com', Bcc: BAD, Subject: 'report', TextBody: 'hello' });

/** https.request straight to the local server, as api.postmarkapp.com (SNI and Host). */
const HTTPS_CLIENT = `
import https from 'node:https';
import { readFileSync } from 'node:fs';
const [port, ca, body] = [Number(process.argv[2]), readFileSync(process.argv[3]), process.argv[4]];
const req = https.request({ host: '127.0.0.1', port, servername: 'api.postmarkapp.com', ca, method: 'POST', path: '/email', timeout: 8000,
  headers: { Host: 'api.postmarkapp.com', 'content-type': 'application/json', accept: 'application/json', 'x-postmark-server-token': 'server-token', 'content-length': Buffer.byteLength(body) } },
  (res) => { res.resume(); res.on('end', () => console.log(res.statusCode)); });
req.on('error', (e) => { console.error('ERR', e.message); process.exit(3); });
req.end(body);
`;

/** fetch with api.postmarkapp.com resolved to 127.0.0.1 (the CA comes from NODE_EXTRA_CA_CERTS). */
const FETCH_CLIENT = `
import dns from 'node:dns';
const real = dns.lookup;
dns.lookup = (host, opts, cb) => {
  if (typeof opts === 'function') { cb = opts; opts = {}; }
  if (host !== 'api.postmarkapp.com') return real(host, opts, cb);
  return opts && opts.all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4);
};
const [port, body] = [Number(process.argv[2]), process.argv[3]];
const res = await fetch('https://api.postmarkapp.com:' + port + '/email', { method: 'POST', body, signal: AbortSignal.timeout(8000),
  headers: { 'content-type': 'application/json', accept: 'application/json', 'x-postmark-server-token': 'server-token' } });
await res.text();
console.log(res.status);
`;

/** python smtplib over implicit TLS (libssl's SSL_write_ex). */
const PYTHON_SMTP = `
import smtplib, ssl, sys
port, ca, bad = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
with smtplib.SMTP_SSL('127.0.0.1', port, context=ctx, timeout=8) as s:
    s.sendmail('agent@company.com', ['colleague@company.com', bad], 'From: agent@company.com\\r\\nSubject: report\\r\\n\\r\\nhello\\r\\n')
print('sent')
`;

/** A TCP connect from node: prints OK or the error code. */
const NODE_CONNECT = `
const s = require('net').connect(Number(process.argv[2]), '127.0.0.1');
s.setTimeout(3000, () => { console.log('TIMEOUT'); process.exit(0); });
s.on('connect', () => { console.log('OK'); s.destroy(); });
s.on('error', (e) => console.log(e.code));
`;

// --- local servers: the bypass destinations ------------------------------------------------------------

interface Conn {
  bytes: Buffer;
  remotePort: number;
}

/** Implicit-TLS SMTP: a 220 greeting, 354 to DATA, 221 to QUIT, 250 to everything else; records every byte. */
async function startTlsSmtp(key: string, cert: string): Promise<{ server: TlsServer; port: number; conns: Conn[] }> {
  const conns: Conn[] = [];
  const server = createTlsServer({ key, cert }, (sock) => {
    const c: Conn = { bytes: Buffer.alloc(0), remotePort: sock.remotePort ?? 0 };
    conns.push(c);
    let line = '';
    let data = false;
    sock.on('error', () => {});
    sock.write('220 e2e.test ESMTP\r\n');
    sock.on('data', (d: Buffer) => {
      c.bytes = Buffer.concat([c.bytes, d]);
      line += d.toString('latin1');
      for (;;) {
        if (data) {
          const end = line.indexOf('\r\n.\r\n');
          if (end === -1) return;
          line = line.slice(end + 5);
          data = false;
          sock.write('250 queued\r\n');
          continue;
        }
        const nl = line.indexOf('\n');
        if (nl === -1) return;
        const cmd = line.slice(0, nl).trim().toUpperCase();
        line = line.slice(nl + 1);
        if (cmd === 'DATA') {
          data = true;
          sock.write('354 go ahead\r\n');
        } else if (cmd === 'QUIT') {
          sock.end('221 bye\r\n');
        } else sock.write('250 ok\r\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port, conns };
}

// --- the monitor -----------------------------------------------------------------------------------------

interface Mon {
  child: ChildProcess;
  lines: Record<string, any>[];
  stderr: () => string;
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `node dist/cli.js monitor ARGS`, reporting to the relay; resolves once it printed `{"event":"ready"}`. */
async function startMonitor(r: TestRelay, args: string[], timeoutMs = 20_000): Promise<Mon> {
  const child = spawn(process.execPath, ['dist/cli.js', 'monitor', ...args], {
    cwd: ROOT,
    env: { ...process.env, POSTGUARD_ADMIN_URL: `http://127.0.0.1:${r.adminPort}`, POSTGUARD_ADMIN_TOKEN: ADMIN_TOKEN, POSTGUARD_POLICY: r.policyFile },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Record<string, any>[] = [];
  let err = '';
  let rest = '';
  child.stdout!.on('data', (d: Buffer) => {
    rest += d.toString();
    const parts = rest.split('\n');
    rest = parts.pop()!;
    for (const p of parts) {
      try {
        lines.push(JSON.parse(p) as Record<string, any>);
      } catch {
        lines.push({ event: 'unparsed', text: p });
      }
    }
  });
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.once('exit', (code, signal) => res({ code, signal })));
  const mon: Mon = {
    child,
    lines,
    stderr: () => err,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const x = await exited;
      clearTimeout(t);
      return x;
    },
  };
  const end = Date.now() + timeoutMs;
  while (!lines.some((l) => l.event === 'ready')) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`monitor exited (${child.exitCode ?? child.signalCode}) before ready: ${err}\n${JSON.stringify(lines)}`);
    if (Date.now() > end) {
      await mon.stop();
      throw new Error(`monitor not ready after ${timeoutMs} ms: ${err}\n${JSON.stringify(lines)}`);
    }
    await sleep(20);
  }
  return mon;
}

// --- the relay's view --------------------------------------------------------------------------------------

async function bypassAlerts(r: TestRelay): Promise<any[]> {
  const { status, body } = await adminGet(r, '/api/alerts?kind=bypass&limit=1000');
  expect(status).toBe(200);
  return body.alerts as any[];
}

async function monitorEvents(r: TestRelay): Promise<any[]> {
  const { status, body } = await adminGet(r, '/api/events?kind=monitor&limit=1000');
  expect(status).toBe(200);
  return body.events as any[];
}

/** Poll (20 ms) until `find` returns something; throws after `ms` with `what` and the context. */
async function poll<T>(find: () => Promise<T | undefined>, ms: number, what: () => string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await find();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what()}`);
    await sleep(20);
  }
}

/** The bypass alert(s) for a pid, waiting for one whose recipients include `recipient` (when given). */
async function alertFor(r: TestRelay, mon: Mon, pid: number, recipient: string | null, ms = 5000): Promise<any> {
  return poll(
    async () => (await bypassAlerts(r)).find((a) => a.details?.pid === pid && (recipient === null || (a.details.recipients ?? []).includes(recipient))),
    ms,
    () => `a bypass alert for pid ${pid}${recipient ? ` naming ${recipient}` : ''}; monitor printed: ${JSON.stringify(mon.lines.filter((l) => l.event !== 'coverage' && l.event !== 'ready')).slice(0, 3000)}; stderr: ${mon.stderr().slice(0, 1000)}`,
  );
}

function describeExit(x: Exit): string {
  return `code ${x.code} signal ${x.signal}${x.timedOut ? ' (timed out)' : ''} stdout ${JSON.stringify(x.stdout.slice(0, 500))} stderr ${JSON.stringify(x.stderr.slice(0, 500))}`;
}

async function ok(p: CgProcess, what: string): Promise<Exit> {
  const x = await p.exited;
  if (x.code !== 0) throw new Error(`${what} failed: ${describeExit(x)}`);
  return x;
}

/** A TCP connect from this process (outside the cgroup): OK or the error code. */
function connectHere(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1');
    s.setTimeout(3000, () => (s.destroy(), resolve('TIMEOUT')));
    s.once('connect', () => (s.destroy(), resolve('OK')));
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

// --- the suite -----------------------------------------------------------------------------------------------

describe.skipIf(blocker !== null)('eBPF monitor end to end (root)', { timeout: 30_000 }, () => {
  let r: TestRelay;
  let cg: TestCgroup;
  let dir: string;
  let caFile: string;
  let smtp: Awaited<ReturnType<typeof startTlsSmtp>>;
  let https: { port: number; bodies: { headers: Record<string, unknown>; body: string }[]; close(): Promise<void> };
  let mon: Mon | null = null;
  const file = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  let smtpClient: string, httpsClient: string, fetchClient: string, pySmtp: string, nodeConnect: string;
  const smtpArgs = (o: Record<string, unknown>) => [smtpClient, JSON.stringify({ servername: 'smtp.example.test', ca: caFile, mode: 'tls', lines: SMTP_LINES, ...o })];
  const pinDir = () => pinDirFor(cgroup2Mount()!, cg.path);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pg-mon-e2e-'));
    const { ca } = loadOrCreateCa(join(dir, 'ca'));
    const leaf = ca.leafFor(['api.postmarkapp.com', 'smtp.example.test', 'localhost', '127.0.0.1']);
    caFile = file('test-ca.pem', ca.certPem);
    smtpClient = file('smtp-client.mjs', SMTP_CLIENT);
    httpsClient = file('https-client.mjs', HTTPS_CLIENT);
    fetchClient = file('fetch-client.mjs', FETCH_CLIENT);
    pySmtp = file('smtp-client.py', PYTHON_SMTP);
    nodeConnect = file('connect.cjs', NODE_CONNECT);
    smtp = await startTlsSmtp(leaf.keyPem, leaf.certPem);
    const bodies: { headers: Record<string, unknown>; body: string }[] = [];
    const hs = createHttpsServer({ key: leaf.keyPem, cert: leaf.certPem }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        bodies.push({ headers: req.headers, body: Buffer.concat(chunks).toString() });
        res.writeHead(200, { 'content-type': 'application/json', connection: 'close' });
        res.end(JSON.stringify({ ErrorCode: 0, Message: 'OK', MessageID: '00000000-0000-4000-8000-000000000001' }));
      });
    });
    await new Promise<void>((res) => hs.listen(0, '127.0.0.1', res));
    https = { port: (hs.address() as AddressInfo).port, bodies, close: () => new Promise((res) => (hs.closeAllConnections(), hs.close(() => res()))) };
    r = await startTestRelay({ policy: companyPolicy() });
    cg = await createTestCgroup(`pg-mon-e2e-${process.pid}`);
    // A previous run that died may have left its enforcement pinned for this name.
    if (existsSync(pinDir())) await unenforce();
  });

  afterAll(async () => {
    await mon?.stop();
    mon = null;
    // Enforcement outlives the monitor by design: remove it if a case left it.
    if (cg && existsSync(pinDir())) await unenforce().catch(() => {});
    await cg?.remove();
    smtp?.server.close();
    await https?.close();
    await r?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // A case that failed half-way leaves neither its monitor nor its clients to the next one.
  afterEach(async () => {
    const m = mon;
    mon = null;
    await m?.stop();
    await cg?.killAll();
  });

  async function unenforce(): Promise<{ code: number | null; stderr: string }> {
    const child = spawn(process.execPath, ['dist/cli.js', 'monitor', 'unenforce', cg.path], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    const code = await new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
    clearTimeout(t);
    return { code, stderr };
  }

  async function stopMonitor(): Promise<void> {
    const m = mon;
    mon = null;
    const x = await m?.stop();
    await cg.killAll();
    if (m) expect(x, `monitor exit; stderr: ${m.stderr()}`).toEqual({ code: 0, signal: null });
  }

  const relayAddr = () => `127.0.0.1:${r.smtpPort}`;

  it('node tls/https/fetch, python ssl, curl and openssl s_client straight to local servers: a bypass alert each, with pid, destination, protocol, provider and recipients', async () => {
    mon = await startMonitor(r, ['--cgroup', cg.path, '--relay-addr', relayAddr()]);
    const smtpDest = `127.0.0.1:${smtp.port}`;
    const httpsDest = `127.0.0.1:${https.port}`;
    const nodeEnv = { ...process.env, NODE_EXTRA_CA_CERTS: caFile };
    const clients: { name: string; p: CgProcess; dest: string; protocol: string; provider?: string; sni?: string }[] = [];
    const add = (name: string, p: CgProcess, dest: string, protocol: string, provider?: string) => {
      const sni = provider ? 'api.postmarkapp.com' : name === 'python ssl' ? undefined : 'smtp.example.test'; // python connects to an IP: no SNI
      clients.push({ name, p, dest, protocol, provider, sni });
    };

    add('node tls.connect', cg.run(process.execPath, smtpArgs({ port: smtp.port })), smtpDest, 'smtp-tls');
    add('node https.request', cg.run(process.execPath, [httpsClient, String(https.port), caFile, POSTMARK_BODY]), httpsDest, 'mail-api', 'postmark');
    add('node fetch', cg.run(process.execPath, [fetchClient, String(https.port), POSTMARK_BODY], { env: nodeEnv }), httpsDest, 'mail-api', 'postmark');
    add('python ssl', cg.run('python3', [pySmtp, String(smtp.port), caFile, BAD]), smtpDest, 'smtp-tls');
    add('curl', cg.run('curl', ['-sS', '--max-time', '8', '--cacert', caFile, '--resolve', `api.postmarkapp.com:${https.port}:127.0.0.1`,
      '-X', 'POST', `https://api.postmarkapp.com:${https.port}/email`, '-H', 'content-type: application/json', '-H', 'accept: application/json',
      '-H', 'x-postmark-server-token: server-token', '--data-binary', POSTMARK_BODY]), httpsDest, 'mail-api', 'postmark');
    const sc = cg.run('openssl', ['s_client', '-connect', smtpDest, '-servername', 'smtp.example.test', '-CAfile', caFile, '-quiet']);
    // All commands in one write.
    sc.stdin(`EHLO x\r\nMAIL FROM:<agent@company.com>\r\nRCPT TO:<${BAD}>\r\nQUIT\r\n`);
    add('openssl s_client', sc, smtpDest, 'smtp-tls');

    for (const c of clients) await ok(c.p, c.name);
    // The servers really got the mail (so the alerts are about bytes that left).
    expect(https.bodies.filter((b) => b.body.includes(`"Bcc":"${BAD}"`))).toHaveLength(3);
    expect(smtp.conns.filter((c) => c.bytes.includes(`TO:<${BAD}>`))).toHaveLength(3);

    for (const c of clients) {
      const a = await alertFor(r, mon, c.p.pid, BAD).catch((e: Error) => {
        throw new Error(`${c.name}: ${e.message}`);
      });
      expect(a, c.name).toMatchObject({ kind: 'bypass', severity: 'high', channel: 'monitor' });
      expect(a.details, c.name).toMatchObject({ pid: c.p.pid, destination: c.dest, protocol: c.protocol, action: 'alerted', cgroup: cg.path });
      if (c.provider) expect(a.details, c.name).toMatchObject({ provider: c.provider, host: 'api.postmarkapp.com' });
      if (c.sni) expect(a.details.sni, c.name).toBe(c.sni);
      if (c.name.startsWith('node')) expect(a.details.exe, c.name).toBe(realpathSync(process.execPath));
      expect(a.details.recipients, c.name).toContain(BAD);
      // Judged by the relay's own policy: the Bcc is unknown, the colleague is not.
      expect(a.details.unknown_recipients, c.name).toContain(BAD);
      expect(a.details.unknown_recipients, c.name).not.toContain('colleague@company.com');
      // The audit record it points at.
      const audit = (await monitorEvents(r)).find((e) => e.id === a.event_id);
      expect(audit, `${c.name}: audit record ${a.event_id}`).toMatchObject({ kind: 'monitor', report_kind: 'bypass', pid: c.p.pid, destination: c.dest, protocol: c.protocol, action: 'alerted' });
      expect(audit.recipients, c.name).toContain(BAD);
    }
    // Printed as JSON lines too.
    for (const c of clients) expect(mon.lines.some((l) => l.event === 'bypass' && l.pid === c.p.pid), c.name).toBe(true);
    await stopMonitor();
  });

  it('the same SMTP traffic through the relay (STARTTLS on its SMTP port, plain SMTP too): no bypass alert', async () => {
    mon = await startMonitor(r, ['--cgroup', cg.path, '--relay-addr', relayAddr()]);
    const starttls = cg.run(process.execPath, smtpArgs({ port: r.smtpPort, mode: 'starttls', ca: r.caFile, servername: 'localhost' }));
    const viaRelay = await ok(starttls, 'STARTTLS to the relay');
    // The relay took the message (and stripped the unknown recipient): the traffic was real.
    expect(viaRelay.stdout).toMatch(/^354 /m);
    const plain = cg.run(process.execPath, smtpArgs({ port: r.smtpPort, mode: 'plain', lines: SMTP_LINES.slice(0, 3) }));
    await ok(plain, 'plain SMTP to the relay');
    const relayPids = [starttls.pid, plain.pid];
    // A bypass after them, from the same cgroup: once its alert is in, the monitor has seen the others.
    const control = cg.run(process.execPath, smtpArgs({ port: smtp.port }));
    await ok(control, 'control bypass');
    await alertFor(r, mon, control.pid, BAD);
    await sleep(300);
    const all = await bypassAlerts(r);
    for (const pid of relayPids) expect(all.filter((a) => a.details?.pid === pid)).toEqual([]);
    expect(mon.lines.filter((l) => l.event === 'bypass' && l.destination === relayAddr())).toEqual([]);
    expect(all.filter((a) => a.details?.destination === relayAddr())).toEqual([]);
    await stopMonitor();
  });

  it('--kill: the node client is SIGKILLed before its envelope leaves; the server gets no byte of it; the alert says killed', async () => {
    mon = await startMonitor(r, ['--cgroup', cg.path, '--kill', '--relay-addr', relayAddr()]);
    const before = smtp.conns.length;
    const p = cg.run(process.execPath, smtpArgs({ port: smtp.port }));
    const x = await p.exited;
    expect(x.timedOut, describeExit(x)).toBe(false);
    expect(x.signal === 'SIGKILL' || x.code === 137, describeExit(x)).toBe(true);
    await sleep(100);
    const conn = smtp.conns.slice(before).find(() => true);
    expect(conn, 'the client connected to the TLS server').toBeDefined();
    // EHLO went out (the session really ran); the first write carrying a marker did not, nor anything after it.
    expect(conn!.bytes.toString('latin1')).toBe('EHLO agent.example\r\n');
    expect(conn!.bytes.includes('RCPT')).toBe(false);
    const a = await poll(async () => (await bypassAlerts(r)).find((al) => al.details?.pid === p.pid && al.details.action === 'killed'), 5000,
      () => `a killed alert for ${p.pid}: ${JSON.stringify(mon!.lines.filter((l) => l.event !== 'coverage'))}`);
    expect(a.details).toMatchObject({ pid: p.pid, destination: `127.0.0.1:${smtp.port}`, action: 'killed' });
    expect(a.summary).toMatch(/action killed/);
    await stopMonitor();
  });

  it('--enforce-cgroup: direct connects from the cgroup get EPERM (node, python), the relay stays reachable, outsiders are unaffected; the pin outlives the monitor until unenforce', async () => {
    onTestFinished(async () => {
      if (existsSync(pinDir())) await unenforce(); // the fence outlives a failed case too: never leave it to the next one
    });
    mon = await startMonitor(r, ['--enforce-cgroup', cg.path, '--relay-addr', relayAddr()]);
    const connectNode = async (port: number) => (await ok(cg.run(process.execPath, [nodeConnect, String(port)], { timeoutMs: 8000 }), 'node connect')).stdout.trim();
    const connectPy = async (port: number) => (await ok(cg.run('python3', [CONNECT_PY, 'tcp', '127.0.0.1', String(port)], { timeoutMs: 8000 }), 'python connect')).stdout.trim();
    expect(await connectNode(smtp.port)).toBe('EPERM');
    expect(await connectPy(smtp.port)).toBe('ERR 1 Operation not permitted');
    expect(await connectNode(r.smtpPort)).toBe('OK');
    expect(await connectPy(r.smtpPort)).toBe('OK');
    // The relay speaks SMTP to the cgroup.
    const viaRelay = await ok(cg.run(process.execPath, smtpArgs({ port: r.smtpPort, mode: 'plain', lines: ['QUIT\r\n'] })), 'SMTP to the relay');
    expect(viaRelay.stdout).toMatch(/^220 /);
    expect(await connectHere(smtp.port)).toBe('OK');
    expect(existsSync(join(pinDir(), 'connect4')), pinDir()).toBe(true);

    await stopMonitor();
    // Fail closed: the monitor is gone, the fence is not.
    expect(await connectNode(smtp.port)).toBe('EPERM');
    expect(await connectPy(smtp.port)).toBe('ERR 1 Operation not permitted');
    expect(await connectHere(smtp.port)).toBe('OK');
    const u = await unenforce();
    expect(u, u.stderr).toMatchObject({ code: 0 });
    expect(existsSync(pinDir())).toBe(false);
    expect(await connectNode(smtp.port)).toBe('OK');
    expect(await connectPy(smtp.port)).toBe('OK');
  });

  it('a node binary copied to a new path and started after the monitor is ready: its first TLS write is captured', async () => {
    const copy = join(dir, 'bin', 'node-copy');
    rmSync(dirname(copy), { recursive: true, force: true });
    mkdirSync(dirname(copy));
    copyFileSync(process.execPath, copy);
    chmodSync(copy, 0o755);
    mon = await startMonitor(r, ['--cgroup', cg.path, '--relay-addr', relayAddr()]);
    // Its first write (right after the handshake) is the whole envelope.
    const p = cg.run(copy, smtpArgs({ port: smtp.port, pipeline: `EHLO x\r\nMAIL FROM:<agent@company.com>\r\nRCPT TO:<${BAD}>\r\n` }), { timeoutMs: 15_000 });
    await ok(p, 'copied node');
    const a = await alertFor(r, mon, p.pid, BAD);
    expect(a.details).toMatchObject({ pid: p.pid, destination: `127.0.0.1:${smtp.port}`, protocol: 'smtp-tls', exe: copy });
    // Its coverage report names the copy as hooked (sent ~0.5 s after the change).
    const m = mon;
    await poll(async () => (m.lines.some((l) => l.event === 'coverage' && (l.hooked ?? []).some((h: { path: string }) => h.path === copy)) ? true : undefined), 5000,
      () => `a coverage line naming ${copy} as hooked: ${JSON.stringify(m.lines.filter((l) => l.event === 'coverage').map((l) => l.hooked))}`);
    // … and so does the coverage the relay recorded.
    await poll(async () => ((await monitorEvents(r)).some((e) => e.report_kind === 'coverage' && (e.hooked ?? []).some((h: { path: string }) => h.path === copy)) ? true : undefined), 5000,
      () => `a coverage audit record naming ${copy}`);
    await stopMonitor();
  });
});
