// Delivery to the configured upstream with nodemailer, used only to hand over envelopes the policy
// has already decided and bytes the relay has already checked (never agent data as options: S31).
// TLS to the upstream is always required and verified: system store + POSTGUARD_UPSTREAM_CA.

import { isIP } from 'node:net';
import { rootCertificates } from 'node:tls';
import nodemailer from 'nodemailer';
import type { ResolveMap } from '../config.js';

export type DeliveryResult =
  | { status: 'delivered'; response: string; accepted: string[]; rejected: string[] }
  | { status: 'failed'; temporary: boolean; code: number | null; response: string };

export interface Upstream {
  readonly description: string; // no credentials
  send(from: string, to: string[], raw: Buffer): Promise<DeliveryResult>;
  close(): void;
}

export interface UpstreamOptions {
  url: string;
  extraCa: string | null;
  resolve: ResolveMap;
  /** Parallel upstream connections, reused across messages. */
  maxConnections?: number;
}

export function createUpstream(opts: UpstreamOptions): Upstream {
  const u = new URL(opts.url);
  if (u.protocol !== 'smtp:' && u.protocol !== 'smtps:') throw new Error(`POSTGUARD_UPSTREAM_SMTP must be smtp://… (STARTTLS) or smtps://… (implicit TLS), got ${u.protocol}`);
  const secure = u.protocol === 'smtps:';
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || (secure ? 465 : 587));
  const target = opts.resolve.get(`${host.toLowerCase()}:${port}`) ?? { host, port };
  const transport = nodemailer.createTransport({
    host: target.host,
    port: target.port,
    secure,
    requireTLS: !secure, // STARTTLS or nothing: a downgrade is a failed delivery, not plaintext
    pool: true,
    maxConnections: opts.maxConnections ?? 8,
    maxMessages: Infinity,
    auth: u.username ? { user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) } : undefined,
    tls: {
      servername: isIP(host) ? undefined : host, // SNI carries names only (RFC 6066); the IP is still verified
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      ca: opts.extraCa ? [...rootCertificates, opts.extraCa] : undefined,
    },
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 60_000,
    logger: false,
  });
  return {
    description: `${u.protocol}//${host}:${port}${target.host !== host || target.port !== port ? ` via ${target.host}:${target.port}` : ''}`,
    async send(from, to, raw) {
      try {
        const info = await transport.sendMail({ envelope: { from, to }, raw });
        return { status: 'delivered', response: String(info.response ?? ''), accepted: (info.accepted ?? []).map(String), rejected: (info.rejected ?? []).map(String) };
      } catch (e) {
        const err = e as { responseCode?: number; response?: string; message: string; code?: string };
        const code = typeof err.responseCode === 'number' ? err.responseCode : null;
        // Only an explicit 5xx from the upstream is permanent; a refused connection, a timeout or a
        // TLS failure may heal, so the agent is told to retry (4xx) and nothing is lost.
        return { status: 'failed', temporary: code === null || code < 500, code, response: oneLine(err.response ?? `${err.code ?? 'error'}: ${err.message}`) };
      }
    },
    close() {
      transport.close();
    },
  };
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').slice(0, 300);
}
