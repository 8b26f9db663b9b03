// The one policy decision: a pure function from (intent, policy) to a Decision that names the rule
// that made it. No I/O, no clock. Channels apply the decision; they never re-judge.
//
// Precedence, most severe first: block > quarantine > deliver. Within deliver, unknown recipients
// are stripped (or, in monitor mode, only reported). Deny by default: a recipient is allowed only
// by a pattern; an agent is known only if the policy names it.

import type { Mailbox } from '../core/address.js';
import type { MailIntent, Recipient } from '../core/intent.js';
import { scanText, type DetectorKind, type Finding } from './detectors.js';
import { EMPTY_HISTORY, type HistorySnapshot } from './history.js';
import { findMatch, matchesMailbox } from './patterns.js';
import type { AgentPolicy, AttachmentRule, ContentAction, LimitAction, Pattern, Policy, UnknownAction } from './types.js';

/** `tempfail`: not now (a limit), the agent may retry later (SMTP 451 4.7.1). */
export type Action = 'deliver' | 'tempfail' | 'block' | 'quarantine';

/** Fixed phrases, so audit records and alerts can be grouped and searched. */
export const REASONS = {
  allowed: 'all recipients allowed',
  stripped: 'unknown recipients stripped',
  unknownRecipient: 'unknown recipient',
  unstrippable: 'unknown recipient in a field that cannot be stripped',
  noRecipients: 'no allowed recipients left',
  sender: 'sender not allowed for this agent',
  agent: 'agent not defined in the policy',
  secret: 'secret or credential in content',
  attachment: 'attachment rule matched',
  input: 'input could not be parsed safely',
  rate: 'message rate limit for this agent reached',
  bulk: 'too many unknown recipient domains for this agent',
  unknownField: 'request field the relay does not know',
  unseenDraft: 'sends a stored draft the relay never inspected',
  // Refusals the HTTP channel makes before there is an intent to decide on:
  endpoint: 'write to an endpoint the relay does not know',
  differential: 'body can be read two ways (parser differential)',
  egress: 'host not on the HTTP egress allowlist',
} as const;
export type Reason = (typeof REASONS)[keyof typeof REASONS];

export interface RecipientVerdict {
  address: string;
  field: Recipient['field'];
  source: string;
  /** Hidden = the agent did not show this recipient in To/Cc (a BCC, in the attack's terms). */
  hidden: boolean;
  /** The allowing pattern, or null for an unknown recipient. */
  allowedBy: string | null;
  outcome: 'keep' | 'strip' | 'block' | 'quarantine' | 'allow';
}

export interface ContentHit {
  rule: string;
  action: ContentAction;
  finding?: Finding;
  attachment?: string;
}

export interface Decision {
  action: Action;
  /** Monitor mode: what enforce mode would have done (action is then always `deliver`). */
  wouldAction: Action | null;
  mode: Policy['mode'];
  rule: string;
  reason: Reason;
  /** Delivering recipients that go to the upstream. */
  keep: string[];
  /** Recipients removed (enforce mode) — or that would be removed (monitor mode, in wouldStrip). */
  stripped: string[];
  wouldStrip: string[];
  recipients: RecipientVerdict[];
  hits: ContentHit[];
  /** Limit rules this message tripped (including alert-only ones). */
  limits: string[];
  /** Raise an alert: every block, quarantine, strip, content hit and monitor-mode would-action. */
  alert: boolean;
}

export const SEVERITY: Record<Action, number> = { deliver: 0, tempfail: 1, quarantine: 2, block: 3 };

export function agentOf(policy: Policy, agentId: string | null): AgentPolicy | null {
  return agentId === null ? null : (policy.agents.get(agentId) ?? null);
}

export function allowedRecipients(policy: Policy, agent: AgentPolicy | null): Pattern[] {
  if (!agent) return policy.recipients;
  return agent.inheritRecipients ? [...agent.recipients, ...policy.recipients] : agent.recipients;
}

