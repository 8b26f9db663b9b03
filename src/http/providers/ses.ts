// Amazon SES: two APIs on the same hosts. Field lists from the official SDK models
// (@aws-sdk/client-sesv2 3.1176, @aws-sdk/client-ses 3.1169), checked against the API reference
// (docs.aws.amazon.com/goto/WebAPI/sesv2-2019-09-27/SendEmail, the CLI's `sesv2 send-email`) and
// the query API guide (docs.aws.amazon.com/ses/latest/DeveloperGuide/using-ses-api-requests.html).
//   v2, REST JSON:  POST /v2/email/outbound-emails (SendEmail), POST /v2/email/outbound-bulk-emails
//   v1, AWS query:  POST / with `Action=` in the form body or the query string (Version 2010-12-01)
// SDK requests are SigV4-signed over the body (`signed`): nothing in them can be stripped, so an
// unknown recipient blocks. Raw MIME without a Destination is sent to its To/Cc/Bcc headers.

import { randomUUID } from 'node:crypto';
import type { RecipientField } from '../../core/intent.js';
import { splitHeader } from '../../core/message.js';
import {
  decodeBase64, eachMessage, field, formRequest, isObject, json, jsonRequest, keys, MessageFacts, RequestShapeError, requireArray, requireObject,
  type Endpoint, type ErrorReply, type Extracted,
  type ReplyContext, type Provider, type RequestInfo,
} from '../adapter.js';
import { utf8Text } from '../body.js';
import { parseUrlencoded, type FormField } from '../forms.js';
import { BodyError, keyOf, type Json, type JsonObject } from '../../core/json.js';
import { normalizeMime } from '../mime.js';

// --- v2 (REST JSON) --------------------------------------------------------------------------------

const SEND = keys(
  'FromEmailAddress', 'FromEmailAddressIdentityArn', 'Destination', 'ReplyToAddresses', 'FeedbackForwardingEmailAddress',
  'FeedbackForwardingEmailAddressIdentityArn', 'Content', 'EmailTags', 'ConfigurationSetName', 'EndpointId', 'TenantName',
  'ListManagementOptions', 'ConfigurationOverrides',
);
const BULK = keys(
  'FromEmailAddress', 'FromEmailAddressIdentityArn', 'ReplyToAddresses', 'FeedbackForwardingEmailAddress',
  'FeedbackForwardingEmailAddressIdentityArn', 'DefaultEmailTags', 'DefaultContent', 'BulkEmailEntries', 'ConfigurationSetName',
  'EndpointId', 'TenantName', 'ConfigurationOverrides',
);
// Nested objects that hold recipients or content are checked too: a new member there could carry a recipient.
const BULK_ENTRY = keys('Destination', 'ReplacementTags', 'ReplacementEmailContent', 'ReplacementHeaders');
const DESTINATION = keys('ToAddresses', 'CcAddresses', 'BccAddresses');
const CONTENT = keys('Simple', 'Raw', 'Template');
const SIMPLE = keys('Subject', 'Body', 'Headers', 'Attachments');
const TEMPLATE = keys('TemplateName', 'TemplateArn', 'TemplateContent', 'TemplateData', 'Headers', 'Attachments');
const TEMPLATE_CONTENT = keys('Subject', 'Text', 'Html');
const TEXT = keys('Data', 'Charset');
const BODY = keys('Text', 'Html');
const RAW = keys('Data');
const ATTACHMENT = keys('RawContent', 'ContentDisposition', 'FileName', 'ContentDescription', 'ContentId', 'ContentTransferEncoding', 'ContentType');

/** A nested object of the request, its keys checked; absent gives undefined, another type a problem. */
function child(holder: JsonObject, key: string, allowed: ReadonlySet<string>, where: string, facts: MessageFacts): JsonObject | undefined {
  const v = field(holder, key);
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) {
    facts.problem('request.type', `${where}: expected an object`);
    return undefined;
  }
  facts.onlyKeys(v, allowed, where);
  return v;
}

