// A fake mail-provider API for tests: a real HTTPS server with a certificate from its own test CA,
// for the providers' real host names (the relay reaches it through POSTGUARD_RESOLVE and trusts it
// through POSTGUARD_UPSTREAM_CA). Records every request; answers what `respond` says.

import { mkdtempSync, writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadOrCreateCa } from '../../src/tls/ca.js';

export interface SinkRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The client port of the connection it came on: the same port twice = a reused (pooled) connection. */
  remotePort: number;
  /** The body as JSON, when it is JSON. */
  json?: any;
}

export interface Reply {
  status?: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export interface HttpsSink {
  port: number;
  caFile: string;
  requests: SinkRequest[];
  /** What to answer; default 200 `{}`. */
  respond: (req: SinkRequest) => Reply;
  /** POSTGUARD_RESOLVE entries sending these hosts (port 443) to the sink. */
  resolve(hosts: string[]): string;
  close(): Promise<void>;
}

export async function startHttpsSink(names: string[], opts: { selfSigned?: boolean } = {}): Promise<HttpsSink> {
  const dir = mkdtempSync(join(tmpdir(), 'pg-https-sink-'));
  const { ca } = loadOrCreateCa(join(dir, 'ca'));
  const leaf = ca.leafFor(names);
  const caFile = join(dir, 'sink-ca.pem');
  writeFileSync(caFile, ca.certPem);
  const sink: HttpsSink = {
    port: 0,
    caFile,
    requests: [],
    respond: () => ({ status: 200, body: {} }),
    resolve: (hosts) => hosts.map((h) => `${h}:443=127.0.0.1:${sink.port}`).join(','),
    close: async () => {},
  };
  const server = createServer({ key: leaf.keyPem, cert: leaf.certPem, keepAlive: true }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const r: SinkRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, remotePort: req.socket.remotePort ?? 0 };
      if (/json/.test(String(req.headers['content-type'] ?? ''))) {
        try {
          r.json = JSON.parse(body.toString('utf8'));
        } catch {
          /* recorded as bytes */
        }
      }
      sink.requests.push(r);
      const reply = sink.respond(r);
      const payload = typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body ?? {});
      res.writeHead(reply.status ?? 200, { 'content-type': 'application/json', ...reply.headers });
      res.end(payload);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  sink.port = (server.address() as AddressInfo).port;
  sink.close = () => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
  return sink;
}
