// Queue-mode benchmark: N messages of ~2 KB over C concurrent connections, in the same run,
// (a) directly to the upstream sink, (b) through a relay process in sync mode, (c) through a relay
// process in queue mode (POSTGUARD_DELIVERY=queue). Reports acceptance msgs/s, p50/p99 accept
// latency, and when the last message reached the sink (for queue mode: also how long after the
// last 250 that was), with the ratios queue/direct and sync/direct. Rounds alternate the three
// paths so machine noise hits them alike; the median round (by acceptance rate) of each is reported.

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { loadOrCreateCa } from '../dist/tls/ca.js';

const N = Number(process.env.BENCH_MESSAGES ?? 2000);
const C = Number(process.env.BENCH_CONCURRENCY ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const DRAIN_TIMEOUT_MS = 120_000;
const BODY = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit. '.repeat(32).match(/.{1,76}/g).join('\r\n');

export async function run() {
  const dir = mkdtempSync(join(tmpdir(), 'pg-bench-queue-'));
  const sink = await startSink(dir);
  const sync = await startRelayProcess(dir, sink, 'sync');
  const queue = await startRelayProcess(dir, sink, 'queue');
  const paths = { direct: { port: sink.port, caPem: sink.caPem }, sync, queue };
  try {
    // Warm every path (TLS session setup, JIT) before measuring.
    for (const p of Object.values(paths)) await measure(sink, p, 200);
    const rounds = { direct: [], sync: [], queue: [] };
    for (let i = 0; i < ROUNDS; i++) for (const name of Object.keys(paths)) rounds[name].push(await measure(sink, paths[name], N));
    const med = Object.fromEntries(Object.entries(rounds).map(([k, v]) => [k, median(v)]));
    const summary = (m, rs) => ({
      accept_msgs_per_s: round(m.rate),
      accept_p50_ms: round(m.p50),
      accept_p99_ms: round(m.p99),
      accept_total_ms: round(m.acceptMs),
      last_delivered_ms: round(m.deliveredMs),
      delivered_after_accept_ms: round(Math.max(0, m.deliveredMs - m.acceptMs)),
      delivered_msgs_per_s: round(N / (m.deliveredMs / 1000)),
      rounds_accept_msgs_per_s: rs.map((r) => round(r.rate)),
    });
    const report = {
      benchmark: 'queue',
      messages_per_round: N,
      rounds: ROUNDS,
      concurrency: C,
      message_bytes: 2048,
      relay_node_flags: sync.flags.join(' ') || '(none)',
      queue_concurrency: Number(process.env.POSTGUARD_QUEUE_CONCURRENCY ?? 8),
      direct: summary(med.direct, rounds.direct),
      sync: { ...summary(med.sync, rounds.sync), peak_rss_mb: round(peakRss(sync.child.pid) / 1024) },
      queue: { ...summary(med.queue, rounds.queue), peak_rss_mb: round(peakRss(queue.child.pid) / 1024) },
      ratio_queue_to_direct: round(med.queue.rate / med.direct.rate),
      ratio_sync_to_direct: round(med.sync.rate / med.direct.rate),
      sink_received: sink.total,
      targets: { ratio_queue_to_direct: '>= 0.7' },
    };
    console.log(JSON.stringify(report, null, 2));
    const expected = (3 * ROUNDS * N) + 3 * 200;
    if (sink.total !== expected) throw new Error(`sink received ${sink.total}, expected ${expected}`);
  } finally {
    for (const r of [sync, queue]) {
      r.child.kill('SIGTERM');
      await new Promise((res) => (r.child.exitCode !== null ? res() : r.child.once('exit', res)));
    }
    await new Promise((r) => sink.server.close(r));
  }
}

/** Send n messages along one path, then wait until the sink has all of them. */
async function measure(sink, path, n) {
  sink.count = 0;
  const t0 = performance.now();
  const accepted = await blast(path.port, path.caPem, n);
  const acceptMs = performance.now() - t0;
  const deadline = Date.now() + DRAIN_TIMEOUT_MS;
  while (sink.count < n) {
    if (Date.now() > deadline) throw new Error(`sink has ${sink.count} of ${n} messages after ${DRAIN_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return { ...accepted, acceptMs, deliveredMs: sink.lastAt - t0 };
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

async function startSink(dir) {
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
  return sink;
}

async function startRelayProcess(dir, sink, delivery) {
  const home = join(dir, delivery);
  mkdirSync(home);
  writeFileSync(join(home, 'policy.yaml'), 'version: 1\nrecipients: [company.com]\nunknown_recipients: strip\nsecrets:\n  - detectors: all\n    action: block\n');
  const port = await freePort();
  const nodeArgs = [...startFlags(), ...(process.env.BENCH_RELAY_NODE_ARGS ?? '').split(' ').filter(Boolean)];
  const child = spawn(process.execPath, [...nodeArgs, 'dist/cli.js', 'relay'], {
    env: {
      ...process.env, POSTGUARD_POLICY: join(home, 'policy.yaml'), POSTGUARD_DATA_DIR: join(home, 'data'), POSTGUARD_CERTS_DIR: join(home, 'certs'),
      POSTGUARD_SMTP_LISTEN: `127.0.0.1:${port}`, POSTGUARD_SMTPS_LISTEN: 'off', POSTGUARD_ADMIN_LISTEN: 'off',
      POSTGUARD_UPSTREAM_SMTP: `smtp://127.0.0.1:${sink.port}`, POSTGUARD_UPSTREAM_CA: sink.caFile,
      POSTGUARD_DELIVERY: delivery,
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
    const onExit = (code) => reject(new Error(`${delivery} relay exited ${code}: ${out}`));
    child.stdout.on('data', onData);
    child.once('exit', onExit);
  });
  child.stdout.resume(); // keep draining the log so a full pipe never blocks the relay
  return { child, port, flags: nodeArgs, caPem: readFileSync(join(home, 'certs', 'ca.pem'), 'utf8') };
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
