// Alerts: every block, quarantine, strip, monitor-mode would-action, anomaly and bypass report.
// Each is stored (GET /api/alerts), logged as one line, and — when the policy names a webhook —
// POSTed as JSON with a Slack-compatible `text`. The webhook is fed from a bounded in-memory queue
// with retries and backoff; raising an alert never waits for it, so a dead webhook cannot slow mail.
// Alerts are built from decision fields only, so secrets appear in them masked, as in the audit.

import { randomUUID } from 'node:crypto';
import type { Logger } from '../core/log.js';
import type { Db } from '../store/db.js';

export type Severity = 'low' | 'normal' | 'high';

export interface AlertInput {
  kind: string; // blocked, quarantined, stripped, would_block, would_strip, rate_limit, constant_extra_recipient, …
  severity: Severity;
  summary: string;
  agent?: string | null;
  channel?: string;
  event_id?: string | null;
  details?: Record<string, unknown>;
}

export interface Alert extends AlertInput {
  id: string;
  time: string;
}

export interface WebhookOptions {
  url: () => string | null;
  /** Attempts per alert before giving up (each logged). */
  attempts?: number;
  baseDelayMs?: number;
  timeoutMs?: number;
  /** Alerts waiting for the webhook beyond this are dropped, oldest first (and logged). */
  maxPending?: number;
}

export class AlertHub {
  private readonly insert;
  private readonly mark;
  private readonly pending: { alert: Alert; url: string; attempt: number }[] = [];
  private pumping = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly inFlight = new AbortController();

  constructor(private readonly db: Db, private readonly log: Logger, private readonly webhook: WebhookOptions) {
    this.insert = db.prepare('INSERT INTO alerts (id, time, kind, severity, agent, event_id, record, webhook) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
    this.mark = db.prepare('UPDATE alerts SET webhook = ?, webhook_attempts = ? WHERE id = ?');
  }

  raise(input: AlertInput): Alert {
    const alert: Alert = { id: randomUUID(), time: new Date().toISOString(), ...input };
    const url = this.webhook.url();
    this.insert.run(alert.id, alert.time, alert.kind, alert.severity, alert.agent ?? null, alert.event_id ?? null, JSON.stringify(alert), url ? 'pending' : 'none');
    this.log(alert.severity === 'high' ? 'error' : 'warn', 'alert', { alert: alert.kind, id: alert.id, severity: alert.severity, agent: alert.agent ?? null, summary: alert.summary, event_id: alert.event_id ?? null });
    if (url && !this.closed) this.enqueue(alert, url);
    return alert;
  }

  list(opts: { limit?: number; before?: string; kind?: string } = {}): (Alert & { webhook: string })[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (opts.before) (where.push('time < ?'), args.push(opts.before));
    if (opts.kind) (where.push('kind = ?'), args.push(opts.kind));
    args.push(Math.min(Math.max(opts.limit ?? 50, 1), 1000));
    const rows = this.db.prepare(`SELECT record, webhook FROM alerts ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY time DESC, rowid DESC LIMIT ?`).all(...args) as { record: string; webhook: string }[];
    return rows.map((r) => ({ ...(JSON.parse(r.record) as Alert), webhook: r.webhook }));
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.inFlight.abort();
  }

  private enqueue(alert: Alert, url: string): void {
    const max = this.webhook.maxPending ?? 1000;
    if (this.pending.length >= max) {
      const dropped = this.pending.shift()!;
      this.mark.run('dropped', dropped.attempt, dropped.alert.id);
      this.log('warn', 'alert_webhook_dropped', { id: dropped.alert.id, pending: this.pending.length });
    }
    this.pending.push({ alert, url, attempt: 0 });
    this.pump().catch((e: Error) => this.log('error', 'alert_webhook_error', { error: e.message }));
  }

  /** One request at a time, in order; a failure backs off the whole queue (the endpoint is down). */
  private async pump(): Promise<void> {
    if (this.pumping || this.timer) return;
    this.pumping = true;
    try {
      while (this.pending.length > 0 && !this.closed) {
        const item = this.pending[0]!;
        item.attempt++;
        const ok = await this.post(item.url, item.alert);
        if (this.closed) return; // the store may be closed by now; the row keeps its last state
        if (ok) {
          this.pending.shift();
          this.mark.run('sent', item.attempt, item.alert.id);
          continue;
        }
        if (item.attempt >= (this.webhook.attempts ?? 6)) {
          this.pending.shift();
          this.mark.run('failed', item.attempt, item.alert.id);
          this.log('error', 'alert_webhook_gave_up', { id: item.alert.id, attempts: item.attempt });
          continue;
        }
        this.mark.run('retrying', item.attempt, item.alert.id);
        const delay = (this.webhook.baseDelayMs ?? 1000) * 2 ** (item.attempt - 1) * (0.5 + Math.random() / 2);
        this.timer = setTimeout(() => {
          this.timer = null;
          this.pump().catch((e: Error) => this.log('error', 'alert_webhook_error', { error: e.message }));
        }, Math.min(delay, 300_000));
        this.timer.unref();
        return;
      }
    } finally {
      this.pumping = false;
    }
  }

  private async post(url: string, alert: Alert): Promise<boolean> {
    const text = `[postguard] ${alert.severity}: ${alert.summary}${alert.event_id ? ` [${alert.event_id}]` : ''}`;
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'postguard' },
        body: JSON.stringify({ text, postguard: alert }),
        signal: AbortSignal.any([AbortSignal.timeout(this.webhook.timeoutMs ?? 5000), this.inFlight.signal]),
        redirect: 'error',
      });
      await res.arrayBuffer().catch(() => undefined);
      if (!res.ok) this.log('warn', 'alert_webhook_failed', { id: alert.id, status: res.status });
      return res.ok;
    } catch (e) {
      this.log('warn', 'alert_webhook_failed', { id: alert.id, error: (e as Error).message });
      return false;
    }
  }
}
