// Loading policies: the shipped files load and mean what they say; every broken file is refused
// with `file:line:col: message` pointing at the offending value (one fixture per failure case,
// test/fixtures/policies/*.yaml).

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseMailbox } from '../../src/core/address.js';
import { judgeRecipient } from '../../src/policy/decide.js';
import { loadPolicyFile, parsePolicy } from '../../src/policy/load.js';
import { formatPolicyError, type Policy, type PolicyError } from '../../src/policy/types.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const FIXTURES = join(ROOT, 'test', 'fixtures', 'policies');
const DEFAULT_POLICY = join(ROOT, 'policies', 'default.yaml');
const SEED_POLICY = join(ROOT, 'policies', 'seed-postmark-mcp.yaml');
const SEED_TEXT = readFileSync(SEED_POLICY, 'utf8');

const DAY_MS = 24 * 3_600_000;
const POSITIONED = /^.+:\d+:\d+: .+$/;

function mustLoad(r: ReturnType<typeof parsePolicy>): Policy {
  if (!r.ok) throw new Error(`policy refused:\n${r.errors.map(formatPolicyError).join('\n')}`);
  return r.policy;
}

function mustFail(r: ReturnType<typeof parsePolicy>): PolicyError[] {
  if (r.ok) throw new Error('policy was accepted but should have been refused');
  return r.errors;
}

const mailbox = (text: string) => {
  const m = parseMailbox(text);
  if (!m.ok) throw new Error(`${text}: ${m.error}`);
  return m.value;
};

/** Replace one line of the seed file (the replacement must actually happen). */
function seedWith(from: string, to: string): string {
  expect(SEED_TEXT).toContain(from);
  return SEED_TEXT.replace(from, to);
}

describe('policies/default.yaml', () => {
  const policy = mustLoad(loadPolicyFile(DEFAULT_POLICY));

  it('loads as a native policy in enforce mode', () => {
    expect(policy.format).toBe('native');
    expect(policy.file).toBe(DEFAULT_POLICY);
    expect(policy.mode).toBe('enforce');
    expect(policy.version).toMatch(/^[0-9a-f]{16}$/);
  });

  it('allows example.com and its subdomains, strips everything else', () => {
    expect(policy.recipients).toEqual([
      { kind: 'domain', domain: 'example.com', text: 'example.com' },
      { kind: 'subdomains', domain: 'example.com', text: '*.example.com' },
    ]);
    expect(policy.unknownRecipients).toEqual({ visible: 'strip', hidden: 'strip' });
    expect(policy.agents.size).toBe(0);
    expect(policy.senders).toBeNull();
  });

  it('blocks every secret kind and has the attachment rules', () => {
    expect(policy.secrets).toHaveLength(1);
    expect(policy.secrets[0]!.action).toBe('block');
    expect([...policy.secrets[0]!.detectors].sort()).toEqual(['aws', 'card', 'github', 'google', 'jwt', 'password', 'private_key', 'slack', 'stripe']);
    expect(policy.attachments.map((a) => a.action)).toEqual(['block', 'quarantine']);
    expect(policy.attachments[0]!.extensions?.has('exe')).toBe(true);
    expect(policy.attachments[1]!.extensions?.has('pem')).toBe(true);
    expect(policy.quarantineMs).toBe(DAY_MS);
  });

  it('the version is a hash of the text: same text, same version; other text, other version', () => {
    const text = readFileSync(DEFAULT_POLICY, 'utf8');
    expect(mustLoad(parsePolicy('x.yaml', text)).version).toBe(policy.version);
    expect(mustLoad(parsePolicy('x.yaml', `${text}\n# changed\n`)).version).not.toBe(policy.version);
  });
});

