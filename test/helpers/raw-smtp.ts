// A small raw-socket SMTP client for tests that need exact bytes on the wire (smuggling payloads,
// malformed commands, abrupt disconnects), plus a child-process runner with a hard timeout.
// Only ever connects to 127.0.0.1.

import { spawn } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';

export interface Reply {
  code: number;
  /** Every line of the reply, without CRLF. */
  lines: string[];
  /** The text of the last line after the code, e.g. `5.7.1 Recipient <…> is not allowed`. */
  text: string;
}

export const HOST = '127.0.0.1';

export class RawSmtp {
  private socket: net.Socket | tls.TLSSocket;
  private buf = '';
  private replies: Reply[] = [];
  private waiters: { resolve: (r: Reply) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }[] = [];
  private ended = false;
  /** Everything the server sent, for diagnostics. */
  transcript = '';
  /** Resolves when the server closes the connection (or it errors). */
  readonly closed: Promise<void>;
  private markClosed!: () => void;

  private constructor(socket: net.Socket | tls.TLSSocket, private readonly timeoutMs: number) {
    this.socket = socket;
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
    this.attach(socket);
  }

  /** Connect and read the greeting. `tlsCa` = implicit TLS verified against that CA. */
  static async connect(port: number, opts: { tlsCa?: string; timeoutMs?: number } = {}): Promise<{ client: RawSmtp; greeting: Reply }> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const socket = await new Promise<net.Socket | tls.TLSSocket>((resolve, reject) => {
      const s = opts.tlsCa
        ? tls.connect({ host: HOST, port, ca: opts.tlsCa, servername: 'localhost' }, () => resolve(s))
        : net.connect({ host: HOST, port }, () => resolve(s));
      s.once('error', reject);
      s.setTimeout(timeoutMs, () => s.destroy(new Error(`connect to ${HOST}:${port} timed out`)));
    });
    socket.setTimeout(0);
    const client = new RawSmtp(socket, timeoutMs);
    const greeting = await client.read();
    return { client, greeting };
  }

  private attach(socket: net.Socket | tls.TLSSocket): void {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => this.onEnd());
    socket.on('close', () => this.onEnd());
    socket.on('end', () => this.onEnd());
  }

  /** Lines of a multi-line reply still in progress. */
  private partial: string[] = [];

  private onData(chunk: Buffer): void {
    const text = chunk.toString('latin1');
    this.transcript += text;
    this.buf += text;
    let idx: number;
    while ((idx = this.buf.indexOf('\r\n')) !== -1) {
      const line = this.buf.slice(0, idx);
      this.buf = this.buf.slice(idx + 2);
      this.partial.push(Buffer.from(line, 'latin1').toString('utf8'));
      const m = /^(\d{3})( |$)(.*)$/.exec(this.partial[this.partial.length - 1]!);
      if (m) {
        const lines = this.partial;
        this.partial = [];
        this.push({ code: Number(m[1]), lines, text: m[3]! });
      }
    }
  }

  private push(r: Reply): void {
    const w = this.waiters.shift();
    if (w) {
      clearTimeout(w.timer);
      w.resolve(r);
    } else this.replies.push(r);
  }

  private onEnd(): void {
    if (this.ended) return;
    this.ended = true;
    this.markClosed();
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error(`connection closed while waiting for a reply; transcript:\n${this.transcript}`));
    }
  }

  get isClosed(): boolean {
    return this.ended;
  }

  /** The next complete reply (multi-line replies are joined). */
  read(timeoutMs = this.timeoutMs): Promise<Reply> {
    const r = this.replies.shift();
    if (r) return Promise.resolve(r);
    if (this.ended) return Promise.reject(new Error(`connection closed; transcript:\n${this.transcript}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.timer !== timer);
        reject(new Error(`no SMTP reply within ${timeoutMs} ms; transcript:\n${this.transcript}`));
      }, timeoutMs);
      this.waiters.push({ resolve, reject, timer });
    });
  }

  /** Replies received but not yet read (e.g. answers to smuggled commands). */
  get queued(): number {
    return this.replies.length;
  }

  /** Write exact bytes, nothing added (strings as UTF-8). */
  write(bytes: string | Buffer): void {
    if (!this.ended) this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes);
  }

  /** Send one command line (CRLF appended) and read its reply. */
  async cmd(line: string | Buffer, timeoutMs?: number): Promise<Reply> {
    this.write(Buffer.concat([typeof line === 'string' ? Buffer.from(line, 'utf8') : line, Buffer.from('\r\n')]));
    return this.read(timeoutMs);
  }

  /** STARTTLS and upgrade the socket, verifying the server against `ca`. */
  async starttls(ca: string): Promise<Reply> {
    const r = await this.cmd('STARTTLS');
    if (r.code !== 220) return r;
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    plain.removeAllListeners('end');
    plain.removeAllListeners('error');
    plain.on('error', () => {});
    this.buf = '';
    this.partial = [];
    this.socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: plain, ca, servername: 'localhost' }, () => resolve(s));
      s.once('error', reject);
    });
    this.attach(this.socket);
    return r;
  }

  /**
   * A whole transaction: MAIL, each RCPT, DATA, the message (sent as exact bytes, followed by
   * `.\r\n` unless `raw` already ends the data itself). Stops early (no DATA) if no RCPT succeeded.
   */
  async transaction(from: string, to: string[], data: string | Buffer, opts: { terminate?: boolean } = {}): Promise<{ mail: Reply; rcpts: Reply[]; data: Reply | null; final: Reply | null }> {
    const mail = await this.cmd(`MAIL FROM:<${from}>`);
    const rcpts: Reply[] = [];
    if (mail.code !== 250) return { mail, rcpts, data: null, final: null };
    for (const t of to) rcpts.push(await this.cmd(`RCPT TO:<${t}>`));
    if (!rcpts.some((r) => r.code === 250)) {
      await this.cmd('RSET');
      return { mail, rcpts, data: null, final: null };
    }
    const dataReply = await this.cmd('DATA');
    if (dataReply.code !== 354) return { mail, rcpts, data: dataReply, final: null };
    const body = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    this.write(opts.terminate === false ? body : Buffer.concat([body, Buffer.from('.\r\n')]));
    const final = await this.read();
    return { mail, rcpts, data: dataReply, final };
  }

  async quit(): Promise<void> {
    if (this.ended) return;
    try {
      await this.cmd('QUIT', 2_000);
    } catch {
      // the server may close before or instead of answering
    }
    this.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** A message with CRLF line endings, ending in CRLF (so `.\r\n` terminates it). */
export function message(headers: Record<string, string> | string[], body = 'hello\r\n'): string {
  const lines = Array.isArray(headers) ? headers : Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  return `${lines.join('\r\n')}\r\n\r\n${body.endsWith('\r\n') ? body : `${body}\r\n`}`;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Run a child process asynchronously with a hard timeout (SIGKILL), optionally feeding stdin. */
export function run(cmd: string, args: string[], opts: { input?: string | Buffer; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.stdin.on('error', () => {}); // the child may exit before reading all of stdin
    child.on('error', (e) => err.push(Buffer.from(String(e))));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), timedOut });
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/** Resolve after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The final line of every SMTP reply in a transcript (`250 …`, not `250-…`). */
export function finalReplies(transcript: string): { code: number; line: string }[] {
  return transcript
    .split(/\r?\n/)
    .filter((l) => /^\d{3} /.test(l))
    .map((l) => ({ code: Number(l.slice(0, 3)), line: l }));
}

/**
 * A child process driven step by step: write to stdin, wait for something on stdout. Used for
 * `openssl s_client` sessions, so each command is only sent once the previous reply arrived
 * (exact bytes, no -crlf translation). Killed with SIGKILL after `timeoutMs` whatever happens.
 */
export class Interactive {
  stdout = '';
  stderr = '';
  readonly done: Promise<RunResult>;
  private exited = false;
  private readonly child: ReturnType<typeof spawn>;
  private readonly listeners = new Set<() => void>();

  constructor(cmd: string, args: string[], timeoutMs = 20_000) {
    this.child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.child.kill('SIGKILL');
    }, timeoutMs);
    this.child.stdout!.on('data', (c: Buffer) => {
      this.stdout += c.toString('utf8');
      this.notify();
    });
    this.child.stderr!.on('data', (c: Buffer) => {
      this.stderr += c.toString('utf8');
      this.notify();
    });
    this.child.stdin!.on('error', () => {});
    this.done = new Promise((resolve) => {
      this.child.on('error', (e) => (this.stderr += String(e)));
      this.child.on('close', (code, signal) => {
        clearTimeout(timer);
        this.exited = true;
        this.notify();
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr, timedOut });
      });
    });
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }

  write(bytes: string | Buffer): void {
    if (!this.exited) this.child.stdin!.write(bytes);
  }

  end(): void {
    this.child.stdin!.end();
  }

  kill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }

  /** Wait until `pred(stdout)` holds; rejects on timeout or if the process exits first. */
  waitFor(pred: (stdout: string) => boolean, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (pred(this.stdout)) finish();
        else if (this.exited) finish(new Error(`process exited before the expected output\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`));
      };
      const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`)), timeoutMs);
      const finish = (err?: Error): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
        if (err) reject(err);
        else resolve();
      };
      this.listeners.add(check);
      check();
    });
  }

  /** Wait until stdout holds at least `n` complete SMTP replies. */
  waitForReplies(n: number, timeoutMs?: number): Promise<void> {
    return this.waitFor((out) => finalReplies(out).length >= n, timeoutMs);
  }
}
