// The delivery queue (queue mode): messages were stored with their envelope before the agent got
// its 250; this worker delivers them with bounded concurrency, retrying temporary failures with
// exponential backoff and jitter, and gives up (audited + alerted) after a maximum age or on a
// permanent refusal. Nothing in flight is persisted: after a crash every stored message is simply
// due again, so a message the upstream took just before the crash may be delivered twice (at most
// the ones that were in flight), never lost.

import type { AlertHub } from '../alerts/hub.js';
import type { Logger } from '../core/log.js';
import type { Refusal, Upstream } from '../smtp/upstream.js';
import type { QueuedMessage, Store } from '../store/store.js';
import { outcome } from './outbound.js';

export interface QueueOptions {
  concurrency: number;
  /** First retry after about this long; doubles each attempt (with jitter), capped at maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Give up on a message this long after it was accepted. */
  maxAgeMs: number;
}

export class DeliveryQueue {
  private readonly inFlight = new Map<string, Promise<void>>();
  /** Stored messages may be due that nobody is attempting (after a start, a retry timer, a full worker). */
  private backlog = true;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private poll: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly upstream: Upstream,
    private readonly alerts: AlertHub,
    private readonly log: Logger,
    private readonly opts: QueueOptions,
  ) {}

  start(): void {
    this.wake();
    const next = this.store.nextQueuedAfter(Date.now());
    if (next !== null) this.scheduleAt(next);
    // Messages can also be queued by another process (`postguard quarantine release`).
    this.poll = setInterval(() => {
      this.backlog = true;
      this.wake();
    }, 5000).unref();
  }

  /** A message just stored: attempt it at once if a slot is free (no read back from disk). */
  offer(msg: QueuedMessage): void {
    if (this.stopped) return;
    if (this.inFlight.size < this.opts.concurrency) this.run(msg);
    else this.backlog = true;
  }

  /** Attempt stored messages that are due, up to the free slots. */
  wake(): void {
    if (this.stopped || !this.backlog) return;
    const free = this.opts.concurrency - this.inFlight.size;
    if (free <= 0) return;
    const ids = this.store.dueQueued(Date.now(), free, new Set(this.inFlight.keys()));
    if (ids.length < free) this.backlog = false; // everything due is now in flight
    for (const id of ids) {
      const msg = this.store.queued(id);
      if (msg) this.run(msg);
    }
  }

  /** Stop picking up messages; wait for the attempts in flight (bounded by the upstream's timeouts). */
  async close(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.poll) clearInterval(this.poll);
    await Promise.allSettled([...this.inFlight.values()]);
  }

  private run(msg: QueuedMessage): void {
    // A fault here (e.g. storage) must not become an unhandled rejection that ends the process.
    const attempt = this.attempt(msg).catch((e: Error) => this.log('error', 'queue_attempt_failed', { id: msg.id, error: e.message })).finally(() => {
      this.inFlight.delete(msg.id);
      this.wake();
    });
    this.inFlight.set(msg.id, attempt);
  }

  /** Wake at `at` for a retry; one timer, set to the earliest retry pending. */
  private scheduleAt(at: number): void {
    if (this.stopped || at >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      this.backlog = true;
      this.wake();
      const next = this.store.nextQueuedAfter(Date.now());
      if (next !== null) this.scheduleAt(next);
    }, Math.max(at - Date.now(), 10));
    this.timer.unref();
  }

  private async attempt(msg: QueuedMessage): Promise<void> {
    const attempts = (msg.attempts ?? 0) + 1;
    const result = await this.upstream.send(msg.from, msg.to, msg.raw);
    const base = { kind: 'message' as const, channel: 'queue', ref: msg.id, agent: msg.agent, attempts, envelope: { from: msg.from, to: msg.to } };
    if (result.status === 'delivered') {
      const retry = result.rejected.filter((r) => r.code === null || r.code < 500);
      const refused = result.rejected.filter((r) => r.code !== null && r.code >= 500);
      if (refused.length) this.alertRefused(msg, refused);
      if (retry.length === 0 || Date.now() - msg.created >= this.opts.maxAgeMs) {
        this.store.finishQueued(msg.id, { ...base, ...outcome(result) });
        this.log('info', 'queue_delivered', { id: msg.id, attempts, refused: result.rejected.length });
        return;
      }
      // Delivered to some; the temporarily refused recipients stay queued, on their own.
      const delay = this.backoff(attempts);
      this.store.narrowQueued(msg.id, retry.map((r) => r.address), attempts, Date.now() + delay, retry[0]!.response, { ...base, ...outcome(result) });
      this.scheduleAt(Date.now() + delay);
      return;
    }
    const age = Date.now() - msg.created;
    if (!result.temporary || age >= this.opts.maxAgeMs) {
      const action = result.temporary ? 'expired' : 'upstream_rejected';
      const record = this.store.finishQueued(msg.id, { ...base, action, upstream: outcome(result).upstream });
      this.alerts.raise({
        kind: action === 'expired' ? 'queue_expired' : 'upstream_rejected',
        severity: 'high',
        agent: msg.agent,
        channel: 'smtp',
        event_id: msg.id,
        summary: action === 'expired'
          ? `gave up delivering a queued message after ${attempts} attempts over ${Math.round(age / 60_000)} min: ${result.response}`
          : `upstream permanently refused a queued message: ${result.response}`,
        details: { audit_id: record.id, attempts, response: result.response },
      });
      return;
    }
    const delay = this.backoff(attempts);
    this.store.retryQueued(msg.id, attempts, Date.now() + delay, result.response);
    this.scheduleAt(Date.now() + delay);
    this.log('warn', 'queue_retry', { id: msg.id, attempts, retry_in_ms: Math.round(delay), error: result.response });
  }

  private backoff(attempts: number): number {
    return Math.min(this.opts.maxDelayMs, this.opts.baseDelayMs * 2 ** (attempts - 1)) * (0.5 + Math.random() / 2);
  }

  private alertRefused(msg: QueuedMessage, refused: Refusal[]): void {
    this.alerts.raise({
      kind: 'upstream_rejected', severity: 'high', agent: msg.agent, channel: 'smtp', event_id: msg.id,
      summary: `upstream permanently refused ${refused.map((r) => r.address).join(', ')} for a queued message: ${refused[0]!.response}`,
      details: { refused },
    });
  }
}