describe('policies/seed-postmark-mcp.yaml (the write-up, unchanged)', () => {
  const policy = mustLoad(loadPolicyFile(SEED_POLICY));

  it('is read as the seed format in enforce mode (terminate_and_alert)', () => {
    expect(policy.format).toBe('seed');
    expect(policy.mode).toBe('enforce');
  });

  it('allowed destinations are exact domains', () => {
    const domains = ['company.com', 'subsidiaries.com', 'stripe.com', 'github.com', 'postmarkapp.com'];
    expect(policy.recipients.map((p) => ({ kind: p.kind, domain: 'domain' in p ? p.domain : null }))).toEqual(domains.map((domain) => ({ kind: 'domain', domain })));
    expect(policy.recipients.map((p) => p.text)).toEqual(domains.map((d) => `@${d}`));
  });

  const judged: [string, string | null][] = [
    ['bob@company.com', '@company.com'],
    ['Bob@COMPANY.COM', '@company.com'],
    ['x@subsidiaries.com', '@subsidiaries.com'],
    ['billing@stripe.com', '@stripe.com'],
    ['noreply@github.com', '@github.com'],
    ['support@postmarkapp.com', '@postmarkapp.com'],
    ['phan@giftshop.club', null],
    ['bob@sub.company.com', null], // exact domain, not subdomains
    ['bob@company.com.evil.net', null],
    ['bob@evilcompany.com', null],
    ['bob@notgithub.com', null],
  ];
  for (const [address, by] of judged) {
    it(`${address} is ${by ? `allowed by ${by}` : 'unknown'}`, () => {
      expect(judgeRecipient(policy, null, mailbox(address))?.text ?? null).toBe(by);
    });
  }

  it('unknown recipients are blocked, visible and hidden alike', () => {
    expect(policy.unknownRecipients).toEqual({ visible: 'block', hidden: 'block' });
  });

  it('api keys and credentials are blocked', () => {
    const byId = new Map(policy.secrets.map((s) => [s.id, s]));
    const apiKeys = byId.get('content_protection.block_api_keys_in_emails');
    const creds = byId.get('content_protection.block_credentials_in_emails');
    expect(apiKeys?.action).toBe('block');
    expect(creds?.action).toBe('block');
    for (const k of ['aws', 'github', 'slack', 'stripe', 'google', 'jwt'] as const) expect(apiKeys!.detectors.has(k), k).toBe(true);
    for (const k of ['private_key', 'password', 'card'] as const) expect(creds!.detectors.has(k), k).toBe(true);
    // Between them, every detector is covered.
    const all = new Set([...apiKeys!.detectors, ...creds!.detectors]);
    expect(all.size).toBe(9);
  });

  it('sensitive attachments are quarantined', () => {
    expect(policy.attachments).toHaveLength(1);
    const rule = policy.attachments[0]!;
    expect(rule.id).toBe('content_protection.quarantine_sensitive_attachments');
    expect(rule.action).toBe('quarantine');
    for (const ext of ['pem', 'p12', 'kdbx', 'key', 'pfx']) expect(rule.extensions?.has(ext), ext).toBe(true);
  });

  it('quarantine 24h, high-priority alerts, bulk-unknown-domain limit on', () => {
    expect(policy.quarantineMs).toBe(DAY_MS);
    expect(policy.alerts.priority).toBe('high');
    expect(policy.limits.bulkUnknownDomains).not.toBeNull();
    expect(policy.limits.bulkUnknownDomains!.maxDomains).toBeGreaterThan(0);
    expect(policy.limits.bulkUnknownDomains!.windowMs).toBeGreaterThan(0);
    expect(policy.limits.bulkUnknownDomains!.action).toBe('block');
  });
});

