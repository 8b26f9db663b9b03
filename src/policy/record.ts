// A decision as audit-record fields, the same for every channel. Findings are already masked by
// the detectors; problems carry codes and counts, not the agent's content.

import type { MailIntent } from '../core/intent.js';
import type { Decision } from './decide.js';

export function decisionFields(d: Decision, intent: MailIntent, invalid: { address: string; reason: string }[] = []) {
  return {
    decision: d.action,
    would_action: d.wouldAction,
    mode: d.mode,
    rule: d.rule,
    reason: d.reason,
    recipients: {
      kept: d.keep,
      stripped: d.stripped,
      invalid,
      would_strip: d.wouldStrip,
      verdicts: d.recipients,
    },
    detectors: d.hits.map((h) => ({ rule: h.rule, action: h.action, detector: h.finding?.detector ?? 'attachment', where: h.finding?.where ?? `attachment ${h.attachment}`, masked: h.finding?.masked ?? null })),
    limits: d.limits,
    problems: intent.problems.map((p) => `${p.code}: ${p.detail}`),
    alert: d.alert,
  };
}
