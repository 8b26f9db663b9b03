// What a provider adapter is, and the toolkit adapters are written with. An adapter is data (hosts,
// endpoints, limits, its error shape) plus one small `read` per endpoint that walks the parsed body
// and names every recipient, sender and piece of content in it — each recipient with how to remove
// it. The inspector (inspect.ts) turns that into MailIntents, runs the one policy decision, and
// calls the removals for what the decision strips. Adding a provider is adding one file to
// providers/ and one line to providers/index.ts.

import type { IncomingHttpHeaders } from 'node:http';
import { formatMailbox, parseAddressList, parseMailbox, type Mailbox } from '../core/address.js';
import type { Attachment, Problem, Recipient, RecipientField, Sender, TextPart } from '../core/intent.js';
import { addAttachment, contentFacts, headerFieldFacts, splitHeader, type HeaderFacts, type HeaderRole } from '../core/message.js';
import { field, isObject, keyOf, parseStrictJson, type Json, type JsonObject } from '../core/json.js';
import { utf8Text } from './body.js';
import { serializeMultipart, serializeUrlencoded, type FormField } from './forms.js';
import { normalizeMime, withoutRecipients } from './mime.js';

export interface RequestInfo {
  method: string;
  host: string;
  /** Path without the query, percent-decoding left as sent. */
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  /** Lower-case media type without parameters, e.g. `application/json`. */
  mediaType: string;
  /** The full Content-Type, parameters included (multipart needs the boundary). */
  contentType: string;
  /** Decoded (Content-Encoding undone). */
  body: Buffer;
  /** Path parameters captured by the endpoint's pattern. */
  params: string[];
}

export interface Extracted {
  /** One entry per message the request would send (a batch has many). */
  messages: MessageFacts[];
  /** Problems with the request as a whole (an unknown top-level key): they apply to every message. */
  problems: Problem[];
  /** The body to forward once the removals for stripped recipients have run. */
  body(): { body: Buffer; contentType?: string };
  /**
   * A stored draft this request sends or edits (Gmail/Graph): allowed only if it was created
   * through the relay, and then the recipients it was stored with are judged again with this request.
   */
  draft?: { op: 'send' | 'update'; id: string };
  /** Always forward `body()` — the request as the adapter read it — even when nothing was stripped. */
  reencode?: boolean;
  /**
   * False for a write that sends no mail now — a draft saved, a read-only action a provider takes
   * as POST (SES `GetSendQuota`). Its messages (possibly none) are still decided; none is needed.
   */
  sends?: boolean;
}

export interface Endpoint {
  /** Short name for audit records and metrics, e.g. `email.batch`. */
  name: string;
  /** GET only where a provider sends mail from a query string (the SES query API takes GET). */
  method: 'POST' | 'PUT' | 'PATCH' | 'GET';
  /** Matched against the path; capture groups become `params`. */
  path: RegExp;
  read(req: RequestInfo): Extracted | Promise<Extracted>;
  /** This endpoint creates a stored draft whose id is in the response: remember it (see drafts). */
  createsDraft?: (response: Json) => string | null;
}

export interface ErrorReply {
  headers: Record<string, string>;
  body: string;
}

/** What a provider may need to shape a reply: which of its APIs the request used. */
export interface ReplyContext {
  path: string;
  headers: IncomingHttpHeaders;
}

export interface Provider {
  id: string;
  name: string;
  /** Exact host names (lower case) and patterns for families of hosts (regions, national clouds). */
  hosts: readonly (string | RegExp)[];
  endpoints: readonly Endpoint[];
  /** The provider's own request size limit, in bytes of decoded body. */
  maxBody: number;
  /** An error in the provider's own shape, so its SDK surfaces our message. */
  error(status: number, message: string, req: ReplyContext): ErrorReply;
  /**
   * A read that carries what only a send should (SES takes send parameters in any query string):
   * refused unless an endpoint inspects it.
   */
  suspiciousRead?(path: string, query: URLSearchParams): string | null;
  /**
   * The success reply for a request held in quarantine, in the shape the SDK parses (default: a
   * 202 with `{"postguard": {...}}`). `id` is the audit id.
   */
  held?(id: string, message: string, req: RequestInfo): { status: number } & ErrorReply;
  /**
   * True when the request is signed over its body (SES SigV4): it cannot be rewritten, so a
   * recipient that would need stripping blocks it instead.
   */
  signed?(headers: IncomingHttpHeaders): boolean;
}