describe('seed variants', () => {
  it('external_email_forwarding: false → visible unknown allowed, hidden still blocked by the BCC flag', () => {
    const p = mustLoad(parsePolicy('seed.yaml', seedWith('- external_email_forwarding: true', '- external_email_forwarding: false')));
    expect(p.unknownRecipients).toEqual({ visible: 'allow', hidden: 'block' });
  });

  it('both flags false → unknown recipients allowed (the file says so)', () => {
    const text = seedWith('- external_email_forwarding: true', '- external_email_forwarding: false').replace('- unauthorized_bcc_recipients: true', '- unauthorized_bcc_recipients: false');
    expect(mustLoad(parsePolicy('seed.yaml', text)).unknownRecipients).toEqual({ visible: 'allow', hidden: 'allow' });
  });

  it('violation_action: alert → monitor mode (would-block is reported, not enforced)', () => {
    const p = mustLoad(parsePolicy('seed.yaml', seedWith('violation_action: "terminate_and_alert"', 'violation_action: alert')));
    expect(p.mode).toBe('monitor');
    expect(p.unknownRecipients).toEqual({ visible: 'block', hidden: 'block' });
  });

  it('violation_action: quarantine → unknown recipients quarantined', () => {
    const p = mustLoad(parsePolicy('seed.yaml', seedWith('violation_action: "terminate_and_alert"', 'violation_action: quarantine')));
    expect(p.mode).toBe('enforce');
    expect(p.unknownRecipients).toEqual({ visible: 'quarantine', hidden: 'quarantine' });
  });

  it('quarantine_duration is read', () => {
    const p = mustLoad(parsePolicy('seed.yaml', seedWith('quarantine_duration: "24h"', 'quarantine_duration: "7d"')));
    expect(p.quarantineMs).toBe(7 * DAY_MS);
  });

  it('content protection off → no secret or attachment rules', () => {
    const text = SEED_TEXT.replace(/(block_api_keys_in_emails|block_credentials_in_emails|quarantine_sensitive_attachments): true/g, '$1: false');
    const p = mustLoad(parsePolicy('seed.yaml', text));
    expect(p.secrets).toEqual([]);
    expect(p.attachments).toEqual([]);
  });

  it('the same sections written as maps instead of one-key lists read the same', () => {
    const text = [
      'email_security_policy:',
      '  allowed_destinations:',
      '    internal_domains: ["@company.com"]',
      '  blocked_actions:',
      '    unauthorized_bcc_recipients: true',
      '  response:',
      '    violation_action: block',
    ].join('\n');
    const p = mustLoad(parsePolicy('seed-map.yaml', text));
    expect(p.recipients.map((r) => r.text)).toEqual(['@company.com']);
    expect(p.unknownRecipients).toEqual({ visible: 'allow', hidden: 'block' });
  });

  it('unknown violation_action → error at the value', () => {
    const errors = mustFail(parsePolicy('seed.yaml', seedWith('violation_action: "terminate_and_alert"', 'violation_action: "nuke"')));
    expect(errors).toHaveLength(1);
    const line = SEED_TEXT.split('\n').findIndex((l) => l.includes('violation_action')) + 1;
    expect(errors[0]).toMatchObject({ file: 'seed.yaml', line, col: 23 });
    expect(errors[0]!.message).toContain('violation_action');
    expect(errors[0]!.message).toContain('"nuke"');
    expect(errors[0]!.message).toContain('terminate_and_alert');
  });
});

interface ExpectedError {
  line: number;
  col: number;
  /** Exact message, or a substring / pattern it must contain. */
  message?: string;
  contains?: string | RegExp;
}

interface Fixture {
  file: string;
  what: string;
  errors: ExpectedError[];
  /** Exactly these errors (default), or at least these. */
  exact?: boolean;
}

