// The ClientHello reader behind the transparent listener, on ClientHellos from Node's real TLS client.

import { createServer, type AddressInfo } from 'node:net';
import { connect } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { readSni } from '../../src/http/sni.js';

async function clientHello(servername?: string): Promise<Buffer> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const got = new Promise<Buffer>((resolve) => server.once('connection', (s) => s.once('data', (d: Buffer) => (resolve(d), s.destroy()))));
  const c = connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, servername, rejectUnauthorized: false });
  c.on('error', () => {});
  const hello = await got;
  c.destroy();
  server.close();
  return hello;
}

describe('readSni', () => {
  it('reads the server name, however the bytes arrive', async () => {
    const hello = await clientHello('API.Postmarkapp.com');
    expect(readSni(hello)).toEqual({ state: 'done', name: 'api.postmarkapp.com' });
    for (let i = 1; i < hello.length; i += 7) expect(readSni(hello.subarray(0, i)).state).toBe('more');
  });

  it('reports no name when the client sends none', async () => {
    expect(readSni(await clientHello())).toEqual({ state: 'done', name: null });
  });

  it('refuses what is not a TLS ClientHello, and lying lengths', async () => {
    expect(readSni(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')).state).toBe('invalid');
    const hello = Buffer.from(await clientHello('a.example'));
    hello[5] = 0x02; // ServerHello
    expect(readSni(hello).state).toBe('invalid');
    const short = Buffer.from(await clientHello('a.example'));
    short.writeUInt16BE(short.length - 5, 3); // record fits, but the handshake length claims more than is there
    short.writeUIntBE(60000, 6, 3);
    expect(readSni(short).state).not.toBe('done');
  });
});
