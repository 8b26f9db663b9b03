// A real upstream SMTP server for tests: STARTTLS with a certificate from its own test CA (so the
// relay must be told to trust it via POSTGUARD_UPSTREAM_CA), recording every message it accepts.

import { mkdtempSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SMTPServer } from 'smtp-server';
import { loadOrCreateCa } from '../../src/tls/ca.js';

export interface SinkMessage {
  from: string;
  to: string[];
  raw: Buffer;
}

export interface Sink {
  port: number;
  /** PEM file of the sink's CA, for POSTGUARD_UPSTREAM_CA. */
  caFile: string;
  messages: SinkMessage[];
  /** MAIL FROM commands seen, including transactions that never completed. */
  transactions: number;
  /** Recipients the sink refuses at RCPT, with the reply code (e.g. 451, 550). */
  refuseRcpt: Map<string, number>;
  /** Make the sink answer the final dot with this code (e.g. 451, 550); null = accept. */
  failWith: number | null;
  /** The sink's CA directory; pass it back (`caDir`) to restart a sink that the same relay trusts. */
  caDir: string;
  close(): Promise<void>;
}

export async function startSink(opts: { secure?: boolean; port?: number; names?: string[]; caDir?: string } = {}): Promise<Sink> {
  const dir = opts.caDir ?? mkdtempSync(join(tmpdir(), 'pg-sink-'));
  const { ca } = loadOrCreateCa(join(dir, 'ca'));
  const leaf = ca.leafFor(opts.names ?? ['127.0.0.1', 'localhost']);
  const caFile = join(dir, 'sink-ca.pem');
  writeFileSync(caFile, ca.certPem);
  const messages: SinkMessage[] = [];
  const sink: Sink = { port: 0, caFile, messages, transactions: 0, refuseRcpt: new Map(), failWith: null, caDir: dir, close: async () => {} };
  const server = new SMTPServer({
    secure: opts.secure ?? false,
    key: leaf.keyPem,
    cert: leaf.certPem,
    authOptional: true,
    disableReverseLookup: true,
    logger: false,
    onAuth: (auth, _s, cb) => cb(null, { user: auth.username }),
    onMailFrom: (_a, _s, cb) => {
      sink.transactions++;
      cb();
    },
    onRcptTo: (a, _s, cb) => {
      const code = sink.refuseRcpt.get(a.address);
      cb(code ? Object.assign(new Error(`sink refuses <${a.address}>`), { responseCode: code }) : null);
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        if (sink.failWith) return cb(Object.assign(new Error(`sink refuses (${sink.failWith})`), { responseCode: sink.failWith }));
        messages.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address), raw: Buffer.concat(chunks) });
        cb(null, 'sink ok');
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  sink.port = (server.server.address() as AddressInfo).port;
  sink.close = () => new Promise((resolve) => server.close(() => resolve()));
  return sink;
}
