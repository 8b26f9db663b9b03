// Where upstream connections go and whom they trust, for every channel (SMTP delivery, HTTPS
// forwarding, tunnels): Node's bundled Mozilla store plus POSTGUARD_UPSTREAM_CA, and the
// POSTGUARD_RESOLVE overrides (like curl --resolve).

import { isIP } from 'node:net';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import type { Listen, ResolveMap } from '../config.js';

/** CA list for `tls.connect`; undefined keeps Node's default store when nothing is added. */
export function upstreamCa(extraCa: string | null): string[] | undefined {
  return extraCa ? [...rootCertificates, extraCa] : undefined;
}

const contexts = new Map<string, SecureContext>();

/**
 * One TLS context for every upstream connection: passing `ca` to each `tls.connect` rebuilds a
 * store of ~120 roots per connection (~6 ms), which is most of a new connection's cost.
 */
export function upstreamSecureContext(extraCa: string | null): SecureContext {
  const key = extraCa ?? '';
  let ctx = contexts.get(key);
  if (!ctx) {
    ctx = createSecureContext({ ca: upstreamCa(extraCa), minVersion: 'TLSv1.2' });
    contexts.set(key, ctx);
  }
  return ctx;
}

/** The address to connect to for `host:port`, after POSTGUARD_RESOLVE. */
export function resolveTarget(map: ResolveMap, host: string, port: number): Listen {
  return map.get(`${host.toLowerCase()}:${port}`) ?? { host, port };
}

/** SNI carries names only (RFC 6066); an IP is still verified against the certificate. */
export function sniFor(host: string): string | undefined {
  return isIP(host) ? undefined : host;
}
