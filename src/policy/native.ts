// The native policy format (documented in policies/README.md) → Policy.

import { DETECTOR_KINDS, type DetectorKind } from './detectors.js';
import { isPasswordHash } from './password.js';
import { parsePattern } from './patterns.js';
import type { Value } from './reader.js';
import type { AgentPolicy, AttachmentRule, ContentAction, Limits, Pattern, Policy, SecretRule, UnknownAction, UnknownRecipients } from './types.js';

export type PolicyBody = Omit<Policy, 'version' | 'file' | 'format'>;

const TOP_KEYS = ['version', 'mode', 'recipients', 'senders', 'unknown_recipients', 'agents', 'secrets', 'attachments', 'quarantine', 'limits', 'alerts', 'http'] as const;
const UNKNOWN_ACTIONS = ['strip', 'block', 'quarantine', 'allow'] as const;
const CONTENT_ACTIONS = ['block', 'quarantine', 'alert'] as const;

export const DEFAULT_QUARANTINE_MS = 24 * 3_600_000;

export function fromNative(root: Value): PolicyBody {
  const f = root.fields(TOP_KEYS) ?? new Map<string, Value>();
  const version = f.get('version');
  if (!version) root.error('missing `version: 1`');
  else if (version.scalar() !== 1) version.error('only `version: 1` is supported');

  const unknown = f.get('unknown_recipients');
  const quarantine = f.get('quarantine')?.fields(['duration']);
  const limits = f.get('limits')?.fields(['messages', 'bulk_unknown_domains', 'constant_recipient']);
  const alerts = f.get('alerts')?.fields(['webhook', 'priority']);
  const http = f.get('http')?.fields(['allow']);
  return {
    mode: f.get('mode')?.oneOf(['enforce', 'monitor'] as const) ?? 'enforce',
    recipients: recipientPatterns(f.get('recipients')),
    senders: f.has('senders') ? patternList(f.get('senders')!) : null,
    // Deny by default: with nothing said, unknown recipients are stripped, never delivered.
    unknownRecipients: unknown ? unknownRecipients(unknown) : { visible: 'strip', hidden: 'strip' },
    agents: agents(f.get('agents')),
    secrets: f.has('secrets') ? (f.get('secrets')!.items() ?? []).map(secretRule) : [],
    attachments: f.has('attachments') ? (f.get('attachments')!.items() ?? []).map(attachmentRule) : [],
    quarantineMs: quarantine?.get('duration')?.duration() ?? DEFAULT_QUARANTINE_MS,
    limits: {
      messages: limits?.has('messages') ? messageLimit(limits.get('messages')!) : null,
      bulkUnknownDomains: limits?.has('bulk_unknown_domains') ? bulkLimit(limits.get('bulk_unknown_domains')!) : null,
      constantRecipient: limits?.has('constant_recipient') ? constantRecipient(limits.get('constant_recipient')!) : DEFAULT_CONSTANT_RECIPIENT,
    },
    alerts: {
      webhook: alerts?.get('webhook') ? webhookUrl(alerts.get('webhook')!) : null,
      priority: alerts?.get('priority')?.oneOf(['low', 'normal', 'high'] as const) ?? 'normal',
    },
    http: { allow: http?.get('allow') ? patternList(http.get('allow')!) : [] },
  };
}

export function patternList(v: Value): Pattern[] {
  const out: Pattern[] = [];
  for (const item of v.list() ?? []) {
    const text = item.string();
    if (text === undefined) continue;
    const p = parsePattern(text);
    if (p.ok) out.push(p.value);
    else item.error(`${JSON.stringify(text)}: ${p.error}`);
  }
  return out;
}

/** `recipients:` is either a list of patterns or `{domains: [...], addresses: [...]}`. */
function recipientPatterns(v: Value | undefined): Pattern[] {
  if (!v) return [];
  if (!v.isMap()) return patternList(v);
  const f = v.fields(['domains', 'addresses']) ?? new Map();
  const domains = f.has('domains') ? patternList(f.get('domains')!) : [];
  const addresses = f.has('addresses') ? patternList(f.get('addresses')!) : [];
  for (const p of domains) if (p.kind === 'address') f.get('domains')!.error(`${p.text} is an address; put it under addresses`);
  for (const p of addresses) if (p.kind !== 'address') f.get('addresses')!.error(`${p.text} is a domain; put it under domains`);
  return [...domains, ...addresses];
}

function unknownRecipients(v: Value): UnknownRecipients {
  if (!v.isMap()) {
    const a = v.oneOf(UNKNOWN_ACTIONS.filter((x) => x !== 'allow')) ?? 'block';
    return { visible: a, hidden: a };
  }
  const f = v.fields(['visible', 'hidden']) ?? new Map();
  const get = (k: string): UnknownAction => f.get(k)?.oneOf(UNKNOWN_ACTIONS) ?? 'strip';
  return { visible: get('visible'), hidden: get('hidden') };
}