const fixtures: Fixture[] = [
  { file: 'yaml-syntax.yaml', what: 'YAML syntax error (unclosed flow list)', errors: [{ line: 4, col: 1, contains: /Flow sequence|end with a \]/ }] },
  { file: 'duplicate-key.yaml', what: 'duplicate key', errors: [{ line: 4, col: 1, contains: /unique/i }] },
  {
    file: 'unknown-top-key.yaml',
    what: 'unknown top-level key, with a hint',
    errors: [{ line: 2, col: 1, contains: "recipents: unknown key (did you mean 'recipients'?)" }],
  },
  {
    file: 'bad-unknown-enum.yaml',
    what: 'bad enum for unknown_recipients',
    errors: [{ line: 3, col: 21, message: 'unknown_recipients: expected one of strip | block | quarantine, got "drop"' }],
  },
  {
    file: 'bad-unknown-class-enum.yaml',
    what: 'bad enum for unknown_recipients.hidden',
    errors: [{ line: 5, col: 11, message: 'unknown_recipients.hidden: expected one of strip | block | quarantine | allow, got "forward"' }],
  },
  {
    file: 'unknown-allow-blanket.yaml',
    what: 'blanket `unknown_recipients: allow` is refused',
    errors: [{ line: 4, col: 21, contains: 'got "allow"' }],
  },
  {
    file: 'bad-domain-pattern.yaml',
    what: 'bad domain and address patterns',
    errors: [
      { line: 5, col: 7, message: 'recipients.domains[1]: "*bad*.com": a wildcard is only allowed as a leading `*.`' },
      { line: 7, col: 7, contains: 'recipients.addresses[0]: "user@@x"' },
    ],
  },
  {
    file: 'wildcard-middle.yaml',
    what: 'wildcard in the middle of a domain',
    errors: [{ line: 4, col: 5, message: 'recipients[1]: "mail.*.example.com": a wildcard is only allowed as a leading `*.`' }],
  },
  {
    file: 'address-under-domains.yaml',
    what: 'an address listed under domains',
    errors: [{ line: 4, col: 5, contains: 'boss@partner.com is an address; put it under addresses' }],
  },
  {
    file: 'unknown-detector.yaml',
    what: 'unknown detector name',
    errors: [{ line: 4, col: 22, contains: 'secrets[0].detectors[1]: unknown detector "gitlab"; known: all, aws' }],
  },
  {
    file: 'attachment-no-criteria.yaml',
    what: 'attachments rule with no criteria',
    errors: [{ line: 4, col: 5, message: 'attachments[0]: an attachments rule needs extensions, types or max_size' }],
  },
  {
    file: 'bad-duration.yaml',
    what: 'bad duration',
    errors: [{ line: 4, col: 13, message: 'quarantine.duration: expected a duration such as 30s, 15m, 24h or 7d' }],
  },
  {
    file: 'agent-plaintext-password.yaml',
    what: 'agent with a plaintext password instead of a hash',
    errors: [{ line: 5, col: 20, contains: 'agents.reporter.password_hash: expected an scrypt hash' }],
  },
  {
    file: 'agent-id-spaces.yaml',
    what: 'agent id with spaces',
    errors: [{ line: 5, col: 5, contains: /agents\.report bot: agent ids are 1–64 letters/ }],
  },
  { file: 'unsupported-version.yaml', what: 'version 2', errors: [{ line: 1, col: 10, message: 'version: only `version: 1` is supported' }] },
  { file: 'missing-version.yaml', what: 'missing version', errors: [{ line: 1, col: 1, contains: 'missing `version: 1`' }] },
  { file: 'list-not-map.yaml', what: 'a policy that is a list, not a map', exact: false, errors: [{ line: 1, col: 1, contains: 'a policy is a YAML mapping' }] },
  { file: 'empty.yaml', what: 'empty file', exact: false, errors: [{ line: 1, col: 1, contains: /mapping|version/ }] },
  { file: 'bad-webhook.yaml', what: 'non-http webhook', errors: [{ line: 4, col: 12, message: 'alerts.webhook: expected an http(s) URL' }] },
  {
    file: 'seed-bad-violation-action.yaml',
    what: 'seed: unknown violation_action',
    errors: [{ line: 6, col: 23, contains: 'email_security_policy.response.violation_action: expected one of terminate_and_alert' }],
  },
  {
    file: 'seed-typo-flag.yaml',
    what: 'seed: misspelt flag is an error, not a silently disabled check',
    errors: [{ line: 6, col: 7, contains: "unauthorised_bcc_recipients: unknown key (did you mean 'unauthorized_bcc_recipients'?)" }],
  },
  {
    file: 'seed-flag-not-bool.yaml',
    what: 'seed: flag that is not a boolean',
    errors: [{ line: 6, col: 36, message: 'email_security_policy.blocked_actions[0].unauthorized_bcc_recipients: expected true or false' }],
  },
  {
    file: 'multiple-errors.yaml',
    what: 'several errors in one file are all reported',
    errors: [
      { line: 2, col: 7, message: 'mode: expected one of enforce | monitor, got "audit"' },
      { line: 4, col: 5, contains: '"*bad*.com": a wildcard is only allowed' },
      { line: 6, col: 17, contains: 'secrets[0].detectors[0]: unknown detector "gitlab"' },
      { line: 7, col: 13, message: 'secrets[0].action: expected one of block | quarantine | alert, got "shred"' },
      { line: 9, col: 13, message: 'quarantine.duration: expected a duration such as 30s, 15m, 24h or 7d' },
    ],
  },
];

