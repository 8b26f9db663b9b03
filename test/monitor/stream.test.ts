// Chunk reassembly, retry dedupe, late binding and pointer reuse, on recorded loader output.

import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { LoaderEvent, SslWriteEvent } from '../../src/monitor/loader.js';
import { formatDestination, StreamAssembler, type Write } from '../../src/monitor/stream.js';
import { assemble, fixture } from './replay.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const dest = (w: Write) => (w.destination ? formatDestination(w.destination) : null);
const sslWrites = (events: LoaderEvent[]) => events.filter((e): e is SslWriteEvent => e.type === 'ssl_write');

function clocked(opts: Record<string, number> = {}) {
  let now = 1_000_000;
  const writes: Write[] = [];
  const a = new StreamAssembler({ chunk: 16384, maxChunks: 64, now: () => now, ...opts }, (w) => writes.push(w));
  return { a, writes, advance: (ms: number) => ((now += ms), a.tick()) };
}

function write(over: Partial<SslWriteEvent> & { data: string }): SslWriteEvent {
  const data = Buffer.from(over.data);
  return {
    type: 'ssl_write', pid: 10, tid: 10, cgroup_id: 1, comm: 'node', ts_ns: 1, fn: 'SSL_write', ssl: '0x1', fd: -1,
    daddr: '127.0.0.1', dport: 4465, family: 4, sni: null, len: data.length, offset: 0, cap: data.length, data_b64: data.toString('base64'), ...over,
  };
}

describe('reassembly', () => {
  it('puts a 200,000-byte write captured as 13 records of 16 KiB back together', () => {
    const events = fixture('node-sendgrid-200k.ndjson');
    const records = sslWrites(events).filter((e) => e.len === 200_000);
    expect(records).toHaveLength(13);
    expect(records.map((r) => r.offset)).toEqual(Array.from({ length: 13 }, (_, i) => i * 16384));
    const { writes } = assemble(events);
    expect(writes).toHaveLength(2);
    const body = writes[1]!;
    expect(body.len).toBe(200_000);
    expect(body.data.length).toBe(200_000);
    expect(body.truncated).toBe(false);
    expect(sha(body.data)).toBe(sha(Buffer.concat(records.map((r) => Buffer.from(r.data_b64, 'base64')))));
    expect(body.data.subarray(-80).toString()).toContain('"email":"exfil@evil.example"');
    expect(body).toMatchObject({ kind: 'tls', pid: 4311, comm: 'MainThread', sni: 'api.sendgrid.com', fn: 'SSL_write' });
    expect(dest(body)).toBe('127.0.0.1:44302');
    expect(writes[0]!.stream).toBe(body.stream);
  });

  it('a write past the capture limit is passed on at once, truncated, with its real length', () => {
    const events = fixture('node-sendgrid-200k.ndjson');
    // The loader started with --max-chunks 4 sends only the first 4 records of the body.
    const limited = events.filter((e) => e.type !== 'ssl_write' || e.len !== 200_000 || e.offset < 4 * 16384);
    const { writes } = assemble(limited, { maxChunks: 4 });
    expect(writes[1]).toMatchObject({ len: 200_000, truncated: true });
    expect(writes[1]!.data.length).toBe(4 * 16384);
  });

  it('a lost record in the middle leaves a truncated write, not a wrong one', () => {
    const events = fixture('node-sendgrid-200k.ndjson');
    const lossy = events.filter((e) => !(e.type === 'ssl_write' && e.len === 200_000 && e.offset === 5 * 16384));
    const { writes } = assemble(lossy);
    expect(writes[1]).toMatchObject({ len: 200_000, truncated: true });
    expect(writes[1]!.data.length).toBe(200_000 - 16384);
  });

  it('a write whose last record never comes is passed on after the wait', () => {
    const events = fixture('node-sendgrid-200k.ndjson');
    const records = sslWrites(events);
    const c = clocked();
    for (const r of records.slice(0, -1)) c.a.sslWrite(r);
    expect(c.writes).toHaveLength(1); // the head
    c.advance(100);
    expect(c.writes).toHaveLength(1);
    c.advance(150);
    expect(c.writes).toHaveLength(2);
    expect(c.writes[1]).toMatchObject({ len: 200_000, truncated: true });
  });
});

