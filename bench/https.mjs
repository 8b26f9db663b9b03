// HTTPS benchmark: keep-alive POSTs of a ~2 KB Postmark send (allowed recipients only) to
// https://api.postmarkapp.com/email over C parallel connections, in the same run, along three paths:
//   direct     client → local HTTPS sink (cert for the real host name from a throwaway CA)
//   postguard  client → CONNECT through the relay's forward proxy (its own process, from dist/) →
//              TLS to the relay's minted leaf → inspection → pooled TLS → sink
//   mitmproxy  the same client through `mitmdump` in regular proxy mode (skipped if not installed)
// Rounds alternate the paths so machine noise hits them alike; the median round (by rate) of each
// is reported, with postguard's and mitmproxy's CPU time per request (utime+stime from /proc).
// Then, for K host names neither proxy has seen (SES regions, which the relay intercepts), the
// CONNECT + TLS handshake time (the relay mints a leaf) and the time to the first response of a GET
// on that tunnel, against the same for a host whose leaf is cached.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, createServer, request } from 'node:https';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { loadOrCreateCa } from '../dist/tls/ca.js';
import { C, freePort, median, round, ROUNDS, startRelayProcess } from './lib.mjs';

const N = Number(process.env.BENCH_REQUESTS ?? 2000);
/** mitmproxy is an order of magnitude slower: fewer requests per round keep the run short; rates stay comparable. */
const N_MITM = Number(process.env.BENCH_MITM_REQUESTS ?? Math.ceil(N / 4));
const WARMUP = 300;
const K = Number(process.env.BENCH_NEW_HOSTS ?? 10);
const HOST = 'api.postmarkapp.com';
const POLICY = 'version: 1\nrecipients:\n  domains: [company.com]\nunknown_recipients: strip\nsecrets:\n  - detectors: all\n    action: block\n';
const TOKEN = '00000000-0000-4000-8000-000000000000';

/** A Postmark send of 2048 bytes: allowed recipients only, so the relay forwards it unchanged. */
const BODY = (() => {
  const msg = { From: 'agent@company.com', To: 'colleague@company.com, team@company.com', Subject: 'Weekly report', TextBody: '', HtmlBody: '', MessageStream: 'outbound' };
  const lorem = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit. '.repeat(40);
  const room = 2048 - Buffer.byteLength(JSON.stringify(msg)) - '<p></p>'.length;
  msg.TextBody = lorem.slice(0, Math.floor(room / 2));
  msg.HtmlBody = `<p>${lorem.slice(0, room - msg.TextBody.length)}</p>`;
  return Buffer.from(JSON.stringify(msg));
})();

