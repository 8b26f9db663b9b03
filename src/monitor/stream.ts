// From loader records to whole writes. A TLS write arrives as one or more `ssl_write` records
// (16 KiB chunks: `offset`, `cap`, total `len`), possibly several times (OpenSSL's WANT_READ retries
// produce identical entry events), possibly before the kernel knows its socket (a `bind` event names
// the destination later; the address is read from the socket at each event, so a write can also show
// none while its socket is not connected or already closed). Per (pid, ssl) this puts the chunks back
// together, drops the retries, holds writes without an address until a bind or a bound write says
// where they go (bounded in bytes and time), and carries the SNI. An `ssl` pointer is reused once the
// library frees it, so a binding to another destination starts a new stream.

import { createHash } from 'node:crypto';
import type { BindEvent, Family, SslWriteEvent, WriteEvent } from './loader.js';

export interface Destination {
  addr: string;
  port: number;
  family: Family;
}

/** `1.2.3.4:25`, `[2001:db8::1]:443`. */
export function formatDestination(d: Destination): string {
  return d.family === 6 ? `[${d.addr}]:${d.port}` : `${d.addr}:${d.port}`;
}

/** The destination of an event, or null when it is not bound; IPv4-mapped IPv6 is IPv4. */
export function destinationOf(addr: string | null | undefined, port: number | null | undefined, family?: number | null): Destination | null {
  if (typeof addr !== 'string' || addr === '' || typeof port !== 'number') return null;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  if (mapped) return { addr: mapped[1]!, port, family: 4 };
  return { addr: addr.toLowerCase(), port, family: family === 6 || addr.includes(':') ? 6 : 4 };
}

/** One write as the application made it. */
export interface Write {
  kind: 'tls' | 'plain';
  pid: number;
  tid: number;
  comm: string;
  cgroupId: number;
  tsNs: number;
  /** The byte stream this write belongs to (one TLS connection, one socket): classifiers keep state per stream. */
  stream: string;
  fn: string | null;
  destination: Destination | null;
  sni: string | null;
  /** Bytes the application wrote. */
  len: number;
  /** Bytes captured: all of them unless `truncated` (capture limit, lost records). */
  data: Buffer;
  truncated: boolean;
}

export interface StreamOptions {
  /** Capture limits the loader was started with: `--chunk` × `--max-chunks` bytes of a write are captured. */
  chunk: number;
  maxChunks: number;
  /** Identical consecutive writes on one stream within this window are one write (WANT_READ retries). */
  dedupeMs?: number;
  /** How long an unbound write waits for its `bind` before it is passed on without a destination. */
  bindWaitMs?: number;
  /** How long a write waits for its missing chunks (a lost record) before it is passed on truncated. */
  chunkWaitMs?: number;
  /** Bound on the unbound bytes held per stream, and for all streams together. */
  maxHeldPerStream?: number;
  maxHeldTotal?: number;
  /** A stream with nothing pending and no event for this long is forgotten. */
  idleMs?: number;
  now?: () => number;
}

interface Chunks {
  tsNs: number;
  tid: number;
  fn: string;
  len: number;
  expect: number;
  parts: Buffer[];
  got: number;
  gaps: boolean;
  since: number;
  event: SslWriteEvent;
  /** The first record had an address: the write is bound (else it waits for one). */
  bound: boolean;
}

interface SslStream {
  key: string;
  gen: number;
  dest: Destination | null;
  sni: string | null;
  chunks: Chunks | null;
  last: { len: number; hash: string; at: number } | null;
  held: Write[];
  heldBytes: number;
  heldSince: number;
  touched: number;
}

export class StreamAssembler {
  private readonly streams = new Map<string, SslStream>();
  private heldTotal = 0;
  private readonly o: Required<Omit<StreamOptions, 'now'>>;
  private readonly now: () => number;
  /** Writes dropped as retries, for the stats line. */
  duplicates = 0;

  constructor(opts: StreamOptions, private readonly emit: (w: Write) => void) {
    this.o = {
      dedupeMs: 1000, bindWaitMs: 250, chunkWaitMs: 200, maxHeldPerStream: 4 << 20, maxHeldTotal: 32 << 20, idleMs: 120_000,
      ...opts,
    };
    this.now = opts.now ?? Date.now;
  }

  sslWrite(e: SslWriteEvent): void {
    const s = this.stream(e.pid, e.ssl);
    const dest = destinationOf(e.daddr, e.dport, e.family);
    if (dest) this.learn(s, dest);
    if (e.sni) s.sni = e.sni;
    const data = Buffer.from(e.data_b64, 'base64');
    const c = s.chunks;
    if (c && (e.offset === 0 || e.len !== c.len || e.offset < c.got)) {
      // A new write began before the last one was whole: that one lost records.
      s.chunks = null;
      this.complete(s, c, true);
    }
    if (!s.chunks) {
      if (e.offset !== 0 && data.length === 0) return;
      s.chunks = { tsNs: e.ts_ns, tid: e.tid, fn: e.fn, len: e.len, expect: Math.min(e.len, this.o.chunk * this.o.maxChunks), parts: [], got: 0, gaps: false, since: this.now(), event: e, bound: dest !== null };
    }
    const cur = s.chunks;
    if (e.offset !== cur.got) cur.gaps = true;
    cur.parts.push(data);
    cur.got = e.offset + data.length;
    if (cur.got >= cur.expect || e.offset + e.cap >= e.len) {
      s.chunks = null;
      this.complete(s, cur, cur.gaps || cur.got < cur.len);
    }
  }

