// `postguard policy explain`: the decision for a hypothetical message, as the SMTP channel would
// build it (every address in the envelope; To/Cc also shown in headers, Bcc not).

import { parseMailbox } from '../core/address.js';
import type { MailIntent, Recipient } from '../core/intent.js';
import { decide, type Decision } from './decide.js';
import type { Policy } from './types.js';

export interface ExplainInput {
  from: string | null;
  to: string[];
  cc: string[];
  bcc: string[];
  agent: string | null;
}

export function explain(policy: Policy, input: ExplainInput): { decision: Decision; errors: string[] } {
  const errors: string[] = [];
  const recipients: Recipient[] = [];
  const parse = (text: string) => {
    const m = parseMailbox(text);
    if (!m.ok) errors.push(`${text}: ${m.error}`);
    return m.ok ? m.value : null;
  };
  for (const [field, list] of [['to', input.to], ['cc', input.cc], ['bcc', input.bcc]] as const) {
    for (const text of list) {
      const mailbox = parse(text);
      if (!mailbox) continue;
      recipients.push({ mailbox, field: 'envelope', source: `--${field}`, delivers: true, strippable: true });
      if (field !== 'bcc') recipients.push({ mailbox, field, source: `${field} header`, delivers: false, strippable: true });
    }
  }
  const from = input.from ? parse(input.from) : null;
  const intent: MailIntent = {
    id: 'explain',
    channel: 'smtp',
    agent: input.agent,
    senders: input.from ? [{ mailbox: from, field: 'mail-from' }] : [],
    recipients,
    subject: '',
    texts: [],
    attachments: [],
    problems: errors.map((detail) => ({ code: 'address.invalid', detail })),
    size: 0,
  };
  return { decision: decide(intent, policy), errors };
}

export function formatDecision(d: Decision): string {
  const lines = [`decision: ${d.action}${d.wouldAction ? ` (monitor mode; enforce would: ${d.wouldAction})` : ''}`, `rule: ${d.rule}`, `reason: ${d.reason}`];
  for (const v of d.recipients.filter((r) => r.field === 'envelope')) {
    const how = v.allowedBy ? `allowed by ${v.allowedBy}` : `unknown${v.hidden ? ' (hidden)' : ''} → ${v.outcome}`;
    lines.push(`  ${v.address} [${v.source.replace(/^--/, '')}]: ${how}`);
  }
  lines.push(`deliver to: ${d.keep.join(', ') || '(nobody)'}`);
  if (d.stripped.length) lines.push(`stripped: ${d.stripped.join(', ')}`);
  if (d.wouldStrip.length) lines.push(`would strip: ${d.wouldStrip.join(', ')}`);
  return lines.join('\n');
}
