import { createHmac, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DETECTOR_KINDS, maskSecret, scanText, type DetectorKind, type Finding } from '../../src/policy/detectors.js';

const ALL: ReadonlySet<DetectorKind> = new Set(DETECTOR_KINDS);

// Secrets are assembled from parts so this file does not itself trip secret scanners on push.
const join = (...parts: string[]): string => parts.join('');

/** Deterministic base62 filler, so token bodies look random but tests are reproducible. */
function filler(length: number, seed: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let x = seed;
  let out = '';
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out += alphabet[x % alphabet.length];
  }
  return out;
}

const b64url = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

function jwt(header: unknown, payload: unknown): string {
  const signed = `${b64url(header)}.${b64url(payload)}`;
  return `${signed}.${createHmac('sha256', 'test-key').update(signed).digest('base64url')}`;
}

const rsaPem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
/** The detector reports the header and the base64 body, up to (not including) the END line. */
const rsaSecret = rsaPem.slice(0, rsaPem.indexOf('\n-----END'));
const opensshBody = Array.from({ length: 6 }, (_, i) => filler(70, 900 + i)).join('\n');

/** True when `masked` shows any 5 consecutive characters of `secret`. */
function leaks(masked: string, secret: string): boolean {
  for (let i = 0; i + 5 <= secret.length; i++) if (masked.includes(secret.slice(i, i + 5))) return true;
  return false;
}

interface Positive {
  name: string;
  kind: DetectorKind;
  before: string;
  /** The secret as it appears in the text; the finding's offset is where it starts. */
  secret: string;
  after?: string;
  masked?: string;
}

const AWS_KEY_ID = join('AKIA', 'IOSFODNN7EXAMPLE');
const AWS_SECRET = join('wJalrXUtnFEMI/K7MDENG/', 'bPxRfiCYEXAMPLEKEY');
const VISA = '4111 1111 1111 1111';

const positives: Positive[] = [
  { name: 'AWS access key id', kind: 'aws', before: 'aws_access_key_id = ', secret: AWS_KEY_ID, after: '\n', masked: 'AKIA…(20 chars)' },
  { name: 'AWS temporary key id in prose', kind: 'aws', before: 'use ', secret: join('ASIA', 'Y34FZKBOKMUTVV7A'), after: ' for now' },
  { name: 'AWS secret in a credentials file', kind: 'aws', before: '[default]\naws_secret_access_key = ', secret: AWS_SECRET, after: '\n' },
  { name: 'AWS secret written as prose', kind: 'aws', before: 'AWS Secret Access Key: ', secret: AWS_SECRET },
  { name: 'AWS secret in an env file', kind: 'aws', before: 'export AWS_SECRET_ACCESS_KEY="', secret: AWS_SECRET, after: '"' },
  { name: 'GitHub classic PAT', kind: 'github', before: 'git clone https://', secret: join('ghp', '_', filler(36, 1)), after: '@github.com/acme/x.git' },
  { name: 'GitHub OAuth token', kind: 'github', before: 'Authorization: token ', secret: join('gho', '_', filler(36, 2)) },
  { name: 'GitHub fine-grained PAT', kind: 'github', before: 'GH_TOKEN=', secret: join('github', '_pat_', '11ABCDEFG0', filler(12, 3), '_', filler(59, 4)) },
  { name: 'Slack bot token', kind: 'slack', before: 'SLACK_BOT_TOKEN=', secret: join('xox', 'b-', '123456789012-1234567890123-', filler(24, 5)) },
  { name: 'Slack incoming webhook', kind: 'slack', before: 'post to ', secret: join('https://hooks.slack.com/services/', 'T00000000/B00000000/', 'XXXXXXXXXXXXXXXXXXXXXXXX'), after: ' please', masked: 'http…(77 chars)' },
  { name: 'Stripe test secret key', kind: 'stripe', before: 'Stripe.api_key = "', secret: join('sk', '_test_', '4eC39HqLyjWDarjtT1zdp7dc'), after: '"' },
  { name: 'Stripe live restricted key', kind: 'stripe', before: 'key: ', secret: join('rk', '_live_', filler(24, 6)) },
  { name: 'Google API key', kind: 'google', before: 'https://maps.googleapis.com/maps/api/js?key=', secret: join('AIza', 'SyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe'), after: '&callback=init' },
  { name: 'Google OAuth client secret', kind: 'google', before: '"web":{"client_secret":"', secret: join('GOCSPX', '-', filler(28, 7)), after: '"}' },
  { name: 'RSA private key PEM', kind: 'private_key', before: 'here is the deploy key:\n\n', secret: rsaSecret, after: rsaPem.slice(rsaSecret.length) },
  { name: 'OpenSSH private key with CRLF', kind: 'private_key', before: 'id_ed25519:\r\n', secret: join('-----BEGIN OPENSSH ', 'PRIVATE KEY-----\r\n', opensshBody.replaceAll('\n', '\r\n')), after: '\r\n-----END OPENSSH PRIVATE KEY-----\r\n' },
  { name: 'PGP private key block header', kind: 'private_key', before: '', secret: join('-----BEGIN PGP ', 'PRIVATE KEY BLOCK-----'), after: '\n\nlQOYBF...' },
  { name: 'JWT bearer token', kind: 'jwt', before: 'Authorization: Bearer ', secret: jwt({ alg: 'HS256', typ: 'JWT' }, { sub: '1234567890', name: 'Agent', iat: 1516239022 }), after: '\r\n' },
  { name: 'JWT in a URL', kind: 'jwt', before: 'https://app.example/login?session=', secret: jwt({ alg: 'RS256', kid: 'k1' }, { sub: 'u1' }) },
  { name: 'password assignment', kind: 'password', before: 'password=', secret: 'Xk9#mQ2$vLp7', after: '\n', masked: '…(12 chars)' },
  { name: 'password in JSON', kind: 'password', before: '{"user": "svc", "client_secret": "', secret: 'q8Zr2LwT9vBn4Kd1', after: '"}' },
  { name: 'password in YAML, key upper case', kind: 'password', before: 'db:\n  PASSWORD: ', secret: 'S3cure!Pa55w0rd', after: '\n' },
  { name: 'password in HTML, value ends at the tag', kind: 'password', before: '<p>Your API-Key: ', secret: 'f7G2kQ9xLm3P', after: '</p>' },
  { name: 'password with a prefixed key name', kind: 'password', before: "DB_PASSWD='", secret: 'T7r!ck9Qz', after: "'" },
  { name: 'Visa test number, spaced', kind: 'card', before: 'card: ', secret: VISA, after: ' exp 12/29', masked: 'card …1111' },
  { name: 'Visa followed by its CVV', kind: 'card', before: 'pay with ', secret: '4111111111111111', after: ' 737', masked: 'card …1111' },
  { name: 'Mastercard test number, dashed', kind: 'card', before: 'MC ', secret: '5555-5555-5555-4444', masked: 'card …4444' },
  { name: 'Amex test number, 4-6-5', kind: 'card', before: 'amex ', secret: '3782 822463 10005', masked: 'card …0005' },
  { name: 'Discover test number, contiguous', kind: 'card', before: '', secret: '6011111111111117', after: '.', masked: 'card …1117' },
];

