// decide(): one pure function from (intent, policy) to a Decision naming the rule that made it.
// Intents are built by hand here, the way each channel builds them (see src/core/intent.ts).

import { describe, expect, it } from 'vitest';
import { parseMailbox, type Mailbox } from '../../src/core/address.js';
import type { Attachment, MailIntent, Recipient, RecipientField, Sender, SenderField } from '../../src/core/intent.js';
import { decide, judgeRecipient, REASONS, senderAllowed, type Action, type Decision } from '../../src/policy/decide.js';
import { explain, formatDecision } from '../../src/policy/explain.js';
import { parsePolicy } from '../../src/policy/load.js';
import { formatPolicyError, type Policy } from '../../src/policy/types.js';

// ---------------------------------------------------------------------------------------------
// Builders

function mb(text: string): Mailbox {
  const m = parseMailbox(text);
  if (!m.ok) throw new Error(`${text}: ${m.error}`);
  return m.value;
}

/** How each field is delivered/stripped by the channels (src/core/intent.ts). */
const FIELD_DEFAULTS: Record<RecipientField, { delivers: boolean; strippable: boolean; source: string }> = {
  envelope: { delivers: true, strippable: true, source: 'RCPT TO' },
  to: { delivers: false, strippable: true, source: 'To header' },
  cc: { delivers: false, strippable: true, source: 'Cc header' },
  bcc: { delivers: false, strippable: true, source: 'Bcc header' },
  'resent-to': { delivers: false, strippable: true, source: 'Resent-To header' },
  'resent-cc': { delivers: false, strippable: true, source: 'Resent-Cc header' },
  'resent-bcc': { delivers: false, strippable: true, source: 'Resent-Bcc header' },
  'x-smtpapi': { delivers: true, strippable: false, source: 'X-SMTPAPI to[0]' },
  'reply-to': { delivers: false, strippable: false, source: 'Reply-To header' },
  notify: { delivers: false, strippable: false, source: 'Disposition-Notification-To header' },
  api: { delivers: true, strippable: true, source: 'bcc[0]' },
};

function rcpt(address: string, field: RecipientField, over: Partial<Omit<Recipient, 'mailbox' | 'field'>> = {}): Recipient {
  return { mailbox: mb(address), field, ...FIELD_DEFAULTS[field], ...over };
}

function sender(address: string | null, field: SenderField = 'mail-from'): Sender {
  return { mailbox: address === null ? null : mb(address), field };
}

interface SmtpShape {
  agent?: string | null;
  from?: string | null;
  /** Extra senders (From/Sender headers). */
  headerFrom?: string[];
  to?: string[];
  cc?: string[];
  bcc?: string[];
  extra?: Recipient[];
  texts?: { where: string; text: string }[];
  attachments?: Attachment[];
  problems?: { code: string; detail: string }[];
}

/** An SMTP intent: every To/Cc/Bcc address in the envelope; To/Cc also shown in headers, Bcc not. */
function smtp(s: SmtpShape): MailIntent {
  const recipients: Recipient[] = [];
  for (const a of s.to ?? []) recipients.push(rcpt(a, 'envelope'), rcpt(a, 'to'));
  for (const a of s.cc ?? []) recipients.push(rcpt(a, 'envelope'), rcpt(a, 'cc'));
  for (const a of s.bcc ?? []) recipients.push(rcpt(a, 'envelope'));
  recipients.push(...(s.extra ?? []));
  const senders: Sender[] = [];
  if (s.from !== undefined) senders.push(sender(s.from));
  for (const f of s.headerFrom ?? []) senders.push(sender(f, 'from'));
  return {
    id: 'test',
    channel: 'smtp',
    agent: s.agent ?? null,
    senders,
    recipients,
    subject: '',
    texts: s.texts ?? [],
    attachments: s.attachments ?? [],
    problems: s.problems ?? [],
    size: 0,
  };
}

function policy(yaml: string): Policy {
  const r = parsePolicy('inline.yaml', yaml);
  if (!r.ok) throw new Error(r.errors.map(formatPolicyError).join('\n'));
  return r.policy;
}

/** Secrets are assembled from parts so this file does not itself trip secret scanners. */
const AWS_KEY = ['AKIA', 'Q3J5ZP2W7N4XKD6B'].join('');

// A real scrypt hash is not needed to load a policy, only its shape.
const HASH = 'scrypt$16384$8$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g';

const base = (unknown: string, mode = 'enforce', extra = ''): Policy =>
  policy(`version: 1\nmode: ${mode}\nrecipients: [company.com, "*.company.com"]\nunknown_recipients: ${unknown}\n${extra}`);

