// Microsoft Graph mail (learn.microsoft.com/graph/api/user-sendmail, user-post-messages,
// message-update, message-send, message-forward, message-reply; resources/message). A message is
// JSON — recipients in toRecipients/ccRecipients/bccRecipients as [{emailAddress: {address, name}}],
// extra headers in internetMessageHeaders — or, sent as `Content-Type: text/plain`, a base64 MIME
// message whose To/Cc/Bcc Exchange delivers to. Drafts are stored messages: created here with the
// same inspection as a send, edited and sent by id only when postguard saw them created.
//
// Graph reads path segments case-insensitively and takes actions by their namespace-qualified
// names too (`microsoft.graph.sendMail`), so both are matched. Every other write on these hosts —
// Teams messages, OneDrive uploads, calendar invitations, inbox rules, attachments added to a
// draft afterwards — is refused as an unknown endpoint.

import { parseStrictJson, type Json, type JsonObject } from '../../core/json.js';
import { decodeBase64, field, isObject, jsonBody, jsonRequest, keys, MessageFacts, requireObject, type Endpoint, type Extracted, type Provider, type RequestInfo } from '../adapter.js';
import { utf8Text } from '../body.js';

const RECIPIENT = keys('emailAddress', '@odata.type');
const EMAIL = keys('address', 'name', '@odata.type');
const ITEM_BODY = keys('contentType', 'content', '@odata.type');
const HEADER = keys('name', 'value', '@odata.type');
const MESSAGE = keys(
  'subject', 'body', 'toRecipients', 'ccRecipients', 'bccRecipients', 'replyTo', 'from', 'sender', 'attachments', 'internetMessageHeaders',
  'importance', 'categories', 'flag', 'inferenceClassification', 'internetMessageId', 'isDeliveryReceiptRequested', 'isReadReceiptRequested', 'isRead', 'extensions',
  'singleValueExtendedProperties', 'multiValueExtendedProperties',
  // Read-only: accepted because clients send fetched messages back.
  'id', '@odata.type', '@odata.etag', '@odata.context', 'bodyPreview', 'uniqueBody', 'changeKey', 'conversationId', 'conversationIndex', 'createdDateTime',
  'lastModifiedDateTime', 'receivedDateTime', 'sentDateTime', 'parentFolderId', 'hasAttachments', 'isDraft', 'webLink',
);
const SEND_MAIL = keys('message', 'saveToSentItems');
const FORWARD = keys('comment', 'toRecipients', 'message');
const FILE_ATTACHMENT = keys('@odata.type', 'name', 'contentType', 'contentBytes', 'contentId', 'contentLocation', 'isInline', 'size', 'id', 'lastModifiedDateTime');
const ITEM_ATTACHMENT = keys('@odata.type', 'name', 'contentType', 'item', 'isInline', 'size', 'id', 'lastModifiedDateTime');
const RECIPIENT_FIELDS = [['toRecipients', 'to'], ['ccRecipients', 'cc'], ['bccRecipients', 'bcc']] as const;

/** The address of a recipient object (`{emailAddress: {address, name}}`); the name is display only. */
const addressOf = (facts: MessageFacts, where: string) => (r: JsonObject): Json | undefined => {
  facts.onlyKeys(r, RECIPIENT, where);
  const e = field(r, 'emailAddress');
  if (!isObject(e)) return undefined;
  facts.onlyKeys(e, EMAIL, `${where}.emailAddress`);
  return field(e, 'address');
};

function readMessage(msg: JsonObject, facts: MessageFacts, where: string): void {
  facts.onlyKeys(msg, MESSAGE, where);
  for (const [key, f] of RECIPIENT_FIELDS) facts.addressObjects(msg, key, addressOf(facts, `${where}.${key}`), f, `${where}.${key}`);
  for (const key of ['from', 'sender']) {
    const v = field(msg, key);
    if (v === undefined || v === null) continue;
    if (!isObject(v)) facts.problem('request.type', `${where}.${key}: expected a recipient object`);
    else facts.sender(addressOf(facts, `${where}.${key}`)(v), `${where}.${key}`);
  }
  // Reply-To is where answers (and data) flow, never edited: an unknown one blocks the message.
  facts.addressObjects(msg, 'replyTo', addressOf(facts, `${where}.replyTo`), 'reply-to', `${where}.replyTo`, false, { delivers: false });
  facts.text('subject', field(msg, 'subject'));
  for (const key of ['body', 'uniqueBody']) readItemBody(field(msg, key), facts, `${where}.${key}`);
  facts.text('body preview', field(msg, 'bodyPreview'));
  facts.text('extensions', field(msg, 'extensions'));
  // Graph takes only x- headers here, but one it refuses costs nothing and one it takes is a recipient.
  facts.headerArray(msg, 'internetMessageHeaders', `${where}.internetMessageHeaders`, 'name', 'value', { allowedKeys: HEADER });
  readAttachments(msg, facts, where);
  for (const key of ['singleValueExtendedProperties', 'multiValueExtendedProperties']) {
    // Raw MAPI properties: some become headers or recipient data when the message is sent.
    const v = field(msg, key);
    if (v !== undefined && v !== null) facts.problem('request.unsupported', `${where}.${key}: extended MAPI properties are not inspected`);
  }
}