export function unknownActionFor(policy: Policy, agent: AgentPolicy | null, hidden: boolean): UnknownAction {
  const u = agent?.unknownRecipients ?? policy.unknownRecipients;
  return hidden ? u.hidden : u.visible;
}

/** For the SMTP RCPT hook: is this mailbox allowed, and by which pattern? */
export function judgeRecipient(policy: Policy, agentId: string | null, m: Mailbox): Pattern | undefined {
  return findMatch(allowedRecipients(policy, agentOf(policy, agentId)), m);
}

/**
 * For MAIL FROM and From/Sender headers. `null` mailbox = the null reverse-path `<>`. Without a
 * `senders` list the sender must still be an address mail may go to: bounces (with the message)
 * are sent to MAIL FROM, so an unknown sender is an unknown recipient by another name (S28).
 */
export function senderAllowed(policy: Policy, agentId: string | null, m: Mailbox | null): boolean {
  const patterns = agentOf(policy, agentId)?.senders ?? policy.senders;
  if (patterns === null) return m === null || judgeRecipient(policy, agentId, m) !== undefined;
  return m !== null && patterns.some((p) => matchesMailbox(p, m));
}

const VISIBLE_FIELDS = new Set<Recipient['field']>(['to', 'cc', 'resent-to', 'resent-cc']);

export function decide(intent: MailIntent, policy: Policy, history: HistorySnapshot = EMPTY_HISTORY): Decision {
  let action: Action = 'deliver';
  let rule = 'recipients';
  let reason: Reason = REASONS.allowed;
  const escalate = (a: Action, r: string, why: Reason): void => {
    if (SEVERITY[a] > SEVERITY[action]) [action, rule, reason] = [a, r, why];
  };

  const agent = agentOf(policy, intent.agent);
  if (policy.agents.size > 0 && !agent) escalate('block', 'agents', REASONS.agent);
  if (intent.problems.length > 0) escalate('block', 'input', problemReason(intent.problems));
  for (const s of intent.senders) {
    if (!senderAllowed(policy, intent.agent, s.mailbox)) escalate('block', agent?.senders ? `agents.${agent.id}.senders` : 'senders', REASONS.sender);
  }

  // Recipients
  const shown = new Set(intent.recipients.filter((r) => VISIBLE_FIELDS.has(r.field)).map((r) => r.mailbox.address));
  const allowList = allowedRecipients(policy, agent);
  const verdicts: RecipientVerdict[] = [];
  const unknownRule = agent?.unknownRecipients ? `agents.${agent.id}.unknown_recipients` : 'unknown_recipients';
  let strippedAny = false;
  for (const r of intent.recipients) {
    const hidden = r.field === 'envelope' || r.field === 'api' ? !shown.has(r.mailbox.address) : !VISIBLE_FIELDS.has(r.field);
    const match = findMatch(allowList, r.mailbox);
    const v: RecipientVerdict = { address: r.mailbox.address, field: r.field, source: r.source, hidden, allowedBy: match?.text ?? null, outcome: 'keep' };
    if (!match) {
      const a = unknownActionFor(policy, agent, hidden);
      const which = `${unknownRule}.${hidden ? 'hidden' : 'visible'}`;
      if (a === 'allow') v.outcome = 'allow';
      else if (a === 'block' || a === 'quarantine') {
        v.outcome = a;
        escalate(a, which, REASONS.unknownRecipient);
      } else if (r.strippable) {
        v.outcome = 'strip';
        strippedAny = true;
      } else {
        v.outcome = 'block';
        escalate('block', which, REASONS.unstrippable);
      }
    }
    verdicts.push(v);
  }

  // Content
  const hits = contentHits(intent, policy);
  for (const h of hits) {
    if (h.action !== 'alert') escalate(h.action, h.rule, h.finding ? REASONS.secret : REASONS.attachment);
  }

  // Limits, over the agent's recent past
  const tripped: string[] = [];
  const limit = (action: LimitAction, rule: string, why: Reason): void => {
    tripped.push(rule);
    if (action !== 'alert') escalate(action, rule, why);
  };
  const { messages, bulkUnknownDomains: bulk } = policy.limits;
  if (messages && history.messages >= messages.max) limit(messages.action, 'limits.messages', REASONS.rate);
  const unknownDomains = unknownDomainsOf(verdicts);
  if (bulk && unknownDomains.length > 0 && new Set([...history.unknownDomains, ...unknownDomains]).size > bulk.maxDomains) {
    limit(bulk.action, 'limits.bulk_unknown_domains', REASONS.bulk);
  }

  const delivering = verdicts.filter((_, i) => intent.recipients[i]!.delivers);
  const strippedSet = unique(verdicts.filter((v) => v.outcome === 'strip').map((v) => v.address));
  const keepAll = unique(delivering.map((v) => v.address));
  const keepEnforced = unique(delivering.filter((v) => v.outcome === 'keep' || v.outcome === 'allow').map((v) => v.address));
  if (action === 'deliver' && keepEnforced.length === 0 && intent.sends !== false) escalate('block', 'recipients', REASONS.noRecipients);
  if (action === 'deliver' && strippedAny) reason = REASONS.stripped;

  const enforce = policy.mode === 'enforce';
  const changes = action !== 'deliver' || strippedSet.length > 0;
  return {
    action: enforce ? action : 'deliver',
    wouldAction: enforce ? null : action,
    mode: policy.mode,
    rule,
    reason,
    keep: enforce ? keepEnforced : keepAll,
    stripped: enforce ? strippedSet : [],
    wouldStrip: enforce ? [] : strippedSet,
    recipients: verdicts,
    hits,
    limits: tripped,
    alert: changes || hits.length > 0 || tripped.length > 0,
  };
}