export async function run() {
  const dir = mkdtempSync(join(tmpdir(), 'pg-bench-https-'));
  const fresh = (tag) => Array.from({ length: K }, (_, i) => `email.bench-${tag}-${i}.amazonaws.com`);
  const newHosts = { direct: fresh('d'), postguard: fresh('p'), mitmproxy: fresh('m') };
  const sink = await startHttpsSink(dir, [HOST, ...Object.values(newHosts).flat()]);
  const proxyPort = await freePort();
  const relay = await startRelayProcess(dir, 'https', sink, {
    POSTGUARD_POLICY: writePolicy(dir), POSTGUARD_SMTP_LISTEN: 'off', POSTGUARD_UPSTREAM_SMTP: '', POSTGUARD_PROXY_LISTEN: `127.0.0.1:${proxyPort}`,
    POSTGUARD_RESOLVE: [HOST, ...newHosts.postguard].map((h) => `${h}:443=127.0.0.1:${sink.port}`).join(','),
  });
  const mitm = await startMitmdump(dir, sink);
  const paths = {
    direct: { agent: directAgent(sink), n: N },
    postguard: { agent: proxyAgent(proxyPort, relay.caPem), n: N, pid: relay.child.pid },
    ...(mitm ? { mitmproxy: { agent: proxyAgent(mitm.port, mitm.caPem), n: N_MITM, pid: mitm.child.pid } } : {}),
  };
  try {
    for (const p of Object.values(paths)) await blast(p.agent, WARMUP);
    const expected = sink.total + Object.values(paths).reduce((a, p) => a + p.n * ROUNDS, 0);
    const rounds = Object.fromEntries(Object.keys(paths).map((k) => [k, []]));
    for (let i = 0; i < ROUNDS; i++) {
      for (const [name, p] of Object.entries(paths)) {
        const cpu0 = p.pid ? cpuMs(p.pid) : 0;
        const r = await blast(p.agent, p.n);
        if (p.pid) r.cpuMs = cpuMs(p.pid) - cpu0;
        rounds[name].push(r);
      }
    }
    for (const p of Object.values(paths)) p.agent.destroy();

    const firstResponse = {
      direct: await newHostTimes(null, sink.caPem, newHosts.direct, HOST, sink.port),
      postguard: await newHostTimes(proxyPort, relay.caPem, newHosts.postguard, HOST),
      ...(mitm ? { mitmproxy: await newHostTimes(mitm.port, mitm.caPem, newHosts.mitmproxy, HOST) } : {}),
    };

    const med = Object.fromEntries(Object.entries(rounds).map(([k, v]) => [k, median(v)]));
    const cpuPerReq = (name) => (rounds[name] ? round(rounds[name].reduce((a, r) => a + r.cpuMs, 0) / (ROUNDS * paths[name].n)) : null);
    const summary = (name) => ({
      requests_per_round: paths[name].n,
      req_per_s: round(med[name].rate), p50_ms: round(med[name].p50), p99_ms: round(med[name].p99),
      ...(paths[name].pid ? { cpu_ms_per_request: cpuPerReq(name) } : {}),
      rounds_req_per_s: rounds[name].map((r) => round(r.rate)),
    });
    const report = {
      benchmark: 'https',
      rounds: ROUNDS,
      concurrency: C,
      request_bytes: BODY.length,
      relay_node_flags: relay.flags.join(' ') || '(none)',
      mitmproxy_version: mitm?.version ?? null,
      direct: summary('direct'),
      postguard: { ...summary('postguard'), peak_rss_mb: relay.peakRssMb() },
      mitmproxy: mitm ? summary('mitmproxy') : { skipped: 'mitmdump not found on PATH (apt-get install -y mitmproxy)' },
      ratio_postguard_to_direct: round(med.postguard.rate / med.direct.rate),
      ratio_postguard_to_mitmproxy: mitm ? round(med.postguard.rate / med.mitmproxy.rate) : null,
      new_host: { hosts: K, ...firstResponse, postguard_mint_ms: round(firstResponse.postguard.new_handshake_ms - firstResponse.postguard.cached_handshake_ms) },
      sink_received: sink.total,
      targets: { ratio_postguard_to_mitmproxy: '>= 5', ratio_postguard_to_direct: '>= 0.3', postguard_cpu_ms_per_request: '<= 0.6', postguard_new_host_first_response_ms: '<= 20' },
    };
    printTable(report);
    console.log(JSON.stringify(report));
    const got = sink.total - K * Object.keys(firstResponse).length * 2;
    if (got !== expected) throw new Error(`sink received ${got} POSTs, expected ${expected}`);
    if (sink.bad) throw new Error(`sink received ${sink.bad} requests without the allowed recipients`);
  } finally {
    await relay.stop();
    await mitm?.stop();
    await sink.close();
  }
}

function writePolicy(dir) {
  const file = join(dir, 'https-policy.yaml');
  writeFileSync(file, POLICY);
  return file;
}

// ---- load ---------------------------------------------------------------------------------------

