// eBPF monitor benchmark (root): what `postguard monitor` costs the agents it watches, and how fast
// a bypass becomes an alert at the relay.
//   overhead  BENCH_WRITES (20,000) awaited 64-byte TLS writes — each waits for the server's echo
//             before the next — from node (its embedded OpenSSL) and from python (the system libssl),
//             started inside a cgroup the bench creates; monitor off, then on (watching that cgroup),
//             rounds alternating the order; the median round of each, µs per write and the ratio.
//             With the monitor on, node once more from outside the watched cgroup: what a process
//             that is not watched pays for the probes on its binary.
//   alert     ~50 bypass writes (`RCPT TO:<phan+N@giftshop.club>`, 40 ms apart) from a node client
//             in the cgroup; the client notes the wall-clock time just before each write; the relay's
//             alert carries the time it was raised: the difference, p50/p99.
// The relay runs in its own process (as `npm start` runs it) with its admin API; the monitor is the
// real CLI (`node dist/cli.js monitor --cgroup …`). Needs root (uprobes): otherwise it says so and
// exits 0. Loopback only; every client has a timeout; only processes in the bench cgroup are killed.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { loadOrCreateCa } from '../dist/tls/ca.js';
import { freePort, round, ROUNDS, startRelayProcess, startSink } from './lib.mjs';

