// Agent credentials live in the policy only as scrypt hashes: `scrypt$N$r$p$salt$hash` (base64url).

import { createHash, randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';

const N = 16384;
const R = 8;
const P = 1;
const KEYLEN = 32;

export function hashPassword(password: string): string {
  const salt = randomBytes(16);
  const hash = scryptSync(password, salt, KEYLEN, { N, r: R, p: P });
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

export function isPasswordHash(text: string): boolean {
  return /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$/.test(text);
}

// scrypt costs ~50 ms by design; agents that open a connection per message would pay it every
// time. Remember successful checks by a digest of (hash, password), never the password itself.
const verified = new Set<string>();

/**
 * Check a password against its stored hash. Asynchronous on purpose: scrypt runs on libuv's thread
 * pool, so a flood of wrong passwords cannot stall the event loop that carries everyone's mail.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  if (!isPasswordHash(stored)) return false;
  const memo = createHash('sha256').update(stored).update('\0').update(password).digest('base64');
  if (verified.has(memo)) return true;
  const [, n, r, p, salt, hash] = stored.split('$') as [string, string, string, string, string, string];
  const expected = Buffer.from(hash, 'base64url');
  const actual = await new Promise<Buffer>((resolve, reject) =>
    scrypt(password, Buffer.from(salt, 'base64url'), expected.length, { N: Number(n), r: Number(r), p: Number(p), maxmem: 256 * Number(n) * Number(r) }, (err, key) => (err ? reject(err) : resolve(key))));
  const ok = actual.length === expected.length && timingSafeEqual(actual, expected);
  if (ok) {
    if (verified.size > 10_000) verified.clear();
    verified.add(memo);
  }
  return ok;
}