const STRIP = base('strip');
const BLOCK = base('block');
const QUARANTINE = base('quarantine');
const PER_CLASS = base('{visible: allow, hidden: block}');
const CONTENT = base(
  'strip',
  'enforce',
  `secrets:
  - detectors: [aws, github]
    action: block
  - detectors: [card]
    action: alert
attachments:
  - extensions: [pem, .p12, kdbx]
    action: quarantine
  - types: [application/x-msdownload, "video/*"]
    action: block
  - max_size: 1MB
    action: quarantine
`,
);
const ALERT_ONLY = base('strip', 'enforce', 'secrets:\n  - detectors: [aws]\n    action: alert\n');
const MONITOR = base('block', 'monitor', 'secrets:\n  - detectors: all\n    action: block\n');
const MONITOR_STRIP = base('strip', 'monitor');
const AGENTS = policy(`version: 1
recipients: [company.com]
senders: [company.com]
unknown_recipients: block
agents:
  assistant:
    password_hash: "${HASH}"
    senders: [assistant@company.com]
  reporter:
    password_hash: "${HASH}"
    recipients: [partner.com]
    inherit_recipients: false
  helper:
    password_hash: "${HASH}"
    recipients: [partner.com]
  strict:
    password_hash: "${HASH}"
    unknown_recipients: {visible: strip, hidden: quarantine}
`);
const SEED = (() => {
  const r = parsePolicy('seed.yaml', `email_security_policy:
  allowed_destinations:
    - internal_domains: ["@company.com"]
  blocked_actions:
    - unauthorized_bcc_recipients: true
    - external_email_forwarding: true
  content_protection:
    - block_api_keys_in_emails: true
    - quarantine_sensitive_attachments: true
  response:
    violation_action: terminate_and_alert
`);
  if (!r.ok) throw new Error(r.errors.map(formatPolicyError).join('\n'));
  return r.policy;
})();

const COLLEAGUE = 'colleague@company.com';
const PHAN = 'phan@giftshop.club';

// ---------------------------------------------------------------------------------------------
// The table

interface Expect {
  action: Action;
  rule: string | RegExp;
  reason: string;
  keep?: string[];
  stripped?: string[];
  wouldAction?: Action | null;
  wouldStrip?: string[];
  alert?: boolean;
  /** address → outcome for the verdicts of delivering recipients (envelope, X-SMTPAPI, API). */
  outcomes?: Record<string, string>;
  hits?: { rule: string; action: string }[];
}

interface Case {
  name: string;
  policy: Policy;
  intent: MailIntent;
  want: Expect;
}

