// The memory budget for request bodies held at once, on a real HTTP server.

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { BodyError } from '../../src/core/json.js';
import { BodyBudget, readBody } from '../../src/http/body.js';

describe('BodyBudget', () => {
  it('refuses a body once the bytes held across requests would pass the budget, and gives back what a finished request held', async () => {
    const budget = new BodyBudget(3000);
    const outcomes: string[] = [];
    const server = createServer(async (req, res) => {
      const taken = { bytes: 0 };
      try {
        await readBody(req, 1 << 20, budget, taken);
        outcomes.push('read');
        res.end('ok');
      } catch (e) {
        outcomes.push((e as BodyError).kind);
        res.statusCode = 503;
        res.end();
      } finally {
        if (req.url === '/release') budget.give(taken.bytes);
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = (p: string) => `http://127.0.0.1:${(server.address() as AddressInfo).port}${p}`;
    try {
      expect((await fetch(url('/hold'), { method: 'POST', body: 'x'.repeat(2000) })).status).toBe(200); // holds 2000
      expect((await fetch(url('/release'), { method: 'POST', body: 'y'.repeat(2000) })).status).toBe(503); // 4000 > 3000
      expect((await fetch(url('/release'), { method: 'POST', body: 'z'.repeat(900) })).status).toBe(200);
      expect(outcomes).toEqual(['read', 'busy', 'read']);
      expect(() => budget.take(1001)).toThrow(/holding 0 MB of request bodies/);
      budget.give(2000);
      expect(() => budget.take(3000)).not.toThrow();
    } finally {
      server.close();
    }
  });
});
