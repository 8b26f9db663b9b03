// GET /metrics: Prometheus text format (prom-client). Counters follow every audit record as it is
// written (kind, channel, action), so every channel and the monitor are counted the same way;
// gauges are read from the store when scraped.

import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { AuditRecord } from '../store/audit.js';
import type { Store } from '../store/store.js';

export class Metrics {
  readonly registry = new Registry();
  private readonly events: Counter;

  constructor(store: Store, info: () => { version: string; policy: string }) {
    collectDefaultMetrics({ register: this.registry, prefix: 'postguard_' });
    this.events = new Counter({
      name: 'postguard_events_total',
      help: 'Audit records written, by kind (message, http, monitor, admin, policy, system), channel and action (delivered, stripped, blocked, quarantined, …)',
      labelNames: ['kind', 'channel', 'action'],
      registers: [this.registry],
    });
    new Gauge({
      name: 'postguard_queue_messages', help: 'Messages waiting in the delivery queue', registers: [this.registry],
      collect() { this.set(store.queueStats().messages); },
    });
    new Gauge({
      name: 'postguard_quarantine_messages', help: 'Messages and requests held in quarantine', registers: [this.registry],
      collect() { this.set(store.quarantineCount()); },
    });
    new Gauge({
      name: 'postguard_info', help: 'Relay version and the policy version in force (always 1)', labelNames: ['version', 'policy_version'], registers: [this.registry],
      collect() {
        this.reset();
        const i = info();
        this.set({ version: i.version, policy_version: i.policy }, 1);
      },
    });
  }

  /** Count an audit record (the store calls this for every append). */
  observe(r: AuditRecord): void {
    this.events.inc({ kind: r.kind, channel: typeof r.channel === 'string' ? r.channel : '', action: r.action });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
