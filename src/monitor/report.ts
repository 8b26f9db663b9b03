// Reports to the relay: each bypass (and the coverage) is POSTed to `/api/monitor/events` with the
// admin token, where it becomes an audit record and an alert. Reports never wait on each other and
// never block the event loop: they queue (bounded), go out in batches as soon as the previous POST
// answered, and wait out a relay that is down with backoff. Plaintext leaves only as a short excerpt
// with credentials masked.

import { readFileSync } from 'node:fs';
import { adminTokenFile, dataDirOf } from '../config.js';
import type { Mailbox } from '../core/address.js';
import type { Logger } from '../core/log.js';
import { DETECTOR_KINDS, scanText, type Finding as SecretFinding } from '../policy/detectors.js';
import type { Finding } from './classify.js';
import { formatDestination } from './stream.js';

// --- masking ---------------------------------------------------------------------------------------

const ALL_DETECTORS = new Set(DETECTOR_KINDS);
export const EXCERPT_CHARS = 200;
/** The detectors read this much past the excerpt, so a secret that starts inside it is seen whole. */
const MASK_WINDOW = 4096;

const CREDENTIAL_HEADER = /^((?:proxy-)?authorization|cookie|set-cookie|api-?key|x-[a-z0-9-]*(?:token|key|secret|auth|password)[a-z0-9-]*)[ \t]*:[ \t]*([^\r\n]*)/gim;
const SMTP_VERB = /^(?:EHLO|HELO|LHLO|MAIL|RCPT|DATA|BDAT|RSET|NOOP|QUIT|STARTTLS|VRFY|EXPN|HELP|AUTH)\b/i;

const hidden = (value: string): string => `…(${value.length} chars)`;

/**
 * Credentials a protocol carries in known places: HTTP auth headers and token headers (the scheme
 * stays readable), SMTP AUTH and the lines that answer it.
 */
function maskProtocolCredentials(text: string): string {
  const out = text.replace(CREDENTIAL_HEADER, (_m, name: string, value: string) => {
    const scheme = /^(Basic|Bearer|Digest|Negotiate|AWS4-HMAC-SHA256)\s+/i.exec(value);
    return `${name}: ${scheme ? `${scheme[1]} ${hidden(value.slice(scheme[0].length))}` : hidden(value)}`;
  });
  if (!/^AUTH\b/im.test(out)) return out;
  let inAuth = false;
  return out
    .split('\n')
    .map((line) => {
      const auth = /^(AUTH[ \t]+[A-Za-z0-9_-]+)([ \t]+\S.*?)?(\r?)$/i.exec(line);
      if (auth) {
        inAuth = true;
        return `${auth[1]}${auth[2] ? ` ${hidden(auth[2].trim())}` : ''}${auth[3]}`;
      }
      if (inAuth && line.trim() !== '' && !SMTP_VERB.test(line)) return hidden(line.replace(/\r$/, '')) + (line.endsWith('\r') ? '\r' : '');
      inAuth = false;
      return line;
    })
    .join('\n');
}

/** How much text a detector finding covers, from its offset: the masks name the length, cards are their digit run. */
function secretLength(text: string, f: SecretFinding): number {
  const n = /\((\d+) chars\)$/.exec(f.masked);
  if (n) return Number(n[1]);
  const run = /^[0-9](?:[ -]?[0-9])*/.exec(text.slice(f.offset));
  if (run) return run[0].length;
  return /^\S*/.exec(text.slice(f.offset))![0].length;
}