describe('dedupe of retried writes', () => {
  it("node's WANT_READ retries (three identical entry events) are one write", () => {
    const events = fixture('node-postmark.ndjson');
    const posts = sslWrites(events).filter((e) => e.pid === 4242 && Buffer.from(e.data_b64, 'base64').toString().startsWith('POST'));
    expect(posts).toHaveLength(3);
    const { writes, assembler } = assemble(events);
    const mine = writes.filter((w) => w.pid === 4242);
    expect(mine.map((w) => w.data.toString().split(' ')[0])).toEqual(['POST', 'GET']);
    expect(assembler.duplicates).toBe(2);
    // The relay's own upstream write is a write like any other here (the monitor drops it by pid).
    expect(writes.filter((w) => w.pid === 1000)).toHaveLength(1);
  });

  it('identical writes are kept when apart in time, or when another write came between', () => {
    const c = clocked();
    c.a.sslWrite(write({ data: 'RCPT TO:<a@x.example>\r\n' }));
    c.advance(1500);
    c.a.sslWrite(write({ data: 'RCPT TO:<a@x.example>\r\n' }));
    c.a.sslWrite(write({ data: 'NOOP\r\n' }));
    c.a.sslWrite(write({ data: 'RCPT TO:<a@x.example>\r\n' }));
    expect(c.writes).toHaveLength(4);
    // Same bytes on another connection of the same process: not a retry.
    c.a.sslWrite(write({ data: 'NOOP\r\n', ssl: '0x2' }));
    expect(c.writes).toHaveLength(5);
  });

  it('a retried 200 KB write (all its records again) is dropped whole', () => {
    const events = fixture('node-sendgrid-200k.ndjson');
    const body = sslWrites(events).filter((e) => e.len === 200_000);
    const { writes, assembler } = assemble([...events, ...body]);
    expect(writes).toHaveLength(2);
    expect(assembler.duplicates).toBe(1);
  });
});

