// The `bpf/egressd` child process and its NDJSON protocol (bpf/PROTOCOL.md): one JSON event per
// stdout line, one JSON command per stdin line. The loader owns no policy; this side decides. Every
// line is checked against the shape the protocol gives it: a line that is not one is reported as an
// `error` event, never trusted and never fatal.

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

// --- events (mirroring bpf/PROTOCOL.md) ------------------------------------------------------------

export type Family = 4 | 6;

/** What every process event carries. `pid` is the host pid; `ts_ns` is CLOCK_MONOTONIC. */
export interface ProcessFields {
  pid: number;
  tid: number;
  cgroup_id: number;
  comm: string;
  ts_ns: number;
}

export interface ReadyEvent { type: 'ready'; probes: number; version: number }
export interface AttachEvent { type: 'attach'; path: string; dev?: number; ino?: number; lib?: 'openssl' | 'gnutls' | 'go'; symbols?: string[]; ok: boolean; error?: string }
export interface UncoveredEvent { type: 'uncovered'; path: string; pid: number; reason: string }
export interface SslWriteEvent extends ProcessFields {
  type: 'ssl_write';
  fn: 'SSL_write' | 'SSL_write_ex' | 'gnutls_record_send' | 'go_tls_write' | string;
  /** Hex text of the SSL* (or Go conn) pointer: a stream's identity until it is freed. */
  ssl: string;
  fd: number;
  daddr: string | null;
  dport: number | null;
  family: Family | null;
  sni: string | null;
  /** The whole write; `offset`/`cap` place this record's bytes in it. */
  len: number;
  offset: number;
  cap: number;
  data_b64: string;
}
export interface BindEvent extends ProcessFields { type: 'bind'; ssl: string; fd: number; daddr: string; dport: number; family: Family; via: string }
export interface WriteEvent extends ProcessFields { type: 'write'; fd: number; daddr: string; dport: number; family: Family; len: number; data_b64: string }
export interface ConnectEvent extends ProcessFields { type: 'connect'; fd: number; daddr: string; dport: number; family: Family; proto: 'tcp' | 'udp' }
export interface ExecEvent extends ProcessFields { type: 'exec'; exe: string; stopped?: boolean }
export interface KillEvent extends ProcessFields { type: 'kill'; signal: number; reason: 'marker' | 'smtp_connect' | string; fn?: string; syscall?: string; daddr: string | null; dport: number | null; family?: Family | null; marker?: string }
export interface DenyEvent extends Partial<ProcessFields> { type: 'deny'; hook: string; daddr: string; dport: number; family?: Family; proto?: 'tcp' | 'udp' }
export interface StatsEvent { type: 'stats'; events: number; drops: number }
export interface ErrorEvent { type: 'error'; message: string }

export type LoaderEvent =
  | ReadyEvent | AttachEvent | UncoveredEvent | SslWriteEvent | BindEvent | WriteEvent | ConnectEvent
  | ExecEvent | KillEvent | DenyEvent | StatsEvent | ErrorEvent;

export type LoaderCommand =
  | { cmd: 'watch_cgroup'; path: string }
  | { cmd: 'attach'; path: string }
  | { cmd: 'relay'; addr: string; port: number }
  | { cmd: 'exclude_pid'; pid: number };

// Required fields and their JSON types, per event type. Nullable fields (an unbound write's
// address) and optional ones are not listed: consumers read them defensively.
const S = 'string', N = 'number', B = 'boolean';
const PROC = { pid: N, tid: N, cgroup_id: N, comm: S, ts_ns: N };
const SHAPES: Record<LoaderEvent['type'], Record<string, string>> = {
  ready: { probes: N },
  attach: { path: S, ok: B },
  uncovered: { path: S, reason: S },
  ssl_write: { ...PROC, fn: S, ssl: S, len: N, offset: N, cap: N, data_b64: S },
  bind: { ...PROC, ssl: S, daddr: S, dport: N },
  write: { ...PROC, fd: N, daddr: S, dport: N, len: N, data_b64: S },
  connect: { ...PROC, daddr: S, dport: N },
  exec: { ...PROC, exe: S },
  kill: { ...PROC, reason: S },
  deny: { daddr: S, dport: N },
  stats: { events: N, drops: N },
  error: { message: S },
};

