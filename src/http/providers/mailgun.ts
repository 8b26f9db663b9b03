// Mailgun messages API (documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages:
// post-v3--domain-name--messages and post-v3--domain-name--messages-mime; the field set is the one
// in Mailgun's OpenAPI description, SMTP equivalents in user-manual/sending-messages/send-smtp).
// A send is a form, multipart or urlencoded, where `to`, `cc` and `bcc` may each be repeated and
// each value is itself an address list; `h:<Name>` adds a MIME header, `v:<name>` custom data,
// `o:<option>` and `t:<option>` sending and template options. messages.mime takes the envelope in
// `to` and the whole message in `message`.
//
// Only the two send endpoints are known. `POST /v3/domains/{d}/messages/{storage key}` (mailgun.js
// `resendEmail`) resends a stored message whose content the relay cannot see, and the templates,
// lists and routes APIs store state sends use later: all are writes to unknown endpoints, refused.

import { formatMailbox, type Mailbox } from '../../core/address.js';
import type { RecipientField } from '../../core/intent.js';
import { splitHeader } from '../../core/message.js';
import { formRequest, keys, MessageFacts, RequestShapeError, type Endpoint, type Extracted, type Provider, type RequestInfo } from '../adapter.js';
import { utf8Text } from '../body.js';
import { parseMultipart, parseUrlencoded, type FormField } from '../forms.js';
import { BodyError, isObject, parseStrictJson, type Json } from '../../core/json.js';
import { normalizeMime } from '../mime.js';

const MAX_BODY = 25 * 1024 * 1024; // Mailgun's message size limit

const RECIPIENT_FIELDS = new Map<string, RecipientField>([['to', 'to'], ['cc', 'cc'], ['bcc', 'bcc']]);
const TEXT_FIELDS = keys('subject', 'text', 'html', 'amp-html');
const FILE_FIELDS = keys('attachment', 'inline');
// Mailgun's documented `t:` and `o:` names. The sets are closed on purpose: an option added later
// could route a copy somewhere (as `o:archive-to` does), so an unknown one is refused, not passed.
const TEMPLATE_OPTIONS = keys('t:version', 't:text', 't:variables');
const OPTIONS = keys(
  'o:tag', 'o:dkim', 'o:secondary-dkim', 'o:secondary-dkim-public', 'o:deliverytime', 'o:deliver-within', 'o:deliverytime-optimize-period',
  'o:time-zone-localize', 'o:testmode', 'o:tracking', 'o:tracking-clicks', 'o:tracking-opens', 'o:require-tls', 'o:skip-verification',
  'o:sending-ip', 'o:sending-ip-pool', 'o:tracking-pixel-location-top', 'o:suppress-headers',
);
// Mailgun POSTs a copy of every delivered message to this URL: an exfiltration path no
// recipient policy can judge (S28). Also read as the X-Mailgun-Archive-To header.
const ARCHIVE_TO = 'o:archive-to';

type Kind = 'urlencoded' | 'multipart';

async function readForm(req: RequestInfo): Promise<{ fields: FormField[]; kind: Kind }> {
  if (req.mediaType === 'multipart/form-data') return { fields: await parseMultipart(req.body, req.contentType, MAX_BODY), kind: 'multipart' };
  if (req.mediaType === 'application/x-www-form-urlencoded') return { fields: parseUrlencoded(utf8Text(req.body)), kind: 'urlencoded' };
  throw new BodyError('unsupported', `Mailgun sends are multipart/form-data or application/x-www-form-urlencoded, not ${JSON.stringify(req.mediaType.slice(0, 80) || 'untyped')}`);
}

/** Where a field is, for audit records: its name and which occurrence of that name it is. */
function labeller(): (f: FormField) => string {
  const seen = new Map<string, number>();
  return (f) => {
    const n = seen.get(f.name.toLowerCase()) ?? 0;
    seen.set(f.name.toLowerCase(), n + 1);
    return `${f.name.slice(0, 60)}[${n}]`;
  };
}