/** n POSTs over the agent's C keep-alive connections; rate and latency. */
async function blast(agent, n) {
  const latencies = [];
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < n) {
      next++;
      const s = performance.now();
      await post(agent);
      latencies.push(performance.now() - s);
    }
  };
  await Promise.all(Array.from({ length: C }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return { rate: n / elapsed, p50: latencies[Math.floor(n * 0.5)], p99: latencies[Math.floor(n * 0.99)] };
}

function post(agent) {
  return new Promise((resolve, reject) => {
    const req = request({
      agent, host: HOST, port: 443, method: 'POST', path: '/email',
      headers: { accept: 'application/json', 'content-type': 'application/json', 'x-postmark-server-token': TOKEN, 'content-length': BODY.length },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}: ${Buffer.concat(chunks).toString().slice(0, 300)}`))));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(BODY);
  });
}

/** Keep-alive straight to the sink, as if DNS pointed api.postmarkapp.com at it. */
function directAgent(sink) {
  const agent = new Agent({ keepAlive: true, maxSockets: C, maxFreeSockets: C, scheduling: 'lifo' });
  agent.createConnection = (o) => tlsConnect({ host: '127.0.0.1', port: sink.port, servername: o.servername || o.host, ca: sink.caPem });
  return agent;
}

/** Keep-alive through an HTTP CONNECT proxy: each pooled connection is one tunnel carrying many requests. */
function proxyAgent(proxyPort, caPem) {
  const agent = new Agent({ keepAlive: true, maxSockets: C, maxFreeSockets: C, scheduling: 'lifo' });
  agent.createConnection = (o, cb) => {
    const host = o.servername || o.host;
    connectTunnel(proxyPort, host).then((s) => cb(null, tlsConnect({ socket: s, servername: host, ca: caPem })), (e) => cb(e));
  };
  return agent;
}

/** A TCP connection to the proxy, past a 200 answer to CONNECT host:443. */
function connectTunnel(proxyPort, host) {
  return new Promise((resolve, reject) => {
    const s = netConnect(proxyPort, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const onData = (d) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      s.off('data', onData);
      s.off('error', reject);
      s.pause();
      const head = buf.subarray(0, end).toString('latin1');
      if (!/^HTTP\/1\.[01] 200/.test(head)) {
        s.destroy();
        return reject(new Error(`CONNECT ${host}: ${head.split('\r\n')[0]}`));
      }
      if (buf.length > end + 4) s.unshift(buf.subarray(end + 4));
      resolve(s);
    };
    s.on('data', onData);
    s.once('error', reject);
    s.once('connect', () => s.write(`CONNECT ${host}:443 HTTP/1.1\r\nHost: ${host}:443\r\n\r\n`));
  });
}

// ---- new hosts ----------------------------------------------------------------------------------

/**
 * For each never-seen host, then again for the now-cached one: a fresh connection (CONNECT through
 * the proxy, or straight to the sink when proxyPort is null) and a full TLS handshake, then a GET on
 * it; medians of the handshake time and of the time to the response's first byte.
 */
async function newHostTimes(proxyPort, caPem, hosts, cachedHost, sinkPort) {
  const fresh = [];
  const cached = [];
  for (const h of hosts) {
    fresh.push(await handshakeAndGet(proxyPort, caPem, h, sinkPort));
    cached.push(await handshakeAndGet(proxyPort, caPem, h, sinkPort));
  }
  // The busy host too, whose leaf (and upstream connections) were warm all along.
  const busy = [];
  for (let i = 0; i < hosts.length; i++) busy.push(await handshakeAndGet(proxyPort, caPem, cachedHost, sinkPort, true));
  const mid = (xs) => round([...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]);
  return {
    new_handshake_ms: mid(fresh.map((x) => x.handshake)), new_first_response_ms: mid(fresh.map((x) => x.response)),
    cached_handshake_ms: mid(cached.map((x) => x.handshake)), cached_first_response_ms: mid(cached.map((x) => x.response)),
    busy_host_handshake_ms: mid(busy.map((x) => x.handshake)),
  };
}

/** One connection: ms to a verified TLS session, and ms to the first byte of a GET's response. */
async function handshakeAndGet(proxyPort, caPem, host, sinkPort, handshakeOnly = false) {
  const t0 = performance.now();
  const socket = proxyPort === null ? undefined : await connectTunnel(proxyPort, host);
  const tls = tlsConnect(socket ? { socket, servername: host, ca: caPem } : { host: '127.0.0.1', port: sinkPort, servername: host, ca: caPem });
  try {
    await new Promise((resolve, reject) => {
      tls.once('secureConnect', resolve);
      tls.once('error', reject);
    });
    const handshake = performance.now() - t0;
    if (handshakeOnly) return { handshake };
    const status = await new Promise((resolve, reject) => {
      tls.once('data', (d) => resolve(d.toString('latin1').split('\r\n')[0]));
      tls.once('error', reject);
      tls.write(`GET /bench HTTP/1.1\r\nHost: ${host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n`);
    });
    const response = performance.now() - t0;
    if (!/^HTTP\/1\.1 200/.test(status)) throw new Error(`GET https://${host}/bench: ${status}`);
    return { handshake, response };
  } finally {
    tls.destroy();
  }
}

// ---- the sink, mitmproxy, CPU -------------------------------------------------------------------

/** The provider stand-in: HTTPS with a leaf for every name, Postmark's success reply, counting requests. */
async function startHttpsSink(dir, names) {
  const { ca } = loadOrCreateCa(join(dir, 'sink-ca'));
  const leaf = ca.leafFor(names);
  const caFile = join(dir, 'sink-ca.pem');
  writeFileSync(caFile, ca.certPem);
  const sink = { total: 0, bad: 0, caPem: ca.certPem, caFile };
  const reply = JSON.stringify({ To: 'colleague@company.com', SubmittedAt: '2025-01-01T00:00:00Z', MessageID: '00000000-0000-4000-8000-000000000001', ErrorCode: 0, Message: 'OK' });
  sink.server = createServer({ key: leaf.keyPem, cert: leaf.certPem, keepAlive: true, keepAliveTimeout: 60_000 }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      sink.total++;
      if (req.method === 'POST' && !Buffer.concat(chunks).includes('colleague@company.com')) sink.bad++;
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(reply) });
      res.end(reply);
    });
  });
  await new Promise((r) => sink.server.listen(0, '127.0.0.1', r));
  sink.port = sink.server.address().port;
  sink.close = () => new Promise((r) => {
    sink.server.closeAllConnections();
    sink.server.close(r);
  });
  return sink;
}

