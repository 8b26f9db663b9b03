// Gmail API (developers.google.com/workspace/gmail/api/reference/rest/v1, …/guides/sending,
// …/guides/uploads, …/guides/drafts). Every sending method carries one RFC 2822 message — `raw`
// (base64url) in JSON, or the bytes themselves on the /upload/ path — and Gmail delivers to its
// To/Cc/Bcc headers, so the message is read with the MIME toolkit in the `delivery` role. Drafts
// are stored messages: created and replaced here with the same inspection as a send (a draft is a
// send waiting for a click), and sent by id only when postguard saw the draft made.
//
// Not registered, so refused as unknown endpoints: messages.import/insert (they write into the
// mailbox, send nothing, and the inspector has no "non-sending write" outcome), settings
// (auto-forwarding, filters, send-as: mail-flow redirection), and every other write on these hosts.

import { randomBytes } from 'node:crypto';
import { keyOf, parseStrictJson, type Json, type JsonObject } from '../../core/json.js';
import { decodeBase64, field, isObject, jsonBody, jsonRequest, keys, MessageFacts, requireObject, type Endpoint, type Extracted, type Provider, type RequestInfo } from '../adapter.js';
import { utf8Text } from '../body.js';

/**
 * The Message resource. Only `raw` and `threadId` mean anything to a send; the output-only fields
 * are accepted because clients echo fetched messages back. `payload` (the parsed structure, with
 * headers) is left out: sends do not read it, and a second carrier of headers is not one to allow.
 */
const MESSAGE = keys('raw', 'threadId', 'labelIds', 'classificationLabelValues', 'id', 'historyId', 'internalDate', 'sizeEstimate', 'snippet');
const DRAFT = keys('id', 'message');

/** `raw` of a Message, read as the message Gmail will send; false when there is none. */
function readMessage(msg: JsonObject, facts: MessageFacts, where: string): boolean {
  facts.onlyKeys(msg, MESSAGE, where);
  facts.text('classification labels', field(msg, 'classificationLabelValues'));
  const k = keyOf(msg, 'raw');
  const raw = k === undefined ? null : msg[k];
  if (raw === null || raw === undefined) return false;
  if (typeof raw !== 'string') {
    facts.problem('request.type', `${where}.raw: expected a base64url string`);
    return true;
  }
  const bytes = decodeBase64(raw, `${where}.raw`, facts);
  if (bytes) facts.mime(bytes, `${where}.raw`, 'delivery', (edited) => void (msg[k!] = edited.toString('base64url')));
  return true;
}

/** A Draft body (`{id, message}`): its message, when it has one. */
function readDraft(draft: JsonObject, facts: MessageFacts, where: string): JsonObject | null {
  facts.onlyKeys(draft, DRAFT, where);
  const msg = field(draft, 'message');
  if (msg === undefined || msg === null) return null;
  if (!isObject(msg)) {
    facts.problem('request.type', `${where}.message: expected an object`);
    return null;
  }
  return msg;
}

function draftId(draft: JsonObject, facts: MessageFacts, where: string): string | null {
  const id = field(draft, 'id');
  if (typeof id === 'string' && id !== '') return id;
  facts.problem('request.type', `${where}.id: drafts.send needs the id of the draft`);
  return null;
}

const requireRaw = (found: boolean, facts: MessageFacts, where: string) => found || facts.problem('request.missing', `${where}: no raw message; Gmail sends only a raw RFC 2822 message`);

// --- uploads ---------------------------------------------------------------------------------------

/** An /upload/ request: the metadata (multipart only) and the message, and how to send it on edited. */
interface Upload {
  meta: JsonObject | null;
  raw: Buffer;
  rebuild(raw: Buffer): { body: Buffer; contentType?: string };
}

/** Record a problem; nothing to read. */
function refuse(facts: MessageFacts, code: string, detail: string): null {
  facts.problem(code, detail);
  return null;
}

