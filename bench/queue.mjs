// Queue-mode benchmark: N messages of ~2 KB over C concurrent connections, in the same run,
// (a) directly to the upstream sink, (b) through a relay process in sync mode, (c) through a relay
// process in queue mode (POSTGUARD_DELIVERY=queue). Reports acceptance msgs/s, p50/p99 accept
// latency, and when the last message reached the sink (for queue mode: also how long after the
// last 250 that was), with the ratios queue/direct and sync/direct. Rounds alternate the three
// paths so machine noise hits them alike; the median round (by acceptance rate) of each is reported.

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { blast, C, median, N, round, ROUNDS, startRelayProcess, startSink } from './lib.mjs';

const DRAIN_TIMEOUT_MS = 120_000;

export async function run() {
  const dir = mkdtempSync(join(tmpdir(), 'pg-bench-queue-'));
  const sink = await startSink(dir);
  const sync = await startRelayProcess(dir, 'sync', sink, { POSTGUARD_DELIVERY: 'sync' });
  const queue = await startRelayProcess(dir, 'queue', sink, { POSTGUARD_DELIVERY: 'queue' });
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
      sync: { ...summary(med.sync, rounds.sync), peak_rss_mb: sync.peakRssMb() },
      queue: { ...summary(med.queue, rounds.queue), peak_rss_mb: queue.peakRssMb() },
      ratio_queue_to_direct: round(med.queue.rate / med.direct.rate),
      ratio_sync_to_direct: round(med.sync.rate / med.direct.rate),
      sink_received: sink.total,
      targets: { ratio_queue_to_direct: '>= 0.7' },
    };
    console.log(JSON.stringify(report, null, 2));
    const expected = (3 * ROUNDS * N) + 3 * 200;
    if (sink.total !== expected) throw new Error(`sink received ${sink.total}, expected ${expected}`);
  } finally {
    await sync.stop();
    await queue.stop();
    await sink.close();
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
