// Is this write mail, and to whom? Pure readers of plaintext (SMTP command lines anywhere in a
// write, HTTP/1.1 requests) and one small per-stream state machine (`Classifier`) that follows a
// request over several writes. Mail-API requests are read by the relay's own provider adapters
// (src/http/providers), so the monitor sees the same recipients the relay would have judged.
// Findings are facts; whether one is reported, and how, is monitor.ts's business.

import type { IncomingHttpHeaders } from 'node:http';
import { networkInterfaces } from 'node:os';
import { parseMailbox, type Mailbox } from '../core/address.js';
import type { RecipientField } from '../core/intent.js';
import type { Provider, RequestInfo } from '../http/adapter.js';
import { decodeBody } from '../http/body.js';
import { endpointFor, providerFor } from '../http/providers/index.js';
import type { ConnectEvent, DenyEvent, KillEvent } from './loader.js';
import { destinationOf, formatDestination, type Destination, type Write } from './stream.js';

export type Protocol = 'smtp-tls' | 'smtp-plain' | 'mail-api' | 'connect';
export type Action = 'alerted' | 'killed' | 'denied';

export const SMTP_PORTS: ReadonlySet<number> = new Set([25, 465, 587, 2525]);

export interface FoundAddress {
  address: string;
  /** Where it was named: an intent field (`envelope` for RCPT TO, `bcc`, …), or `scan` when found by pattern only. */
  field: RecipientField | 'scan';
  source: string;
  /** The parsed mailbox (null when the text would not parse: it is reported as written). */
  mailbox: Mailbox | null;
}

/** Mail traffic that did not go through the relay: what was seen, never more plaintext than needed. */
export interface Finding {
  protocol: Protocol;
  pid: number;
  comm: string;
  cgroupId: number | null;
  tsNs: number | null;
  destination: Destination | null;
  sni: string | null;
  host: string | null;
  provider: string | null;
  endpoint: string | null;
  method: string | null;
  path: string | null;
  recipients: FoundAddress[];
  sender: string | null;
  /** The plaintext the finding is about (the report keeps a masked excerpt of it, nothing more). */
  plaintext: string;
  /** Content for the secret detectors: message texts of a request, or the SMTP write. */
  content: string;
  detail: string | null;
  action: Action;
  fn: string | null;
  marker: string | null;
  /** One request that sends mail: reported even when its flow was reported before. */
  send: boolean;
}

function finding(base: Pick<Finding, 'protocol' | 'pid' | 'comm'> & Partial<Finding>): Finding {
  return {
    cgroupId: null, tsNs: null, destination: null, sni: null, host: null, provider: null, endpoint: null, method: null, path: null,
    recipients: [], sender: null, plaintext: '', content: '', detail: null, action: 'alerted', fn: null, marker: null, send: false,
    ...base,
  };
}

// --- the relay's own addresses ---------------------------------------------------------------------

/** Where "through the relay" goes: its listening addresses (a wildcard listen means every local address). */
export class RelaySet {
  private readonly addrs = new Map<string, Destination>();
  readonly pids = new Set<number>();

  /** Add `host:port` (an IP, or `0.0.0.0`/`::` for every local address); true if it was new. */
  add(host: string, port: number): boolean {
    const hosts = host === '0.0.0.0' || host === '::' ? localAddresses(host === '::') : [host];
    let added = false;
    for (const h of hosts) {
      const d = destinationOf(h.replace(/^\[|\]$/g, ''), port);
      if (!d || this.addrs.has(formatDestination(d))) continue;
      this.addrs.set(formatDestination(d), d);
      added = true;
    }
    return added;
  }

  has(d: Destination | null): boolean {
    return d !== null && this.addrs.has(formatDestination(d));
  }

  list(): Destination[] {
    return [...this.addrs.values()];
  }
}

function localAddresses(v6: boolean): string[] {
  const out = ['127.0.0.1', ...(v6 ? ['::1'] : [])];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' || v6) out.push(a.address.replace(/%.*$/, ''));
  }
  return out;
}

// --- SMTP ------------------------------------------------------------------------------------------------

const SMTP_HINT = /(?:^|\n)(?:MAIL FROM|RCPT TO|EHLO|HELO|LHLO)\b/i;
const PATH_LINE = /^(MAIL FROM|RCPT TO)[ \t]*:[ \t]*(<[^>\r\n]{0,1000}>|[^\s<>]{1,1000})/i;
const HELLO_LINE = /^(?:EHLO|HELO|LHLO)[ \t]+\S/i;

