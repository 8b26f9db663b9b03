// Admin JSON API (the web page comes later). Everything but /healthz and /api/ca.pem needs the admin
// token as `Authorization: Bearer <token>`. Handlers are small and return JSON; an unexpected error
// is a bare 500 (logged), never a stack trace.

import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../core/log.js';
import type { Listen } from '../config.js';
import type { AlertHub } from '../alerts/hub.js';
import type { Quarantine } from '../delivery/quarantine.js';
import type { Policy } from '../policy/types.js';
import type { Store } from '../store/store.js';
import type { Metrics } from './metrics.js';

export interface MonitorReport {
  kind: 'bypass' | 'coverage' | string;
  [field: string]: unknown;
}

export interface AdminContext {
  /** A report from the eBPF monitor; returns the audit id. */
  onMonitorEvent: (report: MonitorReport) => string;
  token: string;
  store: Store;
  alerts: AlertHub;
  quarantine: Quarantine;
  caPem: string;
  info: () => Record<string, unknown>;
  log: Logger;
  metrics: Metrics;
  /** The policy in force and its source text. */
  policy: () => { policy: Policy; text: string };
  /** Validate a new policy text and, unless `dryRun`, make it the policy in force (written to its file). */
  putPolicy: (text: string, dryRun: boolean) => { ok: true; version: string; previous_version: string; diff: string; applied: boolean } | { ok: false; errors: string[] };
}

type Reply = { status: number; body: unknown; type?: string };
type Handler = (req: IncomingMessage, url: URL, params: string[], body: Buffer) => Reply | Promise<Reply>;

/** Bigger than any report or policy the API takes; a peer must not make the relay buffer more. */
const MAX_BODY = 1 << 20;

const ID = '([0-9a-f-]{36})';

export class AdminServer {
  private server: Server | null = null;
  private readonly routes: [method: string, path: RegExp, auth: boolean, handler: Handler][];

  constructor(private readonly ctx: AdminContext) {
    const json = (body: unknown, status = 200) => ({ status, body });
    this.routes = [
      ['GET', /^\/healthz$/, false, () => json({ status: 'ok' })],
      ['GET', /^\/api\/ca\.pem$/, false, () => ({ status: 200, body: ctx.caPem, type: 'application/x-pem-file' })],
      ['GET', /^\/api\/info$/, true, () => json(ctx.info())],
      ['GET', /^\/api\/events$/, true, (_req, url) => {
        const n = (k: string) => (url.searchParams.has(k) ? Number(url.searchParams.get(k)) : undefined);
        const events = ctx.store.audit.list({ limit: n('limit'), before: n('before'), kind: url.searchParams.get('kind') ?? undefined, action: url.searchParams.get('action') ?? undefined });
        return json({ events });
      }],
      ['GET', new RegExp(`^/api/events/${ID}$`), true, (_req, _url, [id]) => {
        const event = ctx.store.audit.get(id!);
        return event ? json(event) : json({ error: 'not found' }, 404);
      }],
      ['GET', /^\/api\/outbox$/, true, () => json({ messages: ctx.store.outbox() })],
      ['GET', /^\/api\/quarantine$/, true, (_req, url) => json({ messages: ctx.quarantine.list(Number(url.searchParams.get('limit') ?? 50)) })],
      ['GET', new RegExp(`^/api/quarantine/${ID}$`), true, (_req, _url, [id]) => {
        const entry = ctx.quarantine.show(id!);
        if (!entry) return json({ error: 'not found' }, 404);
        const { raw, ...rest } = entry;
        // The held bytes are attacker-controlled: returned as data (base64), never as markup.
        return json({ ...rest, raw_base64: raw.toString('base64') });
      }],
      ['POST', new RegExp(`^/api/quarantine/${ID}/release$`), true, async (_req, _url, [id]) => {
        const r = await ctx.quarantine.release(id!, 'admin-api');
        return r.ok ? json(r) : json({ error: r.error }, r.status);
      }],
      ['POST', new RegExp(`^/api/quarantine/${ID}/delete$`), true, (_req, _url, [id]) => (ctx.quarantine.delete(id!, 'admin-api') ? json({ ok: true }) : json({ error: 'not found' }, 404))],
      ['POST', /^\/api\/monitor\/events$/, true, (_req, _url, _params, body) => {
        const parsed = parseJson(body);
        if (!parsed.ok) return json({ error: parsed.error }, 400);
        const events = Array.isArray(parsed.value) ? parsed.value : [parsed.value];
        const stored = [];
        for (const [i, e] of events.entries()) {
          const report = monitorReport(e);
          if (typeof report === 'string') return json({ error: `event ${i}: ${report}`, accepted: stored.length }, 400);
          stored.push(ctx.onMonitorEvent(report));
        }
        return json({ accepted: stored.length, ids: stored });
      }],
      ['GET', /^\/api\/policy$/, true, () => {
        const { policy, text } = ctx.policy();
        return json({ version: policy.version, file: policy.file, format: policy.format, mode: policy.mode, yaml: text });
      }],
      ['PUT', /^\/api\/policy$/, true, (_req, url, _params, body) => {
        const text = body.toString('utf8');
        const r = ctx.putPolicy(text, url.searchParams.get('dry_run') === '1');
        return r.ok ? json(r) : json({ error: 'policy has errors; nothing changed', errors: r.errors }, 422);
      }],
      ['GET', /^\/metrics$/, true, async () => ({ status: 200, body: await ctx.metrics.text(), type: ctx.metrics.contentType })],
      ['GET', /^\/api\/alerts$/, true, (_req, url) => json({ alerts: ctx.alerts.list({ limit: Number(url.searchParams.get('limit') ?? 50), kind: url.searchParams.get('kind') ?? undefined, before: url.searchParams.get('before') ?? undefined }) })],
    ];
  }

