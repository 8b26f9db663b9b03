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

import type { Json, JsonObject } from '../../core/json.js';
import { eachMessage, field, isObject, json, jsonRequest, keys, MessageFacts, requireArray, requireObject, type Endpoint, type Provider } from '../adapter.js';

const BODY = keys('sender', 'to', 'cc', 'bcc', 'replyTo', 'subject', 'htmlContent', 'textContent', 'headers', 'attachment', 'templateId', 'params', 'tags', 'scheduledAt', 'batchId', 'messageVersions');
// `templateId` per version: "can be customized per version only if a global templateId is provided".
const VERSION = keys('to', 'cc', 'bcc', 'replyTo', 'subject', 'htmlContent', 'textContent', 'params', 'templateId');
const PERSON = keys('email', 'name', 'contactPixelTrackingConsent');
const ATTACHMENT = keys('content', 'name', 'url');

/** Who it goes to, where replies go, and what this message says (top level or one version). */
function readMessage(msg: JsonObject, facts: MessageFacts, where: string): void {
  for (const kind of ['to', 'cc', 'bcc'] as const) facts.addressObjects(msg, kind, 'email', kind, `${where}${kind}`, true, { allowedKeys: PERSON });
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
  facts.headerObject(body, 'headers', 'headers');
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

function read(doc: Json) {
  const body = requireObject(doc);
  const top = new MessageFacts('message');
  top.onlyKeys(body, BODY, 'body');
  readShared(body, top);
  readMessage(body, top, '');
  const versions = field(body, 'messageVersions');
  if (versions === undefined || versions === null) return jsonRequest(body, [top]);
  const messages = eachMessage(requireArray(versions, 'messageVersions'), 'messageVersions', (v, facts, where) => {
    facts.onlyKeys(v, VERSION, where);
    readMessage(v, facts, `${where}.`);
  }, top);
  return jsonRequest(body, messages);
}

const endpoints: Endpoint[] = [
  { name: 'smtp.email', method: 'POST', path: /^\/v3\/smtp\/email$/i, read: json(read) },
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