/** mitmdump in regular proxy mode; an addon sends every upstream connection to the sink, keeping SNI and Host. */
async function startMitmdump(dir, sink) {
  let version;
  try {
    version = /Mitmproxy:\s*(\S+)/.exec(execFileSync('mitmdump', ['--version'], { encoding: 'utf8' }))?.[1] ?? 'unknown';
  } catch {
    return null;
  }
  const confdir = join(dir, 'mitmproxy');
  const addon = join(dir, 'to_sink.py');
  writeFileSync(addon, `def server_connect(data):\n    data.server.address = ("127.0.0.1", ${sink.port})\n`);
  const port = await freePort();
  const child = spawn('mitmdump', [
    '--listen-host', '127.0.0.1', '--listen-port', String(port), '-q', '-s', addon,
    '--set', `confdir=${confdir}`, '--set', `ssl_verify_upstream_trusted_ca=${sink.caFile}`, '--set', 'connection_strategy=lazy',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const caFile = join(confdir, 'mitmproxy-ca-cert.pem');
  for (const end = Date.now() + 20_000; ; await new Promise((r) => setTimeout(r, 100))) {
    if (child.exitCode !== null) throw new Error(`mitmdump exited ${child.exitCode}: ${err}`);
    if (Date.now() > end) throw new Error(`mitmdump did not start listening on ${port}: ${err}`);
    if (existsSync(caFile) && (await canConnect(port))) break;
  }
  return {
    child, port, version, caPem: readFileSync(caFile, 'utf8'),
    stop: () => new Promise((res) => {
      if (child.exitCode !== null) return res();
      const kill = setTimeout(() => child.kill('SIGKILL'), 3000);
      child.once('exit', () => (clearTimeout(kill), res()));
      child.kill('SIGTERM');
    }),
  };
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

const TICK_MS = 1000 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim() || 100);

/** User + system CPU time a process has used so far, in ms (/proc/<pid>/stat fields 14 and 15). */
function cpuMs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
}

function printTable(r) {
  const pad = (s, n) => String(s).padStart(n);
  const rows = ['direct', 'postguard', 'mitmproxy'].filter((k) => r[k] && !r[k].skipped);
  console.log(`https: POST ${r.request_bytes} B to https://${HOST}/email, ${r.concurrency} keep-alive connections, ${r.rounds} rounds (median)`);
  console.log(`${'path'.padEnd(10)}${pad('req/s', 10)}${pad('p50 ms', 9)}${pad('p99 ms', 9)}${pad('cpu ms/req', 12)}`);
  for (const k of rows) console.log(`${k.padEnd(10)}${pad(r[k].req_per_s, 10)}${pad(r[k].p50_ms, 9)}${pad(r[k].p99_ms, 9)}${pad(r[k].cpu_ms_per_request ?? '-', 12)}`);
  if (r.mitmproxy.skipped) console.log(`mitmproxy skipped: ${r.mitmproxy.skipped}`);
  console.log(`postguard/direct ${r.ratio_postguard_to_direct}   postguard/mitmproxy ${r.ratio_postguard_to_mitmproxy ?? '-'}   postguard peak RSS ${r.postguard.peak_rss_mb} MB`);
  console.log(`new host (median of ${r.new_host.hosts}): ${'handshake ms'.padStart(14)}${'1st resp ms'.padStart(13)}${'cached hs'.padStart(11)}${'cached resp'.padStart(13)}${'busy host hs'.padStart(14)}`);
  for (const k of rows) {
    const x = r.new_host[k];
    console.log(`  ${k.padEnd(24)}${pad(x.new_handshake_ms, 14)}${pad(x.new_first_response_ms, 13)}${pad(x.cached_handshake_ms, 11)}${pad(x.cached_first_response_ms, 13)}${pad(x.busy_host_handshake_ms, 14)}`);
  }
  console.log(`postguard leaf mint (new - cached handshake): ${r.new_host.postguard_mint_ms} ms`);
}
