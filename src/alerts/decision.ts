// Which decisions raise an alert, and how they read. Monitor mode names what enforce mode would
// have done (`would_block`, `would_strip`, …).

import type { Decision } from '../policy/decide.js';
import type { Policy } from '../policy/types.js';
import type { AlertInput } from './hub.js';

const KINDS = {
  block: { kind: 'blocked', verb: 'blocked' },
  quarantine: { kind: 'quarantined', verb: 'quarantined' },
  tempfail: { kind: 'limited', verb: 'deferred (451)' },
  strip: { kind: 'stripped', verb: 'stripped recipients of' },
  limit: { kind: 'limit', verb: 'passed a limit with' },
  content: { kind: 'content', verb: 'flagged content in' },
} as const;

export function decisionAlert(d: Decision, policy: Policy, ctx: { agent: string | null; channel: string; eventId: string }): AlertInput | null {
  const acted = d.wouldAction ?? d.action;
  const stripped = d.mode === 'monitor' ? d.wouldStrip : d.stripped;
  const what: keyof typeof KINDS | null =
    acted !== 'deliver' ? acted : stripped.length > 0 ? 'strip' : d.limits.length > 0 ? 'limit' : d.hits.length > 0 ? 'content' : null;
  if (!what) return null;
  // Monitor mode reports what enforce mode would have done: would_block, would_strip, …
  const monitor = d.mode === 'monitor' && what !== 'limit' && what !== 'content';
  const severity = acted === 'deliver' ? 'normal' : policy.alerts.priority === 'low' ? 'normal' : policy.alerts.priority;
  const who = ctx.agent ? `agent ${ctx.agent}` : 'an unauthenticated client';
  const unknown = [...new Set(d.recipients.filter((r) => r.allowedBy === null).map((r) => r.address))];
  const summary = `${monitor ? 'monitor mode: would have ' : ''}${KINDS[what].verb} a ${ctx.channel} message from ${who}: ${d.reason} (rule ${d.rule})${d.limits.length ? `; limits: ${d.limits.join(', ')}` : ''}${unknown.length ? `; unknown recipients: ${unknown.slice(0, 10).join(', ')}` : ''}`;
  return {
    kind: monitor ? `would_${what}` : KINDS[what].kind,
    severity,
    summary,
    agent: ctx.agent,
    channel: ctx.channel,
    event_id: ctx.eventId,
    details: {
      rule: d.rule,
      reason: d.reason,
      mode: d.mode,
      stripped,
      limits: d.limits,
      unknown_recipients: unknown,
      detectors: d.hits.map((h) => ({ rule: h.rule, detector: h.finding?.detector ?? 'attachment', where: h.finding?.where ?? `attachment ${h.attachment}`, masked: h.finding?.masked ?? null })),
    },
  };
}