/** One stdout line as an event; a line that breaks the protocol comes back as an `error` event naming why. */
export function decodeEvent(line: string): LoaderEvent {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return { type: 'error', message: `loader printed a line that is not JSON: ${JSON.stringify(line.slice(0, 120))}` };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { type: 'error', message: 'loader printed a JSON value that is not an object' };
  const e = v as Record<string, unknown>;
  const shape = typeof e.type === 'string' && Object.hasOwn(SHAPES, e.type) ? SHAPES[e.type as LoaderEvent['type']] : undefined;
  if (!shape) return { type: 'error', message: `loader printed an event of unknown type ${JSON.stringify(String(e.type).slice(0, 40))}` };
  for (const [k, t] of Object.entries(shape)) {
    if (typeof e[k] !== t) return { type: 'error', message: `loader event ${String(e.type)}: field ${k} must be a ${t}` };
  }
  return e as unknown as LoaderEvent;
}

// --- the child process ---------------------------------------------------------------------------------

/** `bpf/egressd` in the package (from dist/monitor/ or src/monitor/, two levels up), unless POSTGUARD_EGRESSD names another. */
export function egressdPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.POSTGUARD_EGRESSD || fileURLToPath(new URL('../../bpf/egressd', import.meta.url));
}

/** The loader refused to run (`code` 2: a missing privilege or kernel feature, its message says which). */
export class LoaderError extends Error {
  constructor(message: string, readonly code: number) {
    super(message);
  }
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last lines it wrote on stderr (its reason for exiting, when it has one). */
  stderr: string;
}

export interface LoaderOptions {
  path?: string;
  env?: NodeJS.ProcessEnv;
  onEvent: (e: LoaderEvent) => void;
  /** Each stderr line (libbpf's messages, the loader's own warnings). */
  onStderr?: (line: string) => void;
}

/** A running `egressd monitor …`: events arrive through `onEvent`, in order, one line at a time. */
export class Loader {
  readonly exited: Promise<Exit>;
  private readonly child: ChildProcess;
  private readonly tail: string[] = [];
  private done = false;

  constructor(args: string[], opts: LoaderOptions) {
    this.child = spawn(opts.path ?? egressdPath(), args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    // A write to a loader that already exited must not crash the monitor (EPIPE).
    this.child.stdin!.on('error', () => {});
    createInterface({ input: this.child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
      if (line.trim() !== '') opts.onEvent(decodeEvent(line));
    });
    createInterface({ input: this.child.stderr!, crlfDelay: Infinity }).on('line', (line) => {
      this.tail.push(line.slice(0, 1000));
      if (this.tail.length > 20) this.tail.shift();
      opts.onStderr?.(line);
    });
    this.exited = new Promise((resolve) => {
      const finish = (code: number | null, signal: NodeJS.Signals | null) => {
        if (this.done) return;
        this.done = true;
        // 'close' waits for stdout/stderr to drain, so every event was delivered before this.
        resolve({ code, signal, stderr: this.tail.join('\n') });
      };
      this.child.once('error', (e) => {
        this.tail.push(`cannot run ${opts.path ?? egressdPath()}: ${e.message}`);
        finish(127, null);
      });
      this.child.once('close', finish);
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  send(cmd: LoaderCommand): void {
    if (!this.done && this.child.stdin!.writable) this.child.stdin!.write(`${JSON.stringify(cmd)}\n`);
  }

  /** Close stdin and send SIGTERM (the loader detaches its probes and exits); SIGKILL after `graceMs`. */
  async stop(graceMs = 3000): Promise<Exit> {
    if (!this.done) {
      this.child.stdin!.end();
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      try {
        return await this.exited;
      } finally {
        clearTimeout(timer);
      }
    }
    return this.exited;
  }
}

/** Run a one-shot subcommand (`enforce`, `unenforce`, `check`) to completion; a non-zero exit is a LoaderError with its stderr. */
export async function runEgressd(args: string[], path = egressdPath(), env: NodeJS.ProcessEnv = process.env, timeoutMs = 30_000): Promise<{ stdout: string; stderr: string }> {
  const child = spawn(path, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stderr.on('data', (c: Buffer) => err.push(c));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => {
    child.once('error', (e) => {
      err.push(Buffer.from(`cannot run ${path}: ${e.message}`));
      resolve(127);
    });
    child.once('close', (c) => resolve(c));
  });
  clearTimeout(timer);
  const stdout = Buffer.concat(out).toString('utf8');
  const stderr = Buffer.concat(err).toString('utf8').trim();
  if (code !== 0) throw new LoaderError(stderr || `egressd ${args[0]} exited with status ${code ?? 'killed (timeout)'}`, code === 2 ? 2 : 1);
  return { stdout, stderr };
}