/** `["a@x.com", "B <b@y.com>"]`: one mailbox per item (a comma list in one item is refused by `address`). */
function addressArray(holder: JsonObject, key: string, f: RecipientField, where: string, facts: MessageFacts, editable: boolean, delivers = true): void {
  const k = keyOf(holder, key);
  if (k === undefined || holder[k] === null) return;
  const list = holder[k]!;
  if (!Array.isArray(list)) return facts.problem('request.type', `${where}: expected an array of addresses`);
  list.forEach((item, i) => {
    const remove = () => {
      const at = list.indexOf(item);
      if (at !== -1) list.splice(at, 1);
      if (list.length === 0) delete holder[k];
    };
    facts.address(item, f, `${where}[${i}]`, editable ? remove : null, delivers);
  });
}

/** Where bounces and complaints are sent (S28): mail flows there, and it cannot be removed. */
function notifyAddress(value: Json | undefined, source: string, facts: MessageFacts): void {
  if (value !== undefined && value !== null) facts.address(value, 'notify', source, null, false);
}

/** Sender, reply and feedback addresses, tags: in a bulk send, shared by every entry. */
function readEnvelope(msg: JsonObject, facts: MessageFacts): void {
  facts.sender(field(msg, 'FromEmailAddress'), 'FromEmailAddress');
  addressArray(msg, 'ReplyToAddresses', 'reply-to', 'ReplyToAddresses', facts, false, false);
  notifyAddress(field(msg, 'FeedbackForwardingEmailAddress'), 'FeedbackForwardingEmailAddress', facts);
  facts.text('tags', field(msg, 'EmailTags') ?? field(msg, 'DefaultEmailTags'));
}

function readDestination(msg: JsonObject, facts: MessageFacts, where: string): void {
  const d = child(msg, 'Destination', DESTINATION, `${where}Destination`, facts);
  if (!d) return;
  for (const [key, f] of [['ToAddresses', 'to'], ['CcAddresses', 'cc'], ['BccAddresses', 'bcc']] as const) addressArray(d, key, f, `${where}Destination.${key}`, facts, true);
}

function readContent(content: JsonObject, facts: MessageFacts, where: string): void {
  const simple = child(content, 'Simple', SIMPLE, `${where}Simple`, facts);
  if (simple) {
    const subject = child(simple, 'Subject', TEXT, `${where}Simple.Subject`, facts);
    facts.text('subject', subject && field(subject, 'Data'));
    const body = child(simple, 'Body', BODY, `${where}Simple.Body`, facts);
    for (const part of ['Text', 'Html'] as const) {
      const c = body && child(body, part, TEXT, `${where}Simple.Body.${part}`, facts);
      facts.text(part.toLowerCase(), c && field(c, 'Data'));
    }
    readHeaders(simple, 'Headers', facts, `${where}Simple.Headers`);
    readAttachments(simple, facts, `${where}Simple.Attachments`);
  }
  const raw = child(content, 'Raw', RAW, `${where}Raw`, facts);
  if (raw) {
    const data = field(raw, 'Data');
    if (typeof data !== 'string') facts.problem('request.type', `${where}Raw.Data: expected base64 MIME`);
    else {
      const bytes = decodeBase64(data, `${where}Raw.Data`, facts);
      if (bytes) readMime(bytes, `${where}Raw.Data`, facts, (b) => void (raw[keyOf(raw, 'Data')!] = b.toString('base64')));
    }
  }
  const template = child(content, 'Template', TEMPLATE, `${where}Template`, facts);
  if (template) readTemplate(template, facts, `${where}Template`);
}

/**
 * A stored template (TemplateName/Arn) holds subject and bodies only, no recipients; it can only be
 * created out of band, since a write to the template endpoints is refused here as an unknown endpoint.
 */
function readTemplate(template: JsonObject, facts: MessageFacts, where: string): void {
  facts.text('template data', field(template, 'TemplateData'));
  const inline = child(template, 'TemplateContent', TEMPLATE_CONTENT, `${where}.TemplateContent`, facts);
  if (inline) {
    facts.text('subject', field(inline, 'Subject'));
    facts.text('text', field(inline, 'Text'));
    facts.text('html', field(inline, 'Html'));
  }
  readHeaders(template, 'Headers', facts, `${where}.Headers`);
  readAttachments(template, facts, `${where}.Attachments`);
}

/**
 * `[{Name, Value}]`, added to the message SES builds: recipient headers count (S21), and a
 * Return-Path is where bounces go (S28).
 */
