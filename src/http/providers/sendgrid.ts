// SendGrid v3 Mail Send (twilio.com/docs/sendgrid/api-reference/mail-send/mail-send; the request
// schema is twilio/sendgrid-oai spec/json/tsg_mail_v3.json). Every personalization is an envelope
// SendGrid sends its own copy for, so each is one message for the decision, with what the request
// shares (from, reply_to, content, attachments, headers, mail_settings) inherited into it.
//
// Only `POST /v3/mail/send` is a known endpoint: account writes on the same hosts
// (`PATCH /v3/mail_settings/forward_bounce` and `forward_spam` redirect bounce and spam reports,
// with the message, to an address; webhooks, templates, the legacy v2 `/api/mail.send.json`) are
// writes to unknown endpoints, which the inspector refuses.

import { keyOf, type Json, type JsonObject } from '../../core/json.js';
import { parseSmtpApi } from '../../core/message.js';
import { eachMessage, field, isObject, json, jsonRequest, keys, MessageFacts, requireArray, requireObject, type Endpoint, type Provider } from '../adapter.js';

const BODY = keys(
  'personalizations', 'from', 'reply_to', 'reply_to_list', 'subject', 'content', 'attachments', 'template_id', 'headers', 'categories',
  'custom_args', 'send_at', 'batch_id', 'asm', 'ip_pool_name', 'mail_settings', 'tracking_settings',
  'sections', // retired legacy substitution sections, still emitted by @sendgrid/mail
);
const PERSONALIZATION = keys('to', 'cc', 'bcc', 'from', 'subject', 'headers', 'substitutions', 'dynamic_template_data', 'custom_args', 'send_at');
const ADDRESS = keys('email', 'name');
const CONTENT = keys('type', 'value');
const ATTACHMENT = keys('content', 'type', 'filename', 'disposition', 'content_id');
// `bcc` and `spam_check` were retired in 2020 but the SDKs still emit them, so they are read, not refused.
const MAIL_SETTINGS = keys('bcc', 'bypass_list_management', 'bypass_spam_management', 'bypass_bounce_management', 'bypass_unsubscribe_management', 'footer', 'sandbox_mode', 'spam_check');
// X-SMTPAPI keys that name no address (…/building-an-x-smtpapi-header). `filters` is refused: its
// apps take addresses and URLs (`bcc.settings.email`, `forwardspam.settings.email`) no rule can read.
const SMTPAPI = keys('to', 'sub', 'section', 'category', 'unique_args', 'send_at', 'send_each_at', 'asm_group_id', 'asm_groups_to_display', 'ip_pool');

/** One `{email, name}` object that is not a delivery target (from, reply_to). */
function addressObject(value: Json | undefined, facts: MessageFacts, source: string, use: (address: Json | undefined) => void): void {
  if (value === undefined || value === null) return;
  if (!isObject(value)) return facts.problem('request.type', `${source}: expected {email, name}`);
  facts.onlyKeys(value, ADDRESS, source);
  use(field(value, 'email'));
}

function sender(holder: JsonObject, facts: MessageFacts, where: string): void {
  addressObject(field(holder, 'from'), facts, `${where}from`, (e) => facts.sender(e, `${where}from`));
}

/**
 * Reply addresses cannot be stripped (the agent chose where answers go): an unknown one blocks.
 * Returns them as written, for `substitutedReplyTo`.
 */
function replyTo(body: JsonObject, facts: MessageFacts): string[] {
  const seen: string[] = [];
  const note = (e: Json | undefined) => {
    if (typeof e === 'string') seen.push(e);
    return e;
  };
  addressObject(field(body, 'reply_to'), facts, 'reply_to', (e) => facts.address(note(e), 'reply-to', 'reply_to', null, false));
  facts.addressObjects(body, 'reply_to_list', (p) => note(field(p, 'email')), 'reply-to', 'reply_to_list', false, { delivers: false, allowedKeys: ADDRESS });
  return seen;
}

/**
 * SendGrid substitutes into the reply-to as well as subject and content (`substitutions`, and
 * `dynamic_template_data` through Handlebars): a reply address a tag can rewrite is not the one
 * that was judged.
 */
function substitutedReplyTo(replies: readonly string[], p: JsonObject, sections: Json | undefined, facts: MessageFacts, where: string): void {
  const tags = [field(p, 'substitutions'), sections].flatMap((m) => (isObject(m) ? Object.keys(m) : [])).filter((t) => t !== '');
  for (const email of replies) {
    if (email.includes('{{') || tags.some((t) => email.includes(t))) facts.problem('request.substituted_reply_to', `${where}: the reply-to ${JSON.stringify(email.slice(0, 80))} holds a substitution tag, so SendGrid would send replies to an address postguard never saw`);
  }
}

/** `headers: {Name: "value"}`: recipient headers are recipients, X-SMTPAPI is read as SendGrid reads it. */
function headers(holder: JsonObject, facts: MessageFacts, where: string): void {
  facts.headerObject(holder, 'headers', `${where}headers`, (name, value, source) => {
    if (name.toLowerCase() === 'x-smtpapi') smtpApi(value, facts, source);
  });
}

/**
 * The toolkit reads X-SMTPAPI's `to` (delivery-driving, never strippable) and refuses JSON that
 * reads two ways (S22); what else it holds must carry no address either.
 */