/**
 * Sees each entry of a header structure before it is read as a header, for what one provider
 * refuses on its own (SendGrid's X-SMTPAPI keys, SparkPost's X-MSYS-API).
 */
export type HeaderCheck = (name: string, value: Json | undefined, source: string) => void;

/** A request target split into its path (percent-encoding as sent) and its query. */
export function splitUrl(url: string): { path: string; query: URLSearchParams } {
  const q = url.indexOf('?');
  return { path: q === -1 ? url : url.slice(0, q), query: new URLSearchParams(q === -1 ? '' : url.slice(q + 1)) };
}

/**
 * Read a request with its endpoint's adapter, the same way live (inspector) and on release: MIME
 * analysis settled, and nothing strippable in a request signed over its body (SES SigV4).
 */
export async function extract(provider: Provider, endpoint: Endpoint, req: Omit<RequestInfo, 'path' | 'query' | 'mediaType' | 'contentType'> & { url: string }): Promise<{ info: RequestInfo; extracted: Extracted }> {
  const contentType = String(req.headers['content-type'] ?? '');
  const { url, ...rest } = req;
  const info: RequestInfo = { ...rest, ...splitUrl(url), contentType, mediaType: contentType.split(';')[0]!.trim().toLowerCase() };
  const extracted = await endpoint.read(info);
  await Promise.all(extracted.messages.map((m) => m.settle()));
  if (provider.signed?.(req.headers)) {
    for (const m of extracted.messages) for (const r of m.recipients) [r.strippable, r.strip] = [false, undefined];
  }
  return { info, extracted };
}

/** What goes to the provider: the adapter's rendering when something was removed or it always re-encodes, else the bytes as read. */
export function outgoingBody(extracted: Extracted, edited: boolean, original: Buffer): { body: Buffer; contentType?: string } {
  return edited || extracted.reencode ? extracted.body() : { body: original };
}

/** A recipient found in a request, with the edit that removes it (absent: it cannot be removed). */
export interface FoundRecipient extends Recipient {
  strip?: () => void;
}

/** RFC 5322 field-name: printable ASCII except the colon. */
const HEADER_NAME = /^[\x21-\x39\x3b-\x7e]+$/;

/** Everything the policy needs to know about one message in a request, collected by an adapter. */
export class MessageFacts {
  readonly recipients: FoundRecipient[] = [];
  readonly senders: Sender[] = [];
  readonly texts: TextPart[] = [];
  readonly attachments: Attachment[] = [];
  readonly problems: Problem[] = [];
  subject = '';
  /** Raw MIME to analyse (read asynchronously by `settle`). */
  private readonly pending: Promise<void>[] = [];

  constructor(readonly label: string) {}

  problem(code: string, detail: string): void {
    this.problems.push({ code, detail });
  }

  /**
   * A string holding an address list (`"a@x.com, B <b@y.com>"`), read with the real RFC 5322 grammar
   * (S24). `write` puts back what is left after a strip (an empty list is passed as []); null means
   * the field cannot be edited.
   */
  addressList(value: Json | undefined, field: RecipientField, source: string, write: ((kept: Mailbox[]) => void) | null, delivers = true): void {
    if (value === undefined || value === null || value === '') return;
    if (typeof value !== 'string') return this.problem('request.type', `${source}: expected a string of addresses`);
    const list = parseAddressList(value);
    if (!list.ok) return this.problem('address.invalid', `${source}: ${list.error}`);
    const kept = [...list.value];
    for (const mailbox of list.value) {
      const strip = write
        ? () => {
            const i = kept.indexOf(mailbox);
            if (i !== -1) kept.splice(i, 1);
            write(kept);
          }
        : undefined;
      this.push(mailbox, field, source, delivers, strip);
    }
  }

  /** One address in a field of its own (`{"email": …}`); `remove` takes it out of the request. */
  address(value: Json | undefined, field: RecipientField, source: string, remove: (() => void) | null, delivers = true): void {
    if (typeof value !== 'string') return this.problem('request.type', `${source}: expected an address string`);
    const m = parseMailbox(value);
    if (!m.ok) return this.problem('address.invalid', `${source}: ${m.error}`);
    this.push(m.value, field, source, delivers, remove ?? undefined);
  }