describe('policy files that must be refused (test/fixtures/policies)', () => {
  for (const fx of fixtures) {
    it(`${fx.file}: ${fx.what}`, () => {
      const file = join(FIXTURES, fx.file);
      const errors = mustFail(loadPolicyFile(file));
      if (fx.exact !== false) expect(errors.map(formatPolicyError)).toHaveLength(fx.errors.length);
      for (const e of errors) {
        expect(e.file).toBe(file);
        expect(formatPolicyError(e)).toMatch(POSITIONED);
      }
      for (const want of fx.errors) {
        const at = errors.filter((e) => e.line === want.line && e.col === want.col);
        expect(at.length, `no error at ${want.line}:${want.col}; got:\n${errors.map(formatPolicyError).join('\n')}`).toBeGreaterThan(0);
        if (want.message !== undefined) {
          expect(at.map(formatPolicyError)).toContain(`${file}:${want.line}:${want.col}: ${want.message}`);
        }
        if (want.contains !== undefined) {
          const c = want.contains;
          expect(
            at.some((e) => (typeof c === 'string' ? e.message.includes(c) : c.test(e.message))),
            `no message like ${String(c)} at ${want.line}:${want.col}; got:\n${errors.map(formatPolicyError).join('\n')}`,
          ).toBe(true);
        }
      }
    });
  }

  it('the plaintext password is not echoed back in the error', () => {
    const errors = mustFail(loadPolicyFile(join(FIXTURES, 'agent-plaintext-password.yaml')));
    expect(errors.map(formatPolicyError).join('\n')).not.toContain('hunter2');
  });

  it('messages about the whole file read cleanly (no empty path prefix like ": missing …")', () => {
    for (const f of ['missing-version.yaml', 'list-not-map.yaml', 'empty.yaml']) {
      for (const e of mustFail(loadPolicyFile(join(FIXTURES, f)))) {
        expect(e.message, `${f}: ${formatPolicyError(e)}`).not.toMatch(/^[:\s]/);
      }
    }
  });

  it('a missing file is one positioned error', () => {
    const file = join(FIXTURES, 'does-not-exist.yaml');
    const errors = mustFail(loadPolicyFile(file));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ file, line: 1, col: 1 });
    expect(errors[0]!.message).toContain('cannot read policy');
  });

  it('a file over 1 MiB is refused before parsing', () => {
    const errors = mustFail(parsePolicy('huge.yaml', `version: 1\n# ${'x'.repeat(1 << 20)}\n`));
    expect(errors).toEqual([{ file: 'huge.yaml', line: 1, col: 1, message: 'policy file is larger than 1 MiB' }]);
  });
});

describe('parsePolicy: small native policies', () => {
  it('a minimal policy defaults to enforce + strip (deny by default)', () => {
    const p = mustLoad(parsePolicy('min.yaml', 'version: 1\nrecipients: [example.com]\n'));
    expect(p).toMatchObject({ format: 'native', mode: 'enforce', file: 'min.yaml', unknownRecipients: { visible: 'strip', hidden: 'strip' }, quarantineMs: DAY_MS });
    expect(p.secrets).toEqual([]);
    expect(p.limits.bulkUnknownDomains).toBeNull();
  });

  it('patterns are normalized to A-labels', () => {
    const p = mustLoad(parsePolicy('p.yaml', 'version: 1\nrecipients:\n  domains: ["Bücher.DE", "*.Example.COM."]\n  addresses: ["Boss@Partner.COM"]\n'));
    expect(p.recipients).toEqual([
      { kind: 'domain', domain: 'xn--bcher-kva.de', text: 'Bücher.DE' },
      { kind: 'subdomains', domain: 'example.com', text: '*.Example.COM.' },
      { kind: 'address', address: 'Boss@partner.com', text: 'Boss@Partner.COM' },
    ]);
  });

  it('agents, durations, sizes and limits are read', () => {
    const hash = 'scrypt$16384$8$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g';
    const text = [
      'version: 1',
      'mode: monitor',
      'recipients: [company.com]',
      'agents:',
      '  reporter:',
      `    password_hash: "${hash}"`,
      '    senders: [reports@company.com]',
      '    recipients: [partner.com]',
      '    inherit_recipients: false',
      '    unknown_recipients: {visible: strip, hidden: block}',
      'attachments:',
      '  - max_size: 10MB',
      '    action: quarantine',
      'quarantine: {duration: 90m}',
      'limits: {bulk_unknown_domains: {max_domains: 3, window: 10m}}',
      'alerts: {webhook: "https://hooks.example.com/x", priority: low}',
    ].join('\n');
    const p = mustLoad(parsePolicy('agents.yaml', text));
    expect(p.mode).toBe('monitor');
    const a = p.agents.get('reporter');
    expect(a).toMatchObject({ id: 'reporter', passwordHash: hash, inheritRecipients: false, unknownRecipients: { visible: 'strip', hidden: 'block' } });
    expect(a!.senders?.map((s) => s.text)).toEqual(['reports@company.com']);
    expect(a!.recipients.map((s) => s.text)).toEqual(['partner.com']);
    expect(p.attachments[0]).toMatchObject({ maxSize: 10_000_000, action: 'quarantine', extensions: null, types: null });
    expect(p.quarantineMs).toBe(90 * 60_000);
    expect(p.limits.bulkUnknownDomains).toEqual({ maxDomains: 3, windowMs: 600_000, action: 'block' });
    expect(p.alerts).toEqual({ webhook: 'https://hooks.example.com/x', priority: 'low' });
  });
});
