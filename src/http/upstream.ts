// Forwarding to the real provider (and to allowlisted hosts), on pooled keep-alive agents whose
// connections honour POSTGUARD_RESOLVE and always verify TLS (bundled store + POSTGUARD_UPSTREAM_CA)
// against the name the agent asked for.
//
// Two ways out: an inspected request's body is already in memory, decided and possibly edited, so
// it is sent with one `https.request(...).end(body)`; streamed requests (reads, plain-HTTP requests
// to allowlisted hosts) go through `http-proxy-3`, which does the piping and header passing.

import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { createProxyServer } from 'http-proxy-3';
import type { ResolveMap } from '../config.js';
import { resolveTarget, sniFor, upstreamSecureContext } from '../tls/trust.js';

export interface Target {
  scheme: 'https' | 'http';
  host: string;
  port: number;
}

export interface UpstreamReply {
  status: number;
  /** Only when asked for (`capture`): the response body, which the caller then sends itself. */
  body?: Buffer;
  headers?: IncomingMessage['headers'];
}

/** Hop-by-hop and framing headers (RFC 9110 §7.6.1): never passed on as received. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authorization', 'proxy-authenticate', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect']);
const TIMEOUT_MS = 120_000;

export class HttpUpstream {
  private readonly tlsAgent: HttpsAgent;
  private readonly plainAgent: HttpAgent;
  private readonly proxy = createProxyServer({ xfwd: false, secure: true, proxyTimeout: TIMEOUT_MS, timeout: TIMEOUT_MS });
  private readonly waiting = new WeakMap<IncomingMessage, { resolve: (r: UpstreamReply) => void; reject: (e: Error) => void }>();

  constructor(private readonly opts: { resolve: ResolveMap; extraCa: string | null }) {
    this.proxy.on('proxyRes', (proxyRes: IncomingMessage, req: IncomingMessage) => {
      const w = this.waiting.get(req);
      this.waiting.delete(req);
      w?.resolve({ status: proxyRes.statusCode ?? 502 });
    });
    const secureContext = upstreamSecureContext(opts.extraCa);
    const resolve = opts.resolve;
    const agentOpts = { keepAlive: true, maxSockets: 64, maxFreeSockets: 16, timeout: 60_000, scheduling: 'lifo' as const };
    this.tlsAgent = new (class extends HttpsAgent {
      override createConnection(o: ConnectionOptions & { host?: string; port?: number }, cb?: (err: Error | null, s: Socket) => void): Socket {
        const name = o.servername || o.host!;
        const to = resolveTarget(resolve, o.host!, Number(o.port));
        return tlsConnect({ ...o, host: to.host, port: to.port, servername: sniFor(name), secureContext, rejectUnauthorized: true, ALPNProtocols: ['http/1.1'] }, cb as never);
      }
    })(agentOpts);
    this.plainAgent = new (class extends HttpAgent {
      override createConnection(o: { host?: string; port?: number }, cb?: (err: Error | null, s: Socket) => void): Socket {
        const to = resolveTarget(resolve, o.host!, Number(o.port));
        const s = netConnect({ host: to.host, port: to.port });
        if (cb) s.once('connect', () => cb(null, s));
        return s;
      }
    })(agentOpts);
  }

  /**
   * Send an inspected request with its (decoded, possibly edited) `body` and stream the reply to
   * `res`. With `capture`, the reply body is returned instead and the caller answers.
   */
  forward(req: IncomingMessage, res: ServerResponse, target: Target, body: Buffer, capture = false): Promise<UpstreamReply> {
    const headers: OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP_BY_HOP.has(k) && k !== 'content-encoding') headers[k] = v;
    headers['content-length'] = body.length;
    return new Promise((resolve, reject) => {
      let ended = false;
      const up = this.request(target, req.method ?? 'POST', req.url ?? '/', headers, (reply) => {
        reply.once('end', () => (ended = true));
        const status = reply.statusCode ?? 502;
        if (capture) return void collect(reply).then((b) => resolve({ status, body: b, headers: reply.headers }), reject);
        res.writeHead(status, passable(reply.rawHeaders));
        reply.pipe(res);
        resolve({ status });
      });
      up.on('error', reject);
      // The agent went away mid-exchange: stop the upstream one too (a finished one stays pooled).
      res.once('close', () => ended || up.destroy());
      up.end(body);
    });
  }

  /** Pass a request on as it streams in (reads; plain HTTP to allowlisted hosts), via http-proxy-3. */
  stream(req: IncomingMessage, res: ServerResponse, target: Target): Promise<UpstreamReply> {
    for (const h of HOP_BY_HOP) if (h !== 'transfer-encoding') delete req.headers[h];
    return new Promise((resolve, reject) => {
      this.waiting.set(req, { resolve, reject });
      this.proxy.web(req, res, { target: { protocol: `${target.scheme}:`, host: target.host, port: target.port }, agent: target.scheme === 'https' ? this.tlsAgent : this.plainAgent, changeOrigin: false }, (err: Error) => {
        this.waiting.delete(req);
        reject(err);
      });
    });
  }

  /** Send a stored request (a quarantine release) and read the whole reply. */
  send(target: Target, method: string, path: string, headers: OutgoingHttpHeaders, body: Buffer): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const up = this.request(target, method, path, headers, (reply) => void collect(reply).then((b) => resolve({ status: reply.statusCode ?? 502, body: b.toString('utf8').slice(0, 2000) }), reject));
      up.on('error', reject);
      up.end(body);
    });
  }

  /** A raw TCP tunnel (CONNECT to an allowlisted host, transparent mode for one). */
  tunnel(host: string, port: number): Socket {
    const to = resolveTarget(this.opts.resolve, host, port);
    return netConnect({ host: to.host, port: to.port });
  }

  close(): void {
    this.tlsAgent.destroy();
    this.plainAgent.destroy();
    this.proxy.close();
  }

  private request(target: Target, method: string, path: string, headers: OutgoingHttpHeaders, onReply: (reply: IncomingMessage) => void) {
    const https = target.scheme === 'https';
    const up = (https ? httpsRequest : httpRequest)({ host: target.host, port: target.port, method, path, headers, agent: https ? this.tlsAgent : this.plainAgent, timeout: TIMEOUT_MS }, onReply);
    up.on('timeout', () => up.destroy(new Error(`no answer from ${target.host} in ${TIMEOUT_MS / 1000} s`)));
    return up;
  }
}

function collect(s: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
}

/** Response headers as received (case, order, repeats), minus the hop-by-hop ones. */
function passable(raw: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (!HOP_BY_HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  return out;
}