const cases: Case[] = [
  // --- unknown recipients ---
  {
    name: 'all recipients allowed → deliver, no alert',
    policy: STRIP,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], cc: ['x@eu.company.com'] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed, keep: [COLLEAGUE, 'x@eu.company.com'], stripped: [], alert: false },
  },
  {
    name: 'strip mode, envelope Bcc (not in To) → deliver to colleague, phan stripped',
    policy: STRIP,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], bcc: [PHAN] }),
    want: {
      action: 'deliver',
      rule: /recipients/,
      reason: 'unknown recipients stripped',
      keep: [COLLEAGUE],
      stripped: [PHAN],
      alert: true,
      outcomes: { [COLLEAGUE]: 'keep', [PHAN]: 'strip' },
    },
  },
  {
    name: 'block mode, envelope Bcc → block on unknown_recipients.hidden',
    policy: BLOCK,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], bcc: [PHAN] }),
    want: { action: 'block', rule: 'unknown_recipients.hidden', reason: 'unknown recipient', alert: true, outcomes: { [PHAN]: 'block' } },
  },
  {
    name: 'block mode, visible unknown To → block on unknown_recipients.visible',
    policy: BLOCK,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE, 'friend@gmail.com'] }),
    want: { action: 'block', rule: 'unknown_recipients.visible', reason: REASONS.unknownRecipient },
  },
  {
    name: 'quarantine mode, envelope Bcc → quarantine',
    policy: QUARANTINE,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], bcc: [PHAN] }),
    want: { action: 'quarantine', rule: 'unknown_recipients.hidden', reason: REASONS.unknownRecipient, alert: true, outcomes: { [PHAN]: 'quarantine' } },
  },
  {
    name: 'per class {visible: allow, hidden: block}: visible unknown is delivered',
    policy: PER_CLASS,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE, 'friend@gmail.com'] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed, keep: [COLLEAGUE, 'friend@gmail.com'], outcomes: { 'friend@gmail.com': 'allow' } },
  },
  {
    name: 'per class {visible: allow, hidden: block}: hidden unknown blocks',
    policy: PER_CLASS,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], bcc: [PHAN] }),
    want: { action: 'block', rule: 'unknown_recipients.hidden', reason: REASONS.unknownRecipient },
  },
  {
    name: 'per class: a Bcc header recipient is hidden even without an envelope entry',
    policy: PER_CLASS,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], extra: [rcpt(PHAN, 'bcc')] }),
    want: { action: 'block', rule: 'unknown_recipients.hidden', reason: REASONS.unknownRecipient },
  },
  {
    name: 'per class: Resent-Bcc is hidden',
    policy: PER_CLASS,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], extra: [rcpt(PHAN, 'resent-bcc'), rcpt(PHAN, 'envelope')] }),
    want: { action: 'block', rule: 'unknown_recipients.hidden', reason: REASONS.unknownRecipient },
  },
  {
    name: 'per class: an API bcc field not shown in to/cc is hidden',
    policy: PER_CLASS,
    intent: smtp({ extra: [rcpt(COLLEAGUE, 'api', { source: 'to[0]' }), rcpt(COLLEAGUE, 'to'), rcpt(PHAN, 'api', { source: 'bcc[0]' })] }),
    want: { action: 'block', rule: 'unknown_recipients.hidden', reason: REASONS.unknownRecipient },
  },
  {
    name: 'X-SMTPAPI recipient (delivers, cannot be stripped) unknown in strip mode → block',
    policy: STRIP,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], extra: [rcpt(PHAN, 'x-smtpapi')] }),
    want: { action: 'block', rule: 'unknown_recipients.hidden', reason: 'unknown recipient in a field that cannot be stripped', outcomes: { [PHAN]: 'block' } },
  },
  {
    name: 'Reply-To unknown in strip mode → block (the relay must not alter it)',
    policy: STRIP,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], extra: [rcpt('replies@evil.com', 'reply-to')] }),
    want: { action: 'block', rule: /^unknown_recipients\./, reason: REASONS.unstrippable },
  },
  {
    name: 'Reply-To unknown in block mode → block',
    policy: BLOCK,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], extra: [rcpt('replies@evil.com', 'reply-to')] }),
    want: { action: 'block', rule: /^unknown_recipients\./, reason: REASONS.unknownRecipient },
  },
  {
    name: 'Reply-To allowed → deliver',
    policy: STRIP,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], extra: [rcpt('support@company.com', 'reply-to')] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed, keep: [COLLEAGUE] },
  },
  {
    name: 'strip mode, every recipient unknown → block, no allowed recipients left',
    policy: STRIP,
    intent: smtp({ from: 'me@company.com', to: ['a@gmail.com'], bcc: [PHAN] }),
    want: { action: 'block', rule: 'recipients', reason: 'no allowed recipients left', keep: [] },
  },
  {
    name: 'no recipients at all → block, no allowed recipients left',
    policy: STRIP,
    intent: smtp({ from: 'me@company.com' }),
    want: { action: 'block', rule: 'recipients', reason: REASONS.noRecipients },
  },
  {
    name: 'only header (non-delivering) recipients → block, no allowed recipients left',
    policy: STRIP,
    intent: smtp({ from: 'me@company.com', extra: [rcpt(COLLEAGUE, 'to')] }),
    want: { action: 'block', rule: 'recipients', reason: REASONS.noRecipients },
  },
  {
    name: 'subdomain pattern does not allow a look-alike suffix',
    policy: STRIP,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], bcc: ['x@evilcompany.com', 'y@company.com.evil.net'] }),
    want: { action: 'deliver', rule: /recipients/, reason: REASONS.stripped, keep: [COLLEAGUE], stripped: ['x@evilcompany.com', 'y@company.com.evil.net'] },
  },
  {
    name: 'duplicate envelope recipients are kept once',
    policy: STRIP,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], extra: [rcpt(COLLEAGUE, 'envelope')] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed, keep: [COLLEAGUE] },
  },
  {
    name: 'the seed policy blocks the postmark-mcp BCC',
    policy: SEED,
    intent: smtp({ from: 'a@company.com', to: ['bob@company.com'], bcc: [PHAN] }),
    want: { action: 'block', rule: 'unknown_recipients.hidden', reason: REASONS.unknownRecipient, alert: true },
  },

  // --- agents and senders ---
  {
    name: 'agents defined, no agent authenticated → block on agents',
    policy: AGENTS,
    intent: smtp({ agent: null, from: 'me@company.com', to: [COLLEAGUE] }),
    want: { action: 'block', rule: 'agents', reason: 'agent not defined in the policy' },
  },
  {
    name: 'unknown agent → block on agents',
    policy: AGENTS,
    intent: smtp({ agent: 'ghost', from: 'me@company.com', to: [COLLEAGUE] }),
    want: { action: 'block', rule: 'agents', reason: REASONS.agent },
  },
  {
    name: 'agent with its own sender sends as itself → deliver',
    policy: AGENTS,
    intent: smtp({ agent: 'assistant', from: 'assistant@company.com', headerFrom: ['assistant@company.com'], to: [COLLEAGUE] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed, keep: [COLLEAGUE], alert: false },
  },
  {
    name: 'agent MAIL FROM not in its senders → block on agents.<id>.senders',
    policy: AGENTS,
    intent: smtp({ agent: 'assistant', from: 'ceo@company.com', to: [COLLEAGUE] }),
    want: { action: 'block', rule: 'agents.assistant.senders', reason: 'sender not allowed for this agent' },
  },
  {
    name: 'From header spoof with a good envelope sender → block',
    policy: AGENTS,
    intent: smtp({ agent: 'assistant', from: 'assistant@company.com', headerFrom: ['ceo@company.com'], to: [COLLEAGUE] }),
    want: { action: 'block', rule: 'agents.assistant.senders', reason: REASONS.sender },
  },
  {
    name: 'Sender header spoof → block',
    policy: AGENTS,
    intent: { ...smtp({ agent: 'assistant', from: 'assistant@company.com', to: [COLLEAGUE] }), senders: [sender('assistant@company.com'), sender('ceo@company.com', 'sender')] },
    want: { action: 'block', rule: 'agents.assistant.senders', reason: REASONS.sender },
  },
  {
    name: 'null reverse path when senders are restricted → block',
    policy: AGENTS,
    intent: smtp({ agent: 'assistant', from: null, to: [COLLEAGUE] }),
    want: { action: 'block', rule: 'agents.assistant.senders', reason: REASONS.sender },
  },
  {
    name: 'agent without own senders falls back to policy-wide senders (allowed)',
    policy: AGENTS,
    intent: smtp({ agent: 'helper', from: 'anyone@company.com', to: [COLLEAGUE] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed },
  },
  {
    name: 'agent without own senders, sender outside policy-wide senders → block on senders',
    policy: AGENTS,
    intent: smtp({ agent: 'helper', from: 'me@gmail.com', to: [COLLEAGUE] }),
    want: { action: 'block', rule: 'senders', reason: REASONS.sender },
  },
  {
    name: 'inherit_recipients false: policy-wide recipients are unknown for this agent',
    policy: AGENTS,
    intent: smtp({ agent: 'reporter', from: 'me@company.com', to: [COLLEAGUE] }),
    want: { action: 'block', rule: 'unknown_recipients.visible', reason: REASONS.unknownRecipient },
  },
  {
    name: 'inherit_recipients false: the agent’s own recipients are allowed',
    policy: AGENTS,
    intent: smtp({ agent: 'reporter', from: 'me@company.com', to: ['x@partner.com'] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed, keep: ['x@partner.com'] },
  },
  {
    name: 'inherit_recipients default: own and policy-wide recipients are allowed',
    policy: AGENTS,
    intent: smtp({ agent: 'helper', from: 'me@company.com', to: [COLLEAGUE, 'x@partner.com'] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed, keep: [COLLEAGUE, 'x@partner.com'] },
  },
  {
    name: 'an agent’s recipients are not allowed for another agent',
    policy: AGENTS,
    intent: smtp({ agent: 'assistant', from: 'assistant@company.com', to: ['x@partner.com'] }),
    want: { action: 'block', rule: 'unknown_recipients.visible', reason: REASONS.unknownRecipient },
  },
  {
    name: 'per-agent unknown_recipients override: hidden → quarantine',
    policy: AGENTS,
    intent: smtp({ agent: 'strict', from: 'me@company.com', to: [COLLEAGUE], bcc: [PHAN] }),
    want: { action: 'quarantine', rule: 'agents.strict.unknown_recipients.hidden', reason: REASONS.unknownRecipient },
  },
  {
    name: 'per-agent unknown_recipients override: visible → strip (policy-wide says block)',
    policy: AGENTS,
    intent: smtp({ agent: 'strict', from: 'me@company.com', to: [COLLEAGUE, 'friend@gmail.com'] }),
    want: { action: 'deliver', rule: /recipients/, reason: REASONS.stripped, keep: [COLLEAGUE], stripped: ['friend@gmail.com'] },
  },

  // --- input problems ---
  {
    name: 'an input problem blocks even when everything else is fine',
    policy: STRIP,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], problems: [{ code: 'address.invalid', detail: 'Bcc: user%evil.com@company.com' }] }),
    want: { action: 'block', rule: 'input', reason: 'input could not be parsed safely', alert: true },
  },

  // --- content ---
  {
    name: 'AWS key in the body → block on the secrets rule',
    policy: CONTENT,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], texts: [{ where: 'text', text: `here you go: ${AWS_KEY}\n` }] }),
    want: { action: 'block', rule: 'secrets[0]', reason: 'secret or credential in content', alert: true, hits: [{ rule: 'secrets[0]', action: 'block' }] },
  },
  {
    name: 'content action alert → deliver with an alert',
    policy: ALERT_ONLY,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], texts: [{ where: 'text', text: `key ${AWS_KEY}` }] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed, keep: [COLLEAGUE], alert: true, hits: [{ rule: 'secrets[0]', action: 'alert' }] },
  },
  {
    name: 'card number under an alert rule → deliver with an alert',
    policy: CONTENT,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], texts: [{ where: 'text', text: 'card 4111 1111 1111 1111 exp 12/30' }] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed, alert: true, hits: [{ rule: 'secrets[1]', action: 'alert' }] },
  },
  {
    name: 'a secret kind the policy does not name is ignored',
    policy: ALERT_ONLY,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], texts: [{ where: 'text', text: 'card 4111 1111 1111 1111' }] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed, alert: false, hits: [] },
  },
  ...(
    [
      ['by extension', { filename: 'id_rsa.pem', contentType: 'text/plain', size: 1700 }, 'quarantine', 'attachments[0]'],
      ['by extension, upper case', { filename: 'DEPLOY.PEM', contentType: 'application/octet-stream', size: 1700 }, 'quarantine', 'attachments[0]'],
      ['by extension written with a dot in the policy', { filename: 'cert.p12', contentType: 'application/octet-stream', size: 3000 }, 'quarantine', 'attachments[0]'],
      ['by extension, password store', { filename: 'passwords.kdbx', contentType: 'application/octet-stream', size: 3000 }, 'quarantine', 'attachments[0]'],
      ['by extension with a trailing dot (saved as .kdbx on Windows)', { filename: 'vault.kdbx.', contentType: 'application/octet-stream', size: 3000 }, 'quarantine', 'attachments[0]'],
      ['by type', { filename: 'setup', contentType: 'application/x-msdownload', size: 5000 }, 'block', 'attachments[1]'],
      ['by type with parameters and case', { filename: 'x.bin', contentType: 'Application/X-MSDownload; name="x.bin"', size: 5000 }, 'block', 'attachments[1]'],
      ['by type wildcard', { filename: 'clip', contentType: 'video/mp4', size: 5000 }, 'block', 'attachments[1]'],
      ['by max_size', { filename: 'dump.csv', contentType: 'text/csv', size: 2_000_000 }, 'quarantine', 'attachments[2]'],
    ] as const
  ).map(([what, attachment, action, rule]): Case => ({
    name: `attachment rule ${what} → ${action}`,
    policy: CONTENT,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], attachments: [{ ...attachment }] }),
    want: { action, rule, reason: 'attachment rule matched', alert: true, hits: [{ rule, action }] },
  })),
  {
    name: 'a small ordinary attachment matches nothing',
    policy: CONTENT,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], attachments: [{ filename: 'notes.txt', contentType: 'text/plain', size: 1000 }] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed, alert: false, hits: [] },
  },
  {
    name: 'exactly max_size is not larger than it',
    policy: CONTENT,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], attachments: [{ filename: 'a.csv', contentType: 'text/csv', size: 1_000_000 }] }),
    want: { action: 'deliver', rule: 'recipients', reason: REASONS.allowed, hits: [] },
  },

  // --- precedence ---
  {
    name: 'quarantine beats strip',
    policy: CONTENT,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], bcc: [PHAN], attachments: [{ filename: 'id_rsa.pem', contentType: 'text/plain', size: 100 }] }),
    want: { action: 'quarantine', rule: 'attachments[0]', reason: REASONS.attachment, stripped: [PHAN] },
  },
  {
    name: 'block beats quarantine (block found later)',
    policy: CONTENT,
    intent: smtp({
      from: 'me@company.com',
      to: [COLLEAGUE],
      texts: [{ where: 'text', text: AWS_KEY }],
      attachments: [{ filename: 'id_rsa.pem', contentType: 'text/plain', size: 100 }],
    }),
    want: { action: 'block', rule: 'secrets[0]', reason: REASONS.secret },
  },
  {
    name: 'block beats quarantine (quarantine on recipients, block on content)',
    policy: base('quarantine', 'enforce', 'secrets:\n  - detectors: [aws]\n    action: block\n'),
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], bcc: [PHAN], texts: [{ where: 'text', text: AWS_KEY }] }),
    want: { action: 'block', rule: 'secrets[0]', reason: REASONS.secret },
  },
  {
    name: 'block beats quarantine (block found first keeps its rule)',
    policy: base('block', 'enforce', 'attachments:\n  - extensions: [pem]\n    action: quarantine\n'),
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], bcc: [PHAN], attachments: [{ filename: 'k.pem', contentType: 'text/plain', size: 1 }] }),
    want: { action: 'block', rule: 'unknown_recipients.hidden', reason: REASONS.unknownRecipient },
  },
  {
    name: 'block beats strip',
    policy: CONTENT,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], bcc: [PHAN], texts: [{ where: 'text', text: AWS_KEY }] }),
    want: { action: 'block', rule: 'secrets[0]', reason: REASONS.secret },
  },
  {
    name: 'the first block wins over later blocks (agents before content)',
    policy: AGENTS,
    intent: smtp({ agent: 'ghost', from: 'x@gmail.com', to: [PHAN], problems: [{ code: 'x', detail: 'y' }] }),
    want: { action: 'block', rule: 'agents', reason: REASONS.agent },
  },

  // --- monitor mode ---
  {
    name: 'monitor mode: would block on a hidden unknown, delivers to everyone',
    policy: MONITOR,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], bcc: [PHAN] }),
    want: {
      action: 'deliver',
      wouldAction: 'block',
      rule: 'unknown_recipients.hidden',
      reason: REASONS.unknownRecipient,
      keep: [COLLEAGUE, PHAN],
      stripped: [],
      wouldStrip: [],
      alert: true,
    },
  },
  {
    name: 'monitor mode: would strip, keeps everyone',
    policy: MONITOR_STRIP,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], bcc: [PHAN] }),
    want: { action: 'deliver', wouldAction: 'deliver', rule: /recipients/, reason: REASONS.stripped, keep: [COLLEAGUE, PHAN], stripped: [], wouldStrip: [PHAN], alert: true },
  },
  {
    name: 'monitor mode: would block a secret',
    policy: MONITOR,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], texts: [{ where: 'text', text: AWS_KEY }] }),
    want: { action: 'deliver', wouldAction: 'block', rule: 'secrets[0]', reason: REASONS.secret, keep: [COLLEAGUE], alert: true },
  },
  {
    name: 'monitor mode: nothing to report',
    policy: MONITOR,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE] }),
    want: { action: 'deliver', wouldAction: 'deliver', rule: 'recipients', reason: REASONS.allowed, keep: [COLLEAGUE], wouldStrip: [], alert: false },
  },
  {
    name: 'monitor mode: unstrippable unknown would block',
    policy: MONITOR_STRIP,
    intent: smtp({ from: 'me@company.com', to: [COLLEAGUE], extra: [rcpt(PHAN, 'x-smtpapi')] }),
    want: { action: 'deliver', wouldAction: 'block', rule: 'unknown_recipients.hidden', reason: REASONS.unstrippable, keep: [COLLEAGUE, PHAN], alert: true },
  },
];

