// Raw RFC 5322 messages: the header block is split here, once, and the same split serves the
// decision (which recipients are named) and the rewrite (which header lines are removed), so what
// is checked is exactly what is sent. MIME bodies (text, HTML, attachments) go through mailparser.

import libmime from 'libmime';
import { simpleParser, type ParsedMail } from 'mailparser';
import { parseAddressList } from './address.js';
import type { Attachment, Problem, Recipient, RecipientField, Sender, TextPart } from './intent.js';
import { BodyError, field, isObject, parseStrictJson, type Json } from './json.js';

export interface HeaderField {
  /** Lower-case field name. */
  name: string;
  /** The whole field as sent, folding included, without the final CRLF. */
  raw: string;
  /** Unfolded value after the colon. */
  value: string;
}

export interface SplitMessage {
  fields: HeaderField[];
  /** Byte offset of the body (after the blank line), or raw.length when there is none. */
  bodyStart: number;
  problems: Problem[];
}

/** Split the header block. Expects CRLF line endings (the SMTP channel has already refused bare CR/LF). */
export function splitHeader(raw: Buffer): SplitMessage {
  const end = raw.indexOf('\r\n\r\n');
  // A message may be all header and no body (no blank line): its last CRLF ends the last field.
  const headerEnd = end !== -1 ? end : raw.subarray(-2).toString('latin1') === '\r\n' ? raw.length - 2 : raw.length;
  const bodyStart = end === -1 ? raw.length : end + 4;
  // latin1 keeps one char per byte, so offsets stay byte offsets; values are re-decoded as UTF-8.
  const text = raw.subarray(0, headerEnd).toString('latin1');
  const fields: HeaderField[] = [];
  const problems: Problem[] = [];
  for (const line of text.length ? text.split('\r\n') : []) {
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length > 0) {
      const last = fields[fields.length - 1]!;
      last.raw += `\r\n${line}`;
      last.value += line;
      continue;
    }
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!/^[\x21-\x39\x3b-\x7e]+$/.test(name)) {
      // No excerpt: the line is the agent's content and may hold a secret.
      problems.push({ code: 'header.malformed', detail: `header line ${fields.length + problems.length + 1} is not \`Name: value\` (${line.length} characters)` });
      continue;
    }
    fields.push({ name: name.toLowerCase(), raw: line, value: line.slice(colon + 1) });
  }
  for (const f of fields) f.value = Buffer.from(f.value, 'latin1').toString('utf8').trim();
  return { fields, bodyStart, problems };
}

const RECIPIENT_HEADERS: Record<string, RecipientField> = {
  to: 'to', cc: 'cc', bcc: 'bcc',
  'resent-to': 'resent-to', 'resent-cc': 'resent-cc', 'resent-bcc': 'resent-bcc',
  'reply-to': 'reply-to',
  // Where receipts and bounces go: a copy of the message can flow there without any To/Bcc (S28).
  'disposition-notification-to': 'notify', 'return-receipt-to': 'notify', 'errors-to': 'notify',
};

/**
 * How the upstream treats recipients named in headers. `display`: the envelope decides delivery
 * (SMTP relay), so header mentions deliver nothing. `delivery`: the upstream derives recipients
 * from the headers (SES raw without Destinations, Gmail raw), so they deliver.
 */
export type HeaderRole = 'display' | 'delivery';

export interface HeaderFacts {
  recipients: Recipient[];
  senders: Sender[];
  problems: Problem[];
}

/** Every recipient and sender named in the header block, each instance of each field (S16–S20). */
export function headerFacts(fields: HeaderField[], role: HeaderRole): HeaderFacts {
  const out: HeaderFacts = { recipients: [], senders: [], problems: [] };
  for (const f of fields) headerFieldFacts(f.name, f.value, role, `${f.name} header`, out);
  return out;
}

/**
 * One header, wherever it was carried: a MIME header block, or a provider API's `Headers` field.
 * Returns false when the header names no recipient or sender.
 */
export function headerFieldFacts(name: string, value: string, role: HeaderRole, source: string, out: HeaderFacts): boolean {
  const lower = name.toLowerCase();
  const kind = RECIPIENT_HEADERS[lower];
  if (kind) {
    const list = parseAddressList(value);
    if (!list.ok) {
      out.problems.push({ code: 'address.invalid', detail: `${lower}: ${list.error}` });
      return true;
    }
    const indirect = kind === 'reply-to' || kind === 'notify';
    const delivers = role === 'delivery' && !indirect;
    for (const mailbox of list.value) {
      // Reply-To and receipt headers cannot be stripped without altering what the agent wrote;
      // decide() blocks the message if they name an unknown address.
      out.recipients.push({ mailbox, field: kind, source, delivers, strippable: !indirect });
    }
    return true;
  }
  if (lower === 'from' || lower === 'sender') {
    const list = parseAddressList(value);
    if (!list.ok) out.problems.push({ code: 'address.invalid', detail: `${lower}: ${list.error}` });
    else for (const mailbox of list.value) out.senders.push({ mailbox, field: lower });
    return true;
  }
  if (lower === 'x-smtpapi') {
    smtpApiRecipients(value, source, out.recipients, out.problems);
    return true;
  }
  return false;
}

/**
 * SendGrid's X-SMTPAPI header read strictly, on either channel: `{"to": [], "to": ["phan@…"]}` is
 * read last-wins by a lax parser, so JSON that could be read two ways is an error, not a guess (S22).
 */
export function parseSmtpApi(value: string): { ok: true; value: Json } | { ok: false; error: string } {
  try {
    return { ok: true, value: parseStrictJson(value) };
  } catch (e) {
    if (!(e instanceof BodyError)) throw e;
    return { ok: false, error: e.kind === 'malformed' ? 'not valid JSON' : e.message };
  }
}

