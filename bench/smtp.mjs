// SMTP benchmark: N messages of ~2 KB over C concurrent connections, through the relay (sync mode,
// a separate process) and directly to the same upstream sink, in the same run.
// Reports msgs/s, the ratio, p50/p99 latency per message and the latency the relay adds, the
// relay's peak RSS, and the greeting delay (stock smtp-server vs the relay).

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { loadOrCreateCa } from '../dist/tls/ca.js';

const N = Number(process.env.BENCH_MESSAGES ?? 2000);
const C = Number(process.env.BENCH_CONCURRENCY ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BODY = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit. '.repeat(32).match(/.{1,76}/g).join('\r\n');

export async function run() {
  const dir = mkdtempSync(join(tmpdir(), 'pg-bench-'));
  const sink = await startSink(dir);
  const relay = await startRelayProcess(dir, sink);
  try {
    // Warm both paths (TLS session setup, JIT) before measuring, then alternate rounds so that
    // machine noise hits both paths alike; report the median round of each.
    await blast(sink.port, sink.caPem, 200);
    await blast(relay.port, relay.caPem, 200);
    sink.count = 0;
    const directRounds = [];
    const relayRounds = [];
    for (let i = 0; i < ROUNDS; i++) {
      directRounds.push(await blast(sink.port, sink.caPem, N));
      relayRounds.push(await blast(relay.port, relay.caPem, N));
    }
    const direct = median(directRounds);
    const through = median(relayRounds);
    const rss = peakRss(relay.child.pid);
    const greetStock = await greetingMs(sink.port);
    const greetRelay = await greetingMs(relay.port);
    const report = {
      benchmark: 'smtp',
      messages_per_round: N,
      rounds: ROUNDS,
      concurrency: C,
      message_bytes: 2048,
      relay_node_flags: relay.flags.join(' ') || '(none)',
      direct: { msgs_per_s: round(direct.rate), p50_ms: round(direct.p50), p99_ms: round(direct.p99), rounds_msgs_per_s: directRounds.map((r) => round(r.rate)) },
      relay: { msgs_per_s: round(through.rate), p50_ms: round(through.p50), p99_ms: round(through.p99), peak_rss_mb: round(rss / 1024), rounds_msgs_per_s: relayRounds.map((r) => round(r.rate)) },
      ratio_relay_to_direct: round(through.rate / direct.rate),
      added_latency_ms: { p50: round(through.p50 - direct.p50), p99: round(through.p99 - direct.p99) },
      greeting_ms: { stock_smtp_server: round(greetStock), relay: round(greetRelay) },
      sink_received: sink.count,
      targets: { ratio: '>= 0.5', added_p99_ms: '<= 10', peak_rss_mb: '<= 200' },
    };
    console.log(JSON.stringify(report, null, 2));
    if (sink.count !== 2 * N * ROUNDS) throw new Error(`sink received ${sink.count}, expected ${2 * N * ROUNDS}`);
  } finally {
    relay.child.kill('SIGTERM');
    await new Promise((r) => relay.child.once('exit', r));
    await new Promise((r) => sink.server.close(r));
  }
}

async function blast(port, caPem, n) {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port, pool: true, maxConnections: C, maxMessages: Infinity, requireTLS: true, tls: { ca: caPem } });
  const latencies = [];
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const s = performance.now();
      await t.sendMail({ from: 'agent@company.com', to: 'colleague@company.com', bcc: 'phan@giftshop.club', subject: `bench ${i}`, text: BODY });
      latencies.push(performance.now() - s);
    }
  };
  await Promise.all(Array.from({ length: C }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  t.close();
  latencies.sort((a, b) => a - b);
  return { rate: n / elapsed, p50: latencies[Math.floor(n * 0.5)], p99: latencies[Math.floor(n * 0.99)] };
}

async function startSink(dir) {
  const { ca } = loadOrCreateCa(join(dir, 'sink-ca'));
  const leaf = ca.leafFor(['127.0.0.1', 'localhost']);
  writeFileSync(join(dir, 'sink-ca.pem'), ca.certPem);
  const sink = { count: 0, caPem: ca.certPem, caFile: join(dir, 'sink-ca.pem') };
  sink.server = new SMTPServer({
    key: leaf.keyPem, cert: leaf.certPem, authOptional: true, disableReverseLookup: true, logger: false,
    onData(stream, _s, cb) {
      stream.on('data', () => {});
      stream.on('end', () => {
        sink.count++;
        cb(null, 'ok');
      });
    },
  });
  await new Promise((r) => sink.server.listen(0, '127.0.0.1', r));
  sink.port = sink.server.server.address().port;
  return sink;
}

async function startRelayProcess(dir, sink) {
  writeFileSync(join(dir, 'policy.yaml'), 'version: 1\nrecipients: [company.com]\nunknown_recipients: strip\nsecrets:\n  - detectors: all\n    action: block\n');
  const port = await freePort();
  const nodeArgs = [...startFlags(), ...(process.env.BENCH_RELAY_NODE_ARGS ?? '').split(' ').filter(Boolean)];
  const child = spawn(process.execPath, [...nodeArgs, 'dist/cli.js', 'relay'], {
    env: {
      ...process.env, POSTGUARD_POLICY: join(dir, 'policy.yaml'), POSTGUARD_DATA_DIR: join(dir, 'data'), POSTGUARD_CERTS_DIR: join(dir, 'certs'),
      POSTGUARD_SMTP_LISTEN: `127.0.0.1:${port}`, POSTGUARD_SMTPS_LISTEN: 'off', POSTGUARD_ADMIN_LISTEN: 'off',
      POSTGUARD_UPSTREAM_SMTP: `smtp://127.0.0.1:${sink.port}`, POSTGUARD_UPSTREAM_CA: sink.caFile,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('"relay_started"')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`relay exited ${code}: ${out}`)));
  });
  child.stdout.resume();
  return { child, port, flags: nodeArgs, caPem: readFileSync(join(dir, 'certs', 'ca.pem'), 'utf8') };
}

function greetingMs(port) {
  const once = () => new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = connect(port, '127.0.0.1');
    s.once('data', () => {
      resolve(performance.now() - t0);
      s.destroy();
    });
    s.once('error', reject);
  });
  return (async () => {
    const xs = [];
    for (let i = 0; i < 10; i++) xs.push(await once());
    return xs.sort((a, b) => a - b)[5];
  })();
}

function peakRss(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const round = (x) => Math.round(x * 100) / 100;
const median = (rounds) => [...rounds].sort((a, b) => a.rate - b.rate)[Math.floor(rounds.length / 2)];

/** The node flags `npm start` gives the relay, so the bench measures what users run. */
function startFlags() {
  const start = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).scripts.start.split(/\s+/);
  return start.slice(start.indexOf('node') + 1, start.indexOf('dist/cli.js'));
}