function check(d: Decision, want: Expect): void {
  expect({ action: d.action, reason: d.reason }).toEqual({ action: want.action, reason: want.reason });
  if (typeof want.rule === 'string') expect(d.rule).toBe(want.rule);
  else expect(d.rule).toMatch(want.rule);
  expect(d.wouldAction).toBe(want.wouldAction ?? null);
  expect(d.mode).toBe(want.wouldAction !== undefined ? 'monitor' : 'enforce');
  if (want.keep) expect(d.keep).toEqual(want.keep);
  if (want.stripped) expect(d.stripped).toEqual(want.stripped);
  if (want.wouldStrip) expect(d.wouldStrip).toEqual(want.wouldStrip);
  if (want.alert !== undefined) expect(d.alert).toBe(want.alert);
  if (want.hits) expect(d.hits.map((h) => ({ rule: h.rule, action: h.action }))).toEqual(want.hits);
  for (const [address, outcome] of Object.entries(want.outcomes ?? {})) {
    const v = d.recipients.filter((r) => r.address === address && FIELD_DEFAULTS[r.field].delivers);
    expect(v.map((r) => r.outcome), address).toEqual([outcome]);
  }
  // Invariants: an enforced block or quarantine alerts; nothing stripped is kept.
  if (d.action !== 'deliver') expect(d.alert).toBe(true);
  for (const s of d.stripped) expect(d.keep).not.toContain(s);
  if (d.mode === 'enforce') expect(d.wouldStrip).toEqual([]);
  else expect(d.stripped).toEqual([]);
}

