// The one domain model every channel speaks. SMTP sessions, HTTP mail-API requests and monitor
// reports all become a MailIntent; the policy turns an intent into a Decision; each channel then
// applies the decision its own way (reject a RCPT, rewrite a JSON body, answer 403).

import type { Mailbox } from './address.js';

export type Channel = 'smtp' | 'http' | 'monitor';

/** Where a recipient was named. Envelope recipients are the ones that get delivered. */
export type RecipientField =
  | 'envelope' // SMTP RCPT TO
  | 'to' | 'cc' | 'bcc'
  | 'resent-to' | 'resent-cc' | 'resent-bcc'
  | 'x-smtpapi' // SendGrid's delivery-driving JSON header
  | 'reply-to' // not a delivery target, but a place replies (and data) flow to
  | 'notify' // Disposition-Notification-To, Return-Receipt-To, Errors-To: receipts and bounces flow there
  | 'api'; // a provider API field (the adapter names it in `source`)

export interface Recipient {
  mailbox: Mailbox;
  field: RecipientField;
  /** Free-form origin, e.g. `Bcc` header, `personalizations[0].bcc[1]`. */
  source: string;
  /** True when the upstream will deliver to this address unless we remove it. */
  delivers: boolean;
  /**
   * True when the channel can make sure this address receives nothing while the rest goes on:
   * an envelope recipient it can drop, an API field it can rewrite, or a display-only header
   * mention (To/Cc of an address not in the envelope). False for delivery-driving fields it cannot
   * rewrite (X-SMTPAPI, a signed request) and for Reply-To, which the relay must not alter.
   */
  strippable: boolean;
}

export type SenderField = 'mail-from' | 'from' | 'sender' | 'api';

export interface Sender {
  mailbox: Mailbox | null; // null = SMTP null reverse-path `<>`
  field: SenderField;
}

/** A piece of content the detectors read; `where` is shown to humans ("subject", "attachment a.txt"). */
export interface TextPart {
  where: string;
  text: string;
}

export interface Attachment {
  filename: string;
  contentType: string;
  size: number;
}

/** Something about the input that cannot be trusted, e.g. an address we refuse to parse. */
export interface Problem {
  code: string; // short code, e.g. `address.invalid`
  detail: string;
}

export interface MailIntent {
  id: string;
  channel: Channel;
  agent: string | null;
  senders: Sender[];
  recipients: Recipient[];
  subject: string;
  texts: TextPart[];
  attachments: Attachment[];
  problems: Problem[];
  size: number;
  /**
   * False for a write that stores mail without sending it (a draft saved through an API): it may
   * name no recipient yet. Recipients it does name are judged all the same.
   */
  sends?: boolean;
}
