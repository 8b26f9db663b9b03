// The `email_security_policy` format from the postmark-mcp write-up (../shared/seeds/003_*), loaded
// unchanged and meaning what it says there. Each section is a list of one-key maps (as in the
// original) or a plain map; both read the same.

import { DETECTOR_KINDS, type DetectorKind } from './detectors.js';
import { DEFAULT_CONSTANT_RECIPIENT, DEFAULT_QUARANTINE_MS, patternList, type PolicyBody } from './native.js';
import type { Value } from './reader.js';
import type { AttachmentRule, Pattern, SecretRule, UnknownAction } from './types.js';

/** Detectors for `block_api_keys_in_emails`: provider keys and tokens. */
const API_KEY_DETECTORS: DetectorKind[] = ['aws', 'github', 'slack', 'stripe', 'google', 'jwt'];
/** Detectors for `block_credentials_in_emails`: everything else that lets someone log in or pay. */
const CREDENTIAL_DETECTORS = DETECTOR_KINDS.filter((k) => !API_KEY_DETECTORS.includes(k));

/** What `quarantine_sensitive_attachments` holds: key material, password stores, data dumps. */
export const SENSITIVE_EXTENSIONS = ['pem', 'key', 'p12', 'pfx', 'jks', 'keystore', 'kdbx', 'ppk', 'ovpn', 'env', 'gpg', 'pgp', 'asc', 'sql', 'dump', 'bak', 'sqlite', 'db'];
export const SENSITIVE_TYPES = ['application/x-pkcs12', 'application/pkcs8', 'application/x-pem-file', 'application/pgp-keys', 'application/sql'];

const VIOLATION_ACTIONS: Record<string, { unknown: Exclude<UnknownAction, 'allow'>; monitor: boolean }> = {
  terminate_and_alert: { unknown: 'block', monitor: false },
  block_and_alert: { unknown: 'block', monitor: false },
  block: { unknown: 'block', monitor: false },
  quarantine: { unknown: 'quarantine', monitor: false },
  quarantine_and_alert: { unknown: 'quarantine', monitor: false },
  strip: { unknown: 'strip', monitor: false },
  strip_and_alert: { unknown: 'strip', monitor: false },
  alert: { unknown: 'block', monitor: true },
  alert_only: { unknown: 'block', monitor: true },
};

export function fromSeed(root: Value): PolicyBody {
  const top = root.fields(['email_security_policy']);
  const s = top?.get('email_security_policy')?.fields(['allowed_destinations', 'blocked_actions', 'content_protection', 'response']) ?? new Map<string, Value>();

  const recipients: Pattern[] = [];
  for (const [, list] of flags(s.get('allowed_destinations'), ['internal_domains', 'whitelisted_external'])) recipients.push(...patternList(list));

  const blocked = booleans(s.get('blocked_actions'), ['unauthorized_bcc_recipients', 'external_email_forwarding', 'bulk_email_to_unknown_domains']);
  const content = booleans(s.get('content_protection'), ['block_api_keys_in_emails', 'block_credentials_in_emails', 'quarantine_sensitive_attachments']);
  const response = s.get('response')?.fields(['violation_action', 'alert_priority', 'quarantine_duration']) ?? new Map<string, Value>();

  const actionValue = response.get('violation_action');
  const actionName = actionValue?.oneOf(Object.keys(VIOLATION_ACTIONS)) ?? 'terminate_and_alert';
  const violation = VIOLATION_ACTIONS[actionName]!;
  const onViolation = (flag: boolean): UnknownAction => (flag ? violation.unknown : 'allow');

  const secrets: SecretRule[] = [];
  if (content.get('block_api_keys_in_emails')) secrets.push({ id: 'content_protection.block_api_keys_in_emails', detectors: new Set(API_KEY_DETECTORS), action: 'block' });
  if (content.get('block_credentials_in_emails')) secrets.push({ id: 'content_protection.block_credentials_in_emails', detectors: new Set(CREDENTIAL_DETECTORS), action: 'block' });
  const attachments: AttachmentRule[] = content.get('quarantine_sensitive_attachments')
    ? [{ id: 'content_protection.quarantine_sensitive_attachments', extensions: new Set(SENSITIVE_EXTENSIONS), types: new Set(SENSITIVE_TYPES), maxSize: null, action: 'quarantine' }]
    : [];

  const forwarding = blocked.get('external_email_forwarding') ?? false;
  return {
    mode: violation.monitor ? 'monitor' : 'enforce',
    recipients,
    senders: null,
    unknownRecipients: {
      // External forwarding covers every field; the BCC flag alone covers only hidden recipients.
      visible: onViolation(forwarding),
      hidden: onViolation(forwarding || (blocked.get('unauthorized_bcc_recipients') ?? false)),
    },
    agents: new Map(),
    secrets,
    attachments,
    quarantineMs: response.get('quarantine_duration')?.duration() ?? DEFAULT_QUARANTINE_MS,
    limits: {
      messages: null,
      bulkUnknownDomains: blocked.get('bulk_email_to_unknown_domains') ? { maxDomains: 5, windowMs: 3_600_000, action: violation.unknown === 'strip' ? 'block' : violation.unknown } : null,
      constantRecipient: DEFAULT_CONSTANT_RECIPIENT,
    },
    alerts: { webhook: null, priority: response.get('alert_priority')?.oneOf(['low', 'normal', 'high'] as const) ?? 'high' },
    http: { allow: [] },
  };
}

/** A section written as `- key: value` items or as a map: the known keys with their values. */
function flags(v: Value | undefined, known: readonly string[]): Map<string, Value> {
  const out = new Map<string, Value>();
  if (!v) return out;
  const maps = v.isSeq() ? (v.items() ?? []) : [v];
  for (const m of maps) for (const [k, val] of m.fields(known) ?? []) out.set(k, val);
  return out;
}

function booleans(v: Value | undefined, known: readonly string[]): Map<string, boolean> {
  const out = new Map<string, boolean>();
  for (const [k, val] of flags(v, known)) {
    const b = val.bool();
    if (b !== undefined) out.set(k, b);
  }
  return out;
}
