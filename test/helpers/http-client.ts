// Clients for the HTTP proxy tests: curl (a real client, as agents' scripts use it) and raw bytes
// through a CONNECT tunnel (for requests no well-behaved client would send).

import { execFile } from 'node:child_process';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { TestRelay } from './relay.js';

export interface CurlResult {
  status: number;
  body: string;
  stderr: string;
  code: number;
}

/** curl through the relay's proxy with the relay's CA trusted; `args` are extra curl arguments. */
export function curl(r: TestRelay, url: string, args: string[] = [], input?: Buffer | string): Promise<CurlResult> {
  return new Promise((resolve) => {
    const child = execFile('curl', ['-sS', '--proxy', `http://127.0.0.1:${r.proxyPort}`, '--cacert', r.caFile, '-o', '-', '-w', '\n@@%{http_code}', '--max-time', '20', ...args, url], { encoding: 'buffer', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const text = stdout.toString('utf8');
      const at = text.lastIndexOf('\n@@');
      resolve({ status: Number(text.slice(at + 3)) || 0, body: text.slice(0, at), stderr: stderr.toString('utf8'), code: err ? ((err as { code?: number }).code ?? 1) : 0 });
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

/** POST a body of `contentType` with curl, byte for byte; `headers` are extra `Name: value` lines. */
export function post(r: TestRelay, url: string, body: Buffer | string, contentType: string, headers: string[] = []): Promise<CurlResult> {
  return curl(r, url, ['-X', 'POST', '-H', `content-type: ${contentType}`, ...headers.flatMap((h) => ['-H', h]), '--data-binary', '@-'], body);
}

/** POST a JSON text with curl (the text is sent byte for byte, so duplicate keys survive). */
export function postJson(r: TestRelay, url: string, json: string, headers: string[] = []): Promise<CurlResult> {
  return post(r, url, json, 'application/json', headers);
}

/** Send raw bytes inside a CONNECT tunnel to `host:443`, TLS to the relay's leaf; resolve with what comes back. */
export function rawTunnel(r: TestRelay, host: string, bytes: Buffer | string, waitMs = 1500): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = netConnect(r.proxyPort, '127.0.0.1', () => s.write(`CONNECT ${host}:443 HTTP/1.1\r\nHost: ${host}:443\r\n\r\n`));
    s.once('error', reject);
    let head = '';
    const onHead = (c: Buffer) => {
      head += c.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      s.off('data', onHead);
      if (!head.startsWith('HTTP/1.1 200')) return resolve(head);
      const t = tlsConnect({ socket: s, servername: host, ca: r.caPem }, () => t.write(bytes));
      let out = '';
      t.on('data', (d: Buffer) => (out += d.toString('utf8')));
      t.on('error', (e) => resolve(out || `tls error: ${e.message}`));
      t.on('close', () => resolve(out));
      setTimeout(() => {
        resolve(out);
        t.destroy();
      }, waitMs);
    };
    s.on('data', onHead);
  });
}
