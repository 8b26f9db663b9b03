// Raw MIME carried inside an API request (SES raw, Gmail raw/upload, Graph MIME, Mailgun
// messages.mime): read with the same header split and content analysis as SMTP mail, and rewritten
// for a strip by editing only the recipient header lines; the rest of the bytes go on unchanged.

import libmime from 'libmime';
import { formatMailbox, parseAddressList } from '../core/address.js';
import type { SplitMessage } from '../core/message.js';
import { BodyError } from '../core/json.js';

/** Recipient header lines a strip may edit; Reply-To and receipt headers are never edited. */
const EDITABLE = new Set(['to', 'cc', 'bcc', 'resent-to', 'resent-cc', 'resent-bcc']);

/**
 * Providers take LF-only messages (Gmail's own examples are), so LF is normalized to CRLF for
 * reading and sending; a bare CR is where one reader ends a line and another does not (S1–S3).
 */
export function normalizeMime(raw: Buffer, what: string): Buffer {
  const text = raw.toString('latin1');
  if (/\r(?!\n)/.test(text)) throw new BodyError('differential', `${what}: message has a bare CR`);
  return /(?<!\r)\n/.test(text) ? Buffer.from(text.replace(/\r?\n/g, '\r\n'), 'latin1') : raw;
}

/** The message without the given addresses in its To/Cc/Bcc/Resent-* headers (a header left empty goes). */
export function withoutRecipients(raw: Buffer, split: SplitMessage, removed: ReadonlySet<string>): Buffer {
  const lines: string[] = [];
  for (const f of split.fields) {
    if (!EDITABLE.has(f.name)) {
      lines.push(f.raw);
      continue;
    }
    const list = parseAddressList(f.value);
    if (!list.ok) {
      lines.push(f.raw); // unreadable lists already blocked the message
      continue;
    }
    const kept = list.value.filter((m) => !removed.has(m.address));
    if (kept.length === list.value.length) lines.push(f.raw);
    else if (kept.length > 0) lines.push(`${f.raw.slice(0, f.raw.indexOf(':'))}: ${kept.map((m) => formatMailbox(m, (n) => libmime.encodeWord(n, 'Q'))).join(', ')}`);
  }
  const head = Buffer.from(lines.length ? `${lines.join('\r\n')}\r\n\r\n` : '\r\n', 'latin1');
  return Buffer.concat([head, raw.subarray(split.bodyStart)]);
}