export interface SmtpFacts {
  hello: boolean;
  sender: string | null;
  recipients: FoundAddress[];
}

/**
 * SMTP client commands among the lines of `text`, wherever they are in it (a client may send its
 * whole session in one write, or put it after other bytes). Null when there are none.
 */
export function smtpFacts(text: string): SmtpFacts | null {
  if (!SMTP_HINT.test(text)) return null;
  const facts: SmtpFacts = { hello: false, sender: null, recipients: [] };
  let found = false;
  for (const line of text.split('\n')) {
    const m = PATH_LINE.exec(line);
    if (m) {
      found = true;
      const path = m[2]!;
      if (/^MAIL/i.test(m[1]!)) facts.sender ??= mailboxText(path);
      else addAddress(facts.recipients, path, 'envelope', 'RCPT TO');
    } else if (HELLO_LINE.test(line)) {
      found = facts.hello = true;
    }
  }
  return found ? facts : null;
}

function mailboxText(path: string): string {
  if (path === '<>') return '<>';
  const m = parseMailbox(path);
  return m.ok ? m.value.address : path.replace(/^<|>$/g, '').slice(0, 320);
}

function addAddress(list: FoundAddress[], text: string, field: FoundAddress['field'], source: string): void {
  if (list.length >= 1000) return;
  const m = parseMailbox(text);
  const address = m.ok ? m.value.address : text.replace(/^<|>$/g, '').slice(0, 320);
  if (!address || list.some((r) => r.address === address && r.field === field)) return;
  list.push({ address, field, source, mailbox: m.ok ? m.value : null });
}

const LOOSE_ADDRESS = /[A-Za-z0-9._%+'=-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}/g;

/** Every address-shaped string in `text`: what can still be said about a body the adapter could not read. */
export function scanAddresses(text: string, limit = 100): FoundAddress[] {
  const out: FoundAddress[] = [];
  for (const m of text.matchAll(LOOSE_ADDRESS)) {
    addAddress(out, m[0], 'scan', 'pattern');
    if (out.length >= limit) break;
  }
  return out;
}

// --- HTTP/1.1 ----------------------------------------------------------------------------------------

export interface RequestHead {
  method: string;
  target: string;
  headers: IncomingHttpHeaders;
  /** Bytes of the request line and headers, blank line included. */
  length: number;
  text: string;
}

const REQUEST_LINE = /^([A-Z][A-Z-]{2,15}) (\S{1,8192}) HTTP\/1\.[01]\r?\n/;
const H2_PREFACE = 'PRI * HTTP/2.0\r\n';
const MAX_HEAD = 64 * 1024;

/** The request line and headers at the start of `buf`: `none` when it is not an HTTP/1.x request, `more` when the head is not whole yet. */
export function parseRequestHead(buf: Buffer): { state: 'none' } | { state: 'more' } | ({ state: 'done' } & RequestHead) {
  const start = buf.subarray(0, Math.min(buf.length, MAX_HEAD)).toString('latin1');
  const line = REQUEST_LINE.exec(start);
  if (!line) return { state: 'none' };
  let end = start.indexOf('\r\n\r\n');
  let sep = 4;
  const lf = start.indexOf('\n\n');
  if (lf !== -1 && (end === -1 || lf < end)) [end, sep] = [lf, 2];
  if (end === -1) return buf.length >= MAX_HEAD ? { state: 'none' } : { state: 'more' };
  const text = start.slice(0, end + sep);
  const headers: IncomingHttpHeaders = {};
  for (const raw of text.slice(line[0].length).split(/\r?\n/)) {
    const colon = raw.indexOf(':');
    if (colon <= 0) continue;
    const name = raw.slice(0, colon).trim().toLowerCase();
    const value = raw.slice(colon + 1).trim();
    const had = headers[name];
    if (had === undefined) headers[name] = name === 'set-cookie' ? [value] : value;
    else headers[name] = Array.isArray(had) ? [...had, value] : `${had}, ${value}`;
  }
  return { state: 'done', method: line[1]!, target: line[2]!, headers, length: text.length, text };
}

/** A chunked body at the start of `buf`: the decoded bytes and how many raw bytes it took, once the last chunk is in. */
export function dechunk(buf: Buffer): { state: 'more' } | { state: 'invalid' } | { state: 'done'; body: Buffer; consumed: number } {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', at);
    if (eol === -1) return eol - at > 1024 ? { state: 'invalid' } : { state: 'more' };
    const size = /^([0-9a-fA-F]{1,8})(?:;[^\r\n]*)?$/.exec(buf.subarray(at, eol).toString('latin1'));
    if (!size) return { state: 'invalid' };
    const n = parseInt(size[1]!, 16);
    at = eol + 2;
    if (n === 0) {
      // Trailers, then the blank line.
      for (;;) {
        const end = buf.indexOf('\r\n', at);
        if (end === -1) return { state: 'more' };
        const empty = end === at;
        at = end + 2;
        if (empty) return { state: 'done', body: Buffer.concat(parts), consumed: at };
      }
    }
    if (buf.length < at + n + 2) return { state: 'more' };
    parts.push(buf.subarray(at, at + n));
    at += n + 2;
  }
}