function readHeaders(holder: JsonObject, key: string, facts: MessageFacts, where: string): void {
  facts.headerArray(holder, key, where, 'Name', 'Value', {
    check: (name, value, source) => {
      if (name.toLowerCase() === 'return-path') notifyAddress(value, source, facts);
    },
  });
}

function readAttachments(holder: JsonObject, facts: MessageFacts, where: string): void {
  const list = field(holder, 'Attachments');
  if (list === undefined || list === null) return;
  if (!Array.isArray(list)) return facts.problem('request.type', `${where}: expected an array`);
  list.forEach((a, i) => {
    if (!isObject(a)) return facts.problem('request.type', `${where}[${i}]: expected an object`);
    facts.onlyKeys(a, ATTACHMENT, `${where}[${i}]`);
    facts.base64Attachment(field(a, 'FileName'), field(a, 'ContentType'), field(a, 'RawContent'), `${where}[${i}]`);
  });
}

/**
 * Raw MIME: recipients come from its headers when there is no Destination, and count either way.
 * SES sends bounces and complaints to its Return-Path (feedback forwarding; docs.aws.amazon.com/ses
 * "feedback forwarding"), which the shared header reader does not know as a recipient header.
 */
function readMime(raw: Buffer, where: string, facts: MessageFacts, write: ((raw: Buffer) => void) | null): void {
  facts.mime(raw, where, 'delivery', write);
  let fields;
  try {
    fields = splitHeader(normalizeMime(raw, where)).fields;
  } catch {
    return; // `mime` has reported it
  }
  for (const f of fields) if (f.name === 'return-path' && f.value !== '<>') facts.addressList(f.value, 'notify', `${where} return-path header`, null, false);
}

function sendEmail(doc: Json): Extracted {
  const body = requireObject(doc);
  const facts = new MessageFacts('message');
  facts.onlyKeys(body, SEND, 'body');
  readEnvelope(body, facts);
  readDestination(body, facts, '');
  const content = child(body, 'Content', CONTENT, 'Content', facts);
  if (content) readContent(content, facts, 'Content.');
  return jsonRequest(body, [facts]);
}

/** One shared template, many entries: each entry is a message with its own Destination. */
function sendBulkEmail(doc: Json): Extracted {
  const body = requireObject(doc);
  const shared = new MessageFacts('request');
  shared.onlyKeys(body, BULK, 'body');
  readEnvelope(body, shared);
  const content = child(body, 'DefaultContent', keys('Template'), 'DefaultContent', shared);
  const template = content && child(content, 'Template', TEMPLATE, 'DefaultContent.Template', shared);
  if (template) readTemplate(template, shared, 'DefaultContent.Template');
  const messages = eachMessage(requireArray(field(body, 'BulkEmailEntries'), 'BulkEmailEntries'), 'BulkEmailEntries', (entry, facts, where) => {
    facts.onlyKeys(entry, BULK_ENTRY, where);
    readDestination(entry, facts, `${where}.`);
    readHeaders(entry, 'ReplacementHeaders', facts, `${where}.ReplacementHeaders`);
    const replacement = child(entry, 'ReplacementEmailContent', keys('ReplacementTemplate'), `${where}.ReplacementEmailContent`, facts);
    const data = replacement && child(replacement, 'ReplacementTemplate', keys('ReplacementTemplateData'), `${where}.ReplacementEmailContent.ReplacementTemplate`, facts);
    facts.text('template data', data && field(data, 'ReplacementTemplateData'));
    facts.text('tags', field(entry, 'ReplacementTags'));
  }, shared);
  return jsonRequest(body, messages);
}

// --- v1 (AWS query) --------------------------------------------------------------------------------

const VERSION = '2010-12-01';
/** Parameters of every query request: the action, and the legacy ways of carrying authentication. */
const COMMON = [
  'Action', 'Version', 'AWSAccessKeyId', 'Signature', 'SignatureMethod', 'SignatureVersion', 'Timestamp', 'Expires', 'SecurityToken',
  'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders', 'X-Amz-Signature', 'X-Amz-Security-Token',
];
/** A signature in the parameters (SigV2, presigned SigV4) covers the body just as a signed header does. */
const SIGNATURES = keys('Signature', 'X-Amz-Signature');
const TAGS = (list: string) => [`${list}.member.#.Name`, `${list}.member.#.Value`];
const DESTINATION_V1 = ['Destination.ToAddresses.member.#', 'Destination.CcAddresses.member.#', 'Destination.BccAddresses.member.#'];
const RETURN = ['Source', 'SourceArn', 'ReturnPath', 'ReturnPathArn', 'ConfigurationSetName'];