function readItemBody(b: Json | undefined, facts: MessageFacts, where: string): void {
  if (b === undefined || b === null) return;
  if (!isObject(b)) return facts.problem('request.type', `${where}: expected {contentType, content}`);
  facts.onlyKeys(b, ITEM_BODY, where);
  facts.text(String(field(b, 'contentType') ?? 'text').toLowerCase() === 'html' ? 'html' : 'text', field(b, 'content'));
}

function readAttachments(msg: JsonObject, facts: MessageFacts, where: string): void {
  const list = field(msg, 'attachments');
  if (list === undefined || list === null) return;
  if (!Array.isArray(list)) return facts.problem('request.type', `${where}.attachments: expected an array`);
  list.forEach((a, i) => {
    const at = `${where}.attachments[${i}]`;
    if (!isObject(a)) return facts.problem('request.type', `${at}: expected an object`);
    const type = String(field(a, '@odata.type') ?? '').replace(/^#/, '').toLowerCase();
    if (type === 'microsoft.graph.fileattachment') {
      facts.onlyKeys(a, FILE_ATTACHMENT, at);
      facts.base64Attachment(field(a, 'name'), field(a, 'contentType'), field(a, 'contentBytes'), at);
    } else if (type === 'microsoft.graph.itemattachment') {
      // An attached message, event or contact: content for the detectors, its recipients deliver nothing.
      facts.onlyKeys(a, ITEM_ATTACHMENT, at);
      facts.text(`attachment ${String(field(a, 'name') ?? '').slice(0, 60)}`, field(a, 'item'));
    } else {
      // referenceAttachment (a link the provider resolves) and anything new: content not in the request.
      facts.problem('request.attachment', `${at}: attachment type ${JSON.stringify(type.slice(0, 60))} is not one postguard reads (fileAttachment, itemAttachment)`);
    }
  });
}

// --- bodies ----------------------------------------------------------------------------------------

/** `Content-Type: text/plain` selects Graph's MIME form: the body is a base64 RFC 5322 message. */
const isMime = (req: RequestInfo) => req.mediaType === 'text/plain';

function mimeRequest(req: RequestInfo, label: string, extra: Partial<Extracted> = {}): Extracted {
  const facts = new MessageFacts(label);
  const bytes = decodeBase64(utf8Text(req.body), 'MIME body', facts);
  let edited: Buffer | null = null;
  if (bytes) facts.mime(bytes, 'MIME message', 'delivery', (raw) => void (edited = Buffer.from(raw.toString('base64'))));
  return { messages: [facts], problems: [], body: () => ({ body: edited ?? req.body }), ...extra };
}

/** A message id from the path as Graph reads it (percent-decoded), to compare with the id it gave. */
function messageId(req: RequestInfo): string {
  try {
    return decodeURIComponent(req.params[0]!);
  } catch {
    return req.params[0]!;
  }
}

const unchanged = (req: RequestInfo, facts: MessageFacts, extra: Partial<Extracted> = {}): Extracted => ({ messages: [facts], problems: [], body: () => ({ body: req.body }), ...extra });

function refused(label: string, code: string, detail: string) {
  return (req: RequestInfo): Extracted => {
    const facts = new MessageFacts(label);
    facts.problem(code, detail);
    return unchanged(req, facts);
  };
}

// --- endpoints -------------------------------------------------------------------------------------

function sendMail(req: RequestInfo): Extracted {
  if (isMime(req)) return mimeRequest(req, 'message');
  const body = requireObject(jsonBody(req));
  const facts = new MessageFacts('message');
  facts.onlyKeys(body, SEND_MAIL, 'body');
  readMessage(requireObject(field(body, 'message') ?? null, 'message'), facts, 'message');
  return jsonRequest(body, [facts]);
}

/** Create a draft (a message resource): inspected as the send it is waiting to be. */
function createDraft(req: RequestInfo): Extracted {
  if (isMime(req)) return mimeRequest(req, 'draft');
  const msg = requireObject(jsonBody(req));
  const facts = new MessageFacts('draft');
  readMessage(msg, facts, 'body');
  return jsonRequest(msg, [facts]);
}

/** PATCH changes some fields of a stored draft; the rest were inspected only if postguard made it. */
function updateDraft(req: RequestInfo): Extracted {
  const msg = requireObject(jsonBody(req));
  const facts = new MessageFacts('draft');
  readMessage(msg, facts, 'body');
  return jsonRequest(msg, [facts], [], { draft: { op: 'update', id: messageId(req) } });
}

/** Send a stored draft: it has no body ("specifying a request body is not necessary"). */
function sendDraft(req: RequestInfo): Extracted {
  const facts = new MessageFacts('draft');
  const text = utf8Text(req.body).trim();
  if (text !== '' && text !== 'null') {
    const doc = parseStrictJson(text);
    if (!isObject(doc) || Object.keys(doc).length > 0) facts.problem('request.unknown_field', 'body: send takes no body; the draft is sent as stored');
  }
  return unchanged(req, facts, { draft: { op: 'send', id: messageId(req) } });
}

/**
 * Forward a stored message to new recipients (`toRecipients`, or the message's own). Those and the
 * comment are inspected; the forwarded original is the mailbox's and not in the request.
 */
function forward(req: RequestInfo): Extracted {
  if (isMime(req)) return mimeRequest(req, 'forward');
  const body = requireObject(jsonBody(req));
  const facts = new MessageFacts('forward');
  facts.onlyKeys(body, FORWARD, 'body');
  facts.text('comment', field(body, 'comment'));
  facts.addressObjects(body, 'toRecipients', addressOf(facts, 'body.toRecipients'), 'to', 'body.toRecipients');
  const msg = field(body, 'message');
  if (isObject(msg)) readMessage(msg, facts, 'body.message');
  else if (msg !== undefined && msg !== null) facts.problem('request.type', 'body.message: expected an object');
  return jsonRequest(body, [facts]);
}

const ROOT = String.raw`^\/(?:v1\.0|beta)\/(?:me|users\/[^/]+)`;
const MESSAGES = String.raw`(?:\/mailfolders\/[^/]+)?\/messages`;
const path = (rest: string) => new RegExp(`${ROOT}${rest}$`, 'i');
const action = (name: string) => path(String.raw`${MESSAGES}\/([^/]+)\/(?:microsoft\.graph\.)?${name}`);

const endpoints: Endpoint[] = [
  { name: 'sendMail', method: 'POST', path: path(String.raw`\/(?:microsoft\.graph\.)?sendmail`), read: sendMail },
  { name: 'messages.create', method: 'POST', path: path(MESSAGES), read: createDraft, createsDraft: (r) => (isObject(r) && typeof r.id === 'string' ? r.id : null) },
  { name: 'messages.update', method: 'PATCH', path: path(String.raw`${MESSAGES}\/([^/]+)`), read: updateDraft },
  { name: 'messages.send', method: 'POST', path: action('send'), read: sendDraft },
  { name: 'messages.forward', method: 'POST', path: action('forward'), read: forward },
  {
    name: 'messages.reply', method: 'POST', path: action('(?:reply|replyall)'),
    read: refused('reply', 'request.unseen_recipients', 'reply and replyAll send to the recipients of a stored message postguard never saw; send the reply with sendMail (or a draft made through postguard) instead'),
  },
  {
    name: 'messages.createReply', method: 'POST', path: action('(?:createreply|createreplyall|createforward)'),
    read: refused('draft', 'request.unseen_recipients', 'createReply, createReplyAll and createForward make a draft from a stored message postguard never saw, which could not be sent through postguard; create the draft with POST messages instead'),
  },
  {
    name: '$batch', method: 'POST', path: /^\/(?:v1\.0|beta)\/\$batch$/i,
    read: refused('batch', 'request.batch', 'Graph $batch requests are not inspected (each sub-request would need its own inspection); send each request on its own'),
  },
];

export const graph: Provider = {
  id: 'graph',
  name: 'Microsoft Graph',
  hosts: ['graph.microsoft.com', 'canary.graph.microsoft.com', 'graph.microsoft.us', 'dod-graph.microsoft.us', 'microsoftgraph.chinacloudapi.cn'],
  endpoints,
  maxBody: 150 * 1024 * 1024,
  error: (status, message) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify({ error: { code: status === 403 ? 'ErrorAccessDenied' : 'ErrorInvalidRequest', message } }) }),
};