function problemReason(problems: MailIntent['problems']): Reason {
  if (problems.some((p) => p.code === 'request.unseen_draft')) return REASONS.unseenDraft;
  if (problems.some((p) => p.code === 'request.unknown_field')) return REASONS.unknownField;
  return REASONS.input;
}

function contentHits(intent: MailIntent, policy: Policy): ContentHit[] {
  const hits: ContentHit[] = [];
  const kinds = new Set<DetectorKind>(policy.secrets.flatMap((r) => [...r.detectors]));
  if (kinds.size > 0) {
    for (const t of intent.texts) {
      for (const f of scanText(t.where, t.text, kinds)) {
        const r = policy.secrets.find((s) => s.detectors.has(f.detector))!;
        hits.push({ rule: r.id, action: r.action, finding: f });
      }
    }
  }
  for (const a of intent.attachments) {
    const r = policy.attachments.find((rule) => attachmentMatches(rule, a.filename, a.contentType, a.size));
    if (r) hits.push({ rule: r.id, action: r.action, attachment: a.filename || '(unnamed)' });
  }
  return hits;
}

export function attachmentMatches(rule: AttachmentRule, filename: string, contentType: string, size: number): boolean {
  // Windows drops trailing dots and spaces when saving, so `vault.kdbx. ` is a .kdbx file.
  const ext = /\.([^./\\]+)$/.exec(filename.toLowerCase().replace(/[.\s]+$/, ''))?.[1];
  const type = contentType.toLowerCase().split(';')[0]!.trim();
  if (rule.extensions && ext && rule.extensions.has(ext)) return true;
  if (rule.types && (rule.types.has(type) || rule.types.has(`${type.split('/')[0]}/*`))) return true;
  return rule.maxSize !== null && size > rule.maxSize;
}

/** Domains of the recipients no pattern allowed: what the bulk limit counts. */
export function unknownDomainsOf(verdicts: readonly RecipientVerdict[]): string[] {
  return unique(verdicts.filter((v) => v.allowedBy === null).map((v) => v.address.slice(v.address.lastIndexOf('@') + 1)));
}

function unique(xs: string[]): string[] {
  return [...new Set(xs)];
}