interface Negative {
  name: string;
  text: string;
}

const negatives: Negative[] = [
  { name: 'AWS key id one character short', text: `id ${AWS_KEY_ID.slice(0, -1)} here` },
  { name: 'AWS key id inside a longer word', text: `X${AWS_KEY_ID}` },
  { name: 'AWS secret-shaped value without a name', text: `value = ${AWS_SECRET}` },
  { name: 'AWS secret 41 characters long', text: `aws_secret_access_key=${AWS_SECRET}Q` },
  { name: 'GitHub token too short', text: join('ghp', '_', filler(35, 8)) },
  { name: 'Slack token too short', text: join('xox', 'b-12345') },
  { name: 'Slack URL that is not a webhook', text: 'https://hooks.slack.com/apps/A0000' },
  { name: 'Stripe publishable key', text: `Stripe(${join('pk', '_live_', filler(24, 9))})` },
  { name: 'Stripe publishable test key', text: join('pk', '_test_', filler(24, 10)) },
  { name: 'Google key one character short', text: join('AIza', filler(34, 11)) },
  { name: 'public key PEM', text: '-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----' },
  { name: 'certificate PEM', text: '-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBa\n-----END CERTIFICATE-----' },
  { name: 'eyJ header without alg', text: `token ${b64url({ typ: 'JWT' })}.${b64url({ sub: 'x' })}.c2lnbmF0dXJl` },
  { name: 'eyJ header that is not JSON', text: `${b64url('{"alg": HS256')}.${b64url({ sub: 'x' })}.c2lnbmF0dXJl` },
  { name: 'eyJ header with a non-string alg', text: `${b64url({ alg: 256 })}.${b64url({ sub: 'x' })}.c2ln` },
  { name: 'eyJ with only two segments', text: `${b64url({ alg: 'HS256' })}.${b64url({ sub: 'x' })}` },
  { name: 'low-entropy password', text: 'password=aaaaaaaa' },
  { name: 'placeholder <password>', text: 'password=<password>' },
  { name: 'placeholder &lt;password&gt; in HTML', text: '<code>password=&lt;password&gt;</code>' },
  { name: 'placeholder ${VAR}', text: 'DB_PASSWORD=${DB_PASSWORD}' },
  { name: 'placeholder {{ x }}', text: 'password: "{{ vault_db_password }}"' },
  { name: 'placeholder changeme', text: 'password: changeme' },
  { name: 'placeholder xxxxxxxx', text: 'api_key=xxxxxxxx' },
  { name: 'placeholder ********', text: 'Password: ********' },
  { name: 'placeholder your_password_here', text: 'pass = "your_password_here"' },
  { name: 'password read from the environment', text: 'password = os.environ.get("DB_PASSWORD")' },
  { name: 'password value too short', text: 'password=Xk9#mQ2' },
  { name: 'password word inside another word', text: 'bypass=Xk9#mQ2$vLp7 compass:Xk9#mQ2$vLp7' },
  { name: 'Luhn-failing 16 digits', text: 'card 4111 1111 1111 1112' },
  { name: 'order number that fails Luhn', text: 'Order #1234567890123456 has shipped' },
  { name: 'Luhn-valid number with no issuer prefix', text: 'tracking 1234567890123452' },
  { name: 'Luhn-valid number with an unknown prefix', text: 'ref 9111111111111110' },
  { name: 'Visa prefix at a length Visa does not issue', text: '41111111111111111' },
  { name: 'phone numbers', text: 'call +1 415 555 2671 or 020 7946 0958 ext 4111' },
  { name: 'dates and times', text: '2024-05-06 2024-05-07 12 30 45' },
  { name: 'digits grouped one by one', text: '4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1' },
  { name: 'decimal digits', text: 'pi is 3.4111111111111111' },
];