/** Terminal-safe: control characters (C0 but CR/LF/TAB, DEL, C1) as `\xNN`. */
function printable(text: string): string {
  return text.replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** The first `max` characters of `text`, with every credential the detectors or the protocols know masked. */
export function maskedExcerpt(text: string, max = EXCERPT_CHARS): string {
  let t = maskProtocolCredentials(text.slice(0, MASK_WINDOW));
  const findings = scanText('excerpt', t, ALL_DETECTORS).filter((f) => f.offset < max + 64);
  for (const f of findings.reverse()) t = `${t.slice(0, f.offset)}[${f.detector} ${f.masked}]${t.slice(f.offset + secretLength(t, f))}`;
  let cut = printable(t).slice(0, max);
  if (/[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1);
  return cut;
}

/** Which credentials the content carries (masked), for the alert: what leaked, never the secret. */
export function secretsIn(content: string): { detector: string; masked: string }[] {
  if (!content) return [];
  return scanText('content', content.slice(0, 256 * 1024), ALL_DETECTORS)
    .slice(0, 20)
    .map((f) => ({ detector: f.detector, masked: f.masked }));
}

// --- the report --------------------------------------------------------------------------------------

export interface ReportContext {
  exe: string | null;
  cgroup: string | null;
  /** True for a recipient the relay's policy does not allow (absent: no policy loaded). */
  unknown?: (m: Mailbox) => boolean;
}

export type Report = Record<string, unknown> & { kind: string };

/** A finding as the relay's `POST /api/monitor/events` takes it (no null fields: the API refuses them). */
export function bypassReport(f: Finding, ctx: ReportContext, observedAt = new Date()): Report {
  const recipients = f.recipients.filter((r) => r.field !== 'reply-to' && r.field !== 'notify');
  const report: Report = {
    kind: 'bypass',
    pid: f.pid,
    comm: f.comm,
    exe: ctx.exe,
    cgroup: ctx.cgroup,
    cgroup_id: f.cgroupId,
    destination: f.destination ? formatDestination(f.destination) : 'unknown',
    sni: f.sni,
    host: f.host,
    protocol: f.protocol,
    provider: f.provider,
    endpoint: f.endpoint,
    method: f.method,
    path: f.path,
    recipients: [...new Set(recipients.map((r) => r.address.slice(0, 320)))].slice(0, 1000),
    recipient_fields: f.recipients.slice(0, 100).map((r) => ({ address: r.address, field: r.field, source: r.source.slice(0, 200) })),
    unknown_recipients: ctx.unknown ? [...new Set(f.recipients.filter((r) => r.mailbox && ctx.unknown!(r.mailbox)).map((r) => r.address.slice(0, 320)))].slice(0, 1000) : undefined,
    sender: f.sender,
    secrets: secretsIn(f.content),
    excerpt: f.plaintext ? maskedExcerpt(f.plaintext) : undefined,
    action: f.action,
    marker: f.marker,
    fn: f.fn,
    detail: f.detail?.slice(0, 1000),
    ts_ns: f.tsNs,
    observed_at: observedAt.toISOString(),
  };
  for (const k of Object.keys(report)) if (report[k] === null || report[k] === undefined) delete report[k];
  // The relay takes events up to 64 KiB: a huge recipient list is cut (its size stays known).
  const all = report.recipients as string[];
  while (JSON.stringify(report).length > 60_000 && (report.recipients as string[]).length > 1) {
    const half = Math.ceil((report.recipients as string[]).length / 2);
    report.recipients = (report.recipients as string[]).slice(0, half);
    report.recipient_fields = (report.recipient_fields as unknown[]).slice(0, Math.min(half, 20));
    if (Array.isArray(report.unknown_recipients)) report.unknown_recipients = report.unknown_recipients.slice(0, half);
    report.recipients_total = all.length;
  }
  return report;
}

// --- delivery to the relay -----------------------------------------------------------------------------

/** `POSTGUARD_ADMIN_URL` (default `http://127.0.0.1:8025`), without a trailing slash. */
export function adminUrl(env: NodeJS.ProcessEnv = process.env): string {
  return (env.POSTGUARD_ADMIN_URL || 'http://127.0.0.1:8025').replace(/\/+$/, '');
}

/** `POSTGUARD_ADMIN_TOKEN`, else the token file the relay keeps in `POSTGUARD_DATA_DIR`; null if neither. */
export function adminToken(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.POSTGUARD_ADMIN_TOKEN) return env.POSTGUARD_ADMIN_TOKEN;
  try {
    return readFileSync(adminTokenFile(dataDirOf(env)), 'utf8').trim() || null;
  } catch {
    return null;
  }
}

export interface ReporterOptions {
  url: string;
  /** Read again after a refusal (401), so a token file created later is picked up. */
  token: () => string | null;
  log: Logger;
  maxQueue?: number;
  batch?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  timeoutMs?: number;
}

export class Reporter {
  private readonly queue: Report[] = [];
  private inflight: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private delay = 0;
  private token: string | null;
  private down = false;
  private closed = false;
  readonly stats = { sent: 0, dropped: 0, failures: 0 };
  private readonly o: Required<Omit<ReporterOptions, 'token' | 'log' | 'url'>>;

  constructor(private readonly opts: ReporterOptions) {
    this.o = { maxQueue: 10_000, batch: 100, baseDelayMs: 100, maxDelayMs: 5_000, timeoutMs: 5_000, ...opts };
    this.token = opts.token();
  }

  get queued(): number {
    return this.queue.length;
  }

  send(report: Report): void {
    if (this.queue.length >= this.o.maxQueue) {
      // Bounded: the oldest go first, counted (the stdout line of each was already printed).
      this.queue.shift();
      this.stats.dropped++;
      if (this.stats.dropped === 1 || this.stats.dropped % 1000 === 0) this.opts.log('error', 'monitor_reports_dropped', { dropped: this.stats.dropped, queue: this.o.maxQueue });
    }
    this.queue.push(report);
    this.pump();
  }

  /** Resolve once the queue is empty (true) or `timeoutMs` passed (false); retries continue meanwhile. */
  async flush(timeoutMs = 5000): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
      this.pump();
    }
    while (this.queue.length > 0 || this.inflight) {
      if (Date.now() >= end) return false;
      await (this.inflight ?? new Promise((r) => setTimeout(r, Math.min(50, end - Date.now()))));
      if (!this.inflight && !this.timer) this.pump();
    }
    return true;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private pump(): void {
    if (this.closed || this.inflight || this.timer || this.queue.length === 0) return;
    const batch = this.queue.slice(0, this.o.batch);
    this.inflight = this.post(batch).finally(() => {
      this.inflight = null;
      this.pump();
    });
  }

  private async post(batch: Report[]): Promise<void> {
    let status = 0;
    let answer: { accepted?: number; error?: string } = {};
    try {
      this.token ??= this.opts.token();
      const res = await fetch(`${this.opts.url}/api/monitor/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this.token ?? ''}` },
        body: JSON.stringify(batch),
        signal: AbortSignal.timeout(this.o.timeoutMs),
      });
      status = res.status;
      answer = (await res.json().catch(() => ({}))) as typeof answer;
    } catch (e) {
      return this.failed(batch.length, `relay unreachable: ${(e as Error).message}`);
    }
    if (status >= 200 && status < 300) {
      this.queue.splice(0, batch.length);
      this.stats.sent += batch.length;
      this.delay = 0;
      if (this.down) this.opts.log('info', 'monitor_relay_back', { queued: this.queue.length });
      this.down = false;
      return;
    }
    if (status === 400) {
      // Events before the bad one were stored: drop those and the bad one, retry the rest.
      const accepted = typeof answer.accepted === 'number' ? answer.accepted : 0;
      this.queue.splice(0, Math.min(batch.length, accepted + 1));
      this.stats.sent += accepted;
      this.stats.dropped++;
      this.opts.log('error', 'monitor_report_refused', { error: String(answer.error ?? 'bad request').slice(0, 300) });
      return;
    }
    if (status === 401 || status === 403) this.token = this.opts.token();
    this.failed(batch.length, `relay answered ${status}${answer.error ? `: ${String(answer.error).slice(0, 200)}` : ''}`);
  }

  private failed(n: number, why: string): void {
    this.stats.failures++;
    this.delay = Math.min(this.o.maxDelayMs, this.delay ? this.delay * 2 : this.o.baseDelayMs);
    if (!this.down) this.opts.log('warn', 'monitor_relay_unreachable', { error: why, queued: this.queue.length, batch: n, retry_ms: this.delay });
    this.down = true;
    const wait = this.delay * (0.8 + Math.random() * 0.4);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump();
    }, wait);
    this.timer.unref();
  }
}
