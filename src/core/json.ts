// Strict JSON, for both channels: mail-API request bodies (HTTP) and JSON carried in a message
// header (SendGrid's X-SMTPAPI, on SMTP as in an API's headers). The relay decides on its reading
// and the provider acts on its own; wherever two parsers could read the same bytes differently the
// JSON is refused (mail-apis.md S22/S23): duplicate keys at any depth — also after case folding,
// since Postmark's and Go's decoders bind keys case-insensitively — lone surrogates, integers past
// 2^53, deep nesting.
//
// `@humanwhocodes/momoa` gives the whole syntax tree, duplicates included, where JSON.parse would
// silently keep the last one.

import { parse, type ValueNode } from '@humanwhocodes/momoa';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** `malformed` → 400 (not JSON); `differential` → 403 (crafted to be read two ways); `busy` → 503 (the relay's memory budget for bodies is spent). */
export class BodyError extends Error {
  constructor(readonly kind: 'malformed' | 'differential' | 'unsupported' | 'too_large' | 'busy', message: string) {
    super(message);
  }
}

const MAX_DEPTH = 64;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * momoa's tree costs ~200 bytes per value: a 48 KB gzip of `[0,0,…]` would need gigabytes. Values
 * are counted first (structural characters outside strings), and a document with more is refused.
 * Real send requests hold thousands, not hundreds of thousands: big bodies are big strings.
 */
const MAX_VALUES = 250_000;

function countValues(text: string): number {
  let n = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x2c || c === 0x5b || c === 0x7b || c === 0x3a) n++; // , [ { :
  }
  return n;
}

export function parseStrictJson(text: string): Json {
  if (text.charCodeAt(0) === 0xfeff) throw new BodyError('differential', 'JSON body starts with a byte order mark');
  if (countValues(text) > MAX_VALUES) throw new BodyError('too_large', `JSON body has more than ${MAX_VALUES} values`);
  let doc;
  try {
    doc = parse(text, { mode: 'json', ranges: true });
  } catch (e) {
    throw new BodyError('malformed', `body is not valid JSON: ${(e as Error).message}`);
  }
  return toValue(doc.body, text, '$', 0);
}

function toValue(node: ValueNode, text: string, path: string, depth: number): Json {
  if (depth > MAX_DEPTH) throw new BodyError('differential', `JSON nested deeper than ${MAX_DEPTH} levels`);
  switch (node.type) {
    case 'Object': {
      const out: JsonObject = Object.create(null) as JsonObject;
      const folded = new Set<string>();
      for (const m of node.members) {
        const key = m.name.type === 'String' ? m.name.value : m.name.name;
        checkString(key, path);
        const f = key.toLowerCase();
        if (folded.has(f)) throw new BodyError('differential', `duplicate key ${JSON.stringify(key)} in ${path} (keys are compared case-insensitively)`);
        folded.add(f);
        out[key] = toValue(m.value, text, `${path}.${key}`, depth + 1);
      }
      return out;
    }
    case 'Array':
      return node.elements.map((e, i) => toValue(e.value, text, `${path}[${i}]`, depth + 1));
    case 'String':
      checkString(node.value, path);
      return node.value;
    case 'Number': {
      const raw = text.slice(node.range![0], node.range![1]);
      if (!Number.isFinite(node.value)) throw new BodyError('differential', `number ${raw.slice(0, 40)} at ${path} is out of range`);
      if (/^-?\d+$/.test(raw) && !Number.isSafeInteger(node.value)) throw new BodyError('differential', `integer ${raw.slice(0, 40)} at ${path} is too large to be read the same way everywhere`);
      return node.value;
    }
    case 'Boolean':
      return node.value;
    case 'Null':
      return null;
    default:
      throw new BodyError('malformed', `unexpected ${node.type} at ${path}`);
  }
}

function checkString(s: string, path: string): void {
  if (LONE_SURROGATE.test(s)) throw new BodyError('differential', `string at ${path} holds an unpaired surrogate escape`);
}

export function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The key actually used in `obj` for `name`, compared case-insensitively (keys are unique after folding). */
export function keyOf(obj: JsonObject, name: string): string | undefined {
  if (name in obj) return name;
  const f = name.toLowerCase();
  return Object.keys(obj).find((k) => k.toLowerCase() === f);
}

export function field(obj: JsonObject, name: string): Json | undefined {
  const k = keyOf(obj, name);
  return k === undefined ? undefined : obj[k];
}