  /**
   * Every `{<key>: address}` object in an array field; removing the last one removes the field.
   * `pick` is the entry's key holding the address, or finds it. `allowedKeys`: the keys an entry may
   * have (`onlyKeys`); `delivers: false` for reply addresses.
   */
  addressObjects(
    holder: JsonObject, key: string, pick: string | ((item: JsonObject) => Json | undefined), kind: RecipientField, source: string, editable = true,
    opts: { delivers?: boolean; allowedKeys?: ReadonlySet<string> } = {},
  ): void {
    const k = keyOf(holder, key);
    if (k === undefined || holder[k] === null) return;
    const list = holder[k]!;
    if (!Array.isArray(list)) return this.problem('request.type', `${source}: expected an array`);
    list.forEach((item, i) => {
      if (!isObject(item)) return this.problem('request.type', `${source}[${i}]: expected an object`);
      if (opts.allowedKeys) this.onlyKeys(item, opts.allowedKeys, `${source}[${i}]`);
      const remove = () => {
        const at = list.indexOf(item);
        if (at !== -1) list.splice(at, 1);
        if (list.length === 0) delete holder[k];
      };
      const address = typeof pick === 'string' ? field(item, pick) : pick(item);
      this.address(address, kind, `${source}[${i}]`, editable ? remove : null, opts.delivers ?? true);
    });
  }

  sender(value: Json | undefined, source: string): void {
    if (value === undefined || value === null || value === '') return;
    if (typeof value !== 'string') return this.problem('request.type', `${source}: expected an address string`);
    const list = parseAddressList(value);
    if (!list.ok) return this.problem('address.invalid', `${source}: ${list.error}`);
    for (const mailbox of list.value) this.senders.push({ mailbox, field: 'api' });
  }

  /**
   * A header carried in the request (Postmark `Headers[]`, SendGrid `headers{}`, Mailgun `h:`):
   * recipient headers count as recipients (delivery-driving, S21), every header is content.
   * `write` replaces the value (null removes the header); null = not editable.
   */
  header(name: string, value: Json | undefined, source: string, write: ((value: string | null) => void) | null): void {
    if (typeof value !== 'string') return this.problem('request.type', `${source}: expected a string header value`);
    // `"Bcc "`, `"Bcc:"` or a value with `\r\nBcc: …` would become a recipient header the checks
    // below never see by that name (a MIME header split refuses the same lines).
    if (!HEADER_NAME.test(name) || /[\r\n\0]/.test(value)) return this.problem('request.header', `${source}: not a valid header (a name of visible characters without a colon, a value without line breaks)`);
    const found: HeaderFacts = { recipients: [], senders: [], problems: [] };
    this.texts.push({ where: `header ${name.slice(0, 60)}`, text: `${name}: ${value}` });
    if (!headerFieldFacts(name, value, 'delivery', source, found)) return;
    this.problems.push(...found.problems);
    this.senders.push(...found.senders);
    const kept = found.recipients.map((r) => r.mailbox);
    for (const r of found.recipients) {
      const strip = write && r.strippable
        ? () => {
            const i = kept.indexOf(r.mailbox);
            if (i !== -1) kept.splice(i, 1);
            write(kept.length ? joinAddresses(kept) : null);
          }
        : undefined;
      this.push(r.mailbox, r.field, source, r.delivers, strip);
    }
  }

  /**
   * A `{Name: value}` header map at `holder[key]` (`where` names it in problems), each entry read by
   * `header`. A removal deletes the name, and the map once it is empty.
   */
  headerObject(holder: JsonObject, key: string, where: string, check?: HeaderCheck): void {
    const k = keyOf(holder, key);
    if (k === undefined || holder[k] === null) return;
    const map = holder[k]!;
    if (!isObject(map)) return this.problem('request.type', `${where}: expected an object of header names and values`);
    for (const name of Object.keys(map)) {
      const source = `${where}.${name.slice(0, 60)}`;
      check?.(name, map[name], source);
      this.header(name, map[name], source, (v) => {
        if (v !== null) return void (map[name] = v);
        delete map[name];
        if (Object.keys(map).length === 0) delete holder[k];
      });
    }
  }

