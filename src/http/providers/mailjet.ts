// Mailjet Send API (dev.mailjet.com/email/guides/send-api-v31, …/send-api-V3; key lists from the
// official node-mailjet 6.x SendEmailV3/SendEmailV3_1 types and mailjet-apiv3-go's InfoSendMail /
// InfoMessagesV31). v3.1: `Messages[]`, each `To/Cc/Bcc: [{Email, Name}]`, plus `Globals`, shared
// properties merged into every message — recipients there reach every message too (S21). v3: one
// message or `Messages[]`, recipients in `Recipients[{Email, Name, Vars}]` or header-style `To/Cc/Bcc`
// strings. Mailjet binds keys case-insensitively (its Ruby gem sends `recipients`, `vars`).

import { randomUUID } from 'node:crypto';
import { keyOf, type Json, type JsonObject } from '../../core/json.js';
import { eachMessage, field, isObject, json, jsonRequest, keys, listWriter, MessageFacts, requireArray, requireObject, type Endpoint, type Provider } from '../adapter.js';

const V31_BODY = keys('Messages', 'Globals', 'SandboxMode', 'AdvanceErrorHandling');
const V31_MESSAGE = keys(
  'From', 'Sender', 'To', 'Cc', 'Bcc', 'ReplyTo', 'Subject', 'TextPart', 'HTMLPart', 'TemplateID', 'TemplateLanguage',
  'TemplateErrorReporting', 'TemplateErrorDeliver', 'Attachments', 'InlinedAttachments', 'Priority', 'CustomCampaign',
  'DeduplicateCampaign', 'StatisticsContactsListID', 'MonitoringCategory', 'TrackOpens', 'TrackClicks', 'CustomID',
  'EventPayload', 'URLTags', 'Headers', 'Variables',
);
const V31_ADDRESS = keys('Email', 'Name');
const V31_ATTACHMENT = keys('ContentType', 'Filename', 'Base64Content', 'ContentID');

const V3_MESSAGE = keys(
  'FromEmail', 'FromName', 'Sender', 'Recipients', 'To', 'Cc', 'Bcc', 'Subject', 'Text-part', 'Html-part', 'Attachments',
  'Inline_attachments', 'Headers', 'Vars', 'Mj-prio', 'Mj-campaign', 'Mj-deduplicatecampaign', 'Mj-trackopen', 'Mj-trackclick',
  'Mj-CustomID', 'Mj-EventPayload', 'Mj-TemplateID', 'Mj-TemplateLanguage', 'Mj-TemplateErrorReporting', 'Mj-TemplateErrorDeliver',
);
const V3_RECIPIENT = keys('Email', 'Name', 'Vars');
const V3_ATTACHMENT = keys('Content-type', 'Filename', 'Content');

/** `{Email, Name}` (v3.1 From, Sender, ReplyTo, TemplateErrorReporting): the address, checked for stray keys. */
function emailOf(value: Json | undefined, allowed: ReadonlySet<string>, source: string, facts: MessageFacts): Json | undefined {
  if (!isObject(value)) {
    facts.problem('request.type', `${source}: expected {Email, Name}`);
    return undefined;
  }
  facts.onlyKeys(value, allowed, source);
  return field(value, 'Email');
}

function readAttachments(msg: JsonObject, key: string, allowed: ReadonlySet<string>, names: [string, string, string], facts: MessageFacts, at: string): void {
  const list = field(msg, key);
  if (list === undefined || list === null) return;
  if (!Array.isArray(list)) return facts.problem('request.type', `${at}${key}: expected an array`);
  list.forEach((a, i) => {
    const source = `${at}${key}[${i}]`;
    if (!isObject(a)) return facts.problem('request.type', `${source}: expected an object`);
    facts.onlyKeys(a, allowed, source);
    facts.base64Attachment(field(a, names[0]), field(a, names[1]), field(a, names[2]), source);
  });
}

// --- v3.1 ------------------------------------------------------------------------------------------

/** One `Messages[]` entry, or `Globals` (whose recipients and content every message inherits). */
function readV31(msg: JsonObject, facts: MessageFacts, at: string): void {
  for (const [key, f] of [['To', 'to'], ['Cc', 'cc'], ['Bcc', 'bcc']] as const) {
    facts.addressObjects(msg, key, 'Email', f, `${at}${key}`, true, { allowedKeys: V31_ADDRESS });
  }
  for (const key of ['From', 'Sender']) {
    const v = field(msg, key);
    // With Globals.From set, the SDK's types let a message's From be a bare address string.
    if (typeof v === 'string') facts.sender(v, `${at}${key}`);
    else if (v !== undefined && v !== null) facts.sender(emailOf(v, V31_ADDRESS, `${at}${key}`, facts), `${at}${key}`);
  }
  const replyTo = field(msg, 'ReplyTo');
  if (replyTo !== undefined && replyTo !== null) facts.address(emailOf(replyTo, V31_ADDRESS, `${at}ReplyTo`, facts), 'reply-to', `${at}ReplyTo`, null, false);
  const reportKey = keyOf(msg, 'TemplateErrorReporting');
  if (reportKey !== undefined && msg[reportKey] !== null) {
    // Template errors are mailed there with the message that failed: a copy to an address the
    // agent picks. Dropping the field only stops the report.
    const email = emailOf(msg[reportKey], V31_ADDRESS, `${at}TemplateErrorReporting`, facts);
    if (email !== undefined) facts.address(email, 'notify', `${at}TemplateErrorReporting`, () => void delete msg[reportKey], false);
  }
  facts.text('subject', field(msg, 'Subject'));
  facts.text('text', field(msg, 'TextPart'));
  facts.text('html', field(msg, 'HTMLPart'));
  facts.text('template variables', field(msg, 'Variables'));
  facts.headerObject(msg, 'Headers', `${at}Headers`, mailjetHeaders(facts));
  readAttachments(msg, 'Attachments', V31_ATTACHMENT, ['Filename', 'ContentType', 'Base64Content'], facts, at);
  readAttachments(msg, 'InlinedAttachments', V31_ATTACHMENT, ['Filename', 'ContentType', 'Base64Content'], facts, at);
}

