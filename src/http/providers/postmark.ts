// Postmark (postmarkapp.com/developer/api/email-api, /templates-api, /bulk-email). To/Cc/Bcc are
// one comma-separated string each; custom headers are `Headers: [{Name, Value}]`. Postmark binds
// JSON keys case-insensitively, which the strict JSON reader accounts for.

import { keyOf, type Json, type JsonObject } from '../../core/json.js';
import { eachMessage, field, isObject, joinAddresses, json, jsonRequest, keys, MessageFacts, requireArray, requireObject, type Endpoint, type Provider } from '../adapter.js';

const MESSAGE = keys('From', 'To', 'Cc', 'Bcc', 'Subject', 'Tag', 'HtmlBody', 'TextBody', 'ReplyTo', 'Headers', 'TrackOpens', 'TrackLinks', 'Metadata', 'Attachments', 'MessageStream');
const TEMPLATED = keys(...MESSAGE, 'TemplateId', 'TemplateAlias', 'TemplateModel', 'InlineCss');
const BULK = keys('From', 'Subject', 'HtmlBody', 'TextBody', 'ReplyTo', 'Headers', 'TrackOpens', 'TrackLinks', 'Metadata', 'Attachments', 'MessageStream', 'Tag', 'TemplateId', 'TemplateAlias', 'InlineCss', 'Messages');
const BULK_MESSAGE = keys('To', 'Cc', 'Bcc', 'TemplateModel', 'Metadata', 'Headers');

function readMessage(msg: JsonObject, facts: MessageFacts, where: string): void {
  readRecipients(msg, facts, where);
  readContent(msg, facts, where);
}

function readRecipients(msg: JsonObject, facts: MessageFacts, where: string): void {
  for (const [key, f] of [['To', 'to'], ['Cc', 'cc'], ['Bcc', 'bcc']] as const) {
    const k = keyOf(msg, key);
    if (k !== undefined) facts.addressList(msg[k], f, `${where}${key}`, (kept) => void (msg[k] = joinAddresses(kept)));
  }
}

/** Sender, reply address, bodies, headers, attachments: in a bulk send, shared by every entry. */
function readContent(msg: JsonObject, facts: MessageFacts, where: string): void {
  facts.sender(field(msg, 'From'), `${where}From`);
  facts.addressList(field(msg, 'ReplyTo'), 'reply-to', `${where}ReplyTo`, null, false);
  facts.text('subject', field(msg, 'Subject'));
  facts.text('text', field(msg, 'TextBody'));
  facts.text('html', field(msg, 'HtmlBody'));
  facts.text('template model', field(msg, 'TemplateModel'));
  facts.text('metadata', field(msg, 'Metadata'));
  facts.headerArray(msg, 'Headers', `${where}Headers`, 'Name', 'Value');
  const attachments = field(msg, 'Attachments');
  if (Array.isArray(attachments)) {
    attachments.forEach((a, i) => {
      if (!isObject(a)) return facts.problem('request.type', `${where}Attachments[${i}]: expected an object`);
      facts.base64Attachment(field(a, 'Name'), field(a, 'ContentType'), field(a, 'Content'), `${where}Attachments[${i}]`);
    });
  } else if (attachments !== undefined && attachments !== null) facts.problem('request.type', `${where}Attachments: expected an array`);
}

function single(allowed: ReadonlySet<string>) {
  return (body: Json) => {
    const msg = requireObject(body);
    const facts = new MessageFacts('message');
    facts.onlyKeys(msg, allowed, 'body');
    readMessage(msg, facts, '');
    return jsonRequest(msg, [facts]);
  };
}

function batch(list: Json[], allowed: ReadonlySet<string>, where: string, shared?: MessageFacts) {
  return eachMessage(list, where, (m, facts, at) => {
    facts.onlyKeys(m, allowed, at);
    readMessage(m, facts, `${at}.`);
  }, shared);
}

const endpoints: Endpoint[] = [
  { name: 'email', method: 'POST', path: /^\/email$/i, read: json(single(MESSAGE)) },
  { name: 'email.withTemplate', method: 'POST', path: /^\/email\/withtemplate$/i, read: json(single(TEMPLATED)) },
  {
    name: 'email.batch', method: 'POST', path: /^\/email\/batch$/i,
    read: json((doc) => jsonRequest(doc, batch(requireArray(doc, 'body'), MESSAGE, 'batch'))),
  },
  {
    name: 'email.batchWithTemplates', method: 'POST', path: /^\/email\/batchwithtemplates$/i,
    read: json((doc) => {
      const body = requireObject(doc);
      const facts = new MessageFacts('request');
      facts.onlyKeys(body, keys('Messages'), 'body');
      return jsonRequest(body, batch(requireArray(field(body, 'Messages'), 'Messages'), TEMPLATED, 'Messages'), facts.problems);
    }),
  },
  {
    // One shared message, many recipients: each `Messages[]` entry is a message with the shared content.
    name: 'email.bulk', method: 'POST', path: /^\/email\/bulk$/i,
    read: json((doc) => {
      const body = requireObject(doc);
      const shared = new MessageFacts('request');
      shared.onlyKeys(body, BULK, 'body');
      readContent(body, shared, '');
      return jsonRequest(body, batch(requireArray(field(body, 'Messages'), 'Messages'), BULK_MESSAGE, 'Messages', shared));
    }),
  },
];

export const postmark: Provider = {
  id: 'postmark',
  name: 'Postmark',
  hosts: ['api.postmarkapp.com'],
  endpoints,
  maxBody: 50 * 1024 * 1024, // batch and bulk: 50 MB (single sends: 10 MB, Postmark enforces)
  error: (status, message) => ({
    headers: { 'content-type': 'application/json; charset=utf-8' },
    // Postmark's shape: {ErrorCode, Message}; 406 is Postmark's "inactive recipient", so a code of our own.
    body: JSON.stringify({ ErrorCode: status === 403 ? 1403 : status, Message: message }),
  }),
};