function agents(v: Value | undefined): Map<string, AgentPolicy> {
  const out = new Map<string, AgentPolicy>();
  for (const [id, a] of v?.entries() ?? []) {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(id)) a.error('agent ids are 1–64 letters, digits, `.`, `_` or `-`');
    const f = a.fields(['password_hash', 'senders', 'recipients', 'inherit_recipients', 'unknown_recipients']) ?? new Map();
    const hash = f.get('password_hash')?.string() ?? null;
    if (hash !== null && !isPasswordHash(hash)) f.get('password_hash')!.error('expected an scrypt hash from `postguard policy hash-password` (never a plain password)');
    if (!f.has('password_hash')) a.error('an agent needs a password_hash (it authenticates with SMTP AUTH or proxy credentials)');
    out.set(id, {
      id,
      passwordHash: hash,
      senders: f.has('senders') ? patternList(f.get('senders')!) : null,
      recipients: recipientPatterns(f.get('recipients')),
      inheritRecipients: f.get('inherit_recipients')?.bool() ?? true,
      unknownRecipients: f.has('unknown_recipients') ? unknownRecipients(f.get('unknown_recipients')!) : null,
    });
  }
  return out;
}

function secretRule(v: Value, index: number): SecretRule {
  const f = v.fields(['detectors', 'action']) ?? new Map();
  const kinds = new Set<DetectorKind>();
  for (const d of f.get('detectors')?.list() ?? []) {
    const name = d.scalar();
    if (name === 'all') DETECTOR_KINDS.forEach((k) => kinds.add(k));
    else if ((DETECTOR_KINDS as readonly unknown[]).includes(name)) kinds.add(name as DetectorKind);
    else d.error(`unknown detector ${JSON.stringify(name)}; known: all, ${DETECTOR_KINDS.join(', ')}`);
  }
  if (!f.has('detectors')) v.error('a secrets rule needs `detectors` (a list, or `all`)');
  return { id: `secrets[${index}]`, detectors: kinds, action: contentAction(f.get('action'), v) };
}

function attachmentRule(v: Value, index: number): AttachmentRule {
  const f = v.fields(['extensions', 'types', 'max_size', 'action']) ?? new Map();
  const lowerSet = (k: string, strip: RegExp): Set<string> | null =>
    f.has(k) ? new Set((f.get(k)!.list() ?? []).map((x: Value) => (x.string() ?? '').toLowerCase().replace(strip, ''))) : null;
  const rule: AttachmentRule = {
    id: `attachments[${index}]`,
    extensions: lowerSet('extensions', /^\./),
    types: lowerSet('types', /^$/),
    maxSize: f.get('max_size')?.size() ?? null,
    action: contentAction(f.get('action'), v),
  };
  if (!rule.extensions && !rule.types && rule.maxSize === null) v.error('an attachments rule needs extensions, types or max_size');
  return rule;
}

function contentAction(v: Value | undefined, parent: Value): ContentAction {
  if (!v) {
    parent.error('missing `action` (block | quarantine | alert)');
    return 'block';
  }
  return v.oneOf(CONTENT_ACTIONS) ?? 'block';
}

const LIMIT_ACTIONS = ['tempfail', 'block', 'quarantine', 'alert'] as const;

/** On unless a policy says `constant_recipient: off`: it only ever alerts. */
export const DEFAULT_CONSTANT_RECIPIENT: Limits['constantRecipient'] = { messages: 50, minMessages: 10, share: 0.6, ignore: [] };

function messageLimit(v: Value): Limits['messages'] {
  const f = v.fields(['max', 'window', 'action']) ?? new Map();
  if (!f.has('max')) v.error('a messages limit needs `max`');
  return { max: f.get('max')?.positiveInt() ?? 1, windowMs: f.get('window')?.duration() ?? 3_600_000, action: f.get('action')?.oneOf(LIMIT_ACTIONS) ?? 'tempfail' };
}

export function bulkLimit(v: Value): Limits['bulkUnknownDomains'] {
  const f = v.fields(['max_domains', 'window', 'action']) ?? new Map();
  return { maxDomains: f.get('max_domains')?.positiveInt() ?? 5, windowMs: f.get('window')?.duration() ?? 3_600_000, action: f.get('action')?.oneOf(LIMIT_ACTIONS) ?? 'block' };
}

function constantRecipient(v: Value): Limits['constantRecipient'] {
  if (v.scalar() === 'off' || v.scalar() === false) return null;
  const f = v.fields(['messages', 'min_messages', 'share', 'ignore']) ?? new Map();
  const share = f.get('share')?.scalar() ?? 0.6;
  if (typeof share !== 'number' || share <= 0 || share > 1) f.get('share')?.error('expected a fraction between 0 and 1');
  return {
    messages: f.get('messages')?.positiveInt() ?? 50,
    minMessages: f.get('min_messages')?.positiveInt() ?? 10,
    share: typeof share === 'number' ? share : 0.6,
    ignore: f.has('ignore') ? patternList(f.get('ignore')!) : [],
  };
}

function webhookUrl(v: Value): string | null {
  const s = v.string();
  if (!s) return null;
  try {
    const u = new URL(s);
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return v.error('expected an http(s) URL') ?? null;
    return s;
  } catch {
    return v.error('expected an http(s) URL') ?? null;
  }
}