describe('scanText: positives', () => {
  it.each(positives)('$name', ({ kind, before, secret, after = '', masked }) => {
    const text = before + secret + after;
    const findings = scanText('attachment notes.txt', text, ALL);
    expect(findings).toHaveLength(1);
    const f = findings[0]!;
    expect(f.detector).toBe(kind);
    expect(f.where).toBe('attachment notes.txt');
    expect(f.offset).toBe(before.length);
    if (masked !== undefined) expect(f.masked).toBe(masked);
    expect(f.masked.includes(secret.slice(4))).toBe(false);
    expect(leaks(f.masked, secret)).toBe(false);
  });

  it('finds each kind when scanning for that kind alone', () => {
    for (const p of positives) {
      const found = scanText('text', p.before + p.secret + (p.after ?? ''), new Set([p.kind]));
      expect(found.map((f) => f.detector), p.name).toEqual([p.kind]);
    }
  });

  it('finds a private key in PKCS#8 and encrypted PKCS#8 form', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const plain = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const encrypted = privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' }) as string;
    expect(plain.startsWith('-----BEGIN PRIVATE KEY-----')).toBe(true);
    expect(encrypted.startsWith('-----BEGIN ENCRYPTED PRIVATE KEY-----')).toBe(true);
    const found = scanText('text', `${plain}\n${encrypted}`, ALL);
    expect(found.map((f) => [f.detector, f.offset])).toEqual([
      ['private_key', 0],
      ['private_key', plain.length + 1],
    ]);
  });
});

describe('scanText: near misses', () => {
  it.each(negatives)('$name', ({ text }) => {
    expect(scanText('text', text, ALL)).toEqual([]);
  });
});

describe('scanText: reporting', () => {
  const ghp = join('ghp', '_', filler(36, 12));

  it('scans only for the kinds asked for', () => {
    const text = `${AWS_KEY_ID} ${VISA} password=Xk9#mQ2$vLp7`;
    expect(scanText('text', text, new Set<DetectorKind>(['card'])).map((f) => f.detector)).toEqual(['card']);
    expect(scanText('text', text, new Set<DetectorKind>())).toEqual([]);
  });

  it('returns findings in text order with their offsets', () => {
    const text = `pw: password=Xk9#mQ2$vLp7\nkey ${AWS_KEY_ID}\ncard ${VISA}`;
    const found = scanText('html', text, ALL);
    expect(found.map((f) => [f.detector, f.offset])).toEqual([
      ['password', text.indexOf('Xk9#')],
      ['aws', text.indexOf(AWS_KEY_ID)],
      ['card', text.indexOf(VISA)],
    ]);
    expect(found.every((f) => f.where === 'html')).toBe(true);
  });

  it('reports the same secret once per text, at its first occurrence', () => {
    const text = `${AWS_KEY_ID}\n${AWS_KEY_ID}\n${VISA} / 4111-1111-1111-1111`;
    const found = scanText('text', text, ALL);
    expect(found.map((f) => [f.detector, f.offset])).toEqual([
      ['aws', 0],
      ['card', text.indexOf(VISA)],
    ]);
  });

  it('reports different secrets of one kind separately', () => {
    const other = join('AKIA', 'I44QH8DHBEXAMPLE');
    expect(scanText('text', `${AWS_KEY_ID} ${other}`, ALL)).toHaveLength(2);
  });

  it('caps findings at 50 per text', () => {
    const text = Array.from({ length: 80 }, (_, i) => join('ghp', '_', filler(36, 100 + i))).join('\n');
    expect(scanText('text', text, ALL)).toHaveLength(50);
  });

  it('reports a value once, as its most specific kind', () => {
    const text = `token: ${ghp}\ntoken: ${ghp}\nAWS secret: ${AWS_SECRET}`;
    expect(scanText('text', text, ALL).map((f) => f.detector)).toEqual(['github', 'aws']);
  });

  it('falls back to the generic password detector when the specific one is not asked for', () => {
    const found = scanText('text', `token: ${ghp}`, new Set<DetectorKind>(['password']));
    expect(found).toEqual<Finding[]>([{ detector: 'password', where: 'text', masked: '…(40 chars)', offset: 7 }]);
  });

  it('never shows more than the first 4 characters of any finding', () => {
    const text = positives.map((p) => p.before + p.secret + (p.after ?? '')).join('\n\n');
    const found = scanText('text', text, ALL);
    // Some positives share a secret (the AWS example key, the Visa number in two layouts).
    const distinct = new Set(positives.map((p) => `${p.kind}:${p.kind === 'card' ? p.secret.replace(/\D/g, '') : p.secret}`));
    expect(found).toHaveLength(distinct.size);
    for (const f of found) for (const p of positives) expect(leaks(f.masked, p.secret), p.name).toBe(false);
  });
});

