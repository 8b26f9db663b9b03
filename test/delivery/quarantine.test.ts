// The quarantine lifecycle end to end: held over real SMTP, inspected and released or deleted via
// the admin API and the CLI (against the same data dir), expired; release re-checks the envelope
// against the policy in force at release time.

import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SendMailOptions } from 'nodemailer';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, adminGet, closeRelayAndSink, idOf, startRelayAndSink, transport, upstreamEnv, withRelay, type TestRelay } from '../helpers/relay.js';
import type { Sink } from '../helpers/sink.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'cli.js');
const ATTACKER = 'phan@giftshop.club';
const PARTNER = 'bob@partner.example';
const AWS = ['AKIA', 'IOSFODNN7', 'EXAMPLE'].join('');

const policy = (o: { unknown?: string; domains?: string[]; extra?: string } = {}) => `version: 1
recipients:
  domains: [${(o.domains ?? ['company.com']).join(', ')}]
unknown_recipients: ${o.unknown ?? 'quarantine'}
${o.extra ?? ''}`;

async function adminPost(r: TestRelay, path: string, token: string | null = ADMIN_TOKEN): Promise<{ status: number; body: any }> {
  const res = await fetch(`http://127.0.0.1:${r.adminPort}${path}`, {
    method: 'POST',
    headers: token ? { authorization: `Bearer ${token}` } : {},
    signal: AbortSignal.timeout(15_000),
  });
  return { status: res.status, body: await res.json() };
}

