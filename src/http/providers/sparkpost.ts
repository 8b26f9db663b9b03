// SparkPost transmissions (developers.sparkpost.com/api/transmissions, /api/recipient-lists for the
// recipient and address objects). Delivery is decided by `recipients[]` alone: every entry is one
// envelope recipient (RCPT TO = `address.email`). Everything else naming an address is display:
// `address.header_to` replaces the To header shown to that recipient — the documented way to Bcc
// someone, and so the way to hide one — and `content.headers.CC` is only a header. The display
// fields are still read, so an unknown address shown there is seen too.

import { keyOf, type Json, type JsonObject } from '../../core/json.js';
import { field, isObject, json, jsonRequest, keys, listWriter, MessageFacts, requireObject, type Endpoint, type Provider } from '../adapter.js';

// `name` is not in the attribute list but is in SparkPost's own scheduled-transmission example.
const BODY = keys('options', 'recipients', 'content', 'campaign_id', 'description', 'metadata', 'substitution_data', 'return_path', 'name');
const OPTIONS = keys('start_time', 'open_tracking', 'initial_open', 'click_tracking', 'transactional', 'sandbox', 'skip_suppression', 'smart_send', 'ip_pool', 'inline_css', 'perform_substitutions');
const CONTENT = keys('from', 'subject', 'text', 'html', 'amp_html', 'reply_to', 'headers', 'attachments', 'inline_images', 'template_id', 'use_draft_template', 'ab_test_id', 'email_rfc822');
const RECIPIENT = keys('address', 'return_path', 'tags', 'metadata', 'substitution_data');
const ADDRESS = keys('email', 'name', 'header_to');
const FROM = keys('email', 'name');
const FILE = keys('name', 'type', 'data');

/**
 * SparkPost's SMTP API header can add archive recipients and other options; whether a REST
 * transmission honours it in headers or raw content is not documented, so it is not let through.
 */
const MSYS_API = 'x-msys-api';

function readRecipients(body: JsonObject, raw: boolean, facts: MessageFacts): void {
  const list = field(body, 'recipients');
  if (isObject(list)) {
    facts.onlyKeys(list, keys('list_id'), 'recipients');
    return facts.problem('request.stored_recipients', `recipients.list_id: a stored recipient list is expanded by SparkPost, so postguard cannot see who it sends to; list the recipients inline`);
  }
  if (!Array.isArray(list)) return facts.problem('request.type', 'recipients: expected an array of recipients or {list_id}');
  list.forEach((entry, i) => {
    const source = `recipients[${i}]`;
    if (!isObject(entry)) return facts.problem('request.type', `${source}: expected an object`);
    facts.onlyKeys(entry, RECIPIENT, source);
    const remove = () => {
      const at = list.indexOf(entry);
      if (at !== -1) list.splice(at, 1);
    };
    // Without header_to the recipient is the To header it is shown; raw content has no generated
    // To header, so there (and behind a header_to) what is visible is decided by the headers.
    const address = field(entry, 'address');
    if (typeof address === 'string') facts.address(address, raw ? 'api' : 'to', `${source}.address`, remove);
    else if (isObject(address)) {
      facts.onlyKeys(address, ADDRESS, `${source}.address`);
      const k = keyOf(address, 'header_to');
      const shown = k !== undefined && address[k] !== null && address[k] !== '';
      facts.address(field(address, 'email'), raw || shown ? 'api' : 'to', `${source}.address.email`, remove);
      if (shown) facts.addressList(address[k], 'to', `${source}.address.header_to`, listWriter(address, k), false);
    } else facts.problem('request.type', `${source}.address: expected an address or {email, name, header_to}`);
    returnPath(entry, facts, source);
    facts.text(`${source} substitution data`, field(entry, 'substitution_data'));
    facts.text(`${source} metadata`, field(entry, 'metadata'));
    facts.text(`${source} tags`, field(entry, 'tags'));
  });
}

/** Bounces (with the message) go to the envelope sender; without the field SparkPost uses its own. */
function returnPath(holder: JsonObject, facts: MessageFacts, where: string): void {
  const k = keyOf(holder, 'return_path');
  if (k === undefined || holder[k] === null) return;
  facts.address(holder[k], 'notify', where ? `${where}.return_path` : 'return_path', () => void delete holder[k], false);
}