describe('maskSecret', () => {
  it.each([
    ['AKIAIOSFODNN7EXAMPLE', 'AKIA…(20 chars)'],
    ['abcdefgh', 'ab…(8 chars)'],
    ['abc', '…(3 chars)'],
    ['', '…(0 chars)'],
    ['\u{1F511}\u{1F511}\u{1F511}\u{1F511}', '\u{1F511}…(8 chars)'],
    ['abc\u{1F511}defghijklmnopq', 'abc…(19 chars)'],
  ])('%j -> %j', (secret, masked) => {
    expect(maskSecret(secret)).toBe(masked);
  });
});

describe('scanText: performance', () => {
  const MB = 1 << 20;

  /** Seeded printable ASCII with some newlines, like a text attachment of noise. */
  function randomAscii(length: number): string {
    const codes = new Uint8Array(length);
    let x = 42;
    for (let i = 0; i < length; i++) {
      x = (x * 1103515245 + 12345) % 2147483648;
      const r = x >>> 8;
      codes[i] = r % 64 === 0 ? 10 : 32 + (r % 95);
    }
    return Buffer.from(codes).toString('latin1');
  }

  function timed(text: string): number {
    const started = performance.now();
    scanText('text', text, ALL);
    return performance.now() - started;
  }

  it('scans 1 MB of random ASCII for every kind in under 200 ms', () => {
    const text = randomAscii(MB);
    expect(text).toHaveLength(MB);
    expect(timed(text)).toBeLessThan(200);
  });

  // Inputs built to make a backtracking engine go quadratic on a careless pattern.
  it.each([
    ['a digit run', '4'.repeat(MB)],
    ['single digits and spaces', '1 '.repeat(MB / 2)],
    ['an unterminated JWT', `eyJ${'a'.repeat(MB)}`],
    ['JWT-ish segments', 'eyJa.'.repeat(MB / 5)],
    ['a token prefix then a long run', `ghp_${'a'.repeat(MB)}`],
    ['repeated token prefixes', 'ghp_ghp_xoxb-AIza'.repeat(MB / 17)],
    ['a key name then whitespace', `aws secret${' '.repeat(MB)}`],
    ['repeated key names', 'password=password:token='.repeat(MB / 24)],
    ['a PEM header then short lines', `-----BEGIN PRIVATE KEY-----${'\nA'.repeat(MB / 2)}`],
    ['base64 with no separators', Buffer.alloc(MB * 0.75, 7).toString('base64')],
    ['JWT headers that name alg but are not JSON', `${b64url('{"alg"}')}.a.a `.repeat(MB / 16)],
  ])('stays linear on %s', (_name, text) => {
    expect(timed(text)).toBeLessThan(200);
  });

  it('fails closed on a flood of malformed JWT headers, so decoys cannot hide a real token', () => {
    const decoys = Array.from({ length: 1500 }, (_, i) => `${b64url(`{"alg":x${i}}`)}.e30.c2ln`).join(' ');
    const found = scanText('text', decoys, new Set<DetectorKind>(['jwt']));
    expect(found.length).toBeGreaterThan(0);
    expect(found[0]!.offset).toBeGreaterThan(decoys.indexOf(b64url('{"alg":x999}')));
  });
});