/** Send and return the event id from `250 2.0.0 Held for review by postguard [id]`. */
async function sendHeld(r: TestRelay, mail: SendMailOptions): Promise<string> {
  const info = await transport(r).sendMail(mail);
  expect(info.response).toMatch(/^250 2\.0\.0 Held for review by postguard \[[0-9a-f-]{36}\]$/);
  return idOf(info.response);
}

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The built CLI against the relay's data dir, run asynchronously (the relay is in this process). */
function cli(r: TestRelay, args: string[], env: Record<string, string> = {}, timeoutMs = 20_000): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}`,
        HOME: r.dir,
        POSTGUARD_POLICY: r.policyFile,
        POSTGUARD_DATA_DIR: join(r.dir, 'data'),
        POSTGUARD_CERTS_DIR: join(r.dir, 'certs'),
        ...env,
      },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`postguard ${args.join(' ')} timed out after ${timeoutMs} ms\nstdout: ${Buffer.concat(out)}\nstderr: ${Buffer.concat(err)}`));
    }, timeoutMs);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

async function adminEvents(r: TestRelay, ref: string): Promise<any[]> {
  const { body } = await adminGet(r, '/api/events?kind=admin&limit=1000');
  return (body.events as any[]).filter((e) => e.ref === ref);
}

async function listedIds(r: TestRelay): Promise<string[]> {
  const { status, body } = await adminGet(r, '/api/quarantine');
  expect(status).toBe(200);
  return (body.messages as { id: string }[]).map((m) => m.id);
}

// ---------------------------------------------------------------------------------------------

describe('quarantine via the admin API (unknown_recipients: quarantine)', () => {
  let sink: Sink;
  let r: TestRelay;
  beforeAll(async () => {
    ({ r, sink } = await startRelayAndSink(policy()));
  });
  afterAll(() => closeRelayAndSink(r, sink));
  afterEach(() => {
    sink.messages.length = 0;
  });

  it('holds (250 Held), lists and shows metadata and raw_base64; nothing reaches the sink', async () => {
    const id = await sendHeld(r, { from: 'agent@company.com', to: 'colleague@company.com', cc: PARTNER, subject: 'held one', text: 'numbers attached' });
    expect(sink.messages).toHaveLength(0);
    const list = await adminGet(r, '/api/quarantine');
    const entry = (list.body.messages as any[]).find((m) => m.id === id);
    expect(entry).toMatchObject({ id, channel: 'smtp', agent: null, reason: 'unknown recipient', rule: 'unknown_recipients.visible' });
    expect(entry.envelope).toEqual({ from: 'agent@company.com', to: ['colleague@company.com', PARTNER] });
    expect(entry).not.toHaveProperty('raw');
    expect(entry.size).toBeGreaterThan(0);
    expect(Date.parse(entry.expires) - Date.parse(entry.time)).toBe(24 * 3_600_000);

    const shown = await adminGet(r, `/api/quarantine/${id}`);
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({ id, channel: 'smtp', reason: 'unknown recipient', rule: 'unknown_recipients.visible', envelope: entry.envelope });
    expect(shown.body).not.toHaveProperty('raw');
    const raw = Buffer.from(shown.body.raw_base64 as string, 'base64').toString('utf8');
    expect(raw).toMatch(/^Received: /);
    expect(raw).toContain(`X-Postguard: ${id}\r\n`);
    expect(raw).toContain('Subject: held one');
    expect(raw).toContain('numbers attached');
    expect(Buffer.byteLength(raw)).toBe(entry.size);

    // The quarantine audit record is the message's own.
    const ev = await adminGet(r, `/api/events/${id}`);
    expect(ev.body).toMatchObject({ id, kind: 'message', action: 'quarantined', decision: 'quarantine' });

    // The admin token is required.
    const res = await fetch(`http://127.0.0.1:${r.adminPort}/api/quarantine`, { signal: AbortSignal.timeout(10_000) });
    expect(res.status).toBe(401);
    expect((await adminPost(r, `/api/quarantine/${id}/release`, null)).status).toBe(401);
    expect((await adminPost(r, `/api/quarantine/${id}/release`, 'wrong-token-0123456789abcdef')).status).toBe(401);
    expect(sink.messages).toHaveLength(0);
    expect(await listedIds(r)).toContain(id);
  });

  it('release delivers only what the policy allows at release time; a reload that allows more delivers to both', async () => {
    const first = await sendHeld(r, { from: 'agent@company.com', to: 'colleague@company.com', cc: PARTNER, subject: 'release me', text: 'first' });
    const second = await sendHeld(r, { from: 'agent@company.com', to: 'colleague@company.com', cc: PARTNER, subject: 'release me too', text: 'second' });
    const held = Buffer.from((await adminGet(r, `/api/quarantine/${first}`)).body.raw_base64 as string, 'base64');

    // Policy unchanged: partner.example is still unknown → dropped.
    const rel = await adminPost(r, `/api/quarantine/${first}/release`);
    expect(rel.status).toBe(200);
    expect(rel.body).toMatchObject({ ok: true, status: 'delivered', delivered_to: ['colleague@company.com'], dropped: [PARTNER] });
    expect(sink.messages).toHaveLength(1);
    expect(sink.messages[0]!.to).toEqual(['colleague@company.com']);
    expect(sink.messages[0]!.from).toBe('agent@company.com');
    expect(sink.messages[0]!.raw.toString('utf8')).toContain('Subject: release me');
    expect(sink.messages[0]!.raw.equals(held)).toBe(true); // the held bytes, unchanged

    // Audited: the admin action with its actor, and the delivery itself.
    const audited = await adminEvents(r, first);
    expect(audited).toHaveLength(1);
    expect(audited[0]).toMatchObject({ kind: 'admin', action: 'quarantine_released', actor: 'admin-api', ref: first, delivered_to: ['colleague@company.com'], dropped: [PARTNER], delivery: 'delivered' });
    const delivery = await adminGet(r, `/api/events/${audited[0].delivery_audit_id}`);
    expect(delivery.body).toMatchObject({ kind: 'message', action: 'delivered', released_by: 'admin-api', ref: first, envelope: { from: 'agent@company.com', to: ['colleague@company.com'] } });
    expect(rel.body.audit_id).toBe(audited[0].id);

    // No longer held.
    expect(await listedIds(r)).not.toContain(first);
    expect((await adminGet(r, `/api/quarantine/${first}`)).status).toBe(404);
    expect((await adminPost(r, `/api/quarantine/${first}/release`)).status).toBe(404);
    expect(sink.messages).toHaveLength(1);

    // Allow partner.example, reload, release the second: both get it.
    writeFileSync(r.policyFile, policy({ domains: ['company.com', 'partner.example'] }));
    expect(r.relay.policy.reload()).toEqual([]);
    const rel2 = await adminPost(r, `/api/quarantine/${second}/release`);
    expect(rel2.status).toBe(200);
    expect(rel2.body).toMatchObject({ ok: true, status: 'delivered', delivered_to: ['colleague@company.com', PARTNER], dropped: [] });
    expect(sink.messages).toHaveLength(2);
    expect(sink.messages[1]!.to).toEqual(['colleague@company.com', PARTNER]);
    expect(sink.messages[1]!.raw.toString('utf8')).toContain('Subject: release me too');
    expect((await adminEvents(r, second))[0]).toMatchObject({ action: 'quarantine_released', actor: 'admin-api', dropped: [] });
    expect(await listedIds(r)).not.toContain(second);

    writeFileSync(r.policyFile, policy());
    expect(r.relay.policy.reload()).toEqual([]);
  });

  it('delete removes it: nothing delivered, audited quarantine_deleted', async () => {
    const id = await sendHeld(r, { from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, subject: 'delete me', text: 'x' });
    const del = await adminPost(r, `/api/quarantine/${id}/delete`);
    expect(del).toEqual({ status: 200, body: { ok: true } });
    expect(sink.messages).toHaveLength(0);
    expect(await listedIds(r)).not.toContain(id);
    expect((await adminGet(r, `/api/quarantine/${id}`)).status).toBe(404);
    const audited = await adminEvents(r, id);
    expect(audited).toHaveLength(1);
    expect(audited[0]).toMatchObject({ kind: 'admin', action: 'quarantine_deleted', actor: 'admin-api', ref: id });
    // A second delete, and a release after delete, find nothing.
    expect((await adminPost(r, `/api/quarantine/${id}/delete`)).status).toBe(404);
    expect((await adminPost(r, `/api/quarantine/${id}/release`)).status).toBe(404);
    expect(sink.messages).toHaveLength(0);
  });

  it('release of an unknown id → 404, nothing delivered', async () => {
    const res = await adminPost(r, `/api/quarantine/${randomUUID()}/release`);
    expect(res.status).toBe(404);
    expect(res.body.error).toMatch(/no such quarantined message/);
    expect((await adminPost(r, `/api/quarantine/${randomUUID()}/delete`)).status).toBe(404);
    expect(sink.messages).toHaveLength(0);
  });

  it('release when no recipient is allowed → 409 and the message stays held', async () => {
    const id = await sendHeld(r, { from: 'agent@company.com', to: ATTACKER, subject: 'only the attacker', text: 'x' });
    const res = await adminPost(r, `/api/quarantine/${id}/release`);
    expect(res.status).toBe(409);
    expect(res.body.error).toMatch(/no recipient is allowed by the current policy/);
    expect(res.body.error).toContain(ATTACKER);
    expect(sink.messages).toHaveLength(0);
    expect(await listedIds(r)).toContain(id);
    expect((await adminGet(r, `/api/quarantine/${id}`)).status).toBe(200);
    expect(await adminEvents(r, id)).toEqual([]);
  });
});

