// Shared pieces of the benchmarks: the upstream sink, relay processes started the way `npm start`
// starts them, the load generator, and small statistics.

import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { loadOrCreateCa } from '../dist/tls/ca.js';

export const N = Number(process.env.BENCH_MESSAGES ?? 2000);
export const C = Number(process.env.BENCH_CONCURRENCY ?? 8);
export const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/** ~2 KB of text in 76-character lines: 7bit, as most agent mail is. */
export const BODY = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit. '.repeat(32).match(/.{1,76}/g).join('\r\n');

const POLICY = 'version: 1\nrecipients: [company.com]\nunknown_recipients: strip\nsecrets:\n  - detectors: all\n    action: block\n';

/** N messages over C pooled connections, each with the postmark-mcp BCC; acceptance rate and latency. */
export async function blast(port, caPem, n) {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port, pool: true, maxConnections: C, maxMessages: Infinity, requireTLS: true, tls: { ca: caPem } });
  const latencies = [];
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const s = performance.now();
      const info = await t.sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: 'phan@giftshop.club', subject: `bench ${i}`, text: BODY });
      if (!/^250 /.test(info.response)) throw new Error(`not accepted: ${info.response}`);
      latencies.push(performance.now() - s);
    }
  };
  await Promise.all(Array.from({ length: C }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  t.close();
  latencies.sort((a, b) => a - b);
  return { rate: n / elapsed, p50: latencies[Math.floor(n * 0.5)], p99: latencies[Math.floor(n * 0.99)] };
}

/** A STARTTLS SMTP sink with its own CA, counting what it receives. */
export async function startSink(dir) {
  const { ca } = loadOrCreateCa(join(dir, 'sink-ca'));
  const leaf = ca.leafFor(['127.0.0.1', 'localhost']);
  writeFileSync(join(dir, 'sink-ca.pem'), ca.certPem);
  const sink = { count: 0, total: 0, lastAt: 0, caPem: ca.certPem, caFile: join(dir, 'sink-ca.pem') };
  sink.server = new SMTPServer({
    key: leaf.keyPem, cert: leaf.certPem, authOptional: true, disableReverseLookup: true, logger: false,
    onData(stream, _s, cb) {
      stream.on('data', () => {});
      stream.on('end', () => {
        sink.count++;
        sink.total++;
        sink.lastAt = performance.now();
        cb(null, 'ok');
      });
    },
  });
  await new Promise((r) => sink.server.listen(0, '127.0.0.1', r));
  sink.port = sink.server.server.address().port;
  sink.close = () => new Promise((r) => sink.server.close(r));
  return sink;
}

/** `node <start flags> dist/cli.js relay` in its own process, delivering to the sink. */
export async function startRelayProcess(dir, name, sink, env = {}) {
  const home = join(dir, name);
  mkdirSync(home);
  writeFileSync(join(home, 'policy.yaml'), POLICY);
  const port = await freePort();
  const flags = [...startFlags(), ...(process.env.BENCH_RELAY_NODE_ARGS ?? '').split(' ').filter(Boolean)];
  const child = spawn(process.execPath, [...flags, 'dist/cli.js', 'relay'], {
    env: {
      ...process.env, POSTGUARD_POLICY: join(home, 'policy.yaml'), POSTGUARD_DATA_DIR: join(home, 'data'), POSTGUARD_CERTS_DIR: join(home, 'certs'),
      POSTGUARD_SMTP_LISTEN: `127.0.0.1:${port}`, POSTGUARD_SMTPS_LISTEN: 'off', POSTGUARD_ADMIN_LISTEN: 'off', POSTGUARD_PROXY_LISTEN: 'off',
      POSTGUARD_ADMIN_TOKEN: 'bench-admin-token', // or the relay creates one and prints it
      POSTGUARD_UPSTREAM_SMTP: `smtp://127.0.0.1:${sink.port}`, POSTGUARD_UPSTREAM_CA: sink.caFile, ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  await new Promise((resolve, reject) => {
    const onData = (d) => {
      out += d;
      if (out.includes('"relay_started"')) {
        child.stdout.off('data', onData);
        child.off('exit', onExit);
        resolve();
      }
    };
    const onExit = (code) => reject(new Error(`${name} relay exited ${code}: ${out}`));
    child.stdout.on('data', onData);
    child.once('exit', onExit);
  });
  child.stdout.resume(); // keep draining the log so a full pipe never blocks the relay
  return {
    child, port, flags, caPem: readFileSync(join(home, 'certs', 'ca.pem'), 'utf8'),
    peakRssMb: () => round(peakRss(child.pid) / 1024),
    stop: () => new Promise((res) => (child.exitCode !== null ? res() : (child.once('exit', res), child.kill('SIGTERM')))),
  };
}

/** Median time from connect to the 220 greeting, over 10 connections. */
export async function greetingMs(port) {
  const once = () => new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = connect(port, '127.0.0.1');
    s.once('data', () => {
      resolve(performance.now() - t0);
      s.destroy();
    });
    s.once('error', reject);
  });
  const xs = [];
  for (let i = 0; i < 10; i++) xs.push(await once());
  return xs.sort((a, b) => a - b)[5];
}

function peakRss(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

export function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const round = (x) => Math.round(x * 100) / 100;
/** The median round by rate: noise on this shared 2-core machine is large, so rounds alternate paths. */
export const median = (rounds) => [...rounds].sort((a, b) => a.rate - b.rate)[Math.floor(rounds.length / 2)];

/** The node flags `npm start` gives the relay, so the bench measures what users run. */
function startFlags() {
  const start = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).scripts.start.split(/\s+/);
  return start.slice(start.indexOf('node') + 1, start.indexOf('dist/cli.js'));
}