/** The parameters each send action takes; `#` is a list index (1, 2, …). */
const ACTIONS: Record<string, readonly string[]> = {
  sendemail: [
    ...RETURN, ...DESTINATION_V1, 'ReplyToAddresses.member.#', ...TAGS('Tags'),
    'Message.Subject.Data', 'Message.Subject.Charset', 'Message.Body.Text.Data', 'Message.Body.Text.Charset', 'Message.Body.Html.Data', 'Message.Body.Html.Charset',
  ],
  sendrawemail: ['Source', 'SourceArn', 'FromArn', 'ReturnPathArn', 'ConfigurationSetName', 'Destinations.member.#', 'RawMessage.Data', ...TAGS('Tags')],
  sendtemplatedemail: [...RETURN, ...DESTINATION_V1, 'ReplyToAddresses.member.#', ...TAGS('Tags'), 'Template', 'TemplateArn', 'TemplateData'],
  sendbulktemplatedemail: [
    ...RETURN, 'ReplyToAddresses.member.#', ...TAGS('DefaultTags'), 'Template', 'TemplateArn', 'DefaultTemplateData',
    ...DESTINATION_V1.map((p) => `Destinations.member.#.${p}`), ...TAGS('Destinations.member.#.ReplacementTags'), 'Destinations.member.#.ReplacementTemplateData',
  ],
};
const PARAMS = new Map(
  Object.entries(ACTIONS).map(([action, names]) => [
    action,
    new RegExp(`^(${[...COMMON, ...names].map((n) => n.toLowerCase().replace(/[.-]/g, '\\$&').replace(/#/g, '[1-9][0-9]*')).join('|')})$`),
  ]),
);

/**
 * Actions that send no mail, from the v1 SDK's command list. The query API sends reads as POST /
 * too, but the inspector has no way yet to pass a request that names no message, so they are
 * refused with this message rather than the generic one (SESv2 reads are GETs and pass).
 */
const READS = keys(
  'DescribeActiveReceiptRuleSet', 'DescribeConfigurationSet', 'DescribeReceiptRule', 'DescribeReceiptRuleSet', 'GetAccountSendingEnabled',
  'GetCustomVerificationEmailTemplate', 'GetIdentityDkimAttributes', 'GetIdentityMailFromDomainAttributes', 'GetIdentityNotificationAttributes',
  'GetIdentityPolicies', 'GetIdentityVerificationAttributes', 'GetSendQuota', 'GetSendStatistics', 'GetTemplate', 'ListConfigurationSets',
  'ListCustomVerificationEmailTemplates', 'ListIdentities', 'ListIdentityPolicies', 'ListReceiptFilters', 'ListReceiptRuleSets', 'ListTemplates',
  'ListVerifiedEmailAddresses', 'TestRenderTemplate',
);

interface Param {
  field: FormField;
  /** Sent in the URL: it cannot be edited (only the body is rewritten). */
  inQuery: boolean;
}

/** Urlencoded fields are always text; the form type also allows file parts. */
const valueOf = (p: Param): string => (typeof p.field.value === 'string' ? p.field.value : p.field.value.toString('utf8'));

/** The request's parameters, body and query string together, by lower-case name. */
class QueryParams {
  private readonly byName = new Map<string, Param>();

