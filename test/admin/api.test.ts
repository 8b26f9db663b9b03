// The admin JSON API: authentication, the monitor's report endpoint, bounded and validated input.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN as TOKEN, adminGet, startTestRelay, type TestRelay } from '../helpers/relay.js';

describe('admin API', () => {
  let r: TestRelay;
  beforeAll(async () => {
    r = await startTestRelay({ policy: 'version: 1\nrecipients: [company.com]\n' });
  });
  afterAll(() => r.close());

  const post = (path: string, body: string | Buffer, token: string | null = TOKEN) =>
    fetch(`http://127.0.0.1:${r.adminPort}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) } });

  it('needs the token everywhere but /healthz and /api/ca.pem', async () => {
    expect((await fetch(`http://127.0.0.1:${r.adminPort}/healthz`)).status).toBe(200);
    expect(await (await fetch(`http://127.0.0.1:${r.adminPort}/api/ca.pem`)).text()).toContain('BEGIN CERTIFICATE');
    for (const path of ['/api/info', '/api/events', '/api/alerts', '/api/quarantine', '/api/outbox']) {
      const res = await fetch(`http://127.0.0.1:${r.adminPort}${path}`, { headers: { authorization: 'Bearer wrong-token-of-some-length' } });
      expect(res.status, path).toBe(401);
    }
    expect((await post('/api/monitor/events', '{}', null)).status).toBe(401);
    const info = await adminGet(r, '/api/info');
    expect(info.body).toMatchObject({ name: 'postguard', delivery: 'capture', upstream: 'capture' });
  });

  it('a bypass report from the monitor becomes an audit record and an alert', async () => {
    const res = await post('/api/monitor/events', JSON.stringify({ kind: 'bypass', pid: 4242, comm: 'node', exe: '/usr/bin/node', destination: '127.0.0.1:2526', sni: 'api.postmarkapp.com', protocol: 'mail-api', provider: 'postmark', recipients: ['phan@giftshop.club'], action: 'alerted', id: 'spoofed', seq: 1 }));
    expect(res.status).toBe(200);
    const { ids } = (await res.json()) as { ids: string[] };
    const ev = await adminGet(r, `/api/events/${ids[0]}`);
    expect(ev.body).toMatchObject({ kind: 'monitor', report_kind: 'bypass', action: 'alerted', pid: 4242, protocol: 'mail-api', recipients: ['phan@giftshop.club'] });
    expect(ev.body.id).toBe(ids[0]); // a reporter cannot choose audit ids
    const alerts = await adminGet(r, '/api/alerts?kind=bypass');
    expect(alerts.body.alerts[0]).toMatchObject({ kind: 'bypass', severity: 'high', event_id: ids[0] });
    expect(alerts.body.alerts[0].summary).toMatch(/bypassed the relay: mail-api from pid 4242 \(node\) to 127\.0\.0\.1:2526 \(api\.postmarkapp\.com\) to phan@giftshop\.club/);
  });

  it('refuses malformed, invalid and oversized input with a clear 4xx', async () => {
    const bad = await post('/api/monitor/events', '{"kind": "bypass",');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toMatch(/not JSON/);
    const invalid = await post('/api/monitor/events', JSON.stringify({ kind: 'bypass', pid: 'x' }));
    expect(invalid.status).toBe(400);
    expect(((await invalid.json()) as { error: string }).error).toMatch(/pid/);
    const huge = await post('/api/monitor/events', Buffer.alloc(2 << 20, 0x20));
    expect(huge.status).toBe(413);
    expect((await fetch(`http://127.0.0.1:${r.adminPort}/api/nope`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(404);
    expect((await post('/api/events', '{}')).status).toBe(405);
    expect((await adminGet(r, '/healthz')).status).toBe(200); // still serving
  });
});
