#!/usr/bin/env node
// postguard command line. Each command reads the same environment (SPEC §3).

import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config.js';
import { createLogger, silentLogger } from './core/log.js';
import { createOutbound } from './delivery/outbound.js';
import { Quarantine } from './delivery/quarantine.js';
import { releaseHttp, viewHeldRequest } from './http/release.js';
import { HttpUpstream } from './http/upstream.js';
import { monitorCommand } from './monitor/monitor.js';
import { explain, formatDecision } from './policy/explain.js';
import { loadPolicyFile } from './policy/load.js';
import { hashPassword } from './policy/password.js';
import { formatPolicyError } from './policy/types.js';
import { startRelay, StartupError } from './relay.js';
import { createUpstream } from './smtp/upstream.js';
import { verifyAudit } from './store/audit.js';
import { openDb } from './store/db.js';
import { Store } from './store/store.js';
import { initCa, loadCa } from './tls/ca.js';

const USAGE = `usage:
  postguard relay                         SMTP relay + admin API (what npm start runs)
  postguard policy check FILE             validate a policy; exit 1 with file:line:col errors
  postguard policy explain --from A --to B [--cc C] [--bcc D] [--agent ID] [--policy FILE] [--json]
  postguard policy hash-password          read a password on stdin, print its scrypt hash for the policy
  postguard ca init [--force] | ca show   create / print the interception CA
  postguard audit verify                  check the audit log's hash chain; exit 1 on tampering
  postguard quarantine list | show ID | release ID | delete ID
  postguard monitor [--cgroup PATH]... [--kill] [--enforce-cgroup PATH] [--relay-addr HOST:PORT]...
                                          the eBPF bypass monitor (root); see SPEC §7
  postguard monitor unenforce PATH        remove the pinned enforcement of a cgroup`;

async function main(argv: string[]): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  switch (cmd) {
    case 'relay':
      return relay();
    case 'policy':
      if (sub === 'check') return policyCheck(rest);
      if (sub === 'explain') return policyExplain(rest);
      if (sub === 'hash-password') return policyHash();
      break;
    case 'ca':
      if (sub === 'init') return caInit(rest);
      if (sub === 'show') return caShow();
      break;
    case 'audit':
      if (sub === 'verify') return auditVerify();
      break;
    case 'quarantine':
      if (sub === 'list' || ((sub === 'show' || sub === 'release' || sub === 'delete') && rest[0])) return quarantineCmd(sub, rest[0]);
      break;
    case 'monitor':
      return monitorCommand(argv.slice(1));
    case undefined:
    case 'help':
    case '--help':
      process.stdout.write(`${USAGE}\n`);
      return 0;
  }
  process.stderr.write(`${USAGE}\n`);
  return 2;
}

async function relay(): Promise<number> {
  const log = createLogger();
  const r = await startRelay(loadConfig(), log);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log('info', 'shutdown', { signal });
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await r.close();
  return 0;
}

function policyCheck(args: string[]): number {
  const file = args[0];
  if (!file) {
    process.stderr.write('usage: postguard policy check FILE\n');
    return 2;
  }
  const result = loadPolicyFile(file);
  if (!result.ok) {
    for (const e of result.errors) process.stderr.write(`${formatPolicyError(e)}\n`);
    return 1;
  }
  const p = result.policy;
  process.stdout.write(`${file}: ok (${p.format} format, mode ${p.mode}, ${p.recipients.length} recipient patterns, ${p.agents.size} agents, version ${p.version})\n`);
  return 0;
}

function policyExplain(args: string[]): number {
  const { values } = parseArgs({
    args,
    options: {
      from: { type: 'string' }, to: { type: 'string', multiple: true }, cc: { type: 'string', multiple: true },
      bcc: { type: 'string', multiple: true }, agent: { type: 'string' }, policy: { type: 'string' }, json: { type: 'boolean' },
    },
  });
  const file = values.policy ?? loadConfig().policyFile;
  const result = loadPolicyFile(file);
  if (!result.ok) {
    for (const e of result.errors) process.stderr.write(`${formatPolicyError(e)}\n`);
    return 1;
  }
  const { decision, errors } = explain(result.policy, { from: values.from ?? null, to: values.to ?? [], cc: values.cc ?? [], bcc: values.bcc ?? [], agent: values.agent ?? null });
  for (const e of errors) process.stderr.write(`address refused: ${e}\n`);
  process.stdout.write(`${values.json ? JSON.stringify(decision, null, 2) : formatDecision(decision)}\n`);
  return 0;
}

