// Configuration from the environment (SPEC §3). Every value is validated here, once, with a message
// that names the variable.

import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { parseDuration, parseSize } from './core/units.js';

export interface Listen {
  host: string;
  port: number;
}

/** `host:port` (lower-case host) → where to connect instead, like curl --resolve. */
export type ResolveMap = Map<string, Listen>;

export interface Config {
  policyFile: string;
  dataDir: string;
  certsDir: string;
  smtpListen: Listen | null;
  smtpsListen: Listen | null;
  adminListen: Listen | null;
  /** HTTP/HTTPS forward proxy (CONNECT). */
  proxyListen: Listen | null;
  /** TLS listener routing by SNI, for agents that ignore proxy settings. */
  transparentListen: Listen | null;
  adminToken: string | null;
  upstreamSmtp: string | null;
  upstreamCa: string | null;
  resolve: ResolveMap;
  maxMessageSize: number;
  /** sync: 250 after the upstream's 250; queue: 250 after an fsync'd store, a worker delivers. */
  delivery: 'sync' | 'queue';
  queue: { concurrency: number; retryBaseMs: number; retryMaxMs: number; maxAgeMs: number };
  /** Allow listening on non-loopback addresses without admin token or agent credentials. */
  allowOpen: boolean;
  hostname: string;
}

export class ConfigError extends Error {}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const upstreamCaFile = env.POSTGUARD_UPSTREAM_CA || null;
  let upstreamCa: string | null = null;
  if (upstreamCaFile) {
    try {
      upstreamCa = readFileSync(upstreamCaFile, 'utf8');
    } catch (e) {
      throw new ConfigError(`POSTGUARD_UPSTREAM_CA: cannot read ${upstreamCaFile}: ${(e as Error).message}`);
    }
    if (!upstreamCa.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(`POSTGUARD_UPSTREAM_CA: ${upstreamCaFile} is not a PEM certificate bundle`);
  }
  const upstream = env.POSTGUARD_UPSTREAM_SMTP || null;
  if (upstream) {
    let u: URL;
    try {
      u = new URL(upstream);
    } catch {
      throw new ConfigError('POSTGUARD_UPSTREAM_SMTP: not a URL (expected smtp://user:pass@host:port or smtps://…)');
    }
    if (u.protocol !== 'smtp:' && u.protocol !== 'smtps:') throw new ConfigError(`POSTGUARD_UPSTREAM_SMTP: scheme must be smtp: (STARTTLS) or smtps: (implicit TLS), not ${u.protocol}`);
  }
  return {
    policyFile: resolve(env.POSTGUARD_POLICY || 'policies/default.yaml'),
    dataDir: dataDirOf(env),
    certsDir: resolve(env.POSTGUARD_CERTS_DIR || './certs'),
    smtpListen: listen('POSTGUARD_SMTP_LISTEN', env.POSTGUARD_SMTP_LISTEN, '127.0.0.1:2525'),
    smtpsListen: listen('POSTGUARD_SMTPS_LISTEN', env.POSTGUARD_SMTPS_LISTEN, '127.0.0.1:2465'),
    adminListen: listen('POSTGUARD_ADMIN_LISTEN', env.POSTGUARD_ADMIN_LISTEN, '127.0.0.1:8025'),
    proxyListen: listen('POSTGUARD_PROXY_LISTEN', env.POSTGUARD_PROXY_LISTEN, '127.0.0.1:3128'),
    transparentListen: listen('POSTGUARD_TRANSPARENT_LISTEN', env.POSTGUARD_TRANSPARENT_LISTEN, 'off'),
    adminToken: env.POSTGUARD_ADMIN_TOKEN || null,
    upstreamSmtp: upstream,
    upstreamCa,
    resolve: resolveMap(env.POSTGUARD_RESOLVE ?? ''),
    maxMessageSize: sizeVar('POSTGUARD_MAX_MESSAGE_SIZE', env.POSTGUARD_MAX_MESSAGE_SIZE, 25 * 1024 * 1024),
    delivery: oneOf('POSTGUARD_DELIVERY', env.POSTGUARD_DELIVERY, ['sync', 'queue'] as const, 'sync'),
    queue: {
      concurrency: intVar('POSTGUARD_QUEUE_CONCURRENCY', env.POSTGUARD_QUEUE_CONCURRENCY, 8),
      retryBaseMs: durationVar('POSTGUARD_QUEUE_RETRY_BASE', env.POSTGUARD_QUEUE_RETRY_BASE, '30s'),
      retryMaxMs: durationVar('POSTGUARD_QUEUE_RETRY_MAX', env.POSTGUARD_QUEUE_RETRY_MAX, '15m'),
      maxAgeMs: durationVar('POSTGUARD_QUEUE_MAX_AGE', env.POSTGUARD_QUEUE_MAX_AGE, '2d'),
    },
    allowOpen: env.POSTGUARD_ALLOW_OPEN === '1' || env.POSTGUARD_ALLOW_OPEN === 'true',
    hostname: env.POSTGUARD_HOSTNAME || 'postguard.local',
  };
}

/** POSTGUARD_DATA_DIR, resolved; also read by the monitor, which needs no other relay setting. */
export function dataDirOf(env: NodeJS.ProcessEnv): string {
  return resolve(env.POSTGUARD_DATA_DIR || './data');
}

/** Where the relay keeps the admin token it generated (0600), and the monitor finds it. */
export function adminTokenFile(dataDir: string): string {
  return join(dataDir, 'admin-token');
}

/** `host:port`, `[v6]:port`, or `off`. */
export function parseListen(name: string, text: string): Listen {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text.trim());
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new ConfigError(`${name}: expected host:port (e.g. 127.0.0.1:2525) or off, got ${JSON.stringify(text)}`);
  return { host: (m[1] ?? m[2])!, port };
}

function listen(name: string, value: string | undefined, fallback: string): Listen | null {
  const text = value ?? fallback;
  return text === 'off' || text === '' ? null : parseListen(name, text);
}

function resolveMap(text: string): ResolveMap {
  const out: ResolveMap = new Map();
  for (const item of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [from, to] = item.split('=');
    if (!from || !to) throw new ConfigError(`POSTGUARD_RESOLVE: expected host:port=ip:port, got ${JSON.stringify(item)}`);
    const src = parseListen('POSTGUARD_RESOLVE', from);
    const dst = parseListen('POSTGUARD_RESOLVE', to);
    if (!isIP(dst.host)) throw new ConfigError(`POSTGUARD_RESOLVE: target must be an IP address, got ${JSON.stringify(dst.host)}`);
    out.set(`${src.host.toLowerCase()}:${src.port}`, dst);
  }
  return out;
}

function sizeVar(name: string, value: string | undefined, fallback: number): number {
  if (!value) return fallback;
  const n = parseSize(value);
  if (n === null || n <= 0) throw new ConfigError(`${name}: expected a size such as 25MB or a number of bytes`);
  return n;
}

function intVar(name: string, value: string | undefined, fallback: number): number {
  if (!value) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new ConfigError(`${name}: expected a positive whole number`);
  return n;
}

function durationVar(name: string, value: string | undefined, fallback: string): number {
  const ms = parseDuration(value || fallback);
  if (ms === null) throw new ConfigError(`${name}: expected a duration such as 250ms, 30s, 15m, 2d`);
  return ms;
}

function oneOf<T extends string>(name: string, value: string | undefined, choices: readonly T[], fallback: T): T {
  if (!value) return fallback;
  if (!(choices as readonly string[]).includes(value)) throw new ConfigError(`${name}: expected one of ${choices.join(' | ')}, got ${JSON.stringify(value)}`);
  return value as T;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
