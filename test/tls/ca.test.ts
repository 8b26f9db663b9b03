import { X509Certificate, createPrivateKey } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, rmSync, statSync, unlinkSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { CertificateAuthority, initCa, loadCa, loadOrCreateCa } from '../../src/tls/ca.js';

const root = mkdtempSync(join(tmpdir(), 'postguard-ca-'));
let n = 0;
const freshDir = (): string => join(root, `ca-${n++}`, 'certs');

afterAll(() => rmSync(root, { recursive: true, force: true }));

const mode = (p: string): number => statSync(p).mode & 0o777;

interface Outcome {
  authorized: boolean;
  authorizationError?: string;
  error?: string;
}

/** Serve `names`' leaf on 127.0.0.1 and report how a client with `opts` judges it. */
async function handshake(
  ca: CertificateAuthority,
  names: string[],
  opts: tls.ConnectionOptions,
): Promise<Outcome> {
  const { certPem, keyPem } = ca.leafFor(names);
  const server = tls.createServer({ key: keyPem, cert: certPem }, (s) => s.end());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    return await new Promise<Outcome>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ...opts });
      socket.once('secureConnect', () => {
        const out: Outcome = { authorized: socket.authorized };
        if (socket.authorizationError) out.authorizationError = String(socket.authorizationError);
        socket.destroy();
        resolve(out);
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        socket.destroy();
        resolve({ authorized: false, error: err.code ?? err.message });
      });
    });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('CA storage', () => {
  it('creates files with tight modes and reloads the same CA', () => {
    const dir = freshDir();
    const first = loadOrCreateCa(dir);
    expect(first.created).toBe(true);
    expect(mode(dir)).toBe(0o700);
    expect(mode(join(dir, 'ca.pem'))).toBe(0o644);
    expect(mode(join(dir, 'ca-key.pem'))).toBe(0o600);
    expect(mode(join(dir, 'leaf-key.pem'))).toBe(0o600);

    const second = loadOrCreateCa(dir);
    expect(second.created).toBe(false);
    expect(second.ca.info().fingerprint256).toBe(first.ca.info().fingerprint256);
    expect(second.ca.certPem).toBe(first.ca.certPem);
    // Same leaf key across restarts, so pinned/cached leaves stay consistent.
    expect(second.ca.leafFor(['a.test']).keyPem).toBe(first.ca.leafFor(['a.test']).keyPem);
  });

  it('reports subject and validity', () => {
    const { ca } = loadOrCreateCa(freshDir());
    const info = ca.info();
    expect(info.subject).toContain('CN=postguard interception CA');
    expect(info.subject).toContain('O=postguard');
    expect(info.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    const now = Date.now();
    expect(info.notBefore.getTime()).toBeLessThan(now - 23 * 3600_000);
    expect(info.notAfter.getTime()).toBeGreaterThan(now + 9.9 * 365 * 86400_000);
  });

  it('initCa refuses to overwrite without force', () => {
    const dir = freshDir();
    const original = initCa(dir);
    expect(() => initCa(dir)).toThrow(/refusing to overwrite.*ca-key\.pem/);
    expect(loadCa(dir).info().fingerprint256).toBe(original.info().fingerprint256);

    const replaced = initCa(dir, { force: true });
    expect(replaced.info().fingerprint256).not.toBe(original.info().fingerprint256);
    expect(loadCa(dir).info().fingerprint256).toBe(replaced.info().fingerprint256);
    expect(mode(join(dir, 'ca-key.pem'))).toBe(0o600);
  });

  it('loadCa names the missing file', () => {
    const dir = freshDir();
    expect(() => loadCa(dir)).toThrow(/ca\.pem/);
    initCa(dir);
    unlinkSync(join(dir, 'ca-key.pem'));
    expect(() => loadCa(dir)).toThrow(/ca-key\.pem/);
    // A half-present CA must not be silently replaced by a new one.
    expect(() => loadOrCreateCa(dir)).toThrow(/ca-key\.pem/);
  });

  it('regenerates only a missing leaf key', () => {
    const dir = freshDir();
    const before = initCa(dir).info().fingerprint256;
    unlinkSync(join(dir, 'leaf-key.pem'));
    const { ca, created } = loadOrCreateCa(dir);
    expect(created).toBe(false);
    expect(ca.info().fingerprint256).toBe(before);
    expect(existsSync(join(dir, 'leaf-key.pem'))).toBe(true);
    expect(mode(join(dir, 'leaf-key.pem'))).toBe(0o600);
  });

  it('rejects a CA key that does not match ca.pem', () => {
    const a = freshDir();
    const b = freshDir();
    initCa(a);
    initCa(b);
    // Swap in b's key next to a's cert.
    copyFileSync(join(b, 'ca-key.pem'), join(a, 'ca-key.pem'));
    expect(() => loadCa(a)).toThrow(/does not match/);
  });
});

describe('certificates', () => {
  const { ca } = loadOrCreateCa(freshDir());
  const caCert = new X509Certificate(ca.certPem);

  it('CA cert is a CA', () => {
    expect(caCert.ca).toBe(true);
    expect(caCert.checkIssued(caCert)).toBe(true);
    expect(caCert.verify(caCert.publicKey)).toBe(true);
    const serial = caCert.serialNumber;
    expect(serial.length).toBe(32);
    expect(parseInt(serial.slice(0, 2), 16)).toBeLessThan(0x80);
  });

  it('leaf is issued by the CA with the right SANs', () => {
    const { certPem, keyPem } = ca.leafFor(['Mail.Example.COM', '127.0.0.1', '::1']);
    const leaf = new X509Certificate(certPem);
    expect(leaf.checkPrivateKey(createPrivateKey(keyPem))).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.checkIssued(caCert)).toBe(true);
    expect(leaf.verify(caCert.publicKey)).toBe(true);
    expect(leaf.subject).toBe('CN=mail.example.com');
    const san = leaf.subjectAltName ?? '';
    expect(san).toContain('DNS:mail.example.com');
    expect(san).toContain('IP Address:127.0.0.1');
    expect(san).toContain('IP Address:0:0:0:0:0:0:0:1');
    expect(leaf.keyUsage).toContain('1.3.6.1.5.5.7.3.1');
    const lifetimeDays = (leaf.validToDate.getTime() - leaf.validFromDate.getTime()) / 86400_000;
    expect(lifetimeDays).toBeLessThanOrEqual(397);
  });

  it('caches by the sorted, lower-cased name set', () => {
    const a = ca.leafFor(['b.test', 'a.test']);
    expect(ca.leafFor(['b.test', 'a.test'])).toBe(a);
    expect(ca.leafFor(['A.TEST', 'b.test'])).toBe(a);
    expect(ca.leafFor(['c.test'])).not.toBe(a);
  });

  it('rejects an empty name list', () => {
    expect(() => ca.leafFor([])).toThrow(/at least one/);
  });

  it('mints new names in a few ms', () => {
    ca.leafFor(['warmup.test']);
    const count = 20;
    const start = performance.now();
    for (let i = 0; i < count; i++) ca.leafFor([`host-${i}.timing.test`]);
    const avg = (performance.now() - start) / count;
    console.log(`leafFor: ${avg.toFixed(2)} ms average over ${count} new hosts`);
    expect(avg).toBeLessThan(50);
  });
});

describe('TLS handshake', () => {
  const { ca } = loadOrCreateCa(freshDir());

  it('is trusted with the CA by DNS name', async () => {
    const out = await handshake(ca, ['localhost', '127.0.0.1'], { servername: 'localhost', ca: ca.certPem });
    expect(out).toEqual({ authorized: true });
  });

  it('is trusted with the CA by IP SAN', async () => {
    const out = await handshake(ca, ['localhost', '127.0.0.1'], { ca: ca.certPem });
    expect(out).toEqual({ authorized: true });
  });

  it('fails without the CA', async () => {
    const rejected = await handshake(ca, ['localhost', '127.0.0.1'], { servername: 'localhost' });
    expect(rejected.authorized).toBe(false);
    expect(rejected.error).toMatch(/CERT|VERIFY|ISSUER/);

    const lenient = await handshake(ca, ['localhost', '127.0.0.1'], {
      servername: 'localhost',
      rejectUnauthorized: false,
    });
    expect(lenient.authorized).toBe(false);
    expect(lenient.authorizationError).toBeDefined();
  });

  it('fails for an IP not in the SAN', async () => {
    const out = await handshake(ca, ['localhost'], { ca: ca.certPem });
    expect(out).toEqual({ authorized: false, error: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });
});
