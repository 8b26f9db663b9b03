// Brevo transactional email (developers.brevo.com/reference/send-transac-email; field list checked
// against @getbrevo/brevo v6 SendTransacEmailRequest). Recipients are `[{email, name}]` lists. With
// `messageVersions` every version is its own message to its own `to/cc/bcc`, and Brevo ignores the
// top-level `to`; the top-level lists are still read into every version, since what Brevo "ignores"
// today is a reading we cannot check, and an address in the request is an address in the request.
//
// Decided:
// - `attachment[].url` is refused: Brevo fetches it, so the detectors never see the file, and the
//   fetch itself reaches a host of the caller's choosing with whatever the URL carries. Send
//   `content` (base64) instead.
// - `templateId` is allowed: a template holds content, sender and a reply-to, never delivered
//   recipients, and the template endpoints are writes postguard refuses, so no agent can have set
//   them through it. Its content is not scanned (only `params` is).

import { keyOf, parseStrictJson, type Json, type JsonObject } from '../json.js';
import { field, isObject, jsonRequest, keys, MessageFacts, requireArray, requireObject, type Endpoint, type Provider } from '../adapter.js';
import type { RecipientField } from '../../core/intent.js';
import { utf8Text } from '../body.js';

const BODY = keys('sender', 'to', 'cc', 'bcc', 'replyTo', 'subject', 'htmlContent', 'textContent', 'headers', 'attachment', 'templateId', 'params', 'tags', 'scheduledAt', 'batchId', 'messageVersions');
// `templateId` per version: "can be customized per version only if a global templateId is provided".
const VERSION = keys('to', 'cc', 'bcc', 'replyTo', 'subject', 'htmlContent', 'textContent', 'params', 'templateId');
const PERSON = keys('email', 'name', 'contactPixelTrackingConsent');
const ATTACHMENT = keys('content', 'name', 'url');

function people(holder: JsonObject, key: string, kind: RecipientField, facts: MessageFacts, where: string): void {
  const list = field(holder, key);
  if (Array.isArray(list)) list.forEach((p, i) => isObject(p) && facts.onlyKeys(p, PERSON, `${where}${key}[${i}]`));
  facts.addressObjects(holder, key, (p) => field(p, 'email'), kind, `${where}${key}`);
}

/** Who it goes to, where replies go, and what this message says (top level or one version). */
function readMessage(msg: JsonObject, facts: MessageFacts, where: string): void {
  people(msg, 'to', 'to', facts, where);
  people(msg, 'cc', 'cc', facts, where);
  people(msg, 'bcc', 'bcc', facts, where);
  const reply = field(msg, 'replyTo');
  if (isObject(reply)) {
    facts.onlyKeys(reply, keys('email', 'name'), `${where}replyTo`);
    // Not strippable: the agent chose where answers go, so an unknown one blocks.
    facts.address(field(reply, 'email'), 'reply-to', `${where}replyTo`, null, false);
  } else if (reply !== undefined && reply !== null) facts.problem('request.type', `${where}replyTo: expected {email, name}`);
  facts.text('subject', field(msg, 'subject'));
  facts.text('text', field(msg, 'textContent'));
  facts.text('html', field(msg, 'htmlContent'));
  facts.text('template params', field(msg, 'params'));
}

/** Sender, custom headers and attachments exist only at the top level: every version has them. */
function readShared(body: JsonObject, facts: MessageFacts): void {
  const sender = field(body, 'sender');
  if (isObject(sender)) {
    facts.onlyKeys(sender, keys('email', 'name', 'id'), 'sender');
    // `{id}` alone names a sender stored in the account (verified there): nothing to read.
    facts.sender(field(sender, 'email'), 'sender');
  } else if (sender !== undefined && sender !== null) facts.problem('request.type', 'sender: expected {email, name} or {id}');
  facts.text('tags', field(body, 'tags'));
  readHeaders(body, facts);
  const attachments = field(body, 'attachment');
  if (Array.isArray(attachments)) {
    attachments.forEach((a, i) => {
      const where = `attachment[${i}]`;
      if (!isObject(a)) return facts.problem('request.type', `${where}: expected {content, name} or {url, name}`);
      facts.onlyKeys(a, ATTACHMENT, where);
      const url = field(a, 'url');
      if (url !== undefined && url !== null && url !== '') return facts.problem('request.attachment_url', `${where}.url: Brevo fetches this file itself, so postguard cannot inspect it; send the file as base64 \`content\``);
      facts.base64Attachment(field(a, 'name'), undefined, field(a, 'content'), where);
    });
  } else if (attachments !== undefined && attachments !== null) facts.problem('request.type', 'attachment: expected an array');
}

function readHeaders(body: JsonObject, facts: MessageFacts): void {
  const k = keyOf(body, 'headers');
  if (k === undefined || body[k] === null) return;
  const map = body[k]!;
  if (!isObject(map)) return facts.problem('request.type', 'headers: expected an object of header names and values');
  for (const name of Object.keys(map)) {
    facts.header(name, map[name], `headers.${name.slice(0, 60)}`, (v) => {
      if (v !== null) return void (map[name] = v);
      delete map[name];
      if (Object.keys(map).length === 0) delete body[k];
    });
  }
}

function read(doc: Json) {
  const body = requireObject(doc);
  const top = new MessageFacts('message');
  top.onlyKeys(body, BODY, 'body');
  readShared(body, top);
  readMessage(body, top, '');
  const versions = field(body, 'messageVersions');
  if (versions === undefined || versions === null) return jsonRequest(body, [top]);
  const messages = requireArray(versions, 'messageVersions').map((v, i) => {
    const where = `messageVersions[${i}]`;
    const facts = new MessageFacts(where);
    if (isObject(v)) {
      facts.onlyKeys(v, VERSION, where);
      readMessage(v, facts, `${where}.`);
    } else facts.problem('request.type', `${where}: expected an object`);
    facts.inherit(top);
    return facts;
  });
  return jsonRequest(body, messages);
}

const endpoints: Endpoint[] = [
  { name: 'smtp.email', method: 'POST', path: /^\/v3\/smtp\/email$/i, read: (req) => read(parseStrictJson(utf8Text(req.body))) },
];

const CODES: Record<number, string> = { 400: 'bad_request', 401: 'unauthorized', 403: 'permission_denied', 404: 'document_not_found', 405: 'method_not_allowed' };

export const brevo: Provider = {
  id: 'brevo',
  name: 'Brevo',
  hosts: ['api.brevo.com', 'api.sendinblue.com'],
  endpoints,
  maxBody: 32 * 1024 * 1024,
  // Brevo's ErrorModel {code, message}; @getbrevo/brevo's BrevoError prints the body in its message.
  error: (status, message) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: CODES[status] ?? 'bad_request', message }) }),
};