  /**
   * A `[{<nameKey>, <valueKey>}]` header list at `holder[key]`, each entry read by `header`. An entry
   * with other keys than `allowedKeys` (default: the two) is refused; a removal takes the entry out,
   * and the list once it is empty.
   */
  headerArray(
    holder: JsonObject, key: string, where: string, nameKey: string, valueKey: string,
    opts: { allowedKeys?: ReadonlySet<string>; check?: HeaderCheck } = {},
  ): void {
    const k = keyOf(holder, key);
    if (k === undefined || holder[k] === null) return;
    const list = holder[k]!;
    const shape = `{${nameKey}, ${valueKey}}`;
    if (!Array.isArray(list)) return this.problem('request.type', `${where}: expected an array of ${shape}`);
    const allowed = opts.allowedKeys ?? keys(nameKey, valueKey);
    [...list].forEach((h, i) => {
      const source = `${where}[${i}]`;
      const name = isObject(h) ? field(h, nameKey) : undefined;
      if (!isObject(h) || typeof name !== 'string') return this.problem('request.type', `${source}: expected ${shape}`);
      this.onlyKeys(h, allowed, source);
      const value = field(h, valueKey);
      opts.check?.(name, value, source);
      const valueAt = keyOf(h, valueKey) ?? valueKey;
      this.header(name, value, source, (v) => {
        if (v !== null) return void (h[valueAt] = v);
        const at = list.indexOf(h);
        if (at !== -1) list.splice(at, 1);
        if (list.length === 0) delete holder[k];
      });
    });
  }

  /** Subject, bodies, template variables: whatever the detectors should read. */
  text(where: string, value: Json | undefined): void {
    if (value === undefined || value === null) return;
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    if (where === 'subject' && typeof value === 'string') this.subject = value;
    if (text) this.texts.push({ where, text });
  }

  attachment(filename: string, contentType: string, content: Buffer): void {
    addAttachment(filename, contentType, content, this.attachments, this.texts);
  }

  /** A base64 attachment from a JSON body; bad base64 is a problem, not an empty file. */
  base64Attachment(filename: Json | undefined, contentType: Json | undefined, content: Json | undefined, source: string): void {
    if (typeof content !== 'string') return this.problem('request.type', `${source}: attachment content must be a base64 string`);
    const bytes = decodeBase64(content, source, this);
    if (bytes) this.attachment(typeof filename === 'string' ? filename : '', typeof contentType === 'string' ? contentType : 'application/octet-stream', bytes);
  }

  /**
   * A whole RFC 5322 message inside the request. `role: 'delivery'` when the provider takes
   * recipients from its headers (nothing else names them). `write` receives the message with
   * stripped addresses removed from its headers; null = the bytes cannot be edited.
   */
  mime(raw: Buffer, where: string, role: HeaderRole, write: ((raw: Buffer) => void) | null): void {
    let normalized: Buffer;
    try {
      normalized = normalizeMime(raw, where);
    } catch (e) {
      return this.problem('mime.invalid', (e as Error).message);
    }
    const split = splitHeader(normalized);
    const facts: HeaderFacts = { recipients: [], senders: [], problems: [] };
    for (const f of split.fields) headerFieldFacts(f.name, f.value, role, `${where} ${f.name} header`, facts);
    this.problems.push(...split.problems, ...facts.problems);
    this.senders.push(...facts.senders);
    const removed = new Set<string>();
    for (const r of facts.recipients) {
      const strip = write && r.strippable
        ? () => {
            removed.add(r.mailbox.address);
            write(withoutRecipients(normalized, split, removed));
          }
        : undefined;
      this.push(r.mailbox, r.field, r.source, r.delivers, strip);
    }
    this.texts.push({ where: `${where} headers`, text: split.fields.filter((f) => f.name !== 'subject').map((f) => f.raw).join('\n') });
    this.pending.push(
      contentFacts(normalized, split).then((c) => {
        if (c.subject) this.subject ||= c.subject;
        this.texts.push(...c.texts);
        this.attachments.push(...c.attachments);
        this.problems.push(...c.problems);
      }),
    );
  }

  /** Keys the adapter does not know are refused: a new field could carry a recipient (S21). */
  onlyKeys(obj: JsonObject, allowed: ReadonlySet<string>, where: string): void {
    for (const k of Object.keys(obj)) {
      if (!allowed.has(k.toLowerCase())) this.problem('request.unknown_field', `${where}: unknown field ${JSON.stringify(k.slice(0, 60))}`);
    }
  }

  /** Add what a request-wide part (a bulk send's shared content) contributes to this message. */
  inherit(shared: MessageFacts): void {
    this.recipients.push(...shared.recipients);
    this.senders.push(...shared.senders);
    this.texts.push(...shared.texts);
    this.attachments.push(...shared.attachments);
    this.problems.push(...shared.problems);
    this.subject ||= shared.subject;
  }

