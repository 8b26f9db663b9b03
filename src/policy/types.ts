// The typed policy, separate from the YAML it is loaded from (native format or the seed's
// `email_security_policy`): load converts and validates once, decide() only reads this.

import type { DetectorKind } from './detectors.js';

export type Mode = 'enforce' | 'monitor';

/** What happens to a recipient the policy does not allow. `allow` exists only when a file says so explicitly. */
export type UnknownAction = 'strip' | 'block' | 'quarantine' | 'allow';

/** Recipients the agent did not show in To/Cc (SMTP Bcc, API `bcc` fields) are judged as `hidden`. */
export interface UnknownRecipients {
  visible: UnknownAction;
  hidden: UnknownAction;
}

export type ContentAction = 'block' | 'quarantine' | 'alert';

/** A domain, `*.domain` (subdomains only), or an exact address. Domains are A-labels. */
export type Pattern =
  | { kind: 'domain'; domain: string; text: string }
  | { kind: 'subdomains'; domain: string; text: string }
  | { kind: 'address'; address: string; text: string };

export interface AgentPolicy {
  id: string;
  /** `scrypt$N$r$p$salt$hash`; never the password itself. */
  passwordHash: string | null;
  /** null: fall back to the policy-wide `senders`. */
  senders: Pattern[] | null;
  recipients: Pattern[];
  /** false: only the agent's own `recipients` are allowed, not the policy-wide ones. */
  inheritRecipients: boolean;
  unknownRecipients: UnknownRecipients | null;
}

export interface SecretRule {
  id: string;
  detectors: ReadonlySet<DetectorKind>;
  action: ContentAction;
}

export interface AttachmentRule {
  id: string;
  extensions: ReadonlySet<string> | null; // lower-case, no dot
  types: ReadonlySet<string> | null; // lower-case MIME types; `type/*` allowed
  maxSize: number | null; // bytes; the rule matches attachments larger than this
  action: ContentAction;
}

/** What a tripped limit does: `tempfail` answers 451 4.7.1 (the agent retries later). */
export type LimitAction = 'tempfail' | 'block' | 'quarantine' | 'alert';

export interface Limits {
  /** Messages per agent per window. */
  messages: { max: number; windowMs: number; action: LimitAction } | null;
  /** Distinct unknown recipient domains an agent may try per window (the seed's bulk_email_to_unknown_domains). */
  bulkUnknownDomains: { maxDomains: number; windowMs: number; action: LimitAction } | null;
  /**
   * The silent-BCC signature: one address on a large share of an agent's recent messages as an
   * extra (not To) recipient while the To recipients vary. Alert only, in every mode, allowed or not.
   */
  constantRecipient: { messages: number; minMessages: number; share: number; ignore: Pattern[] } | null;
}

export interface Policy {
  /** sha256 of the source text, shown in /api/info and audit records. */
  version: string;
  file: string;
  format: 'native' | 'seed';
  mode: Mode;
  recipients: Pattern[];
  senders: Pattern[] | null;
  unknownRecipients: UnknownRecipients;
  agents: ReadonlyMap<string, AgentPolicy>;
  secrets: SecretRule[];
  attachments: AttachmentRule[];
  quarantineMs: number;
  limits: Limits;
  alerts: { webhook: string | null; priority: 'low' | 'normal' | 'high' };
  http: { allow: Pattern[] };
}

export interface PolicyError {
  file: string;
  line: number;
  col: number;
  message: string;
}

export function formatPolicyError(e: PolicyError): string {
  return `${e.file}:${e.line}:${e.col}: ${e.message}`;
}
