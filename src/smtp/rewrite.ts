// The only changes the relay makes to message bytes: Bcc headers out, trace headers in.

import type { SplitMessage } from '../core/message.js';

/** Never relayed: a Bcc header would tell every recipient who else got the mail, or leak to the upstream. */
const REMOVED = new Set(['bcc', 'resent-bcc']);

export interface TraceInfo {
  eventId: string;
  heloName: string;
  clientHostname: string;
  clientAddress: string;
  relayName: string;
  protocol: 'ESMTP' | 'ESMTPS' | 'ESMTPA' | 'ESMTPSA';
  sessionId: string;
  singleRecipient: string | null;
  date: Date;
}

export function rewriteMessage(raw: Buffer, split: SplitMessage, trace: TraceInfo): Buffer {
  const kept = split.fields.filter((f) => !REMOVED.has(f.name)).map((f) => f.raw);
  const header = [...traceHeaders(trace), ...kept].join('\r\n');
  const body = raw.subarray(split.bodyStart);
  return Buffer.concat([Buffer.from(`${header}\r\n\r\n`, 'latin1'), body]);
}

/** `Received:` per RFC 5321 §4.4 (with RFC 3848 protocol names) and `X-Postguard: <audit id>`. */
export function traceHeaders(t: TraceInfo): string[] {
  const helo = clean(t.heloName) || 'unknown';
  const host = clean(t.clientHostname);
  const known = host && host !== t.clientAddress && host !== `[${t.clientAddress}]`;
  const from = `from ${helo} (${known ? `${host} ` : ''}[${clean(t.clientAddress)}])`;
  const rcpt = t.singleRecipient ? `\r\n\tfor <${clean(t.singleRecipient)}>` : '';
  return [
    `Received: ${from}\r\n\tby ${clean(t.relayName)} (postguard) with ${t.protocol} id ${clean(t.sessionId)}${rcpt};\r\n\t${t.date.toUTCString().replace('GMT', '+0000')}`,
    `X-Postguard: ${clean(t.eventId)}`,
  ];
}

/** Peer-supplied values go into a header line: keep only characters that cannot end or fold it. */
function clean(s: string): string {
  return s.replace(/[^A-Za-z0-9.\-_:@[\]+]/g, '').slice(0, 255);
}
