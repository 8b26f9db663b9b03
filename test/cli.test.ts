// The built command line (`node dist/cli.js ...`), run as a child process against temp data and
// certs directories. No relay is started here, so synchronous child processes are fine.

import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPasswordHash, verifyPassword } from '../src/policy/password.js';
import { AuditLog } from '../src/store/audit.js';
import { openDb } from '../src/store/db.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist', 'cli.js');
const SEED = join(ROOT, 'policies', 'seed-postmark-mcp.yaml');
const DEFAULT = join(ROOT, 'policies', 'default.yaml');
const FIXTURES = join(ROOT, 'test', 'fixtures', 'policies');

const tmp = mkdtempSync(join(tmpdir(), 'postguard-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const freshDir = (name: string): string => join(tmp, `${name}-${n++}`);

/** PATH with this Node first, so `npm` and the CLI run on the same Node as the tests. */
const PATH = `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}`;

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], opts: { dataDir?: string; certsDir?: string; input?: string; env?: Record<string, string> } = {}): Run {
  const env: NodeJS.ProcessEnv = {
    PATH,
    HOME: tmp,
    POSTGUARD_DATA_DIR: opts.dataDir ?? freshDir('data'),
    POSTGUARD_CERTS_DIR: opts.certsDir ?? freshDir('certs'),
    POSTGUARD_POLICY: DEFAULT,
    ...opts.env,
  };
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, env, input: opts.input ?? '', encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const lines = (s: string): string[] => s.split('\n').filter((l) => l !== '');

beforeAll(() => {
  execFileSync('npm', ['run', 'build'], { cwd: ROOT, env: { ...process.env, PATH }, stdio: 'pipe', timeout: 180_000 });
  expect(existsSync(CLI)).toBe(true);
}, 200_000);

describe('postguard policy check', () => {
  const good: [string, RegExp][] = [
    [DEFAULT, /: ok \(native format, mode enforce, 2 recipient patterns, 0 agents, version [0-9a-f]{16}\)/],
    [SEED, /: ok \(seed format, mode enforce, 5 recipient patterns, 0 agents, version [0-9a-f]{16}\)/],
  ];
  for (const [file, out] of good) {
    it(`${file.slice(ROOT.length + 1)} → exit 0`, () => {
      const r = cli(['policy', 'check', file]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(out);
      expect(r.stdout.startsWith(file)).toBe(true);
    });
  }

  const bad: [string, number][] = [
    ['multiple-errors.yaml', 5],
    ['yaml-syntax.yaml', 1],
    ['unknown-top-key.yaml', 1],
    ['agent-plaintext-password.yaml', 1],
    ['seed-bad-violation-action.yaml', 1],
  ];
  for (const [name, count] of bad) {
    it(`${name} → exit 1 with ${count} file:line:col error line(s)`, () => {
      const file = join(FIXTURES, name);
      const r = cli(['policy', 'check', file]);
      expect(r.status).toBe(1);
      expect(r.stdout).toBe('');
      const errs = lines(r.stderr);
      expect(errs).toHaveLength(count);
      for (const l of errs) {
        expect(l).toMatch(/^.+:\d+:\d+: .+$/);
        expect(l.startsWith(`${file}:`)).toBe(true);
      }
    });
  }

  it('the multiple-errors fixture lists every error with its position', () => {
    const file = join(FIXTURES, 'multiple-errors.yaml');
    const r = cli(['policy', 'check', file]);
    expect(lines(r.stderr).map((l) => l.slice(file.length + 1).split(': ')[0])).toEqual(['2:7', '4:5', '6:17', '7:13', '9:13']);
  });

  it('a missing file → exit 1, positioned', () => {
    const r = cli(['policy', 'check', join(FIXTURES, 'nope.yaml')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^.+nope\.yaml:1:1: cannot read policy: .+\n$/);
  });

  it('no file → usage, exit 2', () => {
    const r = cli(['policy', 'check']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('usage: postguard policy check FILE');
  });
});

describe('postguard policy explain', () => {
  const attack = ['policy', 'explain', '--policy', SEED, '--from', 'a@company.com', '--to', 'bob@company.com', '--bcc', 'phan@giftshop.club'];

  it('the postmark-mcp message: decision block, naming the rule and the recipient', () => {
    const r = cli(attack);
    expect(r.status).toBe(0);
    expect(r.stderr).toBe('');
    const out = lines(r.stdout);
    expect(out[0]).toBe('decision: block');
    expect(out).toContain('rule: unknown_recipients.hidden');
    expect(out).toContain('reason: unknown recipient');
    expect(out).toContain('  phan@giftshop.club [bcc]: unknown (hidden) → block');
    expect(out).toContain('  bob@company.com [to]: allowed by @company.com');
  });

  it('--json gives the decision as parseable JSON', () => {
    const r = cli([...attack, '--json']);
    expect(r.status).toBe(0);
    const d = JSON.parse(r.stdout) as { action: string; rule: string; reason: string; mode: string; recipients: { address: string; outcome: string; hidden: boolean }[] };
    expect(d).toMatchObject({ action: 'block', rule: 'unknown_recipients.hidden', reason: 'unknown recipient', mode: 'enforce', wouldAction: null });
    expect(d.recipients.find((v) => v.address === 'phan@giftshop.club')).toMatchObject({ outcome: 'block', hidden: true });
  });

  it('the default policy (POSTGUARD_POLICY) strips the Bcc and delivers the rest', () => {
    const r = cli(['policy', 'explain', '--from', 'a@example.com', '--to', 'bob@example.com', '--bcc', 'phan@giftshop.club']);
    expect(r.status).toBe(0);
    const out = lines(r.stdout);
    expect(out[0]).toBe('decision: deliver');
    expect(out).toContain('reason: unknown recipients stripped');
    expect(out).toContain('deliver to: bob@example.com');
    expect(out).toContain('stripped: phan@giftshop.club');
  });

  it('all allowed → deliver', () => {
    const r = cli(['policy', 'explain', '--policy', SEED, '--from', 'a@company.com', '--to', 'bob@company.com', '--cc', 'ops@github.com', '--json']);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ action: 'deliver', rule: 'recipients', reason: 'all recipients allowed', keep: ['bob@company.com', 'ops@github.com'] });
  });

  it('a refused address is reported and the decision blocks on input', () => {
    const r = cli(['policy', 'explain', '--policy', SEED, '--from', 'a@company.com', '--to', 'user%giftshop.club@company.com', '--json']);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^address refused: user%giftshop\.club@company\.com: .*routing/m);
    expect(JSON.parse(r.stdout)).toMatchObject({ action: 'block', rule: 'input', reason: 'input could not be parsed safely' });
  });

  it('a broken --policy file → exit 1 with positioned errors', () => {
    const r = cli(['policy', 'explain', '--policy', join(FIXTURES, 'bad-duration.yaml'), '--from', 'a@b.com', '--to', 'c@d.com']);
    expect(r.status).toBe(1);
    for (const l of lines(r.stderr)) expect(l).toMatch(/^.+:\d+:\d+: .+$/);
    expect(r.stdout).toBe('');
  });
});

describe('postguard policy hash-password', () => {
  it('hashes stdin; verifyPassword accepts the password and refuses others', async () => {
    const password = 'correct horse battery staple';
    const r = cli(['policy', 'hash-password'], { input: `${password}\n` });
    expect(r.status).toBe(0);
    const hash = r.stdout.trim();
    expect(lines(r.stdout)).toHaveLength(1);
    expect(isPasswordHash(hash)).toBe(true);
    expect(hash).not.toContain(password);
    expect(await verifyPassword(password, hash)).toBe(true);
    expect(await verifyPassword(`${password}\n`, hash)).toBe(false);
    expect(await verifyPassword('wrong', hash)).toBe(false);
  });

  it('CRLF line ending is not part of the password', async () => {
    const r = cli(['policy', 'hash-password'], { input: 's3cret\r\n' });
    expect(r.status).toBe(0);
    expect(await verifyPassword('s3cret', r.stdout.trim())).toBe(true);
  });

  it('two runs give different salts', async () => {
    const a = cli(['policy', 'hash-password'], { input: 'same' }).stdout.trim();
    const b = cli(['policy', 'hash-password'], { input: 'same' }).stdout.trim();
    expect(a).not.toBe(b);
    expect((await verifyPassword('same', a)) && (await verifyPassword('same', b))).toBe(true);
  });

  it('empty stdin → exit 2', () => {
    const r = cli(['policy', 'hash-password'], { input: '' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('empty password');
    expect(r.stdout).toBe('');
  });
});

describe('postguard ca', () => {
  const certsDir = freshDir('ca');

  it('ca init creates the CA; the key is mode 0600', () => {
    const r = cli(['ca', 'init'], { certsDir });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`created CA in ${certsDir}`);
    expect(r.stdout).toMatch(/sha256 fingerprint: [0-9A-F:]{95}/);
    expect(existsSync(join(certsDir, 'ca.pem'))).toBe(true);
    expect(statSync(join(certsDir, 'ca-key.pem')).mode & 0o777).toBe(0o600);
  });

  it('a second ca init fails with exit 1 and says why', () => {
    const before = readFileSync(join(certsDir, 'ca-key.pem'), 'utf8');
    const r = cli(['ca', 'init'], { certsDir });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^postguard: refusing to overwrite existing CA key .*ca-key\.pem/);
    expect(r.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    expect(readFileSync(join(certsDir, 'ca-key.pem'), 'utf8')).toBe(before);
  });

  it('ca show prints the PEM and its fingerprint', () => {
    const r = cli(['ca', 'show'], { certsDir });
    expect(r.status).toBe(0);
    const pem = readFileSync(join(certsDir, 'ca.pem'), 'utf8');
    expect(r.stdout).toContain(pem.trimEnd());
    expect(r.stdout).toMatch(/-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----/);
    expect(r.stdout).toContain(`sha256 fingerprint: ${new X509Certificate(pem).fingerprint256}`);
    expect(r.stdout).not.toContain('PRIVATE KEY');
  });

  it('ca init --force replaces the CA', () => {
    const old = new X509Certificate(readFileSync(join(certsDir, 'ca.pem'))).fingerprint256;
    const r = cli(['ca', 'init', '--force'], { certsDir });
    expect(r.status).toBe(0);
    const now = new X509Certificate(readFileSync(join(certsDir, 'ca.pem'))).fingerprint256;
    expect(now).not.toBe(old);
    expect(r.stdout).toContain(`sha256 fingerprint: ${now}`);
  });

  it('ca show without a CA → exit 1 naming the missing file', () => {
    const r = cli(['ca', 'show']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^postguard: CA file missing: .*ca\.pem/);
  });
});

describe('postguard audit verify', () => {
  const dataDir = freshDir('audit');

  beforeAll(() => {
    const db = openDb(dataDir);
    const log = new AuditLog(db, dataDir);
    for (let i = 1; i <= 5; i++) log.append({ kind: 'message', action: 'deliver', rule: 'recipients', n: i });
    log.flush();
    db.close();
  });

  it('an intact log → exit 0', () => {
    const r = cli(['audit', 'verify'], { dataDir });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('audit: ok, 5 records, chain intact\n');
  });

  it('an empty data dir → exit 0, 0 records', () => {
    const r = cli(['audit', 'verify']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('audit: ok, 0 records');
  });

  it('after tampering → exit 1, TAMPERED, and the problem names the seq', () => {
    const db = new DatabaseSync(join(dataDir, 'postguard.db'));
    const row = db.prepare('SELECT record FROM audit WHERE seq = 3').get() as { record: string };
    db.prepare('UPDATE audit SET record = ? WHERE seq = 3').run(row.record.replace('"deliver"', '"block"'));
    db.close();
    const r = cli(['audit', 'verify'], { dataDir });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^audit: TAMPERED \(\d+ problems? in 5 records\)\n$/);
    expect(r.stderr).toMatch(/^audit: seq 3: /m);
  });
});

describe('postguard (usage)', () => {
  it('help → exit 0 with usage', () => {
    const r = cli(['help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('postguard policy check FILE');
  });

  it('unknown command → exit 2 with usage on stderr', () => {
    const r = cli(['frobnicate']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('usage:');
  });
});