function readContent(body: JsonObject, facts: MessageFacts): boolean {
  const content = field(body, 'content');
  if (!isObject(content)) {
    facts.problem('request.type', 'content: expected an object');
    return false;
  }
  facts.onlyKeys(content, CONTENT, 'content');
  const from = field(content, 'from');
  if (isObject(from)) {
    facts.onlyKeys(from, FROM, 'content.from');
    facts.sender(field(from, 'email'), 'content.from.email');
  } else facts.sender(from, 'content.from');
  facts.addressList(field(content, 'reply_to'), 'reply-to', 'content.reply_to', null, false);
  facts.text('subject', field(content, 'subject'));
  facts.text('text', field(content, 'text'));
  facts.text('html', field(content, 'html'));
  facts.text('amp html', field(content, 'amp_html'));
  facts.headerObject(content, 'headers', 'content.headers', (name) => {
    if (name.toLowerCase() === MSYS_API) facts.problem('request.smtp_api', `content.headers: an X-MSYS-API header can name recipients postguard does not see`);
  });
  for (const key of ['attachments', 'inline_images']) readFiles(content, key, facts);
  const k = keyOf(content, 'email_rfc822');
  if (k === undefined || content[k] === null) return false;
  const raw = content[k];
  if (typeof raw !== 'string') {
    facts.problem('request.type', 'content.email_rfc822: expected a string');
    return true;
  }
  const head = raw.split(/\r?\n\r?\n/, 1)[0]!;
  if (new RegExp(`^${MSYS_API}[ \\t]*:`, 'im').test(head)) facts.problem('request.smtp_api', `content.email_rfc822: an X-MSYS-API header can name recipients postguard does not see`);
  facts.mime(Buffer.from(raw, 'utf8'), 'content.email_rfc822', 'delivery', (edited) => void (content[k] = edited.toString('utf8')));
  return true;
}

function readFiles(content: JsonObject, key: string, facts: MessageFacts): void {
  const list = field(content, key);
  if (list === undefined || list === null) return;
  if (!Array.isArray(list)) return facts.problem('request.type', `content.${key}: expected an array`);
  list.forEach((a, i) => {
    const source = `content.${key}[${i}]`;
    if (!isObject(a)) return facts.problem('request.type', `${source}: expected an object`);
    facts.onlyKeys(a, FILE, source);
    facts.base64Attachment(field(a, 'name'), field(a, 'type'), field(a, 'data'), source);
  });
}

/**
 * One transmission is one message to many envelope recipients. A stored template or A/B test
 * (`template_id`, `ab_test_id`) supplies the content from SparkPost's side: it holds no
 * recipients, and the relay refuses the endpoints that create or edit templates, so it was set
 * up outside the agent's reach; the substitution data it is filled with is checked here.
 */
function transmission(doc: Json) {
  const body = requireObject(doc);
  const facts = new MessageFacts('transmission');
  facts.onlyKeys(body, BODY, 'body');
  const options = field(body, 'options');
  if (isObject(options)) facts.onlyKeys(options, OPTIONS, 'options');
  else if (options !== undefined && options !== null) facts.problem('request.type', 'options: expected an object');
  const raw = readContent(body, facts);
  readRecipients(body, raw, facts);
  returnPath(body, facts, '');
  facts.text('substitution data', field(body, 'substitution_data'));
  facts.text('metadata', field(body, 'metadata'));
  return jsonRequest(body, [facts]);
}

const endpoints: Endpoint[] = [
  { name: 'transmissions', method: 'POST', path: /^\/api\/v1\/transmissions\/?$/i, read: json(transmission) },
];

export const sparkpost: Provider = {
  id: 'sparkpost',
  name: 'SparkPost',
  // Enterprise accounts have a tenant host of their own, <tenant>.api.e.sparkpost.com.
  hosts: ['api.sparkpost.com', 'api.eu.sparkpost.com', /^[a-z0-9-]+\.api\.e\.sparkpost\.com$/],
  endpoints,
  maxBody: 20 * 1024 * 1024, // transmission content (text + html + attachments + inline images): 20 MB
  error: (status, message) => ({
    headers: { 'content-type': 'application/json' },
    // SparkPost's shape: {errors: [{message, code, description}]}.
    body: JSON.stringify({ errors: [{ message, code: String(status), description: message }] }),
  }),
};
