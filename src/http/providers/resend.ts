// Resend (resend.com/docs/api-reference/emails/send-email, …/send-batch-emails; field names as the
// official `resend` SDK 6.x serializes them in parseEmailToApiOptions). `to`/`cc`/`bcc`/`reply_to`
// are a string or an array of strings, and Resend reads every string as an address list, so
// `"alice@company.com, phan@giftshop.club"` is two recipients (S24). Custom headers are an object.

import type { Mailbox } from '../../core/address.js';
import type { RecipientField } from '../../core/intent.js';
import { keyOf, type Json, type JsonObject } from '../../core/json.js';
import { eachMessage, field, isObject, joinAddresses, json, jsonRequest, keys, listWriter, MessageFacts, requireArray, requireObject, type Endpoint, type Provider } from '../adapter.js';

// `react` is rendered to `html` by the SDK and never sent; a body carrying it is not one Resend takes.
const EMAIL = keys('from', 'to', 'cc', 'bcc', 'reply_to', 'subject', 'html', 'text', 'headers', 'attachments', 'tags', 'scheduled_at', 'template', 'topic_id');
const ATTACHMENT = keys('content', 'filename', 'path', 'content_type', 'content_id');
const TEMPLATE = keys('id', 'variables');

/** A string or an array of strings, each an address list; a strip rewrites the field in the form it came in. */
function addressField(msg: JsonObject, name: string, f: RecipientField, facts: MessageFacts, where: string, editable = true): void {
  const k = keyOf(msg, name);
  if (k === undefined || msg[k] === null) return;
  const value = msg[k]!;
  const source = `${where}${name}`;
  const delivers = f !== 'reply-to';
  if (typeof value === 'string') {
    facts.addressList(value, f, source, editable ? listWriter(msg, k) : null, delivers);
    return;
  }
  if (!Array.isArray(value)) return facts.problem('request.type', `${source}: expected a string or an array of strings`);
  const parts: Json[] = [...value];
  value.forEach((item, i) => {
    if (typeof item !== 'string') return facts.problem('request.type', `${source}[${i}]: expected an address string`);
    const write = (kept: Mailbox[]) => {
      parts[i] = joinAddresses(kept);
      const left = parts.filter((p) => p !== '');
      if (left.length) msg[k] = left;
      else delete msg[k];
    };
    facts.addressList(item, f, `${source}[${i}]`, editable ? write : null, delivers);
  });
}

function readEmail(msg: JsonObject, facts: MessageFacts, where: string): void {
  facts.onlyKeys(msg, EMAIL, where || 'body');
  const at = where ? `${where}.` : '';
  addressField(msg, 'to', 'to', facts, at);
  addressField(msg, 'cc', 'cc', facts, at);
  addressField(msg, 'bcc', 'bcc', facts, at);
  addressField(msg, 'reply_to', 'reply-to', facts, at, false);
  facts.sender(field(msg, 'from'), `${at}from`);
  facts.text('subject', field(msg, 'subject'));
  facts.text('text', field(msg, 'text'));
  facts.text('html', field(msg, 'html'));
  facts.text('tags', field(msg, 'tags'));
  facts.headerObject(msg, 'headers', `${at}headers`);
  readAttachments(msg, facts, at);
  readTemplate(msg, facts, at);
}

function readAttachments(msg: JsonObject, facts: MessageFacts, at: string): void {
  const list = field(msg, 'attachments');
  if (list === undefined || list === null) return;
  if (!Array.isArray(list)) return facts.problem('request.type', `${at}attachments: expected an array`);
  list.forEach((a, i) => {
    const source = `${at}attachments[${i}]`;
    if (!isObject(a)) return facts.problem('request.type', `${source}: expected an object`);
    facts.onlyKeys(a, ATTACHMENT, source);
    const path = field(a, 'path');
    if (path !== undefined && path !== null) {
      // Resend downloads `path` itself: the detectors never see the file, and the URL (query
      // string included) goes to whatever host it names, a channel out of its own.
      return facts.problem('request.remote_attachment', `${source}.path: Resend fetches this attachment from a URL postguard cannot inspect; send it as base64 \`content\` instead`);
    }
    facts.base64Attachment(field(a, 'filename'), field(a, 'content_type'), field(a, 'content'), source);
  });
}

/**
 * A published template supplies the HTML (and defaults for from, subject, reply_to) from Resend's
 * side. Templates hold no recipients, and the relay refuses the endpoints that create or edit
 * them, so what they add was set up outside the agent's reach; the variables are checked here.
 */
function readTemplate(msg: JsonObject, facts: MessageFacts, at: string): void {
  const template = field(msg, 'template');
  if (template === undefined || template === null) return;
  if (!isObject(template)) return facts.problem('request.type', `${at}template: expected {id, variables}`);
  facts.onlyKeys(template, TEMPLATE, `${at}template`);
  facts.text('template variables', field(template, 'variables'));
}

const endpoints: Endpoint[] = [
  {
    name: 'emails', method: 'POST', path: /^\/emails\/?$/i,
    read: json((doc) => {
      const msg = requireObject(doc);
      const facts = new MessageFacts('email');
      readEmail(msg, facts, '');
      return jsonRequest(msg, [facts]);
    }),
  },
  {
    // Up to 100 emails, each its own message; Resend's strict validation mode is the SDK's default.
    name: 'emails.batch', method: 'POST', path: /^\/emails\/batch\/?$/i,
    read: json((doc) => jsonRequest(doc, eachMessage(requireArray(doc, 'body'), 'batch', readEmail))),
  },
];

export const resend: Provider = {
  id: 'resend',
  name: 'Resend',
  hosts: ['api.resend.com'],
  endpoints,
  maxBody: 40 * 1024 * 1024, // 40 MB per email after base64 (send-email docs)
  error: (status, message) => ({
    headers: { 'content-type': 'application/json' },
    // Resend's shape {statusCode, name, message}; the SDK hands it back as `error`.
    body: JSON.stringify({ statusCode: status, name: status === 429 ? 'rate_limit_exceeded' : status >= 500 ? 'application_error' : 'validation_error', message }),
  }),
};
