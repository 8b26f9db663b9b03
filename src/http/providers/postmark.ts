// Postmark (postmarkapp.com/developer/api/email-api, /templates-api, /bulk-email). To/Cc/Bcc are
// one comma-separated string each; custom headers are `Headers: [{Name, Value}]`. Postmark binds
// JSON keys case-insensitively, which the strict JSON reader accounts for.

import { formatMailbox, type Mailbox } from '../../core/address.js';
import { field, isObject, jsonRequest, keys, MessageFacts, requireArray, requireObject, type Endpoint, type Provider } from '../adapter.js';
import { parseStrictJson, type Json, type JsonObject } from '../json.js';
import { utf8Text } from '../body.js';

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
    const k = Object.keys(msg).find((x) => x.toLowerCase() === key.toLowerCase());
    if (k !== undefined) facts.addressList(msg[k], f, `${where}${key}`, (kept: Mailbox[]) => void (msg[k] = kept.map((m) => formatMailbox(m)).join(', ')));
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
  readHeaders(msg, facts, where);
  const attachments = field(msg, 'Attachments');
  if (Array.isArray(attachments)) {
    attachments.forEach((a, i) => {
      if (!isObject(a)) return facts.problem('request.type', `${where}Attachments[${i}]: expected an object`);
      facts.base64Attachment(field(a, 'Name'), field(a, 'ContentType'), field(a, 'Content'), `${where}Attachments[${i}]`);
    });
  } else if (attachments !== undefined && attachments !== null) facts.problem('request.type', `${where}Attachments: expected an array`);
}

function readHeaders(msg: JsonObject, facts: MessageFacts, where: string): void {
  const k = Object.keys(msg).find((x) => x.toLowerCase() === 'headers');
  if (k === undefined || msg[k] === null) return;
  const list = msg[k]!;
  if (!Array.isArray(list)) return facts.problem('request.type', `${where}Headers: expected an array of {Name, Value}`);
  [...list].forEach((h, i) => {
    if (!isObject(h) || typeof field(h, 'Name') !== 'string') return facts.problem('request.type', `${where}Headers[${i}]: expected {Name, Value}`);
    const valueKey = Object.keys(h).find((x) => x.toLowerCase() === 'value') ?? 'Value';
    facts.header(field(h, 'Name') as string, field(h, 'Value'), `${where}Headers[${i}]`, (v) => {
      if (v === null) list.splice(list.indexOf(h), 1);
      else h[valueKey] = v;
    });
  });
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

function batch(list: Json[], allowed: ReadonlySet<string>, where: string) {
  return list.map((m, i) => {
    const facts = new MessageFacts(`${where}[${i}]`);
    if (!isObject(m)) {
      facts.problem('request.type', `${where}[${i}]: expected an object`);
      return facts;
    }
    facts.onlyKeys(m, allowed, `${where}[${i}]`);
    readMessage(m, facts, `${where}[${i}].`);
    return facts;
  });
}

const json = (f: (doc: Json) => ReturnType<Endpoint['read']>) => (req: Parameters<Endpoint['read']>[0]) => f(parseStrictJson(utf8Text(req.body)));

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
      const messages = requireArray(field(body, 'Messages'), 'Messages').map((m, i) => {
        const facts = new MessageFacts(`Messages[${i}]`);
        if (!isObject(m)) {
          facts.problem('request.type', `Messages[${i}]: expected an object`);
          return facts;
        }
        facts.onlyKeys(m, BULK_MESSAGE, `Messages[${i}]`);
        readMessage(m, facts, `Messages[${i}].`);
        facts.inherit(shared);
        return facts;
      });
      return jsonRequest(body, messages);
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
