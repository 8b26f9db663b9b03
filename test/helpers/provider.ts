// The rig every provider test starts from: a fake provider API (an HTTPS sink for the provider's
// real host names) and a relay whose HTTPS channel reaches it, through POSTGUARD_RESOLVE, trusting
// its CA through POSTGUARD_UPSTREAM_CA.

import { expect } from 'vitest';
import { startHttpsSink, type HttpsSink } from './https-sink.js';
import { adminGet, startTestRelay, type TestRelay } from './relay.js';

export interface ProviderRig {
  sink: HttpsSink;
  /** The relay started with the rig. */
  r: TestRelay;
  /** Another relay (another policy) sending to the same sink; closed with the rig. */
  relay(policy: string): Promise<TestRelay>;
  /** Close the relays first (their pooled upstream connections would hold the sink open), then the sink. */
  close(): Promise<void>;
}

/** Start a sink for `hosts` answering `respond` (default: 200 `{}`), and a relay for `policy` wired to it. */
export async function startProvider(hosts: readonly string[], policy: string, respond?: HttpsSink['respond']): Promise<ProviderRig> {
  const sink = await startHttpsSink([...hosts]);
  if (respond) sink.respond = respond;
  const relays: TestRelay[] = [];
  const relay = async (p: string) => {
    const r = await startTestRelay({ policy: p, env: { POSTGUARD_RESOLVE: sink.resolve([...hosts]), POSTGUARD_UPSTREAM_CA: sink.caFile } });
    relays.push(r);
    return r;
  };
  const close = async () => {
    await Promise.all(relays.map((r) => r.close()));
    await sink.close();
  };
  try {
    return { sink, r: await relay(policy), relay, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/** The newest message record in the relay's audit log. */
export async function lastEvent(r: TestRelay): Promise<any> {
  return (await adminGet(r, '/api/events?kind=message&limit=1')).body.events[0];
}

/** The SDK call failed with our message, and the provider received nothing. */
export function expectRefused(res: { ok: boolean; value: any }, sink: HttpsSink, message = 'postguard'): void {
  expect(res.ok, JSON.stringify(res)).toBe(false);
  expect(String(res.value.message)).toContain(message);
  expect(sink.requests).toHaveLength(0);
}