function remove(fields: FormField[], f: FormField): void {
  const i = fields.indexOf(f);
  if (i !== -1) fields.splice(i, 1);
}

function addressWriter(fields: FormField[], f: FormField) {
  return (kept: Mailbox[]) => {
    if (kept.length === 0) remove(fields, f);
    else f.value = kept.map((m) => formatMailbox(m)).join(', ');
  };
}

/** A recipient-variables document (batch sending): a JSON object keyed by plain recipient address. */
function recipientVariables(value: string, source: string, facts: MessageFacts, write: ((doc: string) => void) | null): void {
  facts.text(source, value);
  let doc: Json;
  try {
    doc = parseStrictJson(value);
  } catch (e) {
    if (!(e instanceof BodyError)) throw e;
    return facts.problem('request.json', `${source}: ${e.message.replace(/^body /, '')}`);
  }
  if (!isObject(doc)) return facts.problem('request.type', `${source}: expected a JSON object keyed by recipient address`);
  for (const key of Object.keys(doc)) {
    // Delivery is decided by to/cc/bcc; a key names an address all the same, so it is judged
    // (an unknown one blocks or is taken out) rather than forwarded unjudged.
    const strip = write
      ? () => {
          delete doc[key];
          write(JSON.stringify(doc));
        }
      : null;
    facts.address(key, 'api', `${source} key`, strip, false);
  }
}

/** `X-Mailgun-*` headers Mailgun reads as the options above, wherever they are given (h:, MIME). */
function mailgunControl(name: string, value: string, source: string, facts: MessageFacts, write: ((v: string) => void) | null): void {
  const lower = name.toLowerCase();
  if (lower === 'x-mailgun-archive-to') facts.problem('request.archive_to', `${source}: Mailgun would POST a copy of the delivered message to a URL`);
  else if (lower === 'x-mailgun-recipient-variables') recipientVariables(value, source, facts, write);
}

/**
 * The fields both endpoints share: h:, v:, o:, t:, template and recipient-variables. Returns false
 * for a field it does not know.
 */
function readShared(fields: FormField[], f: FormField, value: string, source: string, facts: MessageFacts): boolean {
  const lower = f.name.toLowerCase();
  if (lower.startsWith('h:')) {
    const name = f.name.slice(2);
    facts.header(name, value, source, (v) => (v === null ? remove(fields, f) : void (f.value = v)));
    mailgunControl(name, value, source, facts, (v) => void (f.value = v));
    return true;
  }
  if (lower === 'recipient-variables') {
    recipientVariables(value, source, facts, (v) => void (f.value = v));
    return true;
  }
  if (lower === ARCHIVE_TO) {
    facts.problem('request.archive_to', `${source}: Mailgun would POST a copy of the delivered message to a URL`);
    return true;
  }
  if (lower.startsWith('v:') || TEMPLATE_OPTIONS.has(lower) || OPTIONS.has(lower) || lower === 'template') {
    facts.text(source, value);
    return true;
  }
  return false;
}

/** A file part where Mailgun reads a text field: whether it would read it at all is its parser's choice. */
function textOf(f: FormField, source: string, facts: MessageFacts): string | null {
  if (typeof f.value === 'string') return f.value;
  facts.problem('request.type', `${source}: a file part where Mailgun takes a text field or no field at all`);
  return null;
}

function checkQuery(req: RequestInfo, facts: MessageFacts): void {
  // Form readers such as Go's ParseForm merge the URL's query into the form: `?bcc=` would be a recipient.
  for (const name of new Set(req.query.keys())) facts.problem('request.query', `query parameter ${JSON.stringify(name.slice(0, 60))} on a send: Mailgun may read it as a form field`);
}