describe('decide()', () => {
  for (const c of cases) {
    it(c.name, () => check(decide(c.intent, c.policy), c.want));
  }

  it('is pure: the same input gives the same decision and the intent is not modified', () => {
    const intent = smtp({ from: 'me@company.com', to: [COLLEAGUE], bcc: [PHAN] });
    const before = JSON.stringify(intent);
    expect(decide(intent, STRIP)).toEqual(decide(intent, STRIP));
    expect(JSON.stringify(intent)).toBe(before);
  });

  it('verdicts name the allowing pattern and whether the recipient was hidden', () => {
    const d = decide(smtp({ from: 'me@company.com', to: [COLLEAGUE], cc: ['x@eu.company.com'], bcc: [PHAN] }), STRIP);
    const env = d.recipients.filter((r) => r.field === 'envelope');
    expect(env.map((r) => [r.address, r.hidden, r.allowedBy, r.outcome])).toEqual([
      [COLLEAGUE, false, 'company.com', 'keep'],
      ['x@eu.company.com', false, '*.company.com', 'keep'],
      [PHAN, true, null, 'strip'],
    ]);
  });
});

describe('secrets are masked in decisions', () => {
  const d = decide(smtp({ from: 'me@company.com', to: [COLLEAGUE], texts: [{ where: 'text', text: `aws_access_key_id = ${AWS_KEY}\n` }] }), CONTENT);

  it('blocks and reports a masked finding', () => {
    expect(d.action).toBe('block');
    expect(d.rule).toBe('secrets[0]');
    expect(d.hits).toHaveLength(1);
    const f = d.hits[0]!.finding!;
    expect(f.detector).toBe('aws');
    expect(f.where).toBe('text');
    expect(f.masked).not.toBe(AWS_KEY);
    expect(f.masked).toContain('…');
  });

  it('the key appears nowhere in the serialized decision', () => {
    const json = JSON.stringify(d);
    expect(json).not.toContain(AWS_KEY);
    // not even its distinctive tail
    expect(json).not.toContain(AWS_KEY.slice(4));
    expect(json).not.toContain(AWS_KEY.slice(-8));
  });

  it('a GitHub token in the subject is masked too', () => {
    const token = ['ghp', '_', 'Zq8Lm2Xr7Tb4Nc9Vw1Ks6Hd3Jf5Gp0Ya8Ue2'].join('');
    const dd = decide(smtp({ from: 'me@company.com', to: [COLLEAGUE], texts: [{ where: 'subject', text: `token ${token}` }] }), CONTENT);
    expect(dd).toMatchObject({ action: 'block', rule: 'secrets[0]', reason: REASONS.secret });
    expect(dd.hits[0]!.finding!.detector).toBe('github');
    expect(JSON.stringify(dd)).not.toContain(token);
    expect(JSON.stringify(dd)).not.toContain(token.slice(4, 20));
  });
});