  /** A late binding: the destination of the earlier unbound writes of that ssl, and of those to come. */
  bind(e: BindEvent): void {
    const dest = destinationOf(e.daddr, e.dport, e.family);
    if (dest) this.learn(this.stream(e.pid, e.ssl), dest);
  }

  /** A plain socket write: whole (first 4 KiB), bound, nothing to wait for. */
  plainWrite(e: WriteEvent): void {
    const dest = destinationOf(e.daddr, e.dport, e.family);
    const data = Buffer.from(e.data_b64, 'base64');
    this.emit({
      kind: 'plain', pid: e.pid, tid: e.tid, comm: e.comm, cgroupId: e.cgroup_id, tsNs: e.ts_ns, fn: null,
      stream: `tcp:${e.pid}:${e.fd}:${dest ? formatDestination(dest) : '?'}`, destination: dest, sni: null,
      len: e.len, data, truncated: data.length < e.len,
    });
  }

  /** Time passes: pass on writes that waited too long for a chunk or a bind; forget idle streams. */
  tick(): void {
    const now = this.now();
    for (const s of this.streams.values()) {
      if (s.chunks && now - s.chunks.since >= this.o.chunkWaitMs) {
        const c = s.chunks;
        s.chunks = null;
        this.complete(s, c, true);
      }
      if (s.held.length && now - s.heldSince >= this.o.bindWaitMs) this.release(s);
      if (!s.chunks && !s.held.length && now - s.touched >= this.o.idleMs) this.streams.delete(s.key);
    }
  }

  /** Everything pending goes out now (shutdown). */
  flush(): void {
    for (const s of this.streams.values()) {
      if (s.chunks) {
        const c = s.chunks;
        s.chunks = null;
        this.complete(s, c, true);
      }
      this.release(s);
    }
  }

  get size(): { streams: number; heldBytes: number } {
    return { streams: this.streams.size, heldBytes: this.heldTotal };
  }

  private stream(pid: number, ssl: string): SslStream {
    const key = `${pid}:${ssl}`;
    let s = this.streams.get(key);
    if (!s) {
      s = { key, gen: 0, dest: null, sni: null, chunks: null, last: null, held: [], heldBytes: 0, heldSince: 0, touched: 0 };
      this.streams.set(key, s);
    }
    s.touched = this.now();
    return s;
  }

  /**
   * Where the stream goes now: the held writes go there too. Another destination than before means
   * the pointer was freed and reused: a new stream, which the held writes (made since) belong to.
   */
  private learn(s: SslStream, dest: Destination): void {
    if (s.dest && !sameDestination(s.dest, dest)) {
      if (s.chunks) {
        const c = s.chunks;
        s.chunks = null;
        this.complete(s, c, true);
      }
      s.gen++;
      s.sni = null;
      s.last = null;
      for (const w of s.held) w.stream = `tls:${s.key}:${s.gen}`;
    }
    s.dest = dest;
    for (const w of s.held) w.destination = dest;
    this.release(s);
  }

  private complete(s: SslStream, c: Chunks, truncated: boolean): void {
    const data = c.parts.length === 1 ? c.parts[0]! : Buffer.concat(c.parts);
    const hash = createHash('sha256').update(data).digest('hex');
    const now = this.now();
    const last = s.last;
    s.last = { len: c.len, hash, at: now };
    if (last && last.len === c.len && last.hash === hash && now - last.at <= this.o.dedupeMs) {
      this.duplicates++;
      return;
    }
    const e = c.event;
    const w: Write = {
      kind: 'tls', pid: e.pid, tid: c.tid, comm: e.comm, cgroupId: e.cgroup_id, tsNs: c.tsNs, fn: c.fn,
      stream: `tls:${s.key}:${s.gen}`, destination: c.bound ? s.dest : null, sni: e.sni, len: c.len, data, truncated,
    };
    if (c.bound && s.held.length === 0) {
      w.sni ??= s.sni;
      return this.emit(w);
    }
    // Unbound (or behind unbound ones, to keep the stream in order): held for the bind.
    if (s.held.length === 0) s.heldSince = now;
    s.held.push(w);
    s.heldBytes += data.length;
    this.heldTotal += data.length;
    if (s.heldBytes > this.o.maxHeldPerStream || s.held.length > 256) this.release(s);
    else if (this.heldTotal > this.o.maxHeldTotal) for (const other of this.streams.values()) this.release(other);
  }

  private release(s: SslStream): void {
    const held = s.held;
    if (held.length === 0) return;
    s.held = [];
    this.heldTotal -= s.heldBytes;
    s.heldBytes = 0;
    for (const w of held) {
      w.sni ??= s.sni;
      this.emit(w);
    }
  }
}

export function sameDestination(a: Destination, b: Destination): boolean {
  return a.port === b.port && a.addr === b.addr;
}