describe('binding', () => {
  it('a late bind gives its destination to the earlier unbound writes, in order, with the SNI', () => {
    const events = fixture('curl-late-bind.ndjson');
    const c = clocked();
    const before: Write[] = [];
    for (const e of events) {
      if (e.type === 'bind') before.push(...c.writes);
      if (e.type === 'ssl_write') c.a.sslWrite(e);
      if (e.type === 'bind') c.a.bind(e);
    }
    expect(before).toHaveLength(0); // held until the bind
    expect(c.writes).toHaveLength(2);
    expect(c.writes.map(dest)).toEqual(['127.0.0.1:44303', '127.0.0.1:44303']);
    expect(c.writes[0]!.data.toString()).toMatch(/^POST \/email\/batch HTTP\/1\.1/);
    expect(c.writes[1]!.data.toString()).toMatch(/^\[\{"From"/);
    expect(c.writes.every((w) => w.sni === 'api.postmarkapp.com' && w.comm === 'curl')).toBe(true);
  });

  it('a write that is never bound goes on without a destination after the wait', () => {
    const c = clocked({ bindWaitMs: 250 });
    c.a.sslWrite(write({ data: 'EHLO x\r\n', daddr: null, dport: null, family: null }));
    c.advance(200);
    expect(c.writes).toHaveLength(0);
    c.advance(60);
    expect(c.writes).toHaveLength(1);
    expect(c.writes[0]!.destination).toBeNull();
  });

  it('a bound write after unbound ones binds them too', () => {
    const c = clocked();
    c.a.sslWrite(write({ data: 'EHLO x\r\n', daddr: null, dport: null, family: null }));
    c.a.sslWrite(write({ data: 'MAIL FROM:<a@b.example>\r\n' }));
    expect(c.writes.map(dest)).toEqual(['127.0.0.1:4465', '127.0.0.1:4465']);
  });

  it('held bytes are bounded: past the bound they go on unbound', () => {
    const c = clocked({ maxHeldPerStream: 100 });
    c.a.sslWrite(write({ data: 'x'.repeat(60), daddr: null, dport: null, family: null }));
    expect(c.writes).toHaveLength(0);
    c.a.sslWrite(write({ data: 'y'.repeat(60), daddr: null, dport: null, family: null }));
    expect(c.writes).toHaveLength(2);
    expect(c.a.size.heldBytes).toBe(0);
  });

  it('an ssl pointer freed and reused after a new bind is a new stream, with its own destination and SNI', () => {
    const { writes } = assemble(fixture('python-ssl-reuse.ndjson'));
    expect(writes).toHaveLength(14);
    const [first, second] = [writes.slice(0, 7), writes.slice(7)];
    expect(new Set(first.map(dest))).toEqual(new Set(['127.0.0.1:2465']));
    expect(new Set(second.map(dest))).toEqual(new Set(['127.0.0.1:4465']));
    expect(first.every((w) => w.sni === null)).toBe(true);
    expect(second.every((w) => w.sni === 'mx.giftshop.club')).toBe(true);
    expect(new Set(first.map((w) => w.stream)).size).toBe(1);
    expect(first[0]!.stream).not.toBe(second[0]!.stream);
    // Identical `quit` writes on the two connections: both kept (a new stream forgets the last write).
    expect(first.at(-1)!.data.toString()).toBe('quit\r\n');
    expect(second.at(-1)!.data.toString()).toBe('quit\r\n');
  });

  it('an unbound write on a bound pointer starts a new stream (freed and reused without a bind yet)', () => {
    const c = clocked();
    c.a.sslWrite(write({ data: 'a', sni: 'one.example' }));
    c.a.sslWrite(write({ data: 'b', daddr: null, dport: null, family: null }));
    c.a.bind({ type: 'bind', pid: 10, tid: 10, cgroup_id: 1, comm: 'node', ts_ns: 2, ssl: '0x1', fd: 9, daddr: '127.0.0.1', dport: 5555, family: 4, via: 'SSL_set_fd' });
    expect(c.writes.map(dest)).toEqual(['127.0.0.1:4465', '127.0.0.1:5555']);
    expect(c.writes[1]!.sni).toBeNull();
    expect(c.writes[0]!.stream).not.toBe(c.writes[1]!.stream);
  });

  it('the SNI seen once is carried on the later writes of the stream', () => {
    const c = clocked();
    c.a.sslWrite(write({ data: 'GET / HTTP/1.1\r\n\r\n', sni: 'api.resend.com' }));
    c.a.sslWrite(write({ data: 'POST /emails HTTP/1.1\r\n\r\n' }));
    expect(c.writes.map((w) => w.sni)).toEqual(['api.resend.com', 'api.resend.com']);
  });

  it('IPv4-mapped IPv6 destinations are IPv4', () => {
    const c = clocked();
    c.a.sslWrite(write({ data: 'x', daddr: '::ffff:10.1.2.3', dport: 25, family: 6 }));
    expect(c.writes[0]!.destination).toEqual({ addr: '10.1.2.3', port: 25, family: 4 });
  });
});

describe('plain writes', () => {
  it('are passed on as they come, one stream per socket', () => {
    const { writes } = assemble(fixture('plain-smtp.ndjson'));
    expect(writes.every((w) => w.kind === 'plain')).toBe(true);
    expect(new Set(writes.map((w) => w.stream)).size).toBe(2);
    expect(writes.filter((w) => dest(w) === '127.0.0.1:587').map((w) => w.data.toString().trim())).toEqual([
      'ehlo agent-box', 'mail FROM:<agent@company.com>', 'rcpt TO:<bob@company.com>', 'rcpt TO:<phan@giftshop.club>', 'data', 'quit',
    ]);
  });
});

describe('writes without an address on a bound stream', () => {
  it('wait for the next sign of where they go: the same destination keeps the stream', () => {
    const c = clocked();
    c.a.sslWrite(write({ data: 'EHLO x\r\n', sni: 'mx.example' }));
    // The socket's address is read at each event: briefly not there (e.g. reconnecting, closed).
    c.a.sslWrite(write({ data: 'MAIL FROM:<a@b.example>\r\n', daddr: null, dport: null, family: null }));
    expect(c.writes).toHaveLength(1);
    c.a.sslWrite(write({ data: 'RCPT TO:<c@d.example>\r\n' }));
    expect(c.writes.map(dest)).toEqual(['127.0.0.1:4465', '127.0.0.1:4465', '127.0.0.1:4465']);
    expect(new Set(c.writes.map((w) => w.stream)).size).toBe(1);
    expect(c.writes.every((w) => w.sni === 'mx.example')).toBe(true);
  });

  it('with no sign at all, they go on as unknown (fail closed: not the relay)', () => {
    const c = clocked({ bindWaitMs: 250 });
    c.a.sslWrite(write({ data: 'a' }));
    c.a.sslWrite(write({ data: 'b', daddr: null, dport: null, family: null }));
    c.advance(300);
    expect(c.writes.map(dest)).toEqual(['127.0.0.1:4465', null]);
  });
});
