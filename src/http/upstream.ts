// Forwarding to the real provider (and to allowlisted hosts): `http-proxy-3` on pooled keep-alive
// agents whose connections honour POSTGUARD_RESOLVE and always verify TLS (bundled store +
// POSTGUARD_UPSTREAM_CA), with the certificate checked against the name the agent asked for.

import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { createProxyServer } from 'http-proxy-3';
import type { ResolveMap } from '../config.js';
import { resolveTarget, sniFor, upstreamCa } from '../tls/trust.js';

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

/** Hop-by-hop and framing headers: never forwarded as the client sent them. */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-authorization', 'proxy-authenticate', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect'];

export class HttpUpstream {
  private readonly tlsAgent: HttpsAgent;
  private readonly plainAgent: HttpAgent;
  private readonly proxy = createProxyServer({ xfwd: false, secure: true, proxyTimeout: 120_000, timeout: 120_000 });

  private readonly waiting = new WeakMap<IncomingMessage, { capture: boolean; resolve: (r: UpstreamReply) => void; reject: (e: Error) => void }>();

  constructor(private readonly opts: { resolve: ResolveMap; extraCa: string | null }) {
    this.proxy.on('proxyRes', (proxyRes: IncomingMessage, req: IncomingMessage) => this.onProxyRes(proxyRes, req));
    const ca = upstreamCa(opts.extraCa);
    const resolve = opts.resolve;
    const agentOpts = { keepAlive: true, maxSockets: 64, maxFreeSockets: 16, timeout: 60_000, scheduling: 'lifo' as const };
    this.tlsAgent = new (class extends HttpsAgent {
      override createConnection(o: ConnectionOptions & { host?: string; port?: number }, cb?: (err: Error | null, s: Socket) => void): Socket {
        const name = o.servername || o.host!;
        const to = resolveTarget(resolve, o.host!, Number(o.port));
        return tlsConnect({ ...o, host: to.host, port: to.port, servername: sniFor(name), ca, rejectUnauthorized: true, minVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] }, cb as never);
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
   * Send `req` (whose body was already read: `body`) to `target` and stream the reply to `res`.
   * With `capture`, the reply body is returned instead and the caller answers.
   */
  forward(req: IncomingMessage, res: ServerResponse, target: Target, body: Buffer | 'stream', capture = false): Promise<UpstreamReply> {
    const chunked = req.headers['transfer-encoding'] !== undefined;
    for (const h of HOP_BY_HOP) delete req.headers[h];
    if (body !== 'stream') {
      delete req.headers['content-encoding']; // the body sent on is the decoded one we inspected
      req.headers['content-length'] = String(body.length);
    } else if (chunked) req.headers['transfer-encoding'] = 'chunked';
    return new Promise((resolve, reject) => {
      this.waiting.set(req, { capture, resolve, reject });
      this.proxy.web(
        req,
        res,
        {
          target: { protocol: `${target.scheme}:`, host: target.host, port: target.port },
          agent: target.scheme === 'https' ? this.tlsAgent : this.plainAgent,
          buffer: body !== 'stream' ? Readable.from([body]) : undefined,
          selfHandleResponse: capture,
          changeOrigin: false,
        },
        (err: Error) => {
          this.waiting.delete(req);
          reject(err);
        },
      );
    });
  }

  private onProxyRes(proxyRes: IncomingMessage, req: IncomingMessage): void {
    const w = this.waiting.get(req);
    if (!w) return;
    this.waiting.delete(req);
    if (!w.capture) return w.resolve({ status: proxyRes.statusCode ?? 502 });
    const chunks: Buffer[] = [];
    proxyRes.on('data', (c: Buffer) => chunks.push(c));
    proxyRes.on('end', () => w.resolve({ status: proxyRes.statusCode ?? 502, body: Buffer.concat(chunks), headers: proxyRes.headers }));
    proxyRes.on('error', w.reject);
  }

  /** Send a stored request (a quarantine release) and read the whole reply. */
  send(target: Target, method: string, path: string, headers: Record<string, string | string[]>, body: Buffer): Promise<{ status: number; body: string }> {
    const request = target.scheme === 'https' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const r = request({ host: target.host, port: target.port, method, path, headers, agent: target.scheme === 'https' ? this.tlsAgent : this.plainAgent, timeout: 120_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 502, body: Buffer.concat(chunks).toString('utf8').slice(0, 2000) }));
        res.on('error', reject);
      });
      r.on('timeout', () => r.destroy(new Error('upstream timed out')));
      r.on('error', reject);
      r.end(body);
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
}