  constructor(body: FormField[], query: URLSearchParams) {
    const add = (f: FormField, inQuery: boolean) => {
      const name = f.name.toLowerCase();
      const seen = this.byName.get(name);
      if (!seen) return void this.byName.set(name, { field: f, inQuery });
      // One copy in the URL and one in the body, saying the same, reads the same everywhere.
      if (seen.inQuery !== inQuery && seen.field.value === f.value) return void (seen.inQuery = true);
      throw new BodyError('differential', `query parameter ${JSON.stringify(f.name.slice(0, 80))} is given twice${seen.inQuery !== inQuery ? ', differently in the URL and the body' : ''}`);
    };
    for (const [name, value] of query) add({ name, value }, true);
    for (const f of body) add(f, false);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  get(name: string): Param | undefined {
    return this.byName.get(name.toLowerCase());
  }

  value(name: string): string | undefined {
    const p = this.get(name);
    return p && valueOf(p);
  }

  /** The members of list `prefix` (`Destination.ToAddresses`), in index order. */
  members(prefix: string): Param[] {
    const head = `${prefix.toLowerCase()}.member.`;
    return [...this.byName.entries()]
      .filter(([n]) => n.startsWith(head) && /^\d+$/.test(n.slice(head.length)))
      .sort(([a], [b]) => Number(a.slice(head.length)) - Number(b.slice(head.length)))
      .map(([, p]) => p);
  }
}

interface QueryRequest {
  params: QueryParams;
  /** What the rewritten body is made of. */
  body: FormField[];
  /** False when a signature covers the body. */
  editable: boolean;
}

/**
 * `Prefix.member.N` addresses. Removing one renumbers the rest, so the list keeps no gap for SES
 * to stop at; a list with a member in the URL is not edited at all.
 */
function memberList(q: QueryRequest, prefix: string, f: RecipientField, facts: MessageFacts, editable = true, delivers = true): void {
  const live = q.params.members(prefix);
  const canEdit = editable && q.editable && live.every((p) => !p.inQuery);
  for (const p of [...live]) {
    const remove = () => {
      q.body.splice(q.body.indexOf(p.field), 1);
      live.splice(live.indexOf(p), 1);
      live.forEach((m, i) => void (m.field.name = m.field.name.replace(/\d+$/, String(i + 1))));
    };
    facts.address(valueOf(p), f, p.field.name, canEdit ? remove : null, delivers);
  }
}

function readQueryEnvelope(q: QueryRequest, facts: MessageFacts): void {
  facts.sender(q.params.value('Source'), 'Source');
  memberList(q, 'ReplyToAddresses', 'reply-to', facts, false, false);
  notifyAddress(q.params.value('ReturnPath'), 'ReturnPath', facts);
}

function readQueryDestination(q: QueryRequest, facts: MessageFacts, prefix: string): void {
  for (const [key, f] of [['ToAddresses', 'to'], ['CcAddresses', 'cc'], ['BccAddresses', 'bcc']] as const) memberList(q, `${prefix}Destination.${key}`, f, facts);
}

/** Bodies, template data and tag values go to the detectors: `texts` is [where, parameter]. */
function readQueryTexts(q: QueryRequest, facts: MessageFacts, texts: readonly (readonly [string, string])[], tags: string): void {
  for (const [where, name] of texts) facts.text(where, q.params.value(name));
  const head = `${tags.toLowerCase()}.member.`;
  const values = q.params.names().filter((n) => n.startsWith(head) && n.endsWith('.value'));
  if (values.length) facts.text('tags', values.map((n) => q.params.value(n)).join('\n'));
}

const READERS = new Map<string, (q: QueryRequest) => MessageFacts[]>(Object.entries({
  sendemail: (q) => {
    const facts = new MessageFacts('message');
    readQueryEnvelope(q, facts);
    readQueryDestination(q, facts, '');
    readQueryTexts(q, facts, [['subject', 'Message.Subject.Data'], ['text', 'Message.Body.Text.Data'], ['html', 'Message.Body.Html.Data']], 'Tags');
    return [facts];
  },
  sendrawemail: (q) => {
    const facts = new MessageFacts('message');
    facts.sender(q.params.value('Source'), 'Source');
    // Destinations is the envelope: when it is given, SES delivers to it and not to the headers.
    memberList(q, 'Destinations', 'envelope', facts);
    const data = q.params.get('RawMessage.Data');
    if (data) {
      const bytes = decodeBase64(valueOf(data), 'RawMessage.Data', facts);
      const write = q.editable && !data.inQuery ? (b: Buffer) => void (data.field.value = b.toString('base64')) : null;
      if (bytes) readMime(bytes, 'RawMessage.Data', facts, write);
    }
    readQueryTexts(q, facts, [], 'Tags');
    return [facts];
  },
  sendtemplatedemail: (q) => {
    const facts = new MessageFacts('message');
    readQueryEnvelope(q, facts);
    readQueryDestination(q, facts, '');
    readQueryTexts(q, facts, [['template data', 'TemplateData']], 'Tags');
    return [facts];
  },
  sendbulktemplatedemail: (q) => {
    const shared = new MessageFacts('request');
    readQueryEnvelope(q, shared);
    readQueryTexts(q, shared, [['template data', 'DefaultTemplateData']], 'DefaultTags');
    const entries = new Set(q.params.names().map((n) => /^destinations\.member\.(\d+)\./.exec(n)?.[1]).filter((n) => n !== undefined));
    return [...entries].sort((a, b) => Number(a) - Number(b)).map((n) => {
      const facts = new MessageFacts(`Destinations.member.${n}`);
      readQueryDestination(q, facts, `Destinations.member.${n}.`);
      readQueryTexts(q, facts, [['template data', `Destinations.member.${n}.ReplacementTemplateData`]], `Destinations.member.${n}.ReplacementTags`);
      facts.inherit(shared);
      return facts;
    });
  },
}));

function readQuery(req: RequestInfo): Extracted {
  // AWS's JSON-protocol services dispatch on this header instead of Action: with both, two readings.
  if (req.headers['x-amz-target'] !== undefined) throw new BodyError('differential', 'X-Amz-Target on a query request: the action could be read from it instead of Action');
  if (req.body.length > 0 && req.mediaType !== 'application/x-www-form-urlencoded') {
    throw new BodyError('unsupported', `SES query requests are application/x-www-form-urlencoded, not ${JSON.stringify(req.mediaType.slice(0, 80) || 'untyped')}`);
  }
  const body = parseUrlencoded(utf8Text(req.body));
  const params = new QueryParams(body, req.query);
  const q: QueryRequest = { params, body, editable: !params.names().some((n) => SIGNATURES.has(n)) };
  const action = params.value('Action');
  if (!action) throw new RequestShapeError('SES query request without an Action');
  const request = new MessageFacts('request');
  // Maps, not objects: `Action=constructor` must not find Object.prototype.
  const shape = PARAMS.get(action.toLowerCase());
  const read = READERS.get(action.toLowerCase());
  // Reads that the query API takes as POST (or GET) send nothing: they pass unchanged.
  if (READS.has(action.toLowerCase())) return { ...formRequest(body, 'urlencoded', []), sends: false };
  if (!shape || !read) {
    request.problem('request.action', `SES action ${JSON.stringify(action.slice(0, 60))} is not a send action postguard inspects`);
    return formRequest(body, 'urlencoded', [request]);
  }
  if (params.value('Version') !== VERSION) request.problem('request.version', `SES query Version must be ${VERSION}`);
  for (const n of params.names()) if (!shape.test(n)) request.problem('request.unknown_field', `${action}: unknown parameter ${JSON.stringify(n.slice(0, 80))}`);
  return formRequest(body, 'urlencoded', read(q), request.problems);
}

// --- errors: each API in its own shape, so its SDK shows the message --------------------------------

function codes(status: number): { json: string; query: string; type: 'Sender' | 'Receiver' } {
  if (status === 403) return { json: 'AccessDeniedException', query: 'AccessDenied', type: 'Sender' };
  if (status === 429) return { json: 'TooManyRequestsException', query: 'Throttling', type: 'Sender' };
  if (status >= 500) return { json: 'InternalServiceErrorException', query: 'ServiceUnavailable', type: 'Receiver' };
  return { json: 'BadRequestException', query: 'InvalidParameterValue', type: 'Sender' };
}

const XML_ESCAPES: Record<string, string> = { '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' };
const xml = (s: string) => s.replace(/[<>&"']/g, (c) => XML_ESCAPES[c]!);

/** The query API (v1) lives at `/`, the REST JSON API (v2) under `/v2/`. */
const isQuery = (req: ReplyContext) => req.path === '/';

function sesError(status: number, message: string, req: ReplyContext): ErrorReply {
  const c = codes(status);
  // The audit id at the end of the message becomes the request id the SDK reports ($metadata.requestId).
  const requestId = /\[([0-9a-f-]{36})\]$/.exec(message)?.[1] ?? randomUUID();
  if (isQuery(req)) {
    return {
      headers: { 'content-type': 'text/xml', 'x-amzn-requestid': requestId },
      body: `<ErrorResponse xmlns="http://ses.amazonaws.com/doc/${VERSION}/"><Error><Type>${c.type}</Type><Code>${c.query}</Code><Message>${xml(message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`,
    };
  }
  return { headers: { 'content-type': 'application/json', 'x-amzn-errortype': c.json, 'x-amzn-requestid': requestId }, body: JSON.stringify({ message }) };
}

// --- the provider ----------------------------------------------------------------------------------

/** A held (quarantined) send answers as a sent one, with the audit id as the message id. */
function sesHeld(id: string, _message: string, req: RequestInfo): { status: number } & ErrorReply {
  if (!isQuery(req)) return { status: 200, headers: { 'content-type': 'application/json', 'x-amzn-requestid': id }, body: JSON.stringify({ MessageId: id }) };
  const action = new QueryParams(parseUrlencoded(utf8Text(req.body)), req.query).value('Action') ?? 'SendEmail';
  const name = /^Send(Raw|Templated|BulkTemplated)?Email$/i.test(action) ? action : 'SendEmail';
  const result = /bulk/i.test(name) ? `<Status><member><Status>Success</Status><MessageId>${id}</MessageId></member></Status>` : `<MessageId>${id}</MessageId>`;
  return {
    status: 200,
    headers: { 'content-type': 'text/xml', 'x-amzn-requestid': id },
    body: `<${name}Response xmlns="http://ses.amazonaws.com/doc/${VERSION}/"><${name}Result>${result}</${name}Result><ResponseMetadata><RequestId>${id}</RequestId></ResponseMetadata></${name}Response>`,
  };
}

const endpoints: Endpoint[] = [
  { name: 'v2.SendEmail', method: 'POST', path: /^\/v2\/email\/outbound-emails$/i, read: json(sendEmail) },
  { name: 'v2.SendBulkEmail', method: 'POST', path: /^\/v2\/email\/outbound-bulk-emails$/i, read: json(sendBulkEmail) },
  // Every v1 action is POST / — or GET / with the parameters in the query string: the reader
  // dispatches on Action, passes the reads and refuses what it does not inspect.
  { name: 'v1.query', method: 'POST', path: /^\/$/, read: readQuery },
  { name: 'v1.query', method: 'GET', path: /^\/$/, read: readQuery },
];

// DNS suffixes of the AWS partitions (and their dual-stack forms), from the SDK's partitions table.
const SUFFIX = String.raw`(amazonaws\.com(\.cn)?|amazonaws\.eu|c2s\.ic\.gov|sc2s\.sgov\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov|api\.aws(\.ic\.gov|\.hci\.ic\.gov|\.scloud)?|api\.amazonwebservices\.(com\.cn|eu)|api\.cloud-aws\.adc-e\.uk)`;

export const ses: Provider = {
  id: 'ses',
  name: 'Amazon SES',
  hosts: [
    new RegExp(String.raw`^email(-fips)?\.[a-z0-9-]+\.${SUFFIX}$`),
    // Multi-region endpoints (EndpointId, SigV4a): {id}.endpoints.email[.global|.us-gov].<suffix>
    new RegExp(String.raw`^[a-z0-9-]+\.endpoints\.email(\.global|\.us-gov)?\.${SUFFIX}$`),
    // Interface VPC endpoints reached by their own name rather than through private DNS.
    /^vpce-[a-z0-9-]+\.email(-fips)?\.[a-z0-9-]+\.vpce\.amazonaws\.com(\.cn)?$/,
  ],
  endpoints,
  // A 40 MB message (SESv2's limit), base64 in the request.
  maxBody: 56 * 1024 * 1024,
  error: sesError,
  held: sesHeld,
  // The query API reads its parameters from any request's query string: only GET / is inspected.
  suspiciousRead: (path, query) => ([...query.keys()].some((k) => k.toLowerCase() === 'action') ? `an SES query action in the query string of a request other than GET / (${path.slice(0, 80)}) is not inspected, so it is refused` : null),
  // SigV4 (and SigV4a) sign the body; whatever the scheme, an AWS-authenticated body is not ours to edit.
  signed: (h) => h.authorization !== undefined || h['x-amzn-authorization'] !== undefined,
};
