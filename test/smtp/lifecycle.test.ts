// Connection lifecycle: the greeting arrives without smtp-server's 100 ms early-talker delay, the
// replaced init stays in step with the library, and SIGTERM drains in-flight mail and exits 0.

import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import nodemailer from 'nodemailer';
import { originalInit } from '../../src/smtp/greeting.js';
import { freePort, startTestRelay, upstreamEnv, waitFor } from '../helpers/relay.js';
import { startSink } from '../helpers/sink.js';

const POLICY = 'version: 1\nrecipients: [company.com]\n';

function timeToGreeting(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = connect(port, '127.0.0.1');
    s.setTimeout(5000, () => reject(new Error('no greeting')));
    s.once('data', (d) => {
      expect(d.toString()).toMatch(/^220 /);
      resolve(performance.now() - t0);
      s.destroy();
    });
    s.once('error', reject);
  });
}

describe('greeting', () => {
  it('is sent at once (smtp-server alone waits 100 ms per connection)', async () => {
    const r = await startTestRelay({ policy: POLICY });
    try {
      const times: number[] = [];
      for (let i = 0; i < 20; i++) times.push(await timeToGreeting(r.smtpPort));
      times.sort((a, b) => a - b);
      expect(times[Math.floor(times.length / 2)]!).toBeLessThan(25);
    } finally {
      await r.close();
    }
  });

  it('the replaced SMTPConnection.init matches the library version it was written against', () => {
    // If smtp-server changes init, re-read it and update src/smtp/greeting.ts.
    const src = originalInit.toString().replace(/\s+/g, ' ');
    expect(src).toContain('this._setListeners(');
    expect(src).toContain('this._server.options.maxClients && this._server.connections.size > this._server.options.maxClients');
    expect(src).toContain('setTimeout(() => this.connectionReady(), 100)');
    expect(src.match(/this\./g)?.length).toBe(7);
  });
});

describe('EHLO', () => {
  it('offers STARTTLS, AUTH PLAIN LOGIN, SIZE 25 MB, 8BITMIME, PIPELINING, SMTPUTF8 — and not CHUNKING', async () => {
    const r = await startTestRelay({ policy: POLICY });
    try {
      const reply = await new Promise<string>((resolve, reject) => {
        const s = connect(r.smtpPort, '127.0.0.1');
        let buf = '';
        s.setTimeout(5000, () => reject(new Error('timeout')));
        s.on('data', (d) => {
          buf += d;
          if (buf.startsWith('220') && !buf.includes('EHLO-SENT')) {
            buf += 'EHLO-SENT';
            s.write('EHLO agent.test\r\n');
          }
          if (/\r\n250 [^\r]*\r\n$/.test(buf)) {
            resolve(buf);
            s.end('QUIT\r\n');
          }
        });
        s.once('error', reject);
      });
      const features = reply.split('\r\n').filter((l) => l.startsWith('250')).map((l) => l.slice(4));
      expect(features).toEqual(expect.arrayContaining(['PIPELINING', '8BITMIME', 'SMTPUTF8', 'AUTH PLAIN LOGIN', 'STARTTLS', 'SIZE 26214400']));
      expect(features.join(' ')).not.toMatch(/CHUNKING|BINARYMIME/);
    } finally {
      await r.close();
    }
  });
});

describe('SIGTERM', () => {
  it('stops accepting, finishes the message in flight, exits 0', async () => {
    const sink = await startSink();
    const dir = mkdtempSync(join(tmpdir(), 'pg-term-'));
    writeFileSync(join(dir, 'policy.yaml'), POLICY);
    const port = await freePort();
    const child = spawn(process.execPath, ['dist/cli.js', 'relay'], {
      env: {
        ...process.env,
        POSTGUARD_POLICY: join(dir, 'policy.yaml'), POSTGUARD_DATA_DIR: join(dir, 'data'), POSTGUARD_CERTS_DIR: join(dir, 'certs'),
        POSTGUARD_SMTP_LISTEN: `127.0.0.1:${port}`, POSTGUARD_SMTPS_LISTEN: 'off', POSTGUARD_ADMIN_LISTEN: 'off',
        ...upstreamEnv(sink),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitFor(() => out.includes('"relay_started"'), 10_000, 'relay_started');
      // Hold the DATA phase open, send SIGTERM while the message is in flight, then finish it.
      const t = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true });
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const { Readable } = await import('node:stream');
      const body = new Readable({ read() {} });
      const sending = t.sendMail({ envelope: { from: 'a@company.com', to: ['b@company.com'] }, raw: body });
      body.push('Subject: in flight\r\n\r\n');
      await waitFor(() => out.includes('"relay_started"'), 10_000, 'relay_started');
      await new Promise((r) => setTimeout(r, 200));
      child.kill('SIGTERM');
      await waitFor(() => out.includes('"shutdown"'), 10_000, 'shutdown');
      setTimeout(() => release(), 100);
      await gate;
      body.push('the rest\r\n');
      body.push(null);
      const info = await sending;
      expect(info.response).toMatch(/^250 /);
      expect(await exited).toBe(0);
      expect(sink.messages).toHaveLength(1);
      // New connections are refused once shutdown began.
      await expect(timeToGreeting(port)).rejects.toThrow();
    } finally {
      child.kill('SIGKILL');
      await sink.close();
    }
  });
});