function headerValue(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** Host, path and query of a request target: origin form, or absolute form (a request to a proxy). */
function targetParts(target: string, hostHeader: string | undefined): { host: string | null; path: string; query: string } {
  if (/^https?:\/\//i.test(target)) {
    try {
      const u = new URL(target);
      return { host: u.hostname.toLowerCase(), path: u.pathname, query: u.search.slice(1) };
    } catch {
      /* fall through: read as written */
    }
  }
  const q = target.indexOf('?');
  const host = hostHeader ? hostHeader.trim().toLowerCase().replace(/:\d+$/, '').replace(/^\[|\]$/g, '').replace(/\.$/, '') : null;
  return { host: host || null, path: q === -1 ? target : target.slice(0, q), query: q === -1 ? '' : target.slice(q + 1) };
}

const READS = new Set(['GET', 'HEAD', 'OPTIONS']);

export interface MailApiRequest {
  head: RequestHead;
  /** The body as captured (still Content-Encoded). */
  body: Buffer;
  /** The body is not all there (capture limit, lost records, stream ended early). */
  incomplete: boolean;
  sni: string | null;
}

/**
 * What a request to a mail-API host sends, read by the provider's adapter: null when it is a read
 * (reads carry no mail and pass the relay too). A body the adapter refuses is still a finding, with
 * the addresses found in it by pattern and the reason in `detail`.
 */
export async function readMailApi(req: MailApiRequest): Promise<Pick<Finding, 'host' | 'provider' | 'endpoint' | 'method' | 'path' | 'recipients' | 'sender' | 'content' | 'detail' | 'send'> | null> {
  const { head } = req;
  const t = targetParts(head.target, headerValue(head.headers, 'host'));
  const provider = (t.host ? providerFor(t.host) : undefined) ?? (req.sni ? providerFor(req.sni) : undefined);
  if (!provider) return null;
  const host = t.host && providerFor(t.host) ? t.host : req.sni;
  const base = { host, provider: provider.id, method: head.method, path: t.path.slice(0, 512), endpoint: null, sender: null, content: '', send: true };
  const match = endpointFor(provider, head.method, t.path);
  if (!match && READS.has(head.method)) return null;
  const scanned = () => scanAddresses(req.body.toString('utf8'));
  if (!match) return { ...base, recipients: scanned(), detail: `${head.method} ${t.path.slice(0, 200)} is not a send endpoint the relay knows for ${provider.name} (the relay refuses it)` };
  if (req.incomplete) return { ...base, endpoint: match.endpoint.name, recipients: scanned(), detail: 'request body not fully captured: recipients found by pattern in the captured part' };
  try {
    const body = await decodeBody(req.body, headerValue(head.headers, 'content-encoding'), provider.maxBody);
    const contentType = headerValue(head.headers, 'content-type') ?? '';
    const info: RequestInfo = {
      method: head.method, host: host ?? '', path: t.path, query: new URLSearchParams(t.query), headers: head.headers,
      mediaType: contentType.split(';')[0]!.trim().toLowerCase(), contentType, body, params: match.params,
    };
    const extracted = await match.endpoint.read(info);
    await Promise.all(extracted.messages.map((m) => m.settle()));
    // A batch names the same addresses many times: each (address, field) once, and a bounded list.
    const recipients = new Map<string, FoundAddress>();
    for (const r of extracted.messages.flatMap((m) => m.recipients)) {
      const key = `${r.field}\0${r.mailbox.address}`;
      if (!recipients.has(key) && recipients.size < 10_000) recipients.set(key, { address: r.mailbox.address, field: r.field, source: r.source, mailbox: r.mailbox });
    }
    const problems = [...extracted.problems, ...extracted.messages.flatMap((m) => m.problems)];
    const sender = extracted.messages.flatMap((m) => m.senders).find((s) => s.mailbox)?.mailbox?.address ?? null;
    const content = extracted.messages.flatMap((m) => m.texts.map((x) => x.text)).join('\n');
    return {
      ...base, endpoint: match.endpoint.name, recipients: [...recipients.values()], sender, content, send: extracted.sends !== false,
      detail: problems.length ? `the relay would refuse this request: ${problems.slice(0, 3).map((p) => p.detail).join('; ').slice(0, 600)}` : null,
    };
  } catch (e) {
    return { ...base, endpoint: match.endpoint.name, recipients: scanned(), detail: `request could not be read as ${provider.name} reads it (${(e as Error).message.slice(0, 300)}): recipients found by pattern` };
  }
}

// --- per-stream state ------------------------------------------------------------------------------------

interface Pending {
  head: RequestHead;
  /** The write that carried the head: who sent the request. */
  first: Write;
  /** Body bytes captured so far (raw: chunked framing and Content-Encoding still on). */
  parts: Buffer[];
  size: number;
  /** Body bytes the application wrote, captured or not (Content-Length framing). */
  wire: number;
  need: number | 'chunked';
  incomplete: boolean;
  since: number;
}

interface StreamState {
  /** A request head that has not ended yet. */
  head: Buffer | null;
  pending: Pending | null;
  h2: boolean;
  smtpTail: string;
  touched: number;
}

export interface ClassifierOptions {
  /** A mail-API request whose body has not all arrived is read as it is after this long. */
  requestWaitMs?: number;
  /** Bound on one request body held while it arrives. */
  maxBody?: number;
  idleMs?: number;
  now?: () => number;
}

/**
 * Follows each stream's writes and yields findings: SMTP commands (in any write that is not part of
 * a mail-API request), and mail-API requests once they are whole.
 */
export class Classifier {
  private readonly streams = new Map<string, StreamState>();
  private readonly requestWaitMs: number;
  private readonly maxBody: number;
  private readonly idleMs: number;
  private readonly now: () => number;

  constructor(opts: ClassifierOptions = {}) {
    this.requestWaitMs = opts.requestWaitMs ?? 1000;
    this.maxBody = opts.maxBody ?? 8 << 20;
    this.idleMs = opts.idleMs ?? 120_000;
    this.now = opts.now ?? Date.now;
  }

  /** The findings in one write (a mail-API request's once it is whole, possibly in a later write). */
  async write(w: Write): Promise<Finding[]> {
    const s = this.state(w.stream);
    const requests: Pending[] = [];
    const inRequest = this.http(s, w, requests);
    const out: Finding[] = [];
    const text = w.data.toString('utf8');
    const h2Provider = s.h2 && w.sni ? providerFor(w.sni) : undefined;
    if (h2Provider) {
      out.push(finding({
        ...whoOf(w), protocol: 'mail-api', provider: h2Provider.id, host: w.sni, recipients: scanAddresses(text),
        detail: 'HTTP/2 to a mail-API host: headers are HPACK-compressed, recipients found by pattern in the frames',
      }));
    } else if (!inRequest && !s.h2) {
      const smtp = this.smtp(s, w, text);
      if (smtp) out.push(smtp);
    }
    for (const p of requests) {
      const f = await this.read(p);
      if (f) out.push(f);
    }
    return out;
  }

  /** Requests that waited too long for the rest of their body are read as they are; idle streams are forgotten. */
  async tick(): Promise<Finding[]> {
    const now = this.now();
    const due: Pending[] = [];
    for (const [key, s] of this.streams) {
      if (s.pending && now - s.pending.since >= this.requestWaitMs) {
        s.pending.incomplete = true;
        due.push(s.pending);
        s.pending = null;
      }
      if (!s.pending && !s.head && now - s.touched >= this.idleMs) this.streams.delete(key);
    }
    return this.readAll(due);
  }

  /** Shutdown: every request still arriving is read as it is. */
  async flush(): Promise<Finding[]> {
    const due: Pending[] = [];
    for (const s of this.streams.values()) {
      if (!s.pending) continue;
      s.pending.incomplete = true;
      due.push(s.pending);
      s.pending = null;
    }
    return this.readAll(due);
  }

  private async readAll(due: Pending[]): Promise<Finding[]> {
    const out: Finding[] = [];
    for (const p of due) {
      const f = await this.read(p);
      if (f) out.push(f);
    }
    return out;
  }

  private async read(p: Pending): Promise<Finding | null> {
    const raw = p.parts.length === 1 ? p.parts[0]! : Buffer.concat(p.parts);
    let body = raw;
    if (p.need === 'chunked') {
      const d = dechunk(raw);
      if (d.state === 'done') body = d.body;
      else p.incomplete = true;
    }
    const w = p.first;
    const read = await readMailApi({ head: p.head, body, incomplete: p.incomplete, sni: w.sni });
    if (!read) return null;
    const plaintext = `${p.head.text}${body.subarray(0, 4096).toString('utf8')}`;
    return finding({ ...whoOf(w), protocol: 'mail-api', ...read, plaintext });
  }

  private state(stream: string): StreamState {
    let s = this.streams.get(stream);
    if (!s) {
      s = { head: null, pending: null, h2: false, smtpTail: '', touched: 0 };
      this.streams.set(stream, s);
    }
    s.touched = this.now();
    return s;
  }

  /**
   * Feed a TLS write to the stream's HTTP/1.1 reader; whole mail-API requests are appended to
   * `done`. True when the write carried (part of) a request to a mail-API host: those bytes are not
   * read as SMTP. Bytes the capture did not keep (a truncated write) still count on the wire, so
   * Content-Length framing stays in step.
   */
  private http(s: StreamState, w: Write, done: Pending[]): boolean {
    if (w.kind !== 'tls' || s.h2) return false;
    let buf = w.data;
    let wire = Math.max(w.len, buf.length);
    let mailApi = false;
    if (!s.pending && !s.head && buf.subarray(0, H2_PREFACE.length).toString('latin1') === H2_PREFACE) {
      s.h2 = true;
      return false;
    }
    while (buf.length > 0 || (s.pending && wire > 0)) {
      const p = s.pending;
      if (p && typeof p.need === 'number') {
        mailApi = true;
        const takeWire = Math.min(p.need - p.wire, wire);
        const take = Math.min(takeWire, buf.length);
        this.keep(p, buf.subarray(0, take));
        if (take < takeWire) p.incomplete = true;
        p.wire += takeWire;
        wire -= takeWire;
        buf = buf.subarray(take);
        if (p.wire >= p.need) {
          s.pending = null;
          done.push(p);
        }
        continue;
      }
      if (p) {
        // Chunked: the framing is read from the captured bytes, so a truncated write ends the request here.
        mailApi = true;
        this.keep(p, buf);
        if (w.truncated) {
          p.incomplete = true;
          s.pending = null;
          done.push(p);
          break;
        }
        const d = dechunk(Buffer.concat(p.parts));
        if (d.state === 'more') break;
        s.pending = null;
        done.push(p);
        if (d.state === 'invalid') {
          p.incomplete = true;
          break;
        }
        // What follows the last chunk is the next (pipelined) request, at the end of this write.
        const extra = p.size - d.consumed;
        buf = extra > 0 ? buf.subarray(buf.length - extra) : Buffer.alloc(0);
        wire = buf.length;
        continue;
      }
      if (buf.length === 0) break;
      const head = s.head ? Buffer.concat([s.head, buf]) : buf;
      const parsed = parseRequestHead(head);
      if (parsed.state !== 'done') {
        s.head = parsed.state === 'more' && head.length < MAX_HEAD ? Buffer.from(head) : null;
        return mailApi;
      }
      const earlier = s.head?.length ?? 0;
      s.head = null;
      const used = parsed.length - earlier;
      buf = buf.subarray(used);
      wire -= used;
      // Not mail-API traffic: its body is not followed; a later write that starts a request is read again.
      if (!requestProvider(parsed, w.sni)) return mailApi;
      mailApi = true;
      const te = (headerValue(parsed.headers, 'transfer-encoding') ?? '').toLowerCase();
      const cl = Number(headerValue(parsed.headers, 'content-length') ?? 0);
      const need: number | 'chunked' = te.includes('chunked') ? 'chunked' : Number.isSafeInteger(cl) && cl > 0 ? cl : 0;
      const next: Pending = { head: parsed, first: w, parts: [], size: 0, wire: 0, need, incomplete: false, since: this.now() };
      if (need === 0) done.push(next);
      else s.pending = next;
    }
    return mailApi;
  }

  /** Body bytes kept for the adapter, up to the bound; past it the request is incomplete. */
  private keep(p: Pending, bytes: Buffer): void {
    const room = Math.max(0, this.maxBody - p.size);
    if (bytes.length > room) p.incomplete = true;
    const kept = bytes.length > room ? bytes.subarray(0, room) : bytes;
    if (kept.length) {
      p.parts.push(kept);
      p.size += kept.length;
    }
  }

  private smtp(s: StreamState, w: Write, text: string): Finding | null {
    // Only whole lines are commands; the unfinished last one waits for the next write.
    const joined = s.smtpTail + text;
    const cut = joined.lastIndexOf('\n');
    s.smtpTail = w.truncated ? '' : joined.slice(cut + 1).slice(-1024);
    const lines = joined.slice(0, cut + 1);
    const facts = lines ? smtpFacts(lines) : null;
    if (!facts) return null;
    return finding({
      ...whoOf(w), protocol: w.kind === 'tls' ? 'smtp-tls' : 'smtp-plain', sender: facts.sender, recipients: facts.recipients,
      plaintext: lines, content: lines, detail: facts.recipients.length || facts.sender ? null : 'SMTP session opened (no envelope yet)',
    });
  }
}

function requestProvider(head: RequestHead, sni: string | null): Provider | undefined {
  const t = targetParts(head.target, headerValue(head.headers, 'host'));
  return (t.host ? providerFor(t.host) : undefined) ?? (sni ? providerFor(sni) : undefined);
}

function whoOf(w: Write): Pick<Finding, 'pid' | 'comm' | 'cgroupId' | 'tsNs' | 'destination' | 'sni' | 'fn'> {
  return { pid: w.pid, comm: w.comm, cgroupId: w.cgroupId, tsNs: w.tsNs, destination: w.destination, sni: w.sni, fn: w.fn };
}

// --- events that are findings by themselves ------------------------------------------------------------

/** A TCP connect to an SMTP port that is not the relay. */
export function connectFinding(e: ConnectEvent, relays: RelaySet): Finding | null {
  const dest = destinationOf(e.daddr, e.dport, e.family);
  if (e.proto === 'udp' || !dest || !SMTP_PORTS.has(dest.port) || relays.has(dest)) return null;
  return finding({ protocol: 'connect', pid: e.pid, comm: e.comm, cgroupId: e.cgroup_id, tsNs: e.ts_ns, destination: dest, detail: `TCP connect to SMTP port ${dest.port}` });
}

/** The loader killed a process before its write left (a marker in TLS plaintext, or a connect to an SMTP port). */
export function killFinding(e: KillEvent): Finding {
  const dest = destinationOf(e.daddr, e.dport, e.family);
  const marker = typeof e.marker === 'string' ? e.marker.slice(0, 200) : null;
  const host = marker ? providerFor(marker) : undefined;
  const protocol: Protocol = e.reason === 'smtp_connect' ? 'connect' : marker && /^(?:MAIL FROM|RCPT TO)/i.test(marker) ? 'smtp-tls' : 'mail-api';
  return finding({
    protocol, pid: e.pid, comm: e.comm, cgroupId: e.cgroup_id, tsNs: e.ts_ns, destination: dest, action: 'killed', marker,
    fn: e.fn ?? e.syscall ?? null, provider: host?.id ?? null, host: host ? marker : null,
    detail: e.reason === 'smtp_connect' ? 'killed at connect() to an SMTP port' : `killed before the write left: it carried ${JSON.stringify(marker ?? '?')}`,
  });
}

/** A connect the cgroup enforcement refused (only from `enforce --follow`). */
export function denyFinding(e: DenyEvent): Finding {
  const dest = destinationOf(e.daddr, e.dport, e.family);
  return finding({
    protocol: 'connect', pid: e.pid ?? 0, comm: e.comm ?? '', cgroupId: e.cgroup_id ?? null, tsNs: e.ts_ns ?? null, destination: dest,
    action: 'denied', detail: `${e.proto === 'udp' ? 'UDP send' : 'connect'} refused in the kernel (${e.hook})`,
  });
}