describe('quarantine from a secrets rule (action quarantine)', () => {
  it('holds a message with an AWS key; release (content approved) delivers it', async () => {
    await withRelay(policy({ unknown: 'strip', extra: 'secrets:\n  - detectors: [aws]\n    action: quarantine\n' }), async (r, sink) => {
      const id = await sendHeld(r, { from: 'agent@company.com', to: 'colleague@company.com', subject: 'deploy', text: `the key is ${AWS} ok` });
      expect(sink.messages).toHaveLength(0);
      const { body } = await adminGet(r, '/api/quarantine');
      expect(body.messages).toHaveLength(1);
      expect(body.messages[0]).toMatchObject({ id, rule: 'secrets[0]', reason: 'secret or credential in content' });
      const ev = await adminGet(r, `/api/events/${id}`);
      expect(ev.body.action).toBe('quarantined');
      expect(ev.body.detectors[0]).toMatchObject({ detector: 'aws', rule: 'secrets[0]', action: 'quarantine' });
      expect(JSON.stringify(ev.body)).not.toContain(AWS);

      const rel = await adminPost(r, `/api/quarantine/${id}/release`);
      expect(rel.status).toBe(200);
      expect(rel.body).toMatchObject({ ok: true, status: 'delivered', delivered_to: ['colleague@company.com'], dropped: [] });
      expect(sink.messages).toHaveLength(1);
      expect(sink.messages[0]!.to).toEqual(['colleague@company.com']);
      expect(sink.messages[0]!.raw.toString('utf8')).toContain(AWS); // the approved message, as sent
      expect((await adminEvents(r, id))[0]).toMatchObject({ action: 'quarantine_released', actor: 'admin-api' });
      expect((await adminGet(r, '/api/quarantine')).body.messages).toEqual([]);
    });
  });
});

