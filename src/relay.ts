// The composition root of `postguard relay`: config → policy → CA → store → channels → admin.
// Side effects live here and in the channels; the policy decision stays pure.

import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { Metrics } from './admin/metrics.js';
import { AdminServer } from './admin/server.js';
import { AlertHub } from './alerts/hub.js';
import { createOutbound } from './delivery/outbound.js';
import { Quarantine } from './delivery/quarantine.js';
import { DeliveryQueue } from './delivery/queue.js';
import { AgentHistory } from './policy/history.js';
import { adminTokenFile, isLoopback, type Config } from './config.js';
import type { Logger } from './core/log.js';
import { loadPolicyFile } from './policy/load.js';
import { formatPolicyError } from './policy/types.js';
import { PolicyHolder } from './policy/watch.js';
import { HttpChannel } from './http/proxy.js';
import { releaseHttp, viewHeldRequest } from './http/release.js';
import { HttpUpstream } from './http/upstream.js';
import { SmtpChannel } from './smtp/server.js';
import { createUpstream, type Upstream } from './smtp/upstream.js';
import { Store } from './store/store.js';
import { loadOrCreateCa } from './tls/ca.js';

/** package.json's version: one place to bump it. */
export const VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

export interface Relay {
  addresses: { smtp: AddressInfo | null; smtps: AddressInfo | null; proxy: AddressInfo | null; transparent: AddressInfo | null; admin: AddressInfo | null };
  policy: PolicyHolder;
  store: Store;
  alerts: AlertHub;
  quarantine: Quarantine;
  adminToken: string;
  close(): Promise<void>;
}

export class StartupError extends Error {}

