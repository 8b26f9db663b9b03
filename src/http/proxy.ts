// The HTTP channel's listeners. Deny by default:
//   forward proxy (POSTGUARD_PROXY_LISTEN)
//     CONNECT mail-API host:443  → 200, TLS terminated with a leaf from our CA, requests inspected
//     CONNECT allowlisted host:443 → 200, plain TCP tunnel
//     anything else              → 403 with the reason
//     absolute-form requests (http:// and, as axios sends them, https://) follow the same rules
//   transparent listener (POSTGUARD_TRANSPARENT_LISTEN): the ClientHello's SNI picks the same routes
// Optional Basic `Proxy-Authorization` names the agent (policy agents and their scrypt hashes).

import { createHash } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, isIP, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import type { Listen } from '../config.js';
import { normalizeDomain } from '../core/address.js';
import { REASONS } from '../policy/decide.js';
import { verifyPassword } from '../policy/password.js';
import type { Policy } from '../policy/types.js';
import type { CertificateAuthority } from '../tls/ca.js';
import { HttpInspector, type HttpContext, type Origin } from './inspect.js';
import { readSni } from './sni.js';
import type { Target } from './upstream.js';

export interface HttpChannelContext extends HttpContext {
  ca: CertificateAuthority;
}

/** Only TLS ports are tunnelled: an allowlisted name must not become a way to reach port 25. */
const TUNNEL_PORTS = new Set([443]);
const AUTH_CACHE_MS = 5 * 60_000;
const CLIENT_HELLO_MAX = 20 * 1024;