const WRITES = Number(process.env.BENCH_WRITES ?? 20_000);
const WARMUP = 2000;
const BYPASSES = Number(process.env.BENCH_BYPASSES ?? 50);
const TOKEN = 'bench-admin-token'; // what startRelayProcess gives the relay
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const EGRESSD = process.env.POSTGUARD_EGRESSD || fileURLToPath(new URL('../bpf/egressd', import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- clients ----------------------------------------------------------------------------------------

/** node: argv PORT N WARMUP CA; prints {"us_per_write": …}. */
const NODE_CLIENT = `
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
const [port, n, warm] = process.argv.slice(2, 5).map(Number);
const s = tls.connect({ host: '127.0.0.1', port, servername: 'bench.test', ca: readFileSync(process.argv[5]), checkServerIdentity: () => undefined });
s.setNoDelay(true);
await new Promise((r, j) => s.once('secureConnect', r).once('error', j));
const buf = Buffer.alloc(64, 'x');
let got = 0, wake = null;
s.on('data', (d) => { got += d.length; if (got >= 64 && wake) { got -= 64; const w = wake; wake = null; w(); } });
const one = () => new Promise((r) => { wake = r; s.write(buf); });
for (let i = 0; i < warm; i++) await one();
const t0 = process.hrtime.bigint();
for (let i = 0; i < n; i++) await one();
const ns = Number(process.hrtime.bigint() - t0);
s.end();
console.log(JSON.stringify({ us_per_write: ns / n / 1000 }));
`;

/** python: the same with ssl (SSL_write_ex in libssl). */
const PYTHON_CLIENT = `
import json, socket, ssl, sys, time
port, n, warm, ca = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
raw = socket.create_connection(('127.0.0.1', port), timeout=10)
raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s = ctx.wrap_socket(raw, server_hostname='bench.test')
buf = b'x' * 64
def one():
    s.sendall(buf)
    got = 0
    while got < 64:
        got += len(s.recv(4096))
for _ in range(warm): one()
t0 = time.perf_counter_ns()
for _ in range(n): one()
ns = time.perf_counter_ns() - t0
s.close()
print(json.dumps({'us_per_write': ns / n / 1000}))
`;

/** node: argv PORT K CA; K bypass writes 40 ms apart, each timed (wall clock, ms) just before the write. */
const BYPASS_CLIENT = `
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
const [port, k] = process.argv.slice(2, 4).map(Number);
const s = tls.connect({ host: '127.0.0.1', port, servername: 'bench.test', ca: readFileSync(process.argv[4]), checkServerIdentity: () => undefined });
s.setNoDelay(true);
await new Promise((r, j) => s.once('secureConnect', r).once('error', j));
let wake = null;
s.on('data', () => { if (wake) { const w = wake; wake = null; w(); } });
const sent = [];
for (let i = 0; i < k; i++) {
  const rcpt = 'phan+' + i + '@giftshop.club';
  const line = 'MAIL FROM:<agent@company.com>\\r\\nRCPT TO:<' + rcpt + '>\\r\\n';
  const done = new Promise((r) => (wake = r));
  sent.push({ rcpt, t: performance.timeOrigin + performance.now() });
  s.write(line);
  await done;
  await new Promise((r) => setTimeout(r, 40));
}
s.end();
console.log(JSON.stringify(sent));
`;

// ---- the run ----------------------------------------------------------------------------------------

export async function run() {
  const why = cannotRun();
  if (why) {
    console.log(`monitor: skipped — ${why}`);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'pg-bench-monitor-'));
  const mount = cgroup2Mount();
  const cg = join(mount, `pg-bench-monitor-${process.pid}`);
  const { ca } = loadOrCreateCa(join(dir, 'ca'));
  const leaf = ca.leafFor(['bench.test', '127.0.0.1']);
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.certPem);
  const files = { node: join(dir, 'client.mjs'), python: join(dir, 'client.py'), bypass: join(dir, 'bypass.mjs') };
  writeFileSync(files.node, NODE_CLIENT);
  writeFileSync(files.python, PYTHON_CLIENT);
  writeFileSync(files.bypass, BYPASS_CLIENT);

  // The echo server: every byte back at once.
  const echo = createServer({ key: leaf.keyPem, cert: leaf.certPem }, (s) => {
    s.setNoDelay(true);
    s.on('data', (d) => s.write(d));
    s.on('error', () => {});
  });
  await new Promise((r) => echo.listen(0, '127.0.0.1', r));
  const port = echo.address().port;

  const sink = await startSink(dir);
  const adminPort = await freePort();
  const relay = await startRelayProcess(dir, 'relay', sink, { POSTGUARD_ADMIN_LISTEN: `127.0.0.1:${adminPort}` });
  const admin = `http://127.0.0.1:${adminPort}`;
  let mon = null;
  if (existsSync(cg)) await removeCgroup(cg);
  mkdirSync(cg);
  try {
    const clients = {
      node: (inCg = true) => runClient(inCg ? cg : null, process.execPath, [files.node, port, WRITES, WARMUP, caFile]),
      python: () => runClient(cg, 'python3', [files.python, port, WRITES, WARMUP, caFile]),
    };
    const rounds = { off: { node: [], python: [] }, on: { node: [], python: [], node_unwatched: [] } };
    const monitorArgs = ['--cgroup', cg, '--relay-addr', `127.0.0.1:${relay.port}`];
    const measure = async (mode) => {
      if (mode === 'on') mon = await startMonitor(monitorArgs, admin);
      rounds[mode].node.push((await clients.node()).us_per_write);
      rounds[mode].python.push((await clients.python()).us_per_write);
      if (mode === 'on') {
        rounds.on.node_unwatched.push((await clients.node(false)).us_per_write);
        await stopMonitor(mon);
        mon = null;
      }
    };
    for (let i = 0; i < ROUNDS; i++) for (const mode of i % 2 === 0 ? ['off', 'on'] : ['on', 'off']) await measure(mode);

    // Alert latency.
    mon = await startMonitor(monitorArgs, admin);
    const sent = await runClient(cg, process.execPath, [files.bypass, port, BYPASSES, caFile], 30_000);
    const want = new Map(sent.map((s) => [s.rcpt, s.t]));
    const latencies = new Map();
    for (const end = Date.now() + 10_000; latencies.size < want.size && Date.now() < end; await sleep(50)) {
      const res = await fetch(`${admin}/api/alerts?kind=bypass&limit=1000`, { headers: { authorization: `Bearer ${TOKEN}` } });
      for (const a of (await res.json()).alerts) {
        for (const rc of a.details?.recipients ?? []) if (want.has(rc) && !latencies.has(rc)) latencies.set(rc, Date.parse(a.time) - want.get(rc));
      }
    }
    const detect = [];
    const ev = await fetch(`${admin}/api/events?kind=monitor&limit=1000`, { headers: { authorization: `Bearer ${TOKEN}` } });
    for (const e of (await ev.json()).events) if (typeof e.detect_ms === 'number' && (e.recipients ?? []).some((rc) => want.has(rc))) detect.push(e.detect_ms);
    await stopMonitor(mon);
    mon = null;

    const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
    const lat = [...latencies.values()];
    const row = (name) => {
      const off = med(rounds.off[name]);
      const on = med(rounds.on[name]);
      return { off_us: round(off), on_us: round(on), ratio: round(on / off), rounds_off_us: rounds.off[name].map(round), rounds_on_us: rounds.on[name].map(round) };
    };
    const report = {
      benchmark: 'monitor',
      writes: WRITES,
      write_bytes: 64,
      rounds: ROUNDS,
      node: row('node'),
      python: row('python'),
      node_unwatched_on_us: round(med(rounds.on.node_unwatched)),
      node_unwatched_ratio: round(med(rounds.on.node_unwatched) / med(rounds.off.node)),
      alert: {
        bypasses: want.size, alerted: lat.length,
        p50_ms: lat.length ? round(pct(lat, 0.5)) : null, p99_ms: lat.length ? round(pct(lat, 0.99)) : null, max_ms: lat.length ? round(Math.max(...lat)) : null,
        monitor_detect_p50_ms: detect.length ? round(pct(detect, 0.5)) : null, monitor_detect_p99_ms: detect.length ? round(pct(detect, 0.99)) : null,
      },
      targets: { node_ratio: '<= 1.5', alert_p99_ms: '<= 100' },
    };
    report.met = { node_ratio: report.node.ratio <= 1.5, alert_p99_ms: report.alert.p99_ms !== null && report.alert.p99_ms <= 100 && lat.length === want.size };
    printTable(report);
    console.log(JSON.stringify(report));
    if (lat.length !== want.size) throw new Error(`only ${lat.length} of ${want.size} bypasses became alerts within 10 s`);
  } finally {
    if (mon) await stopMonitor(mon).catch(() => {});
    await removeCgroup(cg).catch((e) => console.error(`monitor bench: could not remove ${cg}: ${e.message}`));
    echo.close();
    await relay.stop();
    await sink.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function printTable(r) {
  const pad = (s, n) => String(s).padStart(n);
  console.log(`monitor: ${r.writes} awaited ${r.write_bytes}-byte TLS writes (echoed), monitor off vs on, ${r.rounds} rounds alternating (median)`);
  console.log(`${'client'.padEnd(22)}${pad('off µs/write', 14)}${pad('on µs/write', 13)}${pad('ratio', 8)}`);
  for (const k of ['node', 'python']) console.log(`${k.padEnd(22)}${pad(r[k].off_us, 14)}${pad(r[k].on_us, 13)}${pad(r[k].ratio, 8)}`);
  console.log(`${'node, not watched'.padEnd(22)}${pad(r.node.off_us, 14)}${pad(r.node_unwatched_on_us, 13)}${pad(r.node_unwatched_ratio, 8)}`);
  const a = r.alert;
  console.log(`bypass write → alert at the relay (${a.alerted}/${a.bypasses}): p50 ${a.p50_ms} ms, p99 ${a.p99_ms} ms, max ${a.max_ms} ms (monitor detect p50 ${a.monitor_detect_p50_ms} ms, p99 ${a.monitor_detect_p99_ms} ms)`);
  console.log(`targets: node ratio ${r.targets.node_ratio} (${r.met.node_ratio ? 'met' : 'MISSED'}), alert p99 ${r.targets.alert_p99_ms} ms (${r.met.alert_p99_ms ? 'met' : 'MISSED'})`);
}

// ---- plumbing -----------------------------------------------------------------------------------------

function cannotRun() {
  if (process.getuid?.() !== 0) return `not root (uid ${process.getuid?.()}): the eBPF monitor needs CAP_SYS_ADMIN for uprobes and BPF programs; run it as root`;
  if (!existsSync(EGRESSD)) return `${EGRESSD} is missing (npm run build:bpf)`;
  if (!cgroup2Mount()) return 'no cgroup2 mount in /proc/mounts';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'no kernel BTF';
  return null;
}

function cgroup2Mount() {
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [, path, type] = line.split(' ');
    if (type === 'cgroup2' && path) return path.replace(/\\([0-7]{3})/g, (_m, o) => String.fromCharCode(parseInt(o, 8)));
  }
  return null;
}

function procsOf(cg) {
  try {
    return readFileSync(join(cg, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Kill what is left in the bench cgroup (only there), then remove it. */
async function removeCgroup(cg) {
  if (!existsSync(cg)) return;
  for (const end = Date.now() + 5000; procsOf(cg).length; await sleep(20)) {
    if (Date.now() > end) throw new Error(`processes left: ${procsOf(cg).join(' ')}`);
    if (existsSync(join(cg, 'cgroup.kill'))) writeFileSync(join(cg, 'cgroup.kill'), '1');
    else for (const pid of procsOf(cg)) process.kill(pid, 'SIGKILL');
  }
  for (let i = 0; ; i++) {
    try {
      return rmdirSync(cg);
    } catch (e) {
      if (i > 50) throw e;
      await sleep(20);
    }
  }
}

/** Run a client (inside `cg` from its first instruction, or here when cg is null) and parse its JSON output. */
function runClient(cg, cmd, args, timeoutMs = 60_000) {
  const argv = cg ? ['/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg, cmd, ...args.map(String)]] : [cmd, args.map(String)];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv[1], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      if (!cg || procsOf(cg).includes(child.pid)) child.kill('SIGKILL');
    }, timeoutMs);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`${cmd} ${args[0]} exited ${code ?? signal}: ${err.slice(0, 1000)}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()));
      } catch {
        reject(new Error(`${cmd} ${args[0]} printed no JSON: ${out.slice(0, 500)} ${err.slice(0, 500)}`));
      }
    });
  });
}

/** `node dist/cli.js monitor ARGS` reporting to the bench relay; resolves at its `ready` line. */
async function startMonitor(args, admin) {
  const child = spawn(process.execPath, [CLI, 'monitor', ...args], {
    env: { ...process.env, POSTGUARD_ADMIN_URL: admin, POSTGUARD_ADMIN_TOKEN: TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`monitor not ready after 20 s: ${err}`));
    }, 20_000);
    const onData = (d) => {
      out += d;
      if (/"event":"ready"/.test(out)) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        child.off('exit', onExit);
        resolve();
      }
    };
    const onExit = (code) => {
      clearTimeout(timer);
      reject(new Error(`monitor exited ${code} before ready: ${err}`));
    };
    child.stdout.on('data', onData);
    child.once('exit', onExit);
  });
  child.stdout.resume(); // a full pipe would stall the monitor
  return child;
}

function stopMonitor(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => (clearTimeout(kill), resolve()));
    child.kill('SIGTERM');
  });
}