  async listen(l: Listen): Promise<AddressInfo> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(l.port, l.host, () => resolve());
    });
    return this.server.address() as AddressInfo;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server) return resolve();
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (status: number, body: unknown, type = 'application/json') => {
      const text = type === 'application/json' ? JSON.stringify(body) : String(body);
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
      res.end(text);
    };
    try {
      const url = new URL(req.url ?? '/', 'http://admin');
      const matching = this.routes.filter(([, path]) => path.test(url.pathname));
      if (matching.length === 0) return send(404, { error: 'not found' });
      const route = matching.find(([method]) => method === req.method);
      if (!route) return send(405, { error: 'method not allowed' });
      const [, path, auth, handler] = route;
      if (auth && !this.authorized(req)) {
        res.setHeader('www-authenticate', 'Bearer realm="postguard"');
        return send(401, { error: 'admin token required (Authorization: Bearer <token>)' });
      }
      const params = path.exec(url.pathname)!.slice(1);
      const body = await readBody(req);
      if (body === null) return send(413, { error: `request body larger than ${MAX_BODY} bytes` });
      const out = await handler(req, url, params, body);
      send(out.status, out.body, out.type);
    } catch (e) {
      this.ctx.log('error', 'admin_error', { error: (e as Error).message });
      if (!res.headersSent) send(500, { error: 'internal error' });
    }
  }

  private authorized(req: IncomingMessage): boolean {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (!m) return false;
    const given = Buffer.from(m[1]!);
    const want = Buffer.from(this.ctx.token);
    return given.length === want.length && timingSafeEqual(given, want);
  }
}

function readBody(req: IncomingMessage): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.once('end', () => resolve(size > MAX_BODY ? null : Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

function parseJson(body: Buffer): { ok: true; value: unknown } | { ok: false; error: string } {
  try {
    return { ok: true, value: JSON.parse(body.toString('utf8')) };
  } catch (e) {
    return { ok: false, error: `request body is not JSON: ${(e as Error).message}` };
  }
}

const REPORT_STRINGS = ['kind', 'comm', 'exe', 'destination', 'sni', 'host', 'protocol', 'provider', 'action', 'cgroup', 'detail', 'excerpt', 'sender', 'endpoint', 'method', 'path', 'fn', 'marker'];

/** Validate a monitor event: known shape, bounded strings; anything else is refused, not stored. */
function monitorReport(e: unknown): MonitorReport | string {
  if (typeof e !== 'object' || e === null || Array.isArray(e)) return 'expected a JSON object';
  const r = e as Record<string, unknown>;
  if (typeof r.kind !== 'string' || !/^[a-z_]{1,32}$/.test(r.kind)) return '`kind` must be a short lower-case word (e.g. "bypass")';
  for (const k of REPORT_STRINGS) if (r[k] !== undefined && (typeof r[k] !== 'string' || (r[k] as string).length > 1024)) return `\`${k}\` must be a string of at most 1024 characters`;
  if (r.pid !== undefined && (!Number.isInteger(r.pid) || (r.pid as number) < 0)) return '`pid` must be a non-negative integer';
  if (r.recipients !== undefined && (!Array.isArray(r.recipients) || r.recipients.length > 1000 || r.recipients.some((x) => typeof x !== 'string' || x.length > 320))) return '`recipients` must be a list of addresses';
  if (JSON.stringify(r).length > 64 * 1024) return 'event larger than 64 KiB';
  return r as MonitorReport;
}