export class HttpChannel {
  readonly inspector: HttpInspector;
  /** Decrypted requests from intercepted tunnels and the transparent listener. */
  private readonly inner: Server;
  private readonly servers: (Server | NetServer)[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly contexts = new Map<string, { cert: string; ctx: SecureContext }>();
  private readonly connections = new WeakMap<Socket, { target: Target; origin: Origin }>();
  private readonly authCache = new Map<string, { agent: string; expires: number }>();

  constructor(private readonly ctx: HttpChannelContext) {
    this.inspector = new HttpInspector(ctx);
    this.inner = createHttpServer({ headersTimeout: 30_000, requestTimeout: 300_000, keepAliveTimeout: 30_000 }, (req, res) => this.onInnerRequest(req, res));
    this.inner.on('clientError', (err, socket) => badRequest(socket, err));
  }

  async listen(proxy: Listen | null, transparent: Listen | null): Promise<{ proxy: AddressInfo | null; transparent: AddressInfo | null }> {
    const start = async (server: Server | NetServer, l: Listen | null): Promise<AddressInfo | null> => {
      if (!l) return null;
      this.servers.push(server);
      server.on('connection', (s: Socket) => {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(l.port, l.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      server.on('error', (err: Error) => this.ctx.log('warn', 'http_listener_error', { error: err.message }));
      return server.address() as AddressInfo;
    };
    const p = createHttpServer({ headersTimeout: 30_000, requestTimeout: 300_000, keepAliveTimeout: 30_000 }, (req, res) => void this.onProxyRequest(req, res));
    p.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => void this.onConnect(req, socket, head));
    p.on('clientError', (err, socket) => badRequest(socket, err));
    const t = createNetServer((s) => this.onTransparent(s));
    return { proxy: await start(p, proxy), transparent: await start(t, transparent) };
  }

  async close(): Promise<void> {
    const closed = this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    // Idle keep-alive connections and tunnels would hold close() open; in-flight requests get a moment.
    await new Promise((r) => setTimeout(r, 50));
    for (const s of this.sockets) s.destroy();
    await Promise.all(closed);
    this.ctx.upstream.close();
  }

  // ---- forward proxy ----------------------------------------------------------------------

  private async onConnect(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    const m = /^(\[[0-9a-f:.]+\]|[^\s:/@[\]]+):(\d{1,5})$/i.exec(req.url ?? '');
    if (!m) return void socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\npostguard: CONNECT needs host:port\n');
    const host = hostName(m[1]!);
    const port = Number(m[2]);
    const origin = await this.origin(req, 'proxy');
    if (!origin) return void socket.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="postguard"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    if (host && HttpInspector.inspects(host) && port === 443) {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) socket.unshift(head);
      return this.terminate(socket, host, origin);
    }
    if (host && this.allowed(host) && TUNNEL_PORTS.has(port)) {
      this.tunnel(socket, host, port, head, origin, () => socket.write('HTTP/1.1 200 Connection Established\r\n\r\n'));
      return;
    }
    const why = this.deny(host ?? req.url ?? '', port, origin, 'CONNECT');
    socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\nX-Postguard: refused\r\n\r\npostguard: ${why}\n`);
  }

  private async onProxyRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('scheme');
    } catch {
      res.writeHead(400, { 'content-type': 'text/plain' });
      return void res.end('postguard: this is an HTTP proxy; send absolute-form requests (http://host/path) or CONNECT\n');
    }
    const origin = await this.origin(req, 'proxy');
    if (!origin) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="postguard"', 'content-type': 'text/plain' });
      return void res.end('postguard: proxy credentials required\n');
    }
    const host = hostName(url.hostname);
    const defaultPort = url.protocol === 'https:' ? 443 : 80;
    const port = Number(url.port || defaultPort);
    req.url = `${url.pathname}${url.search}`;
    try {
      // A mail-API host is inspected or refused, never passed: not on another port either, even
      // when an allowlist pattern (`*.googleapis.com`) also covers it.
      if (host && HttpInspector.inspects(host) && port === defaultPort) {
        // Mail APIs are HTTPS only: a plain-HTTP request to one is inspected and sent on over verified TLS.
        req.headers.host = host;
        return await this.inspector.handle(req, res, { scheme: 'https', host, port: 443 }, origin);
      }
      if (host && !HttpInspector.inspects(host) && this.allowed(host)) {
        const r = await this.ctx.upstream.stream(req, res, { scheme: url.protocol === 'https:' ? 'https' : 'http', host, port });
        this.note({ kind: 'http', action: 'passed', channel: 'http', method: req.method, host, port, agent: origin.agent, client: origin.client, status: r.status });
        return;
      }
    } catch (e) {
      return this.failed(res, e as Error);
    }
    const why = this.deny(host ?? url.hostname, port, origin, req.method ?? 'GET');
    req.resume();
    res.writeHead(403, { 'content-type': 'text/plain', 'x-postguard': 'refused' });
    res.end(`postguard: ${why}\n`);
  }

  // ---- transparent listener ---------------------------------------------------------------

  private onTransparent(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    const origin: Origin = { agent: null, client: socket.remoteAddress ?? '', via: 'transparent' };
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), 10_000);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const r = readSni(buf);
      if (r.state === 'more' && buf.length < CLIENT_HELLO_MAX) return;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      const name = r.state === 'done' ? r.name : null;
      if (name && HttpInspector.inspects(name)) {
        socket.unshift(buf);
        return this.terminate(socket, name, origin);
      }
      if (name && this.allowed(name)) return this.tunnel(socket, name, 443, buf, origin, () => {});
      this.deny(name ?? '(no SNI)', 443, origin, 'TLS');
      socket.destroy();
    };
    socket.on('data', onData);
  }

  // ---- shared -------------------------------------------------------------------------------

  /** TLS with a leaf for `host` from our CA; the decrypted requests go to the inspector. */
  private terminate(socket: Socket, host: string, origin: Origin): void {
    const tls = new TLSSocket(socket, { isServer: true, secureContext: this.contextFor(host), ALPNProtocols: ['http/1.1'] });
    tls.on('error', () => tls.destroy()); // e.g. a client that does not trust the CA
    tls.once('secure', () => {
      this.connections.set(tls, { target: { scheme: 'https', host, port: 443 }, origin });
      this.inner.emit('connection', tls);
    });
  }

  private onInnerRequest(req: IncomingMessage, res: ServerResponse): void {
    const c = this.connections.get(req.socket as Socket);
    if (!c) {
      res.writeHead(500);
      return void res.end();
    }
    // The TLS connection decides where the bytes go; a Host header naming another host is a confusion attempt.
    const raw = (req.headers.host ?? '').toLowerCase().replace(/:443$/, '');
    if (raw !== c.target.host && hostName(raw) !== c.target.host) {
      req.resume();
      res.writeHead(400, { 'content-type': 'text/plain', connection: 'close' });
      return void res.end(`postguard: Host header does not match the connection (${c.target.host})\n`);
    }
    this.inspector.handle(req, res, c.target, c.origin).catch((e: Error) => this.failed(res, e));
  }

  private tunnel(socket: Socket, host: string, port: number, head: Buffer, origin: Origin, onOpen: () => void): void {
    const up = this.ctx.upstream.tunnel(host, port);
    this.sockets.add(up);
    up.on('close', () => this.sockets.delete(up));
    up.once('connect', () => {
      onOpen();
      if (head.length) up.write(head);
      socket.pipe(up);
      up.pipe(socket);
      socket.resume();
    });
    up.on('error', (e) => {
      if (!socket.destroyed && up.connecting) socket.end(`HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\npostguard: ${host}:${port} unreachable (${(e as { code?: string }).code ?? e.message})\n`);
      else socket.destroy();
    });
    socket.on('close', () => up.destroy());
    this.note({ kind: 'http', action: 'tunnelled', channel: 'http', host, port, agent: origin.agent, client: origin.client, via: origin.via });
  }

  private contextFor(host: string): SecureContext {
    const leaf = this.ctx.ca.leafFor([host]);
    const cached = this.contexts.get(host);
    if (cached?.cert === leaf.certPem) return cached.ctx;
    const ctx = createSecureContext({ key: leaf.keyPem, cert: leaf.certPem, minVersion: 'TLSv1.2' });
    if (this.contexts.size >= 1000) this.contexts.delete(this.contexts.keys().next().value!);
    this.contexts.set(host, { cert: leaf.certPem, ctx });
    return ctx;
  }

  private allowed(host: string): boolean {
    return hostAllowed(this.ctx.policy(), host);
  }

  /** Audit and alert a refused destination; returns the reason for the client. */
  private deny(host: string, port: number, origin: Origin, method: string): string {
    const shown = host.slice(0, 255);
    const record = this.note({ kind: 'http', action: 'denied', channel: 'http', method, host: shown, port, agent: origin.agent, client: origin.client, via: origin.via, rule: 'http.allow', reason: REASONS.egress });
    this.ctx.alerts.raise({ kind: 'egress_denied', severity: 'normal', agent: origin.agent, channel: 'http', event_id: record, summary: `refused ${method} to ${shown}:${port} from ${origin.agent ? `agent ${origin.agent}` : origin.client}: ${REASONS.egress}` });
    return `${shown}:${port} is neither a mail API postguard inspects (on port 443) nor on the policy's HTTP allowlist (http.allow); egress is denied by default`;
  }

  /** The agent behind a proxy request; null when the policy requires credentials and they are wrong or missing. */
  private async origin(req: IncomingMessage, via: Origin['via']): Promise<Origin | null> {
    const client = req.socket.remoteAddress ?? '';
    const policy = this.ctx.policy();
    const header = req.headers['proxy-authorization'];
    if (!header) return policy.agents.size > 0 ? null : { agent: null, client, via };
    const key = createHash('sha256').update(`${policy.version}\0${header}`).digest('base64');
    const hit = this.authCache.get(key);
    if (hit && hit.expires > Date.now()) return { agent: hit.agent, client, via };
    const m = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(header);
    const decoded = m ? Buffer.from(m[1]!, 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    const agent = colon > 0 ? policy.agents.get(decoded.slice(0, colon)) : undefined;
    if (!agent?.passwordHash || !(await verifyPassword(decoded.slice(colon + 1), agent.passwordHash).catch(() => false))) {
      this.ctx.log('warn', 'proxy_auth_failed', { client, user: decoded.slice(0, Math.max(0, Math.min(colon, 64))) });
      return null;
    }
    if (this.authCache.size > 10_000) this.authCache.clear();
    this.authCache.set(key, { agent: agent.id, expires: Date.now() + AUTH_CACHE_MS });
    return { agent: agent.id, client, via };
  }

  private failed(res: ServerResponse, e: Error): void {
    this.ctx.log('error', 'http_internal_error', { error: e.message });
    if (res.headersSent) return void res.destroy();
    res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(`postguard: ${(e as { code?: string }).code ?? 'internal error'}\n`);
  }

  private note(input: Parameters<HttpContext['store']['recordSoon']>[0]): string {
    return this.ctx.store.recordSoon(input);
  }

}

/** Is `host` on the policy's HTTP egress allowlist? Domains compared as A-labels; IPs only exactly. */
export function hostAllowed(policy: Policy, host: string): boolean {
  return policy.http.allow.some((p) => (p.kind === 'domain' ? p.domain === host : p.kind === 'subdomains' ? host.endsWith(`.${p.domain}`) : false));
}

/** A host name as a comparable A-label (IP literals as they are); null if it is not a host name. */
function hostName(raw: string): string | null {
  const h = raw.replace(/^\[|\]$/g, '').toLowerCase();
  if (isIP(h)) return h;
  const d = normalizeDomain(h);
  return d.ok ? d.value : null;
}

function badRequest(socket: Socket | import('node:stream').Duplex, err: Error & { code?: string }): void {
  if ((socket as Socket).writable && err.code !== 'ECONNRESET') {
    socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\npostguard: malformed HTTP request (${err.code ?? 'parse error'})\n`);
  } else socket.destroy();
}
