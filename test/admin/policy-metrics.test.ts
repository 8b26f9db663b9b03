// GET/PUT /api/policy and GET /metrics on a real relay.

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, adminGet, companyPolicy, send, startTestRelay, type TestRelay } from '../helpers/relay.js';

const put = (r: TestRelay, text: string, query = '') =>
  fetch(`http://127.0.0.1:${r.adminPort}/api/policy${query}`, { method: 'PUT', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/yaml' }, body: text });

describe('policy API and metrics', () => {
  let r: TestRelay;
  beforeAll(async () => {
    r = await startTestRelay({ policy: companyPolicy() });
  });
  afterAll(async () => r?.close());

  it('GET /api/policy returns the policy in force and its YAML; token required', async () => {
    const res = await adminGet(r, '/api/policy');
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ version: r.relay.policy.current.version, format: 'native', mode: 'enforce', yaml: companyPolicy() });
    expect((await fetch(`http://127.0.0.1:${r.adminPort}/api/policy`)).status).toBe(401);
  });

  it('PUT refuses a bad policy with positioned errors and changes nothing', async () => {
    const before = r.relay.policy.current.version;
    const res = await put(r, 'version: 1\nrecipients: [company.com]\nunknown_recipients: maybe\n');
    expect(res.status).toBe(422);
    const body = (await res.json()) as any;
    expect(body.errors[0]).toMatch(/policy\.yaml:3:\d+: .*strip/);
    expect(r.relay.policy.current.version).toBe(before);
    expect(readFileSync(r.policyFile, 'utf8')).toBe(companyPolicy());
  });

  it('PUT ?dry_run=1 shows the diff without applying; PUT applies it, writes the file, and audits who did it', async () => {
    const next = companyPolicy({ unknown: 'block' });
    const dry = (await (await put(r, next, '?dry_run=1')).json()) as any;
    expect(dry).toMatchObject({ ok: true, applied: false });
    expect(dry.diff).toContain('-unknown_recipients: strip');
    expect(dry.diff).toContain('+unknown_recipients: block');
    expect(r.relay.policy.current.unknownRecipients.hidden).toBe('strip');
    const res = await put(r, next);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ ok: true, applied: true, version: dry.version, previous_version: dry.previous_version });
    expect(r.relay.policy.current.version).toBe(dry.version);
    expect(readFileSync(r.policyFile, 'utf8')).toBe(next);
    const ev = (await adminGet(r, '/api/events?kind=admin&action=policy_updated&limit=1')).body.events[0];
    expect(ev).toMatchObject({ actor: 'admin-api', policy_version: dry.version });
    const blocked = await send(r, { from: 'agent@company.com', to: 'alice@company.com', bcc: 'phan@giftshop.club', subject: 's', text: 't' });
    expect((blocked as { responseCode?: number }).responseCode).toBe(554);
  });

  it('GET /metrics speaks the Prometheus text format and counts decisions per channel and action', async () => {
    expect((await fetch(`http://127.0.0.1:${r.adminPort}/metrics`)).status).toBe(401);
    const res = await fetch(`http://127.0.0.1:${r.adminPort}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toMatch(/^# HELP postguard_events_total /m);
    expect(text).toMatch(/^postguard_events_total\{kind="message",channel="smtp",action="blocked"\} 1$/m);
    expect(text).toMatch(/^postguard_events_total\{kind="admin",channel="",action="policy_updated"\} 1$/m);
    expect(text).toMatch(/^postguard_quarantine_messages 0$/m);
    expect(text).toMatch(new RegExp(`^postguard_info\\{version="[^"]+",policy_version="${r.relay.policy.current.version}"\\} 1$`, 'm'));
    expect(text).toMatch(/^postguard_process_cpu_seconds_total /m);
  });
});
