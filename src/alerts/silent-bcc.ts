// The constant-extra-recipient detector, shared by every channel: alert-only, in every mode,
// whether the address is allowed or not (policy `limits.constant_recipient`).

import type { MailIntent } from '../core/intent.js';
import type { AgentHistory } from '../policy/history.js';
import type { Policy } from '../policy/types.js';
import type { AlertHub } from './hub.js';

/**
 * `key` is the history key (the agent, or the client address without one). The recipients asked
 * for are the SMTP envelope, or an API request's delivering fields; the primaries are those also
 * in To.
 */
export function watchForSilentBcc(history: AgentHistory, alerts: AlertHub, key: string, policy: Policy, intent: MailIntent, eventId: string): void {
  const requested = intent.recipients.filter((r) => (intent.channel === 'smtp' ? r.field === 'envelope' : r.delivers));
  const shownTo = new Set(intent.recipients.filter((r) => r.field === 'to').map((r) => r.mailbox.address));
  const primaries = requested.filter((r) => shownTo.has(r.mailbox.address)).map((r) => r.mailbox);
  const extras = requested.filter((r) => !shownTo.has(r.mailbox.address)).map((r) => r.mailbox);
  for (const a of history.observe(key, policy.limits, primaries, extras)) {
    alerts.raise({
      kind: 'constant_extra_recipient',
      severity: 'high',
      agent: intent.agent,
      channel: intent.channel,
      event_id: eventId,
      summary: `${a.address} rides along as an extra recipient on ${a.count} of the last ${a.window} messages from ${intent.agent ? `agent ${intent.agent}` : key}, with ${a.distinctPrimaries} different To recipients: the silent-BCC signature`,
      details: { ...a },
    });
  }
}