/** SendGrid's X-SMTPAPI `{"to": [...]}` makes its SMTP service deliver to more addresses (S21). */
function smtpApiRecipients(value: string, source: string, out: Recipient[], problems: Problem[]): void {
  const doc = parseSmtpApi(value);
  if (!doc.ok) return void problems.push({ code: 'header.x-smtpapi', detail: `${source}: ${doc.error}` });
  // `To` counts as `to`: how SendGrid matches key case is not ours to guess (a body with both is refused).
  const to = isObject(doc.value) ? field(doc.value, 'to') : undefined;
  if (to === undefined) return;
  const list = Array.isArray(to) ? to : [to];
  for (const [i, entry] of list.entries()) {
    const parsed = typeof entry === 'string' ? parseAddressList(entry) : { ok: false as const, error: 'not a string' };
    if (!parsed.ok) {
      problems.push({ code: 'address.invalid', detail: `X-SMTPAPI to[${i}]: ${parsed.error}` });
      continue;
    }
    for (const mailbox of parsed.value) out.push({ mailbox, field: 'x-smtpapi', source: `X-SMTPAPI to[${i}]`, delivers: true, strippable: false });
  }
}

export interface ContentFacts {
  subject: string;
  texts: TextPart[];
  attachments: Attachment[];
  problems: Problem[];
}

const TEXT_TYPES = /^(text\/|message\/|application\/(json|xml|x-yaml|yaml|javascript|x-sh|x-shellscript|x-pem-file|pkcs8|x-x509-ca-cert|sql|x-sql|toml|x-ndjson))/;
const TEXT_EXTENSIONS = new Set(['txt', 'env', 'pem', 'key', 'json', 'yml', 'yaml', 'csv', 'log', 'ini', 'conf', 'cfg', 'sh', 'py', 'js', 'ts', 'md', 'xml', 'sql', 'toml', 'properties', 'tf', 'tfvars', 'eml', 'asc', 'ppk', 'ovpn', 'npmrc', 'netrc', 'htpasswd']);
/** Text attachments above this are scanned only up to it; detectors run in linear time, but bounded is better. */
const MAX_SCAN_CHARS = 8 << 20;

/**
 * Subject, text, HTML and text-like attachments, for the detectors; attachment metadata for the rules.
 * `split` is the header split of the same bytes.
 */
export async function contentFacts(raw: Buffer, split: SplitMessage): Promise<ContentFacts> {
  return plainTextFacts(raw, split) ?? parseMime(raw);
}

/**
 * Most agent mail is one text/plain part in 7bit/8bit UTF-8: its text is its body, byte for byte, and
 * mailparser's stream machinery would cost more wall time than the rest of the relay together
 * (bench/smtp.mjs). Anything else — multipart, an encoding, another charset — goes to mailparser.
 */
function plainTextFacts(raw: Buffer, split: SplitMessage): ContentFacts | null {
  const one = (name: string): string | null | undefined => {
    const found = split.fields.filter((f) => f.name === name);
    return found.length > 1 ? undefined : (found[0]?.value ?? null);
  };
  const type = one('content-type');
  const encoding = one('content-transfer-encoding');
  const subject = one('subject');
  if (type === undefined || encoding === undefined || subject === undefined) return null; // repeated: let mailparser judge
  if (type !== null && !/^text\/plain\s*(;\s*charset="?(utf-8|us-ascii)"?\s*)?(;\s*format="?(flowed|fixed)"?\s*)?$/i.test(type)) return null;
  if (encoding !== null && !/^(7bit|8bit)$/i.test(encoding.trim())) return null;
  const decodedSubject = subject ? libmime.decodeWords(subject) : '';
  const texts: TextPart[] = [];
  if (decodedSubject) texts.push({ where: 'subject', text: decodedSubject });
  const body = raw.subarray(split.bodyStart).toString('utf8');
  if (body) texts.push({ where: 'text', text: body });
  return { subject: decodedSubject, texts, attachments: [], problems: [] };
}

async function parseMime(raw: Buffer): Promise<ContentFacts> {
  let mail: ParsedMail;
  try {
    mail = await simpleParser(raw, { skipHtmlToText: true, skipTextToHtml: true, skipImageLinks: true, skipTextLinks: true, keepCidLinks: true });
  } catch (e) {
    return { subject: '', texts: [], attachments: [], problems: [{ code: 'mime.invalid', detail: `MIME could not be parsed: ${(e as Error).message}` }] };
  }
  const subject = mail.subject ?? '';
  const texts: TextPart[] = [];
  if (subject) texts.push({ where: 'subject', text: subject });
  if (mail.text) texts.push({ where: 'text', text: mail.text });
  if (typeof mail.html === 'string' && mail.html) texts.push({ where: 'html', text: mail.html });
  const attachments: Attachment[] = [];
  for (const a of mail.attachments) addAttachment(a.filename ?? '', a.contentType, a.content, attachments, texts);
  return { subject, texts, attachments, problems: [] };
}

/** An attachment for the rules; its text for the detectors too when it is text-like. */
export function addAttachment(filename: string, contentType: string, content: Buffer, attachments: Attachment[], texts: TextPart[]): void {
  attachments.push({ filename, contentType, size: content.length });
  const ext = /\.([^.]+)$/.exec(filename.toLowerCase())?.[1] ?? '';
  if (TEXT_TYPES.test(contentType) || TEXT_EXTENSIONS.has(ext)) {
    texts.push({ where: `attachment ${filename || '(unnamed)'}`, text: content.subarray(0, MAX_SCAN_CHARS).toString('utf8') });
  }
}
