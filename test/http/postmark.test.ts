import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent } from '../helpers/agent.js';
import { startHttpsSink, type HttpsSink } from '../helpers/https-sink.js';
import { adminGet, companyPolicy, startTestRelay, type TestRelay } from '../helpers/relay.js';

const HOST = 'api.postmarkapp.com';

describe('Postmark through the proxy, official SDK', () => {
  let sink: HttpsSink;
  let r: TestRelay;
  beforeAll(async () => {
    sink = await startHttpsSink([HOST]);
    sink.respond = () => ({ body: { To: 'x', SubmittedAt: new Date().toISOString(), MessageID: 'm-1', ErrorCode: 0, Message: 'OK' } });
    r = await startTestRelay({ policy: companyPolicy(), env: { POSTGUARD_RESOLVE: sink.resolve([HOST]), POSTGUARD_UPSTREAM_CA: sink.caFile } });
  });
  afterAll(async () => {
    await r?.close();
    await sink?.close();
  });

  it('strips the attacker BCC: the provider never sees it', async () => {
    sink.requests.length = 0;
    const res = await runAgent(r, `
      const { ServerClient } = await import('postmark');
      const c = new ServerClient('server-token');
      return await c.sendEmail({ From: 'agent@company.com', To: 'alice@company.com', Bcc: 'phan@giftshop.club', Subject: 'Q3', TextBody: 'numbers' });
    `);
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.value.MessageID).toBe('m-1');
    expect(sink.requests).toHaveLength(1);
    const sent = sink.requests[0]!;
    expect(sent.url).toBe('/email');
    expect(sent.headers['x-postmark-server-token']).toBe('server-token');
    expect(JSON.stringify(sent.json)).not.toContain('giftshop');
    expect(sent.json.To).toBe('alice@company.com');
    const ev = await adminGet(r, '/api/events?kind=message&limit=1');
    expect(ev.body.events[0]).toMatchObject({ channel: 'http', provider: 'postmark', action: 'stripped', status: 200 });
    expect(ev.body.events[0].recipients.stripped).toEqual(['phan@giftshop.club']);
  });
});
