// SMTP benchmark: N messages of ~2 KB over C concurrent connections, through the relay (sync mode,
// a separate process) and directly to the same upstream sink, in the same run.
// Reports msgs/s, the ratio, p50/p99 latency per message and the latency the relay adds, the
// relay's peak RSS, and the greeting delay (stock smtp-server vs the relay).

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { blast, C, greetingMs, median, N, round, ROUNDS, startRelayProcess, startSink } from './lib.mjs';

export async function run() {
  const dir = mkdtempSync(join(tmpdir(), 'pg-bench-'));
  const sink = await startSink(dir);
  const relay = await startRelayProcess(dir, 'sync', sink);
  try {
    // Warm both paths (TLS session setup, JIT), then alternate rounds and report the median of each.
    await blast(sink.port, sink.caPem, 200);
    await blast(relay.port, relay.caPem, 200);
    sink.total = 0;
    const directRounds = [];
    const relayRounds = [];
    for (let i = 0; i < ROUNDS; i++) {
      directRounds.push(await blast(sink.port, sink.caPem, N));
      relayRounds.push(await blast(relay.port, relay.caPem, N));
    }
    const direct = median(directRounds);
    const through = median(relayRounds);
    const report = {
      benchmark: 'smtp',
      messages_per_round: N,
      rounds: ROUNDS,
      concurrency: C,
      message_bytes: 2048,
      relay_node_flags: relay.flags.join(' ') || '(none)',
      direct: { msgs_per_s: round(direct.rate), p50_ms: round(direct.p50), p99_ms: round(direct.p99), rounds_msgs_per_s: directRounds.map((r) => round(r.rate)) },
      relay: { msgs_per_s: round(through.rate), p50_ms: round(through.p50), p99_ms: round(through.p99), peak_rss_mb: relay.peakRssMb(), rounds_msgs_per_s: relayRounds.map((r) => round(r.rate)) },
      ratio_relay_to_direct: round(through.rate / direct.rate),
      added_latency_ms: { p50: round(through.p50 - direct.p50), p99: round(through.p99 - direct.p99) },
      greeting_ms: { stock_smtp_server: round(await greetingMs(sink.port)), relay: round(await greetingMs(relay.port)) },
      sink_received: sink.total,
      targets: { ratio: '>= 0.5', added_p99_ms: '<= 10', peak_rss_mb: '<= 200' },
    };
    console.log(JSON.stringify(report, null, 2));
    if (sink.total !== 2 * N * ROUNDS) throw new Error(`sink received ${sink.total}, expected ${2 * N * ROUNDS}`);
  } finally {
    await relay.stop();
    await sink.close();
  }
}
