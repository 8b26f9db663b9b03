// Start a real relay in-process on 127.0.0.1 ephemeral ports, with its own data/certs dirs, plus the
// small helpers the SMTP tests share: a nodemailer transport to it, the sink wiring, polling.

import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer, { type SendMailOptions } from 'nodemailer';
import { expect } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createLogger, type Logger } from '../../src/core/log.js';
import { startRelay, type Relay } from '../../src/relay.js';
import { sleep } from './raw-smtp.js';
import { startSink, type Sink } from './sink.js';

/** The admin token every test relay is started with. */
export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface TestRelay {
  relay: Relay;
  dir: string;
  policyFile: string;
  smtpPort: number;
  smtpsPort: number;
  adminPort: number;
  /** HTTP/HTTPS forward proxy. */
  proxyPort: number;
  /** The transparent SNI listener, when POSTGUARD_TRANSPARENT_LISTEN was given. */
  transparentPort: number | null;
  caPem: string;
  /** The relay's CA as a file, for NODE_EXTRA_CA_CERTS / curl --cacert. */
  caFile: string;
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

export async function startTestRelay(opts: { policy: string; env?: Record<string, string>; log?: Logger }): Promise<TestRelay> {
  const dir = mkdtempSync(join(tmpdir(), 'pg-relay-'));
  const policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, opts.policy);
  const logs: Record<string, unknown>[] = [];
  const log = opts.log ?? createLogger((line) => logs.push(JSON.parse(line) as Record<string, unknown>), 'debug');
  const cfg = loadConfig({
    POSTGUARD_POLICY: policyFile,
    POSTGUARD_DATA_DIR: join(dir, 'data'),
    POSTGUARD_CERTS_DIR: join(dir, 'certs'),
    POSTGUARD_SMTP_LISTEN: '127.0.0.1:0',
    POSTGUARD_SMTPS_LISTEN: '127.0.0.1:0',
    POSTGUARD_ADMIN_LISTEN: '127.0.0.1:0',
    POSTGUARD_PROXY_LISTEN: '127.0.0.1:0',
    POSTGUARD_ADMIN_TOKEN: ADMIN_TOKEN,
    ...opts.env,
  });
  const relay = await startRelay(cfg, log, { printToken: () => {} });
  return {
    relay,
    dir,
    policyFile,
    smtpPort: relay.addresses.smtp!.port,
    smtpsPort: relay.addresses.smtps!.port,
    adminPort: relay.addresses.admin!.port,
    proxyPort: relay.addresses.proxy?.port ?? 0,
    transparentPort: relay.addresses.transparent?.port ?? null,
    caPem: readFileSync(join(dir, 'certs', 'ca.pem'), 'utf8'),
    caFile: join(dir, 'certs', 'ca.pem'),
    logs,
    close: () => relay.close(),
  };
}

/** GET an admin API path with the test token. */
export async function adminGet(r: TestRelay, path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`http://127.0.0.1:${r.adminPort}${path}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  return { status: res.status, body: await res.json() };
}

// --- sending ---------------------------------------------------------------------------------------

/** A nodemailer transport to the relay's STARTTLS port, trusting its CA, TLS required, bounded timeouts; `opts` override. */
export function transport(r: TestRelay, opts: Record<string, unknown> = {}) {
  return nodemailer.createTransport({ host: '127.0.0.1', port: r.smtpPort, tls: { ca: r.caPem }, requireTLS: true, connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 20_000, ...opts });
}

/** What nodemailer resolves a sendMail with (the fields the tests read). */
export type Info = { response: string; accepted: unknown[]; rejected: unknown[] };
/** What nodemailer rejects a sendMail with (an SMTP refusal carries its code and reply). */
export type Failure = Error & { responseCode?: number; response?: string };

/** Send one message on its own connection; a refusal is returned, not thrown. */
export async function send(r: TestRelay, mail: SendMailOptions, opts: Record<string, unknown> = {}): Promise<Info | Failure> {
  const t = transport(r, opts);
  try {
    return (await t.sendMail(mail)) as Info;
  } catch (e) {
    return e as Failure;
  } finally {
    t.close();
  }
}

/** The audit id at the end of an SMTP reply (`250 2.0.0 Delivered by postguard [uuid]`). */
export const idOf = (response: string): string => /\[([0-9a-f-]{36})\]$/.exec(response)![1]!;

// --- relay + upstream sink -------------------------------------------------------------------------

/** The relay environment that makes `sink` its upstream (and trusts the sink's CA). */
export function upstreamEnv(sink: Pick<Sink, 'port' | 'caFile'>): { POSTGUARD_UPSTREAM_SMTP: string; POSTGUARD_UPSTREAM_CA: string } {
  return { POSTGUARD_UPSTREAM_SMTP: `smtp://127.0.0.1:${sink.port}`, POSTGUARD_UPSTREAM_CA: sink.caFile };
}

/** Start a sink, then a relay delivering to it (`env` added to upstreamEnv); the sink is closed again if the relay fails. */
export async function startRelayAndSink(policy: string, env: Record<string, string> = {}): Promise<{ r: TestRelay; sink: Sink }> {
  const sink = await startSink();
  try {
    return { r: await startTestRelay({ policy, env: { ...upstreamEnv(sink), ...env } }), sink };
  } catch (e) {
    await sink.close();
    throw e;
  }
}

/** Close the relay first (its pooled upstream connections would hold the sink open), then the sink; either may be unset. */
export async function closeRelayAndSink(r: TestRelay | undefined, sink: Sink | undefined): Promise<void> {
  await r?.close();
  await sink?.close();
}

/** Run `fn` against a fresh sink and a relay wired to it, then close the relay and then the sink. */
export async function withRelay(policy: string, fn: (r: TestRelay, sink: Sink) => Promise<void>, env: Record<string, string> = {}): Promise<void> {
  const { r, sink } = await startRelayAndSink(policy, env);
  try {
    await fn(r, sink);
  } finally {
    await closeRelayAndSink(r, sink);
  }
}

// --- admin API -------------------------------------------------------------------------------------

/** GET /api/alerts (up to 1000, newest first), optionally of one kind; asserts the 200. */
export async function alerts(r: TestRelay, kind?: string): Promise<any[]> {
  const { status, body } = await adminGet(r, `/api/alerts?limit=1000${kind ? `&kind=${kind}` : ''}`);
  expect(status).toBe(200);
  return body.alerts as any[];
}

/** The alerts pointing at one audit record. */
export async function alertFor(r: TestRelay, eventId: string): Promise<any[]> {
  const { body } = await adminGet(r, '/api/alerts?limit=1000');
  return (body.alerts as any[]).filter((a) => a.event_id === eventId);
}

// --- waiting and ports -----------------------------------------------------------------------------

/** Poll `cond` every 20 ms until it holds; throw after `ms`, naming `what`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, ms = 10_000, what = 'a condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A 127.0.0.1 port nothing listens on (bound, then released): for a child relay, or a dead server. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** The policy many SMTP tests share: company.com allowed, every secret blocked, .kdbx quarantined. */
export function companyPolicy(o: { mode?: string; unknown?: string; extra?: string } = {}): string {
  return `version: 1
mode: ${o.mode ?? 'enforce'}
recipients:
  domains: [company.com]
unknown_recipients: ${o.unknown ?? 'strip'}
secrets:
  - detectors: all
    action: block
attachments:
  - extensions: [kdbx]
    action: quarantine
${o.extra ?? ''}`;
}