async function readMessages(req: RequestInfo): Promise<Extracted> {
  const { fields, kind } = await readForm(req);
  const facts = new MessageFacts('message');
  checkQuery(req, facts);
  const label = labeller();
  for (const f of [...fields]) {
    const source = label(f);
    const lower = f.name.toLowerCase();
    if (FILE_FIELDS.has(lower)) {
      facts.attachment(f.filename ?? '', f.contentType ?? 'application/octet-stream', typeof f.value === 'string' ? Buffer.from(f.value) : f.value);
      continue;
    }
    const value = textOf(f, source, facts);
    if (value === null) continue;
    const field = RECIPIENT_FIELDS.get(lower);
    if (field) facts.addressList(value, field, source, addressWriter(fields, f));
    else if (lower === 'from') facts.sender(value, source);
    else if (TEXT_FIELDS.has(lower)) facts.text(lower, value);
    else if (!readShared(fields, f, value, source, facts)) facts.problem('request.unknown_field', `unknown field ${JSON.stringify(f.name.slice(0, 60))}`);
  }
  return formRequest(fields, kind, [facts]);
}

async function readMime(req: RequestInfo): Promise<Extracted> {
  const { fields, kind } = await readForm(req);
  const facts = new MessageFacts('message');
  checkQuery(req, facts);
  const messages = fields.filter((f) => f.name.toLowerCase() === 'message');
  if (messages.length === 0) throw new RequestShapeError('messages.mime takes the message in a `message` field');
  // Which of two messages Mailgun would send is its parser's choice: neither is forwarded.
  if (messages.length > 1) facts.problem('request.duplicate', `${messages.length} message fields: exactly one is taken`);
  const label = labeller();
  for (const f of [...fields]) {
    const source = label(f);
    const lower = f.name.toLowerCase();
    if (lower === 'message') {
      readMimeMessage(f, facts);
      continue;
    }
    const value = textOf(f, source, facts);
    if (value === null) continue;
    // `to` is the envelope: Mailgun delivers to it whatever the message's headers say.
    if (lower === 'to') facts.addressList(value, 'envelope', source, addressWriter(fields, f));
    else if (!readShared(fields, f, value, source, facts)) facts.problem('request.unknown_field', `unknown field ${JSON.stringify(f.name.slice(0, 60))}`);
  }
  return formRequest(fields, kind, [facts]);
}

/** The `message` part: a file upload (mailgun.js for a Buffer) or a text field (for a string). */
function readMimeMessage(f: FormField, facts: MessageFacts): void {
  const text = typeof f.value === 'string';
  const raw = text ? Buffer.from(f.value as string, 'utf8') : (f.value as Buffer);
  // Its recipient headers are read as delivering: the notes say Mailgun ignores them for
  // messages.mime, but nothing promises it, so they are judged and stripped like the envelope.
  facts.mime(raw, 'message', 'delivery', (edited) => void (f.value = text ? edited.toString('utf8') : edited));
  let normalized: Buffer;
  try {
    normalized = normalizeMime(raw, 'message');
  } catch {
    return; // facts.mime has recorded why the message is unreadable
  }
  for (const h of splitHeader(normalized).fields) mailgunControl(h.name, h.value, `message ${h.name} header`, facts, null);
}

const endpoints: Endpoint[] = [
  { name: 'messages', method: 'POST', path: /^\/v3\/([^/]+)\/messages$/i, read: readMessages },
  { name: 'messages.mime', method: 'POST', path: /^\/v3\/([^/]+)\/messages\.mime$/i, read: readMime },
];

export const mailgun: Provider = {
  id: 'mailgun',
  name: 'Mailgun',
  hosts: ['api.mailgun.net', 'api.eu.mailgun.net'],
  endpoints,
  maxBody: MAX_BODY,
  error: (status, message) => ({
    headers: { 'content-type': 'application/json' },
    // Mailgun's shape is {message}; mailgun.js makes that the error's `details` and takes its
    // `message` from `error` (or the status text), so both carry ours.
    body: JSON.stringify({ message, error: message }),
  }),
  // A held send answers as a queued one (mailgun.js reads `id` and `message`), the audit id as its id.
  held: (id, message) => ({ status: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: `<${id}@postguard>`, message }) }),
};