function readUpload(req: RequestInfo, facts: MessageFacts): Upload | null {
  const types = req.query.getAll('uploadType');
  if (types.length !== 1) return refuse(facts, 'request.upload', `an /upload/ request needs exactly one uploadType (media or multipart), got ${types.length}`);
  switch (types[0]) {
    case 'media':
      if (req.mediaType !== 'message/rfc822') return refuse(facts, 'request.upload', `uploadType=media takes a message/rfc822 body, not ${JSON.stringify(req.mediaType.slice(0, 60))}`);
      return { meta: null, raw: req.body, rebuild: (raw) => ({ body: raw }) };
    case 'multipart':
      return readRelated(req, facts);
    case 'resumable':
      // The message itself follows in later PUTs to a session URL: never one request to inspect whole.
      return refuse(facts, 'request.upload', 'uploadType=resumable sends the message in later requests, so postguard cannot inspect it whole; use uploadType=media or multipart');
    default:
      return refuse(facts, 'request.upload', `uploadType ${JSON.stringify(types[0]!.slice(0, 40))} is not one Gmail documents`);
  }
}

/** RFC 2046 boundary characters. */
const BOUNDARY = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;
const PART_HEADERS = new Set(['content-type', 'content-transfer-encoding', 'mime-version']);

/**
 * Google's multipart upload: `multipart/related`, the JSON metadata first and the message second.
 * busboy reads only multipart/form-data, so it is read here, strictly: every occurrence of the
 * boundary must be one of the delimiters read, so no laxer parser can find another part.
 */