describe('judgeRecipient', () => {
  const P = policy(`version: 1
recipients:
  domains: [example.com, "*.corp.example.org", bücher.de]
  addresses: [Boss@partner.com]
agents:
  bot:
    password_hash: "${HASH}"
    recipients: [bot-only.net]
  solo:
    password_hash: "${HASH}"
    recipients: [solo.net]
    inherit_recipients: false
`);
  const rows: [string | null, string, string | null][] = [
    [null, 'a@example.com', 'example.com'],
    [null, 'A@EXAMPLE.COM', 'example.com'],
    [null, 'a@example.com.', 'example.com'],
    [null, 'a@sub.example.com', null], // a domain is exact
    [null, 'a@notexample.com', null],
    [null, 'a@example.com.evil.net', null],
    [null, 'a@mail.corp.example.org', '*.corp.example.org'],
    [null, 'a@deep.mail.corp.example.org', '*.corp.example.org'],
    [null, 'a@corp.example.org', null], // `*.` is subdomains only, not the apex
    [null, 'a@xcorp.example.org', null],
    [null, 'a@bücher.de', 'bücher.de'],
    [null, 'a@xn--bcher-kva.de', 'bücher.de'],
    [null, 'a@b\u00FCcher.de', 'bücher.de'],
    [null, 'a@bucher.de', null],
    [null, 'Boss@partner.com', 'Boss@partner.com'],
    [null, 'Boss@PARTNER.COM', 'Boss@partner.com'],
    [null, 'boss@partner.com', null], // local part is case-sensitive
    [null, 'other@partner.com', null],
    [null, 'x@bot-only.net', null],
    ['bot', 'x@bot-only.net', 'bot-only.net'],
    ['bot', 'a@example.com', 'example.com'],
    ['solo', 'x@solo.net', 'solo.net'],
    ['solo', 'a@example.com', null],
    ['ghost', 'a@example.com', 'example.com'], // unknown agent: policy-wide list (decide blocks the agent itself)
  ];
  for (const [agent, address, by] of rows) {
    it(`${agent ?? '(no agent)'}: ${address} → ${by ?? 'unknown'}`, () => {
      expect(judgeRecipient(P, agent, mb(address))?.text ?? null).toBe(by);
    });
  }
});

