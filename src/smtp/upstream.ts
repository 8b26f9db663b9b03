// Delivery to the configured upstream, used only to hand over envelopes the policy has already
// decided and bytes the relay has already checked (never agent data as options: S31).
// TLS to the upstream is always required and verified: system store + POSTGUARD_UPSTREAM_CA.

import { PassThrough } from 'node:stream';
import type { ResolveMap } from '../config.js';
import { resolveTarget, sniFor, upstreamSecureContext } from '../tls/trust.js';
import { SmtpPool, type Session } from './pool.js';

/** A recipient the upstream refused while taking the message for the others. */
export interface Refusal {
  address: string;
  code: number | null;
  response: string;
}

export type DeliveryResult =
  | { status: 'delivered'; response: string; accepted: string[]; rejected: Refusal[] }
  | { status: 'failed'; temporary: boolean; code: number | null; response: string };

export interface Upstream {
  readonly description: string; // no credentials
  send(from: string, to: string[], raw: Buffer): Promise<DeliveryResult>;
  /**
   * Cut-through (as in Exim's cutthrough_delivery): open the upstream transaction (MAIL, RCPT, DATA)
   * now, while the agent is still sending DATA, and hand over the bytes once the policy has decided.
   * Withdrawing closes that upstream session without the final dot, so nothing is delivered and
   * the session is never reused. Returns null when no pooled session is free: a slow agent must not
   * hold an upstream session others are waiting for.
   */
  begin(from: string, to: string[]): Transmission | null;
  close(): void;
}

export interface Transmission {
  readonly to: readonly string[];
  commit(raw: Buffer): Promise<DeliveryResult>;
  withdraw(): void;
}

export interface UpstreamOptions {
  url: string;
  extraCa: string | null;
  resolve: ResolveMap;
  /** Parallel upstream sessions, reused across messages. */
  maxConnections?: number;
}

export function createUpstream(opts: UpstreamOptions): Upstream {
  const u = new URL(opts.url);
  if (u.protocol !== 'smtp:' && u.protocol !== 'smtps:') throw new Error(`POSTGUARD_UPSTREAM_SMTP must be smtp://… (STARTTLS) or smtps://… (implicit TLS), got ${u.protocol}`);
  const secure = u.protocol === 'smtps:';
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || (secure ? 465 : 587));
  const target = resolveTarget(opts.resolve, host, port);
  const pool = new SmtpPool({
    max: opts.maxConnections ?? 8,
    idleMs: 30_000,
    waitMs: 30_000,
    auth: u.username ? { user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) } : null,
    connection: {
      host: target.host,
      port: target.port,
      secure,
      requireTLS: !secure, // STARTTLS or nothing: a downgrade is a failed delivery, not plaintext
      servername: sniFor(host),
      tls: { rejectUnauthorized: true, minVersion: 'TLSv1.2', secureContext: upstreamSecureContext(opts.extraCa) },
      connectionTimeout: 10_000,
      greetingTimeout: 10_000,
      // Long enough for a cut-through session to wait while the agent uploads a large message.
      socketTimeout: 300_000,
      logger: false,
    },
  });

  const transmit = async (from: string, to: string[], message: Buffer | PassThrough): Promise<DeliveryResult> => {
    let s: Session | undefined;
    try {
      s = await pool.acquire();
      const held = s;
      // Withdrawn while a session was being found: nothing was sent on it, so it stays reusable.
      if (message instanceof PassThrough && message.destroyed) {
        pool.release(held, true);
        s = undefined;
        return { status: 'failed', temporary: true, code: null, response: 'withdrawn before sending' };
      }
      const info = await new Promise<{ response?: string; accepted?: unknown[]; rejected?: unknown[]; rejectedErrors?: { recipient?: string; responseCode?: number; response?: string }[] }>((resolve, reject) =>
        held.conn.send({ from, to }, message, (err, result) => (err ? reject(err) : resolve(result as never))));
      pool.release(held, true);
      const refusals = (info.rejected ?? []).map(String).map((address): Refusal => {
        const e = info.rejectedErrors?.find((r) => r.recipient === address);
        return { address, code: typeof e?.responseCode === 'number' ? e.responseCode : null, response: oneLine(e?.response ?? 'refused') };
      });
      return { status: 'delivered', response: oneLine(String(info.response ?? '')), accepted: (info.accepted ?? []).map(String), rejected: refusals };
    } catch (e) {
      if (s) pool.release(s, false);
      const err = e as { responseCode?: number; response?: string; message: string; code?: string };
      const code = typeof err.responseCode === 'number' ? err.responseCode : null;
      // Only an explicit 5xx from the upstream is permanent; a refused connection, a timeout or a
      // TLS failure may heal, so the agent is told to retry (4xx) and nothing is lost.
      return { status: 'failed', temporary: code === null || code < 500, code, response: oneLine(err.response ?? `${err.code ?? 'error'}: ${err.message}`) };
    }
  };

  return {
    description: `${u.protocol}//${host}:${port}${target.host !== host || target.port !== port ? ` via ${target.host}:${target.port}` : ''}`,
    send: (from, to, raw) => transmit(from, to, raw),
    begin(from, to) {
      if (!pool.hasFree()) return null;
      const body = new PassThrough();
      // Withdrawing errors the stream; nodemailer listens once sending started, but before that
      // nobody does, and an unheard 'error' would take the whole relay down.
      body.on('error', () => {});
      const result = transmit(from, to, body);
      let committed = false;
      return {
        to: [...to],
        commit(raw) {
          committed = true;
          body.end(raw);
          return result;
        },
        withdraw() {
          // The stream error fails the send, and a failed session is closed, never reused.
          if (!committed) body.destroy(new Error('postguard withdrew the message'));
        },
      };
    },
    close: () => pool.close(),
  };
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').slice(0, 300);
}
