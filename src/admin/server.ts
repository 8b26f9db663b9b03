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
import type { Store } from '../store/store.js';

export interface AdminContext {
  token: string;
  store: Store;
  alerts: AlertHub;
  quarantine: Quarantine;
  caPem: string;
  info: () => Record<string, unknown>;
  log: Logger;
}

type Reply = { status: number; body: unknown; type?: string };
type Handler = (req: IncomingMessage, url: URL, params: string[]) => Reply | Promise<Reply>;

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
      req.resume(); // no route reads a body yet; drain it so keep-alive works
      const out = await handler(req, url, params);
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