export async function startRelay(cfg: Config, log: Logger, opts: { printToken?: (line: string) => void } = {}): Promise<Relay> {
  const loaded = loadPolicyFile(cfg.policyFile);
  if (!loaded.ok) throw new StartupError(`policy has errors:\n${loaded.errors.map(formatPolicyError).join('\n')}`);
  const policy0 = loaded.policy;

  const exposed = [cfg.smtpListen, cfg.smtpsListen, cfg.proxyListen, cfg.transparentListen, cfg.adminListen].filter((l) => l && !isLoopback(l.host));
  if (exposed.length > 0 && !cfg.allowOpen) {
    if (!cfg.adminToken) throw new StartupError('refusing to listen on a non-loopback address without POSTGUARD_ADMIN_TOKEN set (or POSTGUARD_ALLOW_OPEN=1 to allow it explicitly)');
    if (policy0.agents.size === 0) throw new StartupError('refusing to listen on a non-loopback address with a policy that defines no agent credentials: anyone who can connect could send (set POSTGUARD_ALLOW_OPEN=1 to allow it explicitly)');
  }

  const { ca, created } = loadOrCreateCa(cfg.certsDir);
  if (created) log('info', 'ca_created', { dir: cfg.certsDir, ...ca.info() });
  const store = Store.open(cfg.dataDir);
  store.onBackgroundError = (e) => log('error', 'audit_write_failed', { error: e.message });
  const adminToken = cfg.adminToken ?? loadOrCreateToken(cfg.dataDir, opts.printToken ?? ((l) => process.stderr.write(l)));

  // The policy's webhook is read at each alert, so a reload that changes it applies at once.
  let current = policy0;
  const alerts = new AlertHub(store.db, log, { url: () => current.alerts.webhook });
  const policy = new PolicyHolder(policy0, log, {
    onReload: (next, prev) => {
      current = next;
      store.record({ kind: 'policy', action: 'policy_reloaded', policy_version: next.version, previous_version: prev.version, file: next.file });
    },
    onRejected: (errors) => {
      const record = store.record({ kind: 'policy', action: 'policy_rejected', errors: errors.map(formatPolicyError), policy_version: policy.current.version });
      alerts.raise({ kind: 'policy_rejected', severity: 'high', summary: `policy file ${policy.current.file} has errors; the previous policy stays in force: ${formatPolicyError(errors[0]!)}`, event_id: record.id, details: { errors: errors.map(formatPolicyError) } });
    },
  });

  const upstream: Upstream | null = cfg.upstreamSmtp ? createUpstream({ url: cfg.upstreamSmtp, extraCa: cfg.upstreamCa, resolve: cfg.resolve, maxConnections: cfg.queue.concurrency }) : null;
  const queue = upstream && cfg.delivery === 'queue' ? new DeliveryQueue(store, upstream, alerts, log, { concurrency: cfg.queue.concurrency, baseDelayMs: cfg.queue.retryBaseMs, maxDelayMs: cfg.queue.retryMaxMs, maxAgeMs: cfg.queue.maxAgeMs }) : null;
  const outbound = createOutbound(cfg.delivery, store, upstream, queue);
  const quarantine = new Quarantine(store, outbound, () => policy.current, log);
  const names = [cfg.hostname, 'localhost', '127.0.0.1', '::1', ...[cfg.smtpListen, cfg.smtpsListen].flatMap((l) => (l ? [l.host] : []))];
  const leaf = ca.leafFor([...new Set(names.filter((n) => n !== '0.0.0.0' && n !== '::'))]);
  // One history for every channel: an agent's limits count its SMTP and API mail together.
  const history = new AgentHistory();
  const smtp = new SmtpChannel({
    policy: () => policy.current,
    store,
    outbound,
    alerts,
    history,
    tls: { key: leaf.keyPem, cert: leaf.certPem },
    log,
    hostname: cfg.hostname,
    maxSize: cfg.maxMessageSize,
    allowInsecureAuth: [cfg.smtpListen].every((l) => !l || isLoopback(l.host)),
  });

  const httpUpstream = new HttpUpstream({ resolve: cfg.resolve, extraCa: cfg.upstreamCa });
  const http = new HttpChannel({ policy: () => policy.current, store, alerts, history, upstream: httpUpstream, ca, log });
  quarantine.releaseWith('http', (entry, actor) => releaseHttp(entry, policy.current, actor, { store, upstream: httpUpstream }), viewHeldRequest);

  const addresses: Relay['addresses'] = { smtp: null, smtps: null, proxy: null, transparent: null, admin: null };
  const metrics = new Metrics(store, () => ({ version: VERSION, policy: policy.current.version }));
  store.audit.onAppend = (r) => metrics.observe(r);
  const admin = new AdminServer({
    token: adminToken,
    metrics,
    policy: () => ({ policy: policy.current, text: policy.text() }),
    putPolicy: (text, dryRun) => {
      const r = policy.apply(text, dryRun);
      if (!r.ok) return { ok: false, errors: r.errors.map(formatPolicyError) };
      if (r.applied) store.record({ kind: 'admin', action: 'policy_updated', actor: 'admin-api', policy_version: r.version, previous_version: r.previous_version });
      return r;
    },
    onMonitorEvent: (report) => {
      // A bypass is mail that left without passing the relay: always an alert.
      const { id: _id, seq: _seq, time: _time, kind: reportKind, ...fields } = report; // the audit log owns those
      const record = store.record({ ...fields, kind: 'monitor', action: typeof report.action === 'string' ? report.action : 'reported', report_kind: reportKind });
      if (report.kind === 'bypass') {
        const to = Array.isArray(report.recipients) ? ` to ${(report.recipients as string[]).slice(0, 10).join(', ')}` : '';
        alerts.raise({
          kind: 'bypass', severity: 'high', channel: 'monitor', event_id: record.id, agent: null,
          summary: `mail traffic bypassed the relay: ${String(report.protocol ?? 'unknown protocol')} from pid ${String(report.pid ?? '?')} (${String(report.comm ?? '?')}) to ${String(report.destination ?? '?')}${report.sni || report.host ? ` (${String(report.sni ?? report.host)})` : ''}${to}; action ${String(report.action ?? 'alerted')}`,
          details: { audit_id: record.id, pid: report.pid, comm: report.comm, exe: report.exe, destination: report.destination, sni: report.sni, host: report.host, cgroup: report.cgroup, protocol: report.protocol, provider: report.provider, recipients: report.recipients, unknown_recipients: report.unknown_recipients, sender: report.sender, fn: report.fn, marker: report.marker, action: report.action },
        });
      }
      return record.id;
    },
    store,
    alerts,
    quarantine,
    caPem: ca.certPem,
    log,
    info: () => ({
      name: 'postguard',
      version: VERSION,
      // The eBPF monitor never reports the relay's own traffic (its upstream deliveries).
      pid: process.pid,
      listen: Object.fromEntries(Object.entries(addresses).map(([k, a]) => [k, a ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : null])),
      policy: { version: policy.current.version, file: policy.current.file, format: policy.current.format, mode: policy.current.mode },
      upstream: upstream ? upstream.description : 'capture',
      delivery: outbound.mode,
      queue: outbound.mode === 'queue' ? store.queueStats() : null,
    }),
  });

  Object.assign(addresses, await smtp.listen(cfg.smtpListen, cfg.smtpsListen));
  Object.assign(addresses, await http.listen(cfg.proxyListen, cfg.transparentListen));
  addresses.admin = cfg.adminListen ? await admin.listen(cfg.adminListen) : null;
  policy.watch();
  queue?.start();
  const expire = () => {
    try {
      quarantine.expire();
    } catch (e) {
      log('error', 'quarantine_expiry_failed', { error: (e as Error).message });
    }
  };
  expire();
  const expiry = setInterval(expire, 60_000).unref();
  store.record({ kind: 'system', action: 'relay_started', version: VERSION, policy_version: policy0.version, upstream: upstream ? upstream.description : 'capture' });
  log('info', 'relay_started', { version: VERSION, delivery: outbound.mode, ...Object.fromEntries(Object.entries(addresses).map(([k, a]) => [k, a ? `${a.address}:${a.port}` : null])), policy: policy0.file, policy_version: policy0.version, upstream: upstream ? upstream.description : 'capture (no POSTGUARD_UPSTREAM_SMTP)' });

  let closed = false;
  return {
    addresses,
    policy,
    store,
    alerts,
    quarantine,
    adminToken,
    async close() {
      if (closed) return;
      closed = true;
      policy.close();
      clearInterval(expiry);
      await smtp.close();
      await http.close();
      await admin.close();
      await queue?.close();
      alerts.close();
      upstream?.close();
      store.record({ kind: 'system', action: 'relay_stopped' });
      store.close();
      log('info', 'relay_stopped', {});
    },
  };
}

/** The admin token lives in the data dir (0600); it is printed once, when it is created. */
function loadOrCreateToken(dataDir: string, print: (line: string) => void): string {
  const file = adminTokenFile(dataDir);
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const token = randomBytes(32).toString('base64url');
  writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
  print(`postguard: admin token created (shown once; also in ${file}):\n  ${token}\n`);
  return token;
}