function sendV31(doc: Json) {
  const body = requireObject(doc);
  const request = new MessageFacts('request');
  request.onlyKeys(body, V31_BODY, 'body');
  const globals = new MessageFacts('Globals');
  const g = field(body, 'Globals');
  if (isObject(g)) {
    globals.onlyKeys(g, V31_MESSAGE, 'Globals');
    readV31(g, globals, 'Globals.');
  } else if (g !== undefined && g !== null) globals.problem('request.type', 'Globals: expected an object');
  const messages = eachMessage(requireArray(field(body, 'Messages'), 'Messages'), 'Messages', (m, facts, at) => {
    facts.onlyKeys(m, V31_MESSAGE, at);
    readV31(m, facts, `${at}.`);
  }, globals);
  return jsonRequest(body, messages, request.problems);
}

/**
 * Mailjet's own X-MJ-* / X-Mailjet-* headers drive its sending (X-MJ-TemplateErrorReporting mails
 * error reports to an address, like TemplateErrorReporting): as custom headers they are refused,
 * the documented fields carry the same settings and are read.
 */
function mailjetHeaders(facts: MessageFacts) {
  return (name: string, _value: Json | undefined, source: string) => {
    if (/^x-(mj|mailjet)-/i.test(name)) facts.problem('request.header', `${source}: Mailjet's own ${name.slice(0, 40)} header is not accepted as a custom header; use the documented field`);
  };
}

// --- v3 --------------------------------------------------------------------------------------------

function readV3(msg: JsonObject, facts: MessageFacts, at: string): void {
  facts.onlyKeys(msg, V3_MESSAGE, at ? at.slice(0, -1) : 'body');
  // Each Recipients entry gets a message of its own, addressed To that entry alone.
  facts.addressObjects(msg, 'Recipients', (item) => {
    facts.text('template variables', field(item, 'Vars'));
    return field(item, 'Email');
  }, 'to', `${at}Recipients`, true, { allowedKeys: V3_RECIPIENT });
  for (const [key, f] of [['To', 'to'], ['Cc', 'cc'], ['Bcc', 'bcc']] as const) {
    const k = keyOf(msg, key);
    if (k !== undefined) facts.addressList(msg[k], f, `${at}${key}`, listWriter(msg, k));
  }
  const reportKey = keyOf(msg, 'Mj-TemplateErrorReporting');
  if (reportKey !== undefined) facts.addressList(msg[reportKey], 'notify', `${at}Mj-TemplateErrorReporting`, listWriter(msg, reportKey), false);
  facts.sender(field(msg, 'FromEmail'), `${at}FromEmail`);
  facts.text('subject', field(msg, 'Subject'));
  facts.text('text', field(msg, 'Text-part'));
  facts.text('html', field(msg, 'Html-part'));
  facts.text('template variables', field(msg, 'Vars'));
  facts.headerObject(msg, 'Headers', `${at}Headers`, mailjetHeaders(facts));
  readAttachments(msg, 'Attachments', V3_ATTACHMENT, ['Filename', 'Content-type', 'Content'], facts, at);
  readAttachments(msg, 'Inline_attachments', V3_ATTACHMENT, ['Filename', 'Content-type', 'Content'], facts, at);
}

function sendV3(doc: Json) {
  const body = requireObject(doc);
  const list = field(body, 'Messages');
  if (list === undefined) {
    const facts = new MessageFacts('message');
    readV3(body, facts, '');
    return jsonRequest(body, [facts]);
  }
  // A bulk call: the body is `{Messages: [...]}` and nothing else.
  const request = new MessageFacts('request');
  request.onlyKeys(body, keys('Messages'), 'body');
  const messages = eachMessage(requireArray(list, 'Messages'), 'Messages', (m, facts, at) => {
    if (keyOf(m, 'Messages') !== undefined) facts.problem('request.unknown_field', `${at}: nested Messages`);
    else readV3(m, facts, `${at}.`);
  });
  return jsonRequest(body, messages, request.problems);
}

const endpoints: Endpoint[] = [
  { name: 'send.v3.1', method: 'POST', path: /^\/v3\.1\/send\/?$/i, read: json(sendV31) },
  { name: 'send.v3', method: 'POST', path: /^\/v3\/send\/?$/i, read: json(sendV3) },
];

export const mailjet: Provider = {
  id: 'mailjet',
  name: 'Mailjet',
  hosts: ['api.mailjet.com', 'api.us.mailjet.com'],
  endpoints,
  maxBody: 15 * 1024 * 1024, // 15 MB per message, attachments included
  error: (status, message) => ({
    headers: { 'content-type': 'application/json' },
    // Mailjet's request-level error; node-mailjet puts ErrorMessage into the thrown error's message.
    body: JSON.stringify({ ErrorIdentifier: randomUUID(), ErrorCode: `postguard-${status}`, StatusCode: status, ErrorMessage: message, ErrorRelatedTo: [] }),
  }),
};