describe('senderAllowed', () => {
  const P = policy(`version: 1
recipients: [example.com]
senders: [example.com, "*.example.com", ops@partner.com]
agents:
  bot:
    password_hash: "${HASH}"
    senders: [bot@example.com]
  free:
    password_hash: "${HASH}"
`);
  const OPEN = policy('version: 1\nrecipients: [example.com]\n');
  const rows: [Policy, string | null, string | null, boolean][] = [
    // Without a senders list the sender must be a place mail may go: bounces carry the message there.
    [OPEN, null, 'anyone@anywhere.net', false],
    [OPEN, null, 'agent@example.com', true],
    [OPEN, null, null, true],
    [P, null, 'a@example.com', true],
    [P, null, 'a@mail.example.com', true],
    [P, null, 'ops@partner.com', true],
    [P, null, 'Ops@partner.com', false],
    [P, null, 'a@gmail.com', false],
    [P, null, null, false],
    [P, 'bot', 'bot@example.com', true],
    [P, 'bot', 'a@example.com', false],
    [P, 'bot', null, false],
    [P, 'free', 'a@example.com', true],
    [P, 'free', 'a@gmail.com', false],
  ];
  for (const [pol, agent, address, ok] of rows) {
    it(`${pol === OPEN ? 'no senders rule' : 'senders rule'}, ${agent ?? '(no agent)'}: ${address ?? '<>'} → ${ok}`, () => {
      expect(senderAllowed(pol, agent, address === null ? null : mb(address))).toBe(ok);
    });
  }
});