describe('quarantine expiry', () => {
  it('quarantine: {duration: 200ms}: expire() drops it, audited quarantine_expired, nothing delivered', async () => {
    await withRelay(policy({ extra: 'quarantine:\n  duration: 200ms\n' }), async (r, sink) => {
      expect(r.relay.policy.current.quarantineMs).toBe(200);
      const id = await sendHeld(r, { from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, subject: 'expire me', text: 'x' });
      const entry = (await adminGet(r, '/api/quarantine')).body.messages[0];
      expect(entry.id).toBe(id);
      expect(Date.parse(entry.expires) - Date.parse(entry.time)).toBe(200);
      // Not yet due: nothing expires.
      expect(r.relay.quarantine.expire(new Date(Date.parse(entry.time) + 100))).toBe(0);
      expect(await listedIds(r)).toEqual([id]);
      await new Promise((res) => setTimeout(res, 350));
      expect(r.relay.quarantine.expire()).toBe(1);
      expect(await listedIds(r)).toEqual([]);
      expect((await adminGet(r, `/api/quarantine/${id}`)).status).toBe(404);
      const audited = await adminEvents(r, id);
      expect(audited).toHaveLength(1);
      expect(audited[0]).toMatchObject({ kind: 'admin', action: 'quarantine_expired', ref: id, actor: 'postguard' });
      expect(r.relay.quarantine.expire()).toBe(0);
      expect((await adminPost(r, `/api/quarantine/${id}/release`)).status).toBe(404);
      expect(sink.messages).toHaveLength(0);
    });
  });
});