function smtpApi(value: Json | undefined, facts: MessageFacts, source: string): void {
  const doc = typeof value === 'string' ? parseSmtpApi(value) : null;
  if (!doc?.ok) return; // not a string, or not JSON: the toolkit has reported it
  if (!isObject(doc.value)) return facts.problem('header.x-smtpapi', `${source}: expected a JSON object`);
  facts.onlyKeys(doc.value, SMTPAPI, source);
}

/** Subject, bodies, attachments, settings: what the request shares with every personalization. Returns the reply-to addresses. */
function shared(body: JsonObject, facts: MessageFacts): string[] {
  sender(body, facts, '');
  const replies = replyTo(body, facts);
  headers(body, facts, '');
  facts.text('subject', field(body, 'subject'));
  facts.text('sections', field(body, 'sections'));
  facts.text('categories', field(body, 'categories'));
  facts.text('custom args', field(body, 'custom_args'));
  facts.text('tracking settings', field(body, 'tracking_settings'));
  each(body, 'content', facts, (c, where) => {
    facts.onlyKeys(c, CONTENT, where);
    const type = field(c, 'type');
    facts.text(typeof type === 'string' && /html/i.test(type) ? 'html' : 'text', field(c, 'value'));
  });
  each(body, 'attachments', facts, (a, where) => {
    facts.onlyKeys(a, ATTACHMENT, where);
    facts.base64Attachment(field(a, 'filename'), field(a, 'type'), field(a, 'content'), where);
  });
  mailSettings(body, facts);
  return replies;
}

function mailSettings(body: JsonObject, facts: MessageFacts): void {
  const settings = field(body, 'mail_settings');
  if (settings === undefined || settings === null) return;
  if (!isObject(settings)) return facts.problem('request.type', 'mail_settings: expected an object');
  facts.onlyKeys(settings, MAIL_SETTINGS, 'mail_settings');
  facts.text('footer', field(settings, 'footer'));
  const bcc = field(settings, 'bcc');
  if (isObject(bcc)) {
    facts.onlyKeys(bcc, keys('enable', 'email'), 'mail_settings.bcc');
    // Counted whatever `enable` says: how SendGrid reads a truthy non-boolean is not ours to guess.
    const email = field(bcc, 'email');
    const k = keyOf(settings, 'bcc')!;
    if (email !== undefined && email !== null && email !== '') facts.address(email, 'bcc', 'mail_settings.bcc.email', () => void delete settings[k]);
  } else if (bcc !== undefined && bcc !== null) facts.problem('request.type', 'mail_settings.bcc: expected {enable, email}');
  const spam = field(settings, 'spam_check');
  if (isObject(spam)) {
    const url = field(spam, 'post_to_url');
    if (url !== undefined && url !== null && url !== '') facts.problem('request.spam_check_url', 'mail_settings.spam_check.post_to_url: SendGrid posts a copy of the message to this URL, which no recipient rule can judge');
  }
}

function readPersonalization(p: JsonObject, facts: MessageFacts, where: string): void {
  facts.onlyKeys(p, PERSONALIZATION, where);
  for (const kind of ['to', 'cc', 'bcc'] as const) facts.addressObjects(p, kind, 'email', kind, `${where}.${kind}`, true, { allowedKeys: ADDRESS });
  sender(p, facts, `${where}.`);
  headers(p, facts, `${where}.`);
  facts.text('subject', field(p, 'subject'));
  facts.text('substitutions', field(p, 'substitutions'));
  facts.text('dynamic template data', field(p, 'dynamic_template_data'));
  facts.text('custom args', field(p, 'custom_args'));
}

function each(holder: JsonObject, key: string, facts: MessageFacts, read: (item: JsonObject, where: string) => void): void {
  const list = field(holder, key);
  if (list === undefined || list === null) return;
  if (!Array.isArray(list)) return facts.problem('request.type', `${key}: expected an array`);
  list.forEach((item, i) => (isObject(item) ? read(item, `${key}[${i}]`) : facts.problem('request.type', `${key}[${i}]: expected an object`)));
}

const endpoints: Endpoint[] = [
  {
    name: 'mail.send', method: 'POST', path: /^\/v3\/mail\/send$/i,
    read: json((doc) => {
      const body = requireObject(doc);
      const common = new MessageFacts('request');
      common.onlyKeys(body, BODY, 'body');
      const replies = shared(body, common);
      const messages = eachMessage(requireArray(field(body, 'personalizations'), 'personalizations'), 'personalizations', (p, facts, where) => {
        readPersonalization(p, facts, where);
        substitutedReplyTo(replies, p, field(body, 'sections'), facts, where);
      }, common);
      return jsonRequest(body, messages);
    }),
  },
];

export const sendgrid: Provider = {
  id: 'sendgrid',
  name: 'SendGrid',
  hosts: ['api.sendgrid.com', 'api.eu.sendgrid.com'],
  endpoints,
  maxBody: 30 * 1024 * 1024, // "The total size of your email, including attachments, must be less than 30MB"
  // SendGrid's shape ({errors: [{message, field, help}]}); @sendgrid/client's ResponseError prints errors[].message.
  error: (_status, message) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify({ errors: [{ message, field: null, help: null }] }) }),
};