function policyHash(): number {
  const password = readFileSync(0, 'utf8').replace(/\r?\n$/, '');
  if (!password) {
    process.stderr.write('postguard policy hash-password: empty password on stdin\n');
    return 2;
  }
  process.stdout.write(`${hashPassword(password)}\n`);
  return 0;
}

function caInit(args: string[]): number {
  const ca = initCa(loadConfig().certsDir, { force: args.includes('--force') });
  process.stdout.write(`created CA in ${loadConfig().certsDir}\n${describeCa(ca.info())}\n`);
  return 0;
}

function caShow(): number {
  const ca = loadCa(loadConfig().certsDir);
  process.stdout.write(`${describeCa(ca.info())}\n${ca.certPem.trimEnd()}\n`);
  return 0;
}

function describeCa(i: { subject: string; fingerprint256: string; notBefore: Date; notAfter: Date }): string {
  return `subject: ${i.subject}\nsha256 fingerprint: ${i.fingerprint256}\nvalid: ${i.notBefore.toISOString()} – ${i.notAfter.toISOString()}`;
}

function auditVerify(): number {
  const { dataDir } = loadConfig();
  const result = verifyAudit(openDb(dataDir), dataDir);
  for (const p of result.problems) process.stderr.write(`audit: ${p}\n`);
  process.stdout.write(result.ok ? `audit: ok, ${result.records} records, chain intact\n` : `audit: TAMPERED (${result.problems.length} problems in ${result.records} records)\n`);
  return result.ok ? 0 : 1;
}

/** Works on the data dir directly, so it needs no running relay; release delivers per the config. */
async function quarantineCmd(sub: string, id: string | undefined): Promise<number> {
  const cfg = loadConfig();
  const loaded = loadPolicyFile(cfg.policyFile);
  if (!loaded.ok) {
    for (const e of loaded.errors) process.stderr.write(`${formatPolicyError(e)}\n`);
    return 1;
  }
  const store = Store.open(cfg.dataDir);
  const upstream = sub === 'release' && cfg.upstreamSmtp ? createUpstream({ url: cfg.upstreamSmtp, extraCa: cfg.upstreamCa, resolve: cfg.resolve, maxConnections: 1 }) : null;
  const outbound = createOutbound(cfg.delivery, store, upstream, { offer() {} });
  const q = new Quarantine(store, outbound, () => loaded.policy, silentLogger);
  const httpUpstream = new HttpUpstream({ resolve: cfg.resolve, extraCa: cfg.upstreamCa });
  q.releaseWith('http', (entry, actor) => releaseHttp(entry, loaded.policy, actor, { store, upstream: httpUpstream }), viewHeldRequest);
  const actor = `cli:${userInfo().username}`;
  try {
    switch (sub) {
      case 'list':
        for (const m of q.list(1000)) process.stdout.write(`${m.id}  ${m.time}  expires ${m.expires}  ${m.channel}  agent=${m.agent ?? '-'}  ${m.rule}: ${m.reason}  ${m.envelope.from} -> ${m.envelope.to.join(', ')}\n`);
        return 0;
      case 'show': {
        const m = q.show(id!);
        if (!m) return notFound(id!);
        const { raw, ...meta } = m;
        process.stdout.write(`${JSON.stringify(meta, null, 2)}\n\n${printable(raw.toString('utf8'))}\n`);
        return 0;
      }
      case 'release': {
        const r = await q.release(id!, actor);
        if (!r.ok) {
          process.stderr.write(`postguard: release failed: ${r.error}\n`);
          return r.status === 404 ? 1 : 2;
        }
        process.stdout.write(`released ${id}: ${r.status} to ${r.delivered_to.join(', ')}${r.dropped.length ? ` (not allowed now, dropped: ${r.dropped.join(', ')})` : ''}\n`);
        return 0;
      }
      default:
        if (!q.delete(id!, actor)) return notFound(id!);
        process.stdout.write(`deleted ${id}\n`);
        return 0;
    }
  } finally {
    upstream?.close();
    httpUpstream.close();
    store.close();
  }
}

function notFound(id: string): number {
  process.stderr.write(`postguard: no quarantined message ${id}\n`);
  return 1;
}

/** Held mail is attacker-controlled: never let it drive the terminal (escape sequences). */
function printable(text: string): string {
  return text.replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x9b]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    const known = e instanceof ConfigError || e instanceof StartupError || (e instanceof Error && /CA|ca-key|certs/.test(e.message));
    process.stderr.write(`postguard: ${known ? (e as Error).message : (e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