describe('explain()', () => {
  it('the postmark-mcp message: block, naming the rule and the hidden recipient', () => {
    const { decision, errors } = explain(SEED, { from: 'a@company.com', to: ['bob@company.com'], cc: [], bcc: [PHAN], agent: null });
    expect(errors).toEqual([]);
    expect(decision).toMatchObject({ action: 'block', rule: 'unknown_recipients.hidden', reason: REASONS.unknownRecipient });
    const phan = decision.recipients.find((r) => r.address === PHAN && r.field === 'envelope');
    expect(phan).toMatchObject({ hidden: true, allowedBy: null, outcome: 'block', source: '--bcc' });
    const text = formatDecision(decision);
    expect(text).toContain('decision: block');
    expect(text).toContain('rule: unknown_recipients.hidden');
    expect(text).toContain('reason: unknown recipient');
    expect(text).toContain(`${PHAN} [bcc]: unknown (hidden) → block`);
    expect(text).toContain('bob@company.com [to]: allowed by @company.com');
  });

  it('strip policy: the Bcc is stripped and the rest delivered', () => {
    const { decision } = explain(STRIP, { from: 'me@company.com', to: [COLLEAGUE], cc: [], bcc: [PHAN], agent: null });
    expect(decision).toMatchObject({ action: 'deliver', reason: REASONS.stripped, keep: [COLLEAGUE], stripped: [PHAN] });
    const text = formatDecision(decision);
    expect(text).toContain(`deliver to: ${COLLEAGUE}`);
    expect(text).toContain(`stripped: ${PHAN}`);
  });

  it('a Cc is visible, not hidden', () => {
    const { decision } = explain(PER_CLASS, { from: 'me@company.com', to: [COLLEAGUE], cc: ['friend@gmail.com'], bcc: [], agent: null });
    expect(decision).toMatchObject({ action: 'deliver', rule: 'recipients', reason: REASONS.allowed, keep: [COLLEAGUE, 'friend@gmail.com'] });
  });

  it('monitor mode says what enforce would do', () => {
    const { decision } = explain(MONITOR, { from: 'me@company.com', to: [COLLEAGUE], cc: [], bcc: [PHAN], agent: null });
    expect(decision).toMatchObject({ action: 'deliver', wouldAction: 'block', rule: 'unknown_recipients.hidden' });
    expect(formatDecision(decision)).toContain('decision: deliver (monitor mode; enforce would: block)');
  });

  it('a refused address is an error and blocks as input', () => {
    const { decision, errors } = explain(STRIP, { from: 'me@company.com', to: [COLLEAGUE], cc: [], bcc: ['user%evil.com@company.com'], agent: null });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain('user%evil.com@company.com');
    expect(errors[0]).toContain('`%` and `!` routing');
    expect(decision).toMatchObject({ action: 'block', rule: 'input', reason: REASONS.input });
  });

  it('agents are honoured', () => {
    const ok = explain(AGENTS, { from: 'assistant@company.com', to: [COLLEAGUE], cc: [], bcc: [], agent: 'assistant' });
    expect(ok.decision).toMatchObject({ action: 'deliver', rule: 'recipients' });
    const ghost = explain(AGENTS, { from: 'assistant@company.com', to: [COLLEAGUE], cc: [], bcc: [], agent: null });
    expect(ghost.decision).toMatchObject({ action: 'block', rule: 'agents', reason: REASONS.agent });
  });
});
