// `postguard monitor`: runs bpf/egressd, turns its events into findings (stream.ts, classify.ts) and
// each bypass into one report (report.ts), printed as a JSON line and sent to the relay.
//
// One bypass is one report per flow (pid + destination): findings that arrive within a few
// milliseconds of each other (a connect and its first SMTP write, a kill and the write it stopped)
// are merged, and a flow already reported is reported again only for something new — recipients
// not reported yet, another request that sends mail, a stronger action (alerted < denied < killed).

import { readdirSync, readFileSync, readlinkSync, statSync, existsSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { Mailbox } from '../core/address.js';
import { createLogger, type Logger } from '../core/log.js';
import { loadConfig, parseListen } from '../config.js';
import { PROVIDERS } from '../http/providers/index.js';
import { judgeRecipient } from '../policy/decide.js';
import { loadPolicyFile } from '../policy/load.js';
import { Classifier, connectFinding, denyFinding, killFinding, RelaySet, SMTP_PORTS, type Finding } from './classify.js';
import { egressdPath, Loader, LoaderError, runEgressd, type Exit, type LoaderEvent } from './loader.js';
import { adminToken, adminUrl, bypassReport, Reporter, type Report } from './report.js';
import { formatDestination, StreamAssembler, type StreamOptions, type Write } from './stream.js';

/** What the loader is asked to capture of each write (16 KiB records, up to 1 MiB). */
export const CAPTURE = { chunk: 16 * 1024, maxChunks: 64 };

const RANK = { alerted: 0, denied: 1, killed: 2 } as const;

// --- cgroups ---------------------------------------------------------------------------------------

/** The cgroup v2 mount point, from the text of /proc/mounts (octal escapes undone); null if none. */
export function findCgroup2Mount(mounts: string): string | null {
  for (const line of mounts.split('\n')) {
    const [, dir, type] = line.split(' ');
    if (type === 'cgroup2' && dir) return dir.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  }
  return null;
}

/** A `--cgroup` argument as an absolute directory inside the mount (relative paths are relative to it). */
export function resolveCgroup(mount: string, path: string): string {
  const inside = (p: string) => p === mount || p.startsWith(`${mount}/`);
  let abs = isAbsolute(path) ? resolve(path) : resolve(mount, path);
  if (!inside(abs) && isAbsolute(path)) abs = resolve(mount, `.${path}`);
  if (!inside(abs)) throw new UsageError(`${path}: not inside the cgroup v2 mount ${mount}`);
  let st;
  try {
    st = statSync(abs);
  } catch {
    throw new UsageError(`${path}: no such cgroup (${abs} does not exist)`);
  }
  if (!st.isDirectory()) throw new UsageError(`${path}: not a cgroup directory (${abs})`);
  return abs;
}

/** Where enforcement for a cgroup is pinned: /sys/fs/bpf/postguard/<its path under the mount, sanitized>. */
export function pinDirFor(mount: string, cgroup: string): string {
  const name = relative(mount, cgroup).replace(/[^A-Za-z0-9_.-]+/g, '_').replace(/^[._]+/, '');
  if (!name) throw new UsageError('refusing to enforce on the root cgroup: that would fence off the whole machine, the relay included');
  return `/sys/fs/bpf/postguard/${name}`;
}

/** cgroup ids (the inode of each cgroup directory) under some roots, with their paths. */
export class CgroupIndex {
  private readonly paths = new Map<number, string>();
  private scanned = 0;

  constructor(private readonly roots: readonly string[], private readonly now: () => number = Date.now) {
    this.scan();
  }

  /** The cgroup's path, if it is under one of the roots (a miss rescans, at most once a second). */
  pathOf(id: number | null): string | null {
    if (id === null) return null;
    if (!this.paths.has(id) && this.now() - this.scanned >= 1000) this.scan();
    return this.paths.get(id) ?? null;
  }

  /** Whether the cgroup is `root` or below it. */
  under(id: number | null, root: string): boolean {
    const p = this.pathOf(id);
    return p !== null && (p === root || p.startsWith(`${root}/`));
  }

  private scan(): void {
    this.scanned = this.now();
    let budget = 5000;
    const walk = (dir: string): void => {
      if (budget-- <= 0) return;
      try {
        this.paths.set(statSync(dir).ino, dir);
        for (const d of readdirSync(dir, { withFileTypes: true })) if (d.isDirectory()) walk(join(dir, d.name));
      } catch {
        /* gone meanwhile */
      }
    };
    for (const r of this.roots) walk(r);
  }
}

/** The loader takes at most this many markers, each 1–48 bytes (bpf/PROTOCOL.md). */
export const MAX_MARKERS = 32;

/**
 * Strings whose presence in the first 512 bytes of a TLS write gets the process killed (with
 * `--kill`), most important first: SMTP envelope verbs as clients write them (the match is
 * case-sensitive; python's smtplib sends `mail FROM:`), Bcc fields, every mail-API host name (the
 * Host header). SES's hosts are patterns, not names: its sends are reported, not killed.
 */
export function killMarkers(): { markers: string[]; dropped: string[] } {
  const hosts = PROVIDERS.flatMap((p) => p.hosts.filter((h): h is string => typeof h === 'string'));
  const all = [...new Set(['MAIL FROM:', 'mail FROM:', 'mail from:', 'RCPT TO:', 'rcpt TO:', 'rcpt to:', '"Bcc"', 'bcc=', ...hosts])];
  const fit = all.filter((m) => Buffer.byteLength(m) >= 1 && Buffer.byteLength(m) <= 48);
  return { markers: fit.slice(0, MAX_MARKERS), dropped: [...all.filter((m) => !fit.includes(m)), ...fit.slice(MAX_MARKERS)] };
}

/** `nameserver` lines of /etc/resolv.conf as `IP:53` (`[v6]:53`). */
export function resolvers(resolvConf: string): string[] {
  const out: string[] = [];
  for (const line of resolvConf.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    const ip = m?.[1]?.replace(/%.*$/, '');
    if (ip && isIP(ip)) out.push(isIP(ip) === 6 ? `[${ip}]:53` : `${ip}:53`);
  }
  return [...new Set(out)];
}

// --- the monitor ---------------------------------------------------------------------------------------

export interface MonitorOptions {
  log: Logger;
  reporter: { send(r: Report): void };
  relays: RelaySet;
  /** The relay's pid and the monitor's own: never reported. */
  excludePids: Set<number>;
  capture?: { chunk: number; maxChunks: number };
  stream?: Partial<StreamOptions>;
  /** Cgroups watched and enforced (for the cgroup path in reports, and to tell a denied connect). */
  cgroups?: CgroupIndex | null;
  enforced?: { root: string; allow: RelaySet } | null;
  /** The relay's policy says this recipient is not allowed (reports list such recipients). */
  unknownRecipient?: (m: Mailbox) => boolean;
  /** What the coverage report says about how the monitor runs. */
  settings?: Record<string, unknown>;
  /** How long findings of one flow are gathered into one report (a kill: 2.5 times as long). */
  coalesceMs?: number;
  /** How to read a process's executable (default: the /proc/PID/exe link). */
  exeOf?: (pid: number) => string | null;
}

interface Flow {
  reported: boolean;
  recipients: Set<string>;
  action: number;
  pending: { f: Finding; exe: string | null; timer: NodeJS.Timeout } | null;
  touched: number;
}

export class Monitor {
  private readonly stream: StreamAssembler;
  private readonly classifier = new Classifier();
  private readonly flows = new Map<string, Flow>();
  /** pid → its executable, read when the process is first seen (it may be gone by the report). */
  private readonly exes = new Map<number, { exe: string | null; at: number }>();
  private readonly work = new Set<Promise<void>>();
  private readonly coverage = new Coverage();
  private coverageTimer: NodeJS.Timeout | null = null;
  private isReady = false;
  readonly counts = { events: 0, writes: 0, bypasses: 0, relay: 0, errors: 0 };

  constructor(private readonly o: MonitorOptions) {
    this.stream = new StreamAssembler({ ...(o.capture ?? CAPTURE), ...o.stream }, (w) => this.write(w));
  }

  handle(e: LoaderEvent): void {
    this.counts.events++;
    if ('pid' in e && typeof e.pid === 'number' && e.type !== 'exec') this.noteExe(e.pid);
    switch (e.type) {
      case 'ready':
        this.isReady = true;
        this.coverage.probes = e.probes;
        this.o.log('info', 'ready', { probes: e.probes, version: e.version, ...this.o.settings });
        this.reportCoverage();
        return;
      case 'attach':
        if (this.coverage.attach(e)) this.coverageChanged();
        return;
      case 'uncovered':
        if (!this.coverage.uncovered(e)) return;
        this.o.log('warn', 'uncovered', { path: e.path, pid: e.pid, reason: e.reason });
        return this.coverageChanged();
      case 'stats':
        if (e.drops > this.coverage.drops) {
          this.o.log('warn', 'capture_drops', { drops: e.drops, events: e.events });
          this.coverage.drops = e.drops;
          this.coverageChanged();
        }
        return;
      case 'error':
        this.counts.errors++;
        this.o.log('warn', 'loader_error', { message: e.message.slice(0, 500) });
        return;
      case 'exec':
        this.exes.set(e.pid, { exe: e.exe, at: Date.now() });
        return;
      case 'ssl_write':
        if (!this.o.excludePids.has(e.pid)) this.stream.sslWrite(e);
        return;
      case 'bind':
        if (!this.o.excludePids.has(e.pid)) this.stream.bind(e);
        return;
      case 'write':
        if (!this.o.excludePids.has(e.pid)) this.stream.plainWrite(e);
        return;
      case 'connect': {
        const f = this.o.excludePids.has(e.pid) ? null : connectFinding(e, this.o.relays);
        if (f) this.submit(f);
        return;
      }
      case 'kill':
        return this.submit(killFinding(e));
      case 'deny': {
        const f = denyFinding(e);
        if (f.destination && SMTP_PORTS.has(f.destination.port)) return this.submit(f);
        // Not mail: recorded, not alerted.
        this.o.reporter.send(clean({ kind: 'egress_denied', pid: e.pid, comm: e.comm, destination: f.destination ? formatDestination(f.destination) : undefined, detail: f.detail ?? undefined }));
        return;
      }
    }
  }

  /** Timers: writes that waited for a bind or a chunk, requests that waited for their body, idle state. */
  tick(): void {
    this.stream.tick();
    this.track(this.classifier.tick().then((fs) => fs.forEach((f) => this.submit(f))));
    const now = Date.now();
    for (const [k, flow] of this.flows) if (!flow.pending && now - flow.touched > 600_000) this.flows.delete(k);
  }

  /** Shutdown: everything held goes out as it is, and every report is handed to the reporter. */
  async flush(): Promise<void> {
    this.stream.flush();
    while (this.work.size) await Promise.all([...this.work]);
    for (const f of await this.classifier.flush()) this.submit(f);
    for (const key of this.flows.keys()) this.emit(key);
    if (this.coverageTimer) this.reportCoverage();
  }

  private write(w: Write): void {
    this.counts.writes++;
    if (this.o.relays.has(w.destination)) {
      this.counts.relay++;
      return;
    }
    this.track(this.classifier.write(w).then((fs) => fs.forEach((f) => this.submit(f))));
  }

  private track(p: Promise<void>): void {
    const t = p.catch((e: unknown) => this.o.log('error', 'monitor_classify_failed', { error: (e as Error).message })).finally(() => this.work.delete(t));
    this.work.add(t);
  }

  private submit(f: Finding): void {
    if (this.o.excludePids.has(f.pid)) return;
    const en = this.o.enforced;
    if (en && f.protocol === 'connect' && f.action === 'alerted' && !en.allow.has(f.destination) && this.o.cgroups?.under(f.cgroupId, en.root)) f.action = 'denied';
    let key = `${f.pid}|${f.destination ? formatDestination(f.destination) : '?'}`;
    // A kill event without an address belongs to whatever that process was just doing.
    if (!f.destination) for (const [k, fl] of this.flows) if (fl.pending && k.startsWith(`${f.pid}|`)) key = k;
    let flow = this.flows.get(key);
    if (!flow) {
      flow = { reported: false, recipients: new Set(), action: -1, pending: null, touched: 0 };
      this.flows.set(key, flow);
    }
    flow.touched = Date.now();
    if (flow.pending) return merge(flow.pending.f, f);
    const news = !flow.reported || f.send || RANK[f.action] > flow.action || f.recipients.some((r) => !flow.recipients.has(r.address));
    if (!news) return;
    const exe = this.exes.get(f.pid)?.exe ?? null;
    // A kill event wakes the loader at once; the write it stopped may still be in the ring for ~20 ms.
    const wait = (this.o.coalesceMs ?? 20) * (f.action === 'killed' ? 2.5 : 1);
    flow.pending = { f: { ...f, recipients: [...f.recipients] }, exe, timer: setTimeout(() => this.emit(key), wait) };
  }

  private emit(key: string): void {
    const flow = this.flows.get(key);
    const p = flow?.pending;
    if (!flow || !p) return;
    clearTimeout(p.timer);
    flow.pending = null;
    flow.reported = true;
    flow.action = Math.max(flow.action, RANK[p.f.action]);
    for (const r of p.f.recipients) flow.recipients.add(r.address);
    const report = bypassReport(p.f, { exe: p.exe, cgroup: this.o.cgroups?.pathOf(p.f.cgroupId) ?? null, unknown: this.o.unknownRecipient });
    if (p.f.tsNs) report.detect_ms = Math.round(Number(process.hrtime.bigint() - BigInt(Math.trunc(p.f.tsNs))) / 1e4) / 100;
    this.counts.bypasses++;
    this.o.log('warn', 'bypass', report);
    this.o.reporter.send(report);
  }

  /** Read once per process (again after a minute, pids are reused); an `exec` event says it better. */
  private noteExe(pid: number): void {
    const now = Date.now();
    const known = this.exes.get(pid);
    if (known && now - known.at < 60_000) return;
    if (this.exes.size > 8192) this.exes.clear();
    let exe: string | null = null;
    if (this.o.exeOf) exe = this.o.exeOf(pid);
    else {
      try {
        exe = readlinkSync(`/proc/${pid}/exe`);
      } catch {
        exe = known?.exe ?? null; // already gone: what was known
      }
    }
    this.exes.set(pid, { exe, at: now });
  }

  private coverageChanged(): void {
    if (!this.isReady || this.coverageTimer) return;
    this.coverageTimer = setTimeout(() => this.reportCoverage(), 500);
  }

  private reportCoverage(): void {
    if (this.coverageTimer) clearTimeout(this.coverageTimer);
    this.coverageTimer = null;
    const report = { kind: 'coverage', ...this.coverage.snapshot(), ...this.o.settings };
    this.o.log('info', 'coverage', report);
    this.o.reporter.send(clean(report));
  }
}

/** What is hooked and what cannot be: reported when the monitor is ready and whenever it changes. */
class Coverage {
  probes = 0;
  drops = 0;
  private readonly hooked = new Map<string, { path: string; lib?: string; symbols?: string[] }>();
  private readonly failed = new Map<string, { path: string; error: string }>();
  private readonly missing = new Map<string, { path: string; pid: number; reason: string }>();

  /** True when this changes what is covered (the loader repeats itself on rescans). */
  attach(e: Extract<LoaderEvent, { type: 'attach' }>): boolean {
    // One line per (binary, library): a path's entries are keyed by both.
    const key = `${e.path}\0${e.lib ?? ''}`;
    if (e.ok) {
      const before = JSON.stringify(this.hooked.get(key) ?? null);
      this.hooked.set(key, { path: e.path, lib: e.lib, symbols: e.symbols?.slice(0, 20) });
      return this.failed.delete(e.path) || before !== JSON.stringify(this.hooked.get(key));
    }
    const had = this.failed.has(e.path);
    this.failed.set(e.path, { path: e.path, error: String(e.error ?? 'attach failed').slice(0, 300) });
    return !had;
  }

  uncovered(e: Extract<LoaderEvent, { type: 'uncovered' }>): boolean {
    const had = this.missing.has(e.path);
    this.missing.set(e.path, { path: e.path, pid: e.pid, reason: e.reason.slice(0, 300) });
    return !had;
  }

  snapshot(): Record<string, unknown> {
    const cut = <T>(m: Map<string, T>) => [...m.values()].slice(0, 100);
    return {
      probes: this.probes, drops: this.drops,
      hooked: cut(this.hooked), hooked_count: this.hooked.size,
      failed: cut(this.failed), failed_count: this.failed.size,
      uncovered: cut(this.missing), uncovered_count: this.missing.size,
    };
  }
}

/** Merge a finding into one waiting to be reported for the same flow. */
function merge(a: Finding, b: Finding): void {
  const have = new Set(a.recipients.map((r) => `${r.field}\0${r.address}`));
  for (const r of b.recipients) if (!have.has(`${r.field}\0${r.address}`) && a.recipients.length < 10_000) a.recipients.push(r);
  if (RANK[b.action] > RANK[a.action]) a.action = b.action;
  // What was seen in the data says more than a connect or a kill marker.
  if (a.protocol === 'connect' || (b.plaintext && !a.plaintext)) a.protocol = b.protocol;
  for (const k of ['destination', 'sni', 'host', 'provider', 'endpoint', 'method', 'path', 'sender', 'plaintext', 'detail', 'fn', 'marker', 'cgroupId', 'tsNs'] as const) {
    if (a[k] === null || a[k] === '') (a as unknown as Record<string, unknown>)[k] = b[k];
  }
  if (b.content) a.content = `${a.content}\n${b.content}`.slice(0, 256 * 1024);
  a.send ||= b.send;
}

function clean(r: Record<string, unknown> & { kind: string }): Report {
  for (const k of Object.keys(r)) if (r[k] === null || r[k] === undefined) delete r[k];
  return r;
}

// --- the command -----------------------------------------------------------------------------------------

export class UsageError extends Error {}

export const MONITOR_USAGE = `usage: postguard monitor [--cgroup PATH]... [--kill] [--enforce-cgroup PATH] [--relay-addr HOST:PORT]...
       postguard monitor unenforce PATH`;

interface RelayInfo {
  pid: number | null;
  /** Every listening address (admin included): traffic to these is through the relay. */
  listen: { name: string; host: string; port: number }[];
}

/** The relay's pid and listening addresses from `GET /api/info`; null when it cannot be asked. */
export async function relayInfo(url: string, token: string | null, timeoutMs = 2000): Promise<RelayInfo | null> {
  try {
    const res = await fetch(`${url}/api/info`, { headers: { authorization: `Bearer ${token ?? ''}` }, signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) return null;
    const info = (await res.json()) as { pid?: unknown; listen?: Record<string, unknown> };
    const listen: RelayInfo['listen'] = [];
    for (const [name, v] of Object.entries(info.listen ?? {})) {
      if (typeof v !== 'string') continue;
      try {
        listen.push({ name, ...parseListen(name, v) });
      } catch {
        /* not an address */
      }
    }
    return { pid: Number.isInteger(info.pid) ? (info.pid as number) : null, listen };
  } catch {
    return null;
  }
}

async function addressesOf(host: string): Promise<string[]> {
  if (isIP(host.replace(/^\[|\]$/g, ''))) return [host.replace(/^\[|\]$/g, '')];
  return (await lookup(host, { all: true })).map((a) => a.address);
}

/** CAP_SYS_ADMIN in the effective set (root usually has it; a container may have dropped it). */
function hasCapSysAdmin(): boolean {
  const cap = /^CapEff:\s*([0-9a-f]+)/m.exec(safeRead('/proc/self/status'))?.[1];
  if (cap === undefined) return process.getuid?.() === 0;
  return (BigInt(`0x${cap}`) & (1n << 21n)) !== 0n;
}

const PRIVILEGE = 'the eBPF monitor needs CAP_SYS_ADMIN (uprobes and BPF programs on this kernel): run it as root';

export interface CommandContext {
  env?: NodeJS.ProcessEnv;
  log?: Logger;
  stderr?: (line: string) => void;
  /** Resolves to stop the monitor (default: SIGTERM or SIGINT). */
  stop?: Promise<unknown>;
  mounts?: string;
}

/** `postguard monitor …`: exit status 0 after a clean stop, 2 for usage and privileges, 1 otherwise. */
export async function monitorCommand(args: string[], ctx: CommandContext = {}): Promise<number> {
  const env = ctx.env ?? process.env;
  const log = ctx.log ?? createLogger();
  const fail = (code: number, message: string) => {
    (ctx.stderr ?? ((l) => process.stderr.write(l)))(`postguard monitor: ${message}\n`);
    return code;
  };
  const loaderPath = egressdPath(env);
  // The real loader is the authority on privileges; this only saves starting it for nothing.
  const privileged = () => Boolean(env.POSTGUARD_EGRESSD) || hasCapSysAdmin();
  try {
    if (args[0] === 'unenforce') {
      if (!args[1] || args.length > 2) throw new UsageError(MONITOR_USAGE);
      if (!privileged()) return fail(2, PRIVILEGE);
      const mount = cgroupMount(ctx);
      const pin = pinDirFor(mount, resolveUnenforced(mount, args[1]));
      await runEgressd(['unenforce', '--pin', pin], loaderPath, env);
      log('info', 'unenforced', { pin });
      return 0;
    }
    const { values } = parseArgs({
      args,
      options: { cgroup: { type: 'string', multiple: true }, kill: { type: 'boolean' }, 'enforce-cgroup': { type: 'string' }, 'relay-addr': { type: 'string', multiple: true } },
      strict: true,
      allowPositionals: false,
    });
    const kill = Boolean(values.kill);
    const wanted = [...(values.cgroup ?? []), ...(values['enforce-cgroup'] ? [values['enforce-cgroup']] : [])];
    if (kill && wanted.length === 0) return fail(2, "--kill requires --cgroup PATH: box-wide kills are refused (name the agents' cgroups)");
    if (!privileged()) return fail(2, PRIVILEGE);
    if (!existsSync(loaderPath)) return fail(1, `${loaderPath} is not built: run npm run build:bpf`);
    const mount = wanted.length ? cgroupMount(ctx) : null;
    const cgroups = mount ? [...new Set(wanted.map((p) => resolveCgroup(mount, p)))] : [];
    if (kill && mount && cgroups.includes(mount)) return fail(2, '--kill on the root cgroup is a box-wide kill: refused');
    const enforce = mount && values['enforce-cgroup'] ? resolveCgroup(mount, values['enforce-cgroup']) : null;
    const pin = enforce && mount ? pinDirFor(mount, enforce) : null;

    const relay = await findRelay(env, values['relay-addr'] ?? [], log);
    if (kill && relay.relays.list().length === 0) return fail(2, '--kill without any relay address would kill mail sent through the relay: give --relay-addr');
    let enforceArgs: string[] | null = null;
    if (enforce && pin) {
      const dns = resolvers(safeRead('/etc/resolv.conf'));
      enforceArgs = ['enforce', '--cgroup', enforce, '--pin', pin, ...relay.allow.list().flatMap((d) => ['--allow', formatDestination(d)]), ...dns.flatMap((d) => ['--dns', d])];
      // In force (pinned) before anything is watched; it stays if the monitor exits or crashes.
      await runEgressd(enforceArgs, loaderPath, env);
      log('info', 'enforced', { cgroup: enforce, pin, allow: relay.allow.list().map(formatDestination), dns });
    }
    const exit = await watch({ env, log, loaderPath, cgroups, kill, enforce, enforceArgs, relay, stop: ctx.stop });
    if (exit === 'stopped') return 0;
    if (exit.code === 2) return fail(2, exit.stderr || 'egressd: missing privilege or kernel feature');
    return fail(1, `egressd exited unexpectedly (${exit.code !== null ? `status ${exit.code}` : `signal ${exit.signal}`})${exit.stderr ? `: ${exit.stderr}` : ''}`);
  } catch (e) {
    if (e instanceof UsageError) return fail(2, e.message);
    if (e instanceof LoaderError) return fail(e.code, e.message);
    if ((e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) return fail(2, `${(e as Error).message}\n${MONITOR_USAGE}`);
    throw e;
  }
}

interface Relay {
  /** Its listening addresses, admin included: traffic to these went through the relay. */
  relays: RelaySet;
  /** What an enforced cgroup may connect to: the relay's mail and proxy listeners (not admin). */
  allow: RelaySet;
  /** The relay's pid and the monitor's own. */
  excludePids: Set<number>;
  /** Not answered at start: `learn` is retried later. */
  known: boolean;
  learn: (i: RelayInfo) => Promise<void>;
  url: string;
}

/**
 * Where the relay is: its own answer (`GET /api/info`, retried for a few seconds), `--relay-addr`,
 * and, if it cannot be asked, the listen settings of this environment (the relay reads the same).
 */
async function findRelay(env: NodeJS.ProcessEnv, relayAddrs: string[], log: Logger): Promise<Relay> {
  const url = adminUrl(env);
  const token = adminToken(env);
  if (!token) log('warn', 'monitor_no_admin_token', { hint: 'set POSTGUARD_ADMIN_TOKEN or POSTGUARD_DATA_DIR (the relay keeps its token there): reports are refused without it' });
  const r: Relay = { relays: new RelaySet(), allow: new RelaySet(), excludePids: new Set([process.pid]), known: false, url, learn: async () => {} };
  const add = async (host: string, port: number, enforceToo: boolean) => {
    for (const a of await addressesOf(host)) {
      r.relays.add(a, port);
      if (enforceToo) r.allow.add(a, port);
    }
  };
  r.learn = async (i) => {
    for (const l of i.listen) await add(l.host, l.port, l.name !== 'admin');
    if (i.pid !== null) r.excludePids.add(i.pid);
  };
  for (const a of relayAddrs) {
    const l = parseListenArg(a);
    await add(l.host, l.port, true);
  }
  let info = await relayInfo(url, token);
  for (let i = 0; !info && i < 4; i++) {
    await new Promise((res) => setTimeout(res, 1000));
    info = await relayInfo(url, token);
  }
  if (info) {
    await r.learn(info);
    r.known = true;
    return r;
  }
  log('warn', 'monitor_relay_info_unavailable', { url, using: 'POSTGUARD_*_LISTEN of this environment and --relay-addr; retrying in the background' });
  const cfg = loadConfig(env);
  for (const [name, l] of Object.entries({ smtp: cfg.smtpListen, smtps: cfg.smtpsListen, proxy: cfg.proxyListen, transparent: cfg.transparentListen, admin: cfg.adminListen })) {
    if (l) await add(l.host, l.port, name !== 'admin');
  }
  return r;
}

/** Run the loader (and the enforcement's follower) until stopped or the loader exits; everything held is flushed. */
async function watch(o: {
  env: NodeJS.ProcessEnv; log: Logger; loaderPath: string; cgroups: string[]; kill: boolean; enforce: string | null;
  enforceArgs: string[] | null; relay: Relay; stop?: Promise<unknown>;
}): Promise<'stopped' | Exit> {
  const { env, log, relay } = o;
  const policy = loadPolicyFile(resolve(env.POSTGUARD_POLICY || 'policies/default.yaml'));
  if (!policy.ok) log('warn', 'monitor_policy_unavailable', { detail: 'reports will not name unknown recipients' });
  // Read once found: the token file does not change while the relay runs (re-read until it exists).
  let knownToken: string | null = null;
  const reporter = new Reporter({ url: relay.url, token: () => (knownToken ??= adminToken(env)), log });
  const settings = { cgroups: o.cgroups.length ? o.cgroups : 'all', kill: o.kill, enforce: o.enforce ?? undefined, relay: relay.relays.list().map(formatDestination) };
  const monitor = new Monitor({
    log, reporter, relays: relay.relays, excludePids: relay.excludePids, capture: CAPTURE, settings,
    cgroups: o.cgroups.length ? new CgroupIndex(o.cgroups) : null,
    enforced: o.enforce ? { root: o.enforce, allow: relay.allow } : null,
    unknownRecipient: policy.ok ? (m) => judgeRecipient(policy.policy, null, m) === undefined : undefined,
  });
  const markers = killMarkers();
  if (o.kill && markers.dropped.length) log('warn', 'monitor_markers_dropped', { dropped: markers.dropped, detail: `the loader takes ${MAX_MARKERS} markers of at most 48 bytes: writes carrying these are alerted, not killed` });
  const stderr = (line: string) => log('info', 'loader_log', { message: line.slice(0, 1000) });
  const loader = new Loader(
    [
      'monitor',
      ...o.cgroups.flatMap((c) => ['--cgroup', c]),
      ...(o.kill ? ['--kill', ...markers.markers.flatMap((m) => ['--marker', m])] : []),
      ...relay.relays.list().flatMap((d) => ['--relay', formatDestination(d)]),
      ...[...relay.excludePids].flatMap((p) => ['--exclude-pid', String(p)]),
      '--chunk', String(CAPTURE.chunk), '--max-chunks', String(CAPTURE.maxChunks),
    ],
    { path: o.loaderPath, env, onEvent: (e) => monitor.handle(e), onStderr: stderr },
  );
  // The kernel's refusals as they happen (the pins do not depend on this process).
  const follower = o.enforceArgs ? new Loader([...o.enforceArgs, '--follow'], { path: o.loaderPath, env, onEvent: (e) => monitor.handle(e), onStderr: stderr }) : null;
  let stopping = false;
  void follower?.exited.then((x) => {
    if (!stopping) log('warn', 'enforce_follow_exited', { code: x.code, signal: x.signal, detail: 'enforcement stays pinned; denials are no longer reported as they happen', stderr: x.stderr.slice(0, 500) || undefined });
  });
  const ticker = setInterval(() => monitor.tick(), 50);
  // The relay may come up after the monitor: learn its addresses and pid then, and tell the loader.
  const retry = relay.known
    ? null
    : setInterval(() => {
        void relayInfo(relay.url, adminToken(env)).then(async (i) => {
          if (!i || relay.known) return;
          relay.known = true;
          clearInterval(retry!);
          const before = new Set(relay.relays.list().map(formatDestination));
          await relay.learn(i);
          for (const d of relay.relays.list()) if (!before.has(formatDestination(d))) loader.send({ cmd: 'relay', addr: d.addr, port: d.port });
          if (i.pid !== null) loader.send({ cmd: 'exclude_pid', pid: i.pid });
          log('info', 'monitor_relay_info', { relay: relay.relays.list().map(formatDestination), pid: i.pid });
        });
      }, 5000);
  const stop = o.stop ?? new Promise<string>((r) => {
    process.once('SIGTERM', () => r('SIGTERM'));
    process.once('SIGINT', () => r('SIGINT'));
  });
  const why = await Promise.race([stop.then((s) => ({ stop: String(s) })), loader.exited.then((exit) => ({ exit }))]);
  stopping = true;
  clearInterval(ticker);
  if (retry) clearInterval(retry);
  const exit = 'exit' in why ? why.exit : await loader.stop();
  await follower?.stop();
  await monitor.flush();
  const flushed = await reporter.flush(5000);
  reporter.close();
  log('info', 'monitor_stopped', { reason: 'stop' in why ? why.stop : `loader exited (${exit.code ?? exit.signal})`, reports_sent: reporter.stats.sent, reports_unsent: reporter.queued, ...monitor.counts, flushed });
  return 'stop' in why ? 'stopped' : exit;
}

function cgroupMount(ctx: CommandContext): string {
  const mount = findCgroup2Mount(ctx.mounts ?? safeRead('/proc/mounts'));
  if (!mount) throw new UsageError('no cgroup v2 mount in /proc/mounts: --cgroup, --enforce-cgroup and unenforce need one');
  return mount;
}

/** Unenforce works on a cgroup that may be gone already: only the path is needed. */
function resolveUnenforced(mount: string, path: string): string {
  try {
    return resolveCgroup(mount, path);
  } catch {
    const abs = isAbsolute(path) && (path === mount || path.startsWith(`${mount}/`)) ? resolve(path) : resolve(mount, isAbsolute(path) ? `.${path}` : path);
    if (!abs.startsWith(`${mount}/`)) throw new UsageError(`${path}: not inside the cgroup v2 mount ${mount}`);
    return abs;
  }
}

function parseListenArg(text: string): { host: string; port: number } {
  try {
    return parseListen('--relay-addr', text);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