  /** Wait for MIME analysis started by `mime`. */
  async settle(): Promise<void> {
    await Promise.all(this.pending);
  }

  private push(mailbox: Mailbox, field: RecipientField, source: string, delivers: boolean, strip: (() => void) | undefined): void {
    this.recipients.push({ mailbox, field, source, delivers, strippable: strip !== undefined, strip });
  }
}

/** Lower-case key sets for `onlyKeys`. */
export function keys(...names: string[]): ReadonlySet<string> {
  return new Set(names.map((n) => n.toLowerCase()));
}

/** Mailboxes as one address-list string, for writing back what a strip left. */
export function joinAddresses(kept: readonly Mailbox[]): string {
  return kept.map((m) => formatMailbox(m)).join(', ');
}

/** The `write` for an address-list string at `holder[key]`: what is left, or no field once nothing is. */
export function listWriter(holder: JsonObject, key: string): (kept: Mailbox[]) => void {
  return (kept) => {
    if (kept.length) holder[key] = joinAddresses(kept);
    else delete holder[key];
  };
}

/** The body as strict JSON (S22/S23): read once here, the same way for every provider. */
export function jsonBody(req: RequestInfo): Json {
  return parseStrictJson(utf8Text(req.body));
}

/** An endpoint whose body is JSON: `read` gets the document, and the request for its path and query. */
export function json(read: (doc: Json, req: RequestInfo) => Extracted | Promise<Extracted>): Endpoint['read'] {
  return (req) => read(jsonBody(req), req);
}

/**
 * One message per entry of a batch (labelled `where[i]`), each read by `read`; an entry that is not
 * an object is a problem of its own message. `shared`: what every entry inherits (a bulk send's content).
 */
export function eachMessage(list: Json[], where: string, read: (entry: JsonObject, facts: MessageFacts, at: string) => void, shared?: MessageFacts): MessageFacts[] {
  return list.map((entry, i) => {
    const at = `${where}[${i}]`;
    const facts = new MessageFacts(at);
    if (isObject(entry)) read(entry, facts, at);
    else facts.problem('request.type', `${at}: expected an object`);
    if (shared) facts.inherit(shared);
    return facts;
  });
}

/** A JSON request: the body sent on is the (edited) document. */
export function jsonRequest(doc: Json, messages: MessageFacts[], problems: Problem[] = [], extra: Partial<Extracted> = {}): Extracted {
  return { messages, problems, body: () => ({ body: Buffer.from(JSON.stringify(doc)) }), ...extra };
}

/** A form request (urlencoded or multipart): the body sent on is the (edited) field list, re-encoded. */
export function formRequest(fields: FormField[], kind: 'urlencoded' | 'multipart', messages: MessageFacts[], problems: Problem[] = []): Extracted {
  return {
    messages,
    problems,
    // Multipart is where parsers disagree most (padded delimiters, RFC 2231 names, repeated
    // parameters): the provider gets the fields as we read them, never the bytes as sent.
    // Urlencoded bodies are read strictly and may be signed (SES), so they go as sent unless edited.
    reencode: kind === 'multipart',
    body: () => (kind === 'urlencoded' ? { body: serializeUrlencoded(fields), contentType: 'application/x-www-form-urlencoded' } : serializeMultipart(fields)),
  };
}

/** A body that must be a JSON object (the common case), with the message facts for it. */
export function requireObject(doc: Json, where = 'body'): JsonObject {
  if (!isObject(doc)) throw new RequestShapeError(`${where} must be a JSON object`);
  return doc;
}

export function requireArray(doc: Json | undefined, where: string): Json[] {
  if (!Array.isArray(doc)) throw new RequestShapeError(`${where} must be a JSON array`);
  return doc;
}

/** The request is not the shape this endpoint takes: refused with 400, nothing forwarded. */
export class RequestShapeError extends Error {}

/** Strict base64 (standard or URL-safe alphabet, padding optional); whitespace is tolerated as MIME does. */
export function decodeBase64(text: string, source: string, facts: MessageFacts): Buffer | null {
  const compact = text.replace(/[\r\n\t ]/g, '');
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(compact) || compact.length % 4 === 1) {
    facts.problem('request.base64', `${source}: not valid base64`);
    return null;
  }
  return Buffer.from(compact.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

export { field, isObject };