function readRelated(req: RequestInfo, facts: MessageFacts): Upload | null {
  const bad = (why: string) => refuse(facts, 'request.multipart', `multipart/related upload ${why}`);
  if (req.mediaType !== 'multipart/related') return bad(`must be sent as multipart/related, not ${JSON.stringify(req.mediaType.slice(0, 60))}`);
  const params = [...req.contentType.matchAll(/;\s*boundary\s*=\s*(?:"([^"]*)"|([^;\s]*))/gi)];
  if (params.length !== 1) return bad('needs exactly one boundary parameter');
  const boundary = params[0]![1] ?? params[0]![2]!;
  if (!BOUNDARY.test(boundary)) return bad('has a boundary RFC 2046 does not allow');
  const text = req.body.toString('latin1');
  const dash = `--${boundary}`;
  const first = text.indexOf(dash);
  if (first === -1) return bad('does not contain its boundary');
  // A preamble (Python's client writes the root headers there) is ignored, but only up to a line start.
  const eol = text.startsWith('\r\n', first + dash.length) ? '\r\n' : '\n';
  if ((first > 0 && text[first - 1] !== '\n') || !text.startsWith(eol, first + dash.length)) return bad('does not start with its boundary');
  const parts: { start: number; end: number }[] = [];
  let at = first + dash.length + eol.length;
  for (;;) {
    const next = text.indexOf(`${eol}${dash}`, at);
    if (next === -1) return bad('has no closing boundary');
    parts.push({ start: at, end: next });
    const after = next + eol.length + dash.length;
    if (text.startsWith('--', after)) {
      if (!/^[\r\n]*$/.test(text.slice(after + 2))) return bad('has data after its closing boundary');
      break;
    }
    if (!text.startsWith(eol, after)) return bad('has a boundary line with more on it');
    at = after + eol.length;
  }
  if (text.split(dash).length - 1 !== parts.length + 1) return bad('has its boundary inside a part');
  if (parts.length !== 2) return bad(`has ${parts.length} parts; Gmail takes the metadata and the message`);
  const [meta, media] = parts.map((p) => readPart(text, p.start, p.end, eol)) as [Part | string, Part | string];
  if (typeof meta === 'string' || typeof media === 'string') return bad(typeof meta === 'string' ? meta : (media as string));
  if (meta.type !== 'application/json') return bad('must have the JSON metadata as its first part');
  if (media.type !== 'message/rfc822') return bad('must have the message/rfc822 message as its second part');
  const doc = parseStrictJson(utf8Text(req.body.subarray(meta.body, parts[0]!.end), 'upload metadata'));
  if (!isObject(doc)) return bad('metadata must be a JSON object');
  const metaBytes = req.body.subarray(meta.body, parts[0]!.end);
  return {
    meta: doc,
    raw: req.body.subarray(media.body, parts[1]!.end),
    rebuild: (raw) => {
      // A fresh boundary: the edited message is new bytes that were never checked against the old one.
      const b = `postguard-${randomBytes(12).toString('hex')}`;
      const head = (type: string) => Buffer.from(`--${b}\r\nContent-Type: ${type}\r\n\r\n`, 'latin1');
      return { body: Buffer.concat([head(meta.header), metaBytes, Buffer.from('\r\n'), head(media.header), raw, Buffer.from(`\r\n--${b}--`)]), contentType: `multipart/related; boundary=${b}` };
    },
  };
}

interface Part {
  /** Media type, lower case, no parameters. */
  type: string;
  /** The Content-Type as sent. */
  header: string;
  /** Offset of the part's body. */
  body: number;
}

function readPart(text: string, start: number, end: number, eol: string): Part | string {
  const blank = text.indexOf(`${eol}${eol}`, start);
  if (blank === -1 || blank > end) return 'has a part without a header block';
  let header = '';
  for (const line of text.slice(start, blank).split(eol)) {
    const m = /^([A-Za-z0-9-]+):[ \t]*(.*)$/.exec(line);
    if (!m || !PART_HEADERS.has(m[1]!.toLowerCase())) return 'has a part header postguard does not read';
    const name = m[1]!.toLowerCase();
    if (name === 'content-type') {
      if (header) return 'has a part with two Content-Type headers';
      header = m[2]!.trim();
    }
    // An encoded part is decoded by one reader and passed as is by another.
    if (name === 'content-transfer-encoding' && !/^(7bit|8bit|binary)$/i.test(m[2]!.trim())) return 'has a part with a Content-Transfer-Encoding';
  }
  if (eol === '\n' && text[end - 1] === '\r') return 'mixes line endings';
  return { type: header.split(';')[0]!.trim().toLowerCase(), header, body: blank + 2 * eol.length };
}

/** The message of an upload, inspected; the metadata is left to the caller. */
function uploaded(req: RequestInfo, facts: MessageFacts): { upload: Upload; body: () => { body: Buffer; contentType?: string } } | null {
  const upload = readUpload(req, facts);
  if (!upload) return null;
  let edited: Buffer | null = null;
  facts.mime(upload.raw, 'uploaded message', 'delivery', (raw) => void (edited = raw));
  return { upload, body: () => (edited ? upload.rebuild(edited) : { body: req.body }) };
}

/** Metadata of an upload must not carry a second message: which one Gmail would send is not documented. */
function metaMessage(msg: JsonObject, facts: MessageFacts, where: string): void {
  if (readMessage(msg, facts, where)) facts.problem('request.upload', `${where}.raw: an upload carries its message as the media part, not also as raw`);
}

const unchanged = (req: RequestInfo, facts: MessageFacts, extra: Partial<Extracted> = {}): Extracted => ({ messages: [facts], problems: [], body: () => ({ body: req.body }), ...extra });

// --- endpoints -------------------------------------------------------------------------------------

/** A path segment as Gmail reads it (percent-decoded); undecodable stays as sent and will not match. */
function pathParam(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The id Gmail gives a created or replaced draft (a Draft resource). */
const createdDraft = (response: Json): string | null => (isObject(response) && typeof response.id === 'string' ? response.id : null);

/** drafts.update: an id in the body other than the path's would leave which draft is replaced to Gmail. */
function samePathId(draft: JsonObject, req: RequestInfo, facts: MessageFacts): void {
  const id = field(draft, 'id');
  if (id !== undefined && id !== null && id !== pathParam(req.params[1]!)) facts.problem('request.draft', 'body id differs from the draft id in the path');
}

function sendJson(req: RequestInfo): Extracted {
  const msg = requireObject(jsonBody(req));
  const facts = new MessageFacts('message');
  requireRaw(readMessage(msg, facts, 'body'), facts, 'body');
  return jsonRequest(msg, [facts]);
}

function sendUpload(req: RequestInfo): Extracted {
  const facts = new MessageFacts('message');
  const u = uploaded(req, facts);
  if (u?.upload.meta) metaMessage(u.upload.meta, facts, 'metadata');
  return u ? { messages: [facts], problems: [], body: u.body } : unchanged(req, facts);
}

/** drafts.create and drafts.update: a whole new message for the draft, inspected as a send. */
function draftJson(update: boolean) {
  return (req: RequestInfo): Extracted => {
    const draft = requireObject(jsonBody(req));
    const facts = new MessageFacts('draft');
    const msg = readDraft(draft, facts, 'body');
    if (update) samePathId(draft, req, facts);
    requireRaw(msg !== null && readMessage(msg, facts, 'body.message'), facts, 'body.message');
    return jsonRequest(draft, [facts]);
  };
}

function draftUpload(update: boolean) {
  return (req: RequestInfo): Extracted => {
    const facts = new MessageFacts('draft');
    const u = uploaded(req, facts);
    if (u?.upload.meta) {
      const msg = readDraft(u.upload.meta, facts, 'metadata');
      if (msg) metaMessage(msg, facts, 'metadata.message');
      if (update) samePathId(u.upload.meta, req, facts);
    }
    return u ? { messages: [facts], problems: [], body: u.body } : unchanged(req, facts);
  };
}

/** drafts.send: the stored draft goes to its own headers' recipients; a message sent along replaces it. */
function draftSendJson(req: RequestInfo): Extracted {
  const draft = requireObject(jsonBody(req));
  const facts = new MessageFacts('draft');
  const msg = readDraft(draft, facts, 'body');
  if (msg) readMessage(msg, facts, 'body.message');
  const id = draftId(draft, facts, 'body');
  return jsonRequest(draft, [facts], [], id ? { draft: { op: 'send', id } } : {});
}

function draftSendUpload(req: RequestInfo): Extracted {
  const facts = new MessageFacts('draft');
  const u = uploaded(req, facts);
  let id: string | null = null;
  if (u?.upload.meta) {
    const msg = readDraft(u.upload.meta, facts, 'metadata');
    if (msg) metaMessage(msg, facts, 'metadata.message');
    id = draftId(u.upload.meta, facts, 'metadata');
  } else if (u) facts.problem('request.upload', 'drafts.send needs the draft id, which only uploadType=multipart metadata carries');
  const extra = id ? { draft: { op: 'send' as const, id } } : {};
  return u ? { messages: [facts], problems: [], body: u.body, ...extra } : unchanged(req, facts, extra);
}

/** A batch carries whole HTTP requests as parts; postguard does not take them apart. */
function batch(req: RequestInfo): Extracted {
  const facts = new MessageFacts('batch');
  facts.problem('request.batch', 'Gmail batch requests are not inspected (each sub-request would need its own inspection); send each request on its own');
  return unchanged(req, facts);
}

const USER = '\\/users\\/([^/]+)';
const api = (rest: string) => new RegExp(`^\\/gmail\\/v1${USER}${rest}$`, 'i');
const upload = (rest: string) => new RegExp(`^\\/upload\\/gmail\\/v1${USER}${rest}$`, 'i');

const endpoints: Endpoint[] = [
  { name: 'messages.send', method: 'POST', path: api('\\/messages\\/send'), read: sendJson },
  { name: 'messages.send.upload', method: 'POST', path: upload('\\/messages\\/send'), read: sendUpload },
  { name: 'drafts.send', method: 'POST', path: api('\\/drafts\\/send'), read: draftSendJson },
  { name: 'drafts.send.upload', method: 'POST', path: upload('\\/drafts\\/send'), read: draftSendUpload },
  { name: 'drafts.create', method: 'POST', path: api('\\/drafts'), read: draftJson(false), createsDraft: createdDraft },
  { name: 'drafts.create.upload', method: 'POST', path: upload('\\/drafts'), read: draftUpload(false), createsDraft: createdDraft },
  { name: 'drafts.update', method: 'PUT', path: api('\\/drafts\\/([^/]+)'), read: draftJson(true), createsDraft: createdDraft },
  { name: 'drafts.update.upload', method: 'PUT', path: upload('\\/drafts\\/([^/]+)'), read: draftUpload(true), createsDraft: createdDraft },
  { name: 'batch', method: 'POST', path: /^\/batch(?:\/gmail\/v1)?$/i, read: batch },
];

export const gmail: Provider = {
  id: 'gmail',
  name: 'Gmail API',
  // The discovery document's rootUrl and mtlsRootUrl, the legacy root, and the content-* aliases
  // (APIs Explorer) that serve the same /gmail/v1 paths. www. and content. serve every Google API,
  // so writes of other Google APIs through them are refused as unknown endpoints.
  hosts: ['gmail.googleapis.com', 'gmail.mtls.googleapis.com', 'content-gmail.googleapis.com', 'www.googleapis.com', 'www.mtls.googleapis.com', 'content.googleapis.com'],
  endpoints,
  maxBody: 36 * 1024 * 1024, // messages.send / drafts: "Maximum file size: 36MB"
  error: (status, message) => ({ headers: { 'content-type': 'application/json; charset=UTF-8' }, body: JSON.stringify({ error: { code: status, message, status: status === 403 ? 'PERMISSION_DENIED' : 'INVALID_ARGUMENT', errors: [{ message, domain: 'postguard', reason: status === 403 ? 'forbidden' : 'badRequest' }] } }) }),
};