describe('postguard quarantine CLI against the relay data dir', () => {
  let sink: Sink;
  let r: TestRelay;
  const actor = `cli:${userInfo().username}`;
  beforeAll(async () => {
    ({ r, sink } = await startRelayAndSink(policy()));
  });
  afterAll(() => closeRelayAndSink(r, sink));

  it('list shows the held messages', async () => {
    const a = await sendHeld(r, { from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, subject: 'cli list a', text: 'x' });
    const b = await sendHeld(r, { from: 'agent@company.com', to: 'colleague@company.com', cc: PARTNER, subject: 'cli list b', text: 'y' });
    const run = await cli(r, ['quarantine', 'list']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const lines = run.stdout.split('\n').filter(Boolean);
    const lineA = lines.find((l) => l.startsWith(a));
    const lineB = lines.find((l) => l.startsWith(b));
    expect(lineA).toMatch(/ smtp {2}agent=- {2}unknown_recipients\.hidden: unknown recipient {2}agent@company\.com -> colleague@company\.com, phan@giftshop\.club$/);
    expect(lineB).toMatch(/unknown_recipients\.visible: unknown recipient {2}agent@company\.com -> colleague@company\.com, bob@partner\.example$/);
    // Clean up through the API so the other tests start from what they create.
    for (const id of [a, b]) expect((await adminPost(r, `/api/quarantine/${id}/delete`)).status).toBe(200);
  });

  it('show prints metadata and the message, with control bytes (ESC) escaped, never raw', async () => {
    const id = await sendHeld(r, {
      envelope: { from: 'agent@company.com', to: ['colleague@company.com', ATTACKER] },
      raw: ['From: agent@company.com', 'To: colleague@company.com', 'Subject: terminal games', 'Content-Type: text/plain; charset=utf-8', '', 'before \x1b[2J\x1b]0;owned\x07 after', ''].join('\r\n'),
    });
    // The held bytes really contain the ESC (so the escaping below is what protects the terminal).
    expect(Buffer.from((await adminGet(r, `/api/quarantine/${id}`)).body.raw_base64 as string, 'base64').includes(0x1b)).toBe(true);
    const run = await cli(r, ['quarantine', 'show', id]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).not.toContain('\x1b');
    expect(run.stdout).not.toContain('\x07');
    expect(run.stdout).toContain('before \\x1b[2J\\x1b]0;owned\\x07 after');
    const meta = JSON.parse(run.stdout.slice(0, run.stdout.indexOf('\n}\n') + 2)) as Record<string, unknown>;
    expect(meta).toMatchObject({ id, channel: 'smtp', rule: 'unknown_recipients.hidden', reason: 'unknown recipient', envelope: { from: 'agent@company.com', to: ['colleague@company.com', ATTACKER] } });
    expect(run.stdout).toContain('Subject: terminal games');
    expect((await adminPost(r, `/api/quarantine/${id}/delete`)).status).toBe(200);
  });

  it('show / release / delete of an unknown id → exit 1', async () => {
    const id = randomUUID();
    for (const sub of ['show', 'release', 'delete']) {
      const run = await cli(r, ['quarantine', sub, id], upstreamEnv(sink));
      expect(run.code, `${sub}: ${run.stderr}`).toBe(1);
      expect(run.stderr).toMatch(/no (such )?quarantined message/);
      expect(run.stdout).toBe('');
    }
    expect(sink.messages).toHaveLength(0);
  });

  it('release delivers to the sink per the current policy, audited with actor cli:<user>', async () => {
    const id = await sendHeld(r, { from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, subject: 'cli release', text: 'x' });
    const run = await cli(r, ['quarantine', 'release', id], upstreamEnv(sink));
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`released ${id}: delivered to colleague@company.com (not allowed now, dropped: ${ATTACKER})\n`);
    expect(sink.messages).toHaveLength(1);
    expect(sink.messages[0]!.to).toEqual(['colleague@company.com']);
    expect(sink.messages[0]!.raw.toString('utf8')).toContain('Subject: cli release');
    expect(sink.messages[0]!.raw.toString('utf8')).not.toContain('giftshop');
    const audited = await adminEvents(r, id);
    expect(audited).toHaveLength(1);
    expect(audited[0]).toMatchObject({ kind: 'admin', action: 'quarantine_released', actor, delivered_to: ['colleague@company.com'], dropped: [ATTACKER] });
    // The relay sees the CLI's change at once (same database).
    expect(await listedIds(r)).not.toContain(id);
    sink.messages.length = 0;
  });

  it('release of a message no recipient of which is allowed → non-zero exit, stays held', async () => {
    const id = await sendHeld(r, { from: 'agent@company.com', to: ATTACKER, subject: 'cli nothing allowed', text: 'x' });
    const run = await cli(r, ['quarantine', 'release', id], upstreamEnv(sink));
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/release failed: no recipient is allowed/);
    expect(sink.messages).toHaveLength(0);
    expect(await listedIds(r)).toContain(id);
    expect((await adminPost(r, `/api/quarantine/${id}/delete`)).status).toBe(200);
  });

  it('delete removes it, audited with actor cli:<user>, nothing delivered', async () => {
    const id = await sendHeld(r, { from: 'agent@company.com', to: 'colleague@company.com', bcc: ATTACKER, subject: 'cli delete', text: 'x' });
    const run = await cli(r, ['quarantine', 'delete', id]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`deleted ${id}\n`);
    expect(await listedIds(r)).not.toContain(id);
    const audited = await adminEvents(r, id);
    expect(audited).toHaveLength(1);
    expect(audited[0]).toMatchObject({ kind: 'admin', action: 'quarantine_deleted', actor, ref: id });
    expect(sink.messages).toHaveLength(0);
    const list = await cli(r, ['quarantine', 'list']);
    expect(list.code).toBe(0);
    expect(list.stdout).not.toContain(id);
  });

  it('the audit chain stays intact with the relay and the CLI both appending', async () => {
    r.relay.store.audit.flush();
    const run = await cli(r, ['audit', 'verify']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^audit: ok, \d+ records, chain intact\n$/);
  });
});
