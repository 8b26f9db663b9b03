// Form bodies as an ordered list of fields, and back. Order and repetition matter (Mailgun takes
// `to` as often as it is given), so this is a list, not a map. `busboy` reads multipart/form-data;
// application/x-www-form-urlencoded is read strictly here: a percent escape that is not UTF-8
// would become U+FFFD for one reader and something else for another.

import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import busboy from 'busboy';
import { BodyError } from '../core/json.js';

export interface FormField {
  name: string;
  /** Text fields are strings; file parts keep their bytes. */
  value: string | Buffer;
  filename?: string;
  contentType?: string;
}

export function parseUrlencoded(text: string): FormField[] {
  const out: FormField[] = [];
  for (const pair of text.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const [k, v] = eq === -1 ? [pair, ''] : [pair.slice(0, eq), pair.slice(eq + 1)];
    out.push({ name: decodeComponent(k), value: decodeComponent(v) });
  }
  return out;
}

function decodeComponent(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    throw new BodyError('malformed', 'form body has a percent escape that is not UTF-8');
  }
}

export function serializeUrlencoded(fields: FormField[]): Buffer {
  return Buffer.from(fields.map((f) => `${encodeURIComponent(f.name)}=${encodeURIComponent(typeof f.value === 'string' ? f.value : f.value.toString('utf8'))}`).join('&'));
}

export async function parseMultipart(body: Buffer, contentType: string, limit: number): Promise<FormField[]> {
  const fields: FormField[] = [];
  let bb: busboy.Busboy;
  try {
    bb = busboy({ headers: { 'content-type': contentType }, limits: { fieldSize: limit, fileSize: limit, fields: 10_000, files: 1_000, parts: 11_000 }, defParamCharset: 'utf8' });
  } catch (e) {
    throw new BodyError('malformed', `multipart body: ${(e as Error).message}`);
  }
  refuseAmbiguousParts(body, contentType);
  await new Promise<void>((resolve, reject) => {
    const fail = (why: string) => reject(new BodyError('malformed', `multipart body: ${why}`));
    bb.on('field', (name, value, info) => {
      if (info.nameTruncated || info.valueTruncated) return fail(`field ${name.slice(0, 40)} truncated`);
      // A transfer encoding on a form field is read by some servers and ignored by others.
      if (!/^(7bit|8bit|binary)$/i.test(info.encoding)) return reject(new BodyError('differential', `multipart field ${name.slice(0, 40)} uses Content-Transfer-Encoding ${info.encoding}`));
      fields.push({ name, value });
    });
    bb.on('file', (name, stream, info) => {
      if (!/^(7bit|8bit|binary)$/i.test(info.encoding)) {
        stream.resume();
        return reject(new BodyError('differential', `multipart part ${name.slice(0, 40)} uses Content-Transfer-Encoding ${info.encoding}`));
      }
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('limit', () => fail(`part ${name.slice(0, 40)} is too large`));
      stream.on('end', () => fields.push({ name, value: Buffer.concat(chunks), filename: info.filename ?? '', contentType: info.mimeType }));
    });
    for (const ev of ['partsLimit', 'filesLimit', 'fieldsLimit']) bb.on(ev, () => fail('too many parts'));
    bb.on('error', (e: Error) => fail(e.message));
    bb.on('close', () => resolve());
    Readable.from([body]).pipe(bb);
  });
  return fields;
}

/**
 * Part framing that parsers read differently is refused before busboy reads anything: a delimiter
 * line with anything after the boundary (busboy drops such a part, Go and werkzeug keep it), RFC
 * 2231 `name*=` parameters and repeated parameters or headers (which one names the field?), and a
 * text part in another charset (busboy decodes `charset=utf-16le`; the provider may read UTF-8).
 * The fields are forwarded as busboy read them (`reencode`), so this is defence in depth.
 */
function refuseAmbiguousParts(body: Buffer, contentType: string): void {
  const boundary = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  if (!boundary) return;
  const delimiter = Buffer.from(`--${boundary[1] ?? boundary[2]}`);
  const refuse = (why: string) => {
    throw new BodyError('differential', `multipart body: ${why}`);
  };
  for (let at = body.indexOf(delimiter); at !== -1; at = body.indexOf(delimiter, at + delimiter.length)) {
    if (at !== 0 && body.subarray(at - 2, at).toString('latin1') !== '\r\n') continue; // inside content
    const after = body.subarray(at + delimiter.length, at + delimiter.length + 2).toString('latin1');
    if (after === '--') continue; // the close delimiter
    if (after !== '\r\n') refuse('a delimiter line has characters after the boundary');
    const start = at + delimiter.length + 2;
    const end = body.indexOf('\r\n\r\n', start);
    if (end === -1) return;
    const lines = body.subarray(start, end).toString('latin1').split('\r\n');
    const names = lines.map((l) => l.slice(0, l.indexOf(':')).trim().toLowerCase());
    if (new Set(names).size !== names.length) refuse('a part repeats a header');
    for (const line of lines) {
      const rest = line.split(';').slice(1);
      const params = rest.map((p) => p.slice(0, p.indexOf('=')).trim().toLowerCase()).filter(Boolean);
      if (params.some((p) => p.endsWith('*'))) refuse('a part uses an RFC 2231 parameter (name*=)');
      if (new Set(params).size !== params.length) refuse('a part repeats a parameter');
      const charset = /^content-type:[^\r\n]*charset\s*=\s*"?([^";\s]+)/i.exec(line)?.[1]?.toLowerCase();
      if (charset && charset !== 'utf-8' && charset !== 'utf8' && charset !== 'us-ascii') refuse(`part declares charset ${JSON.stringify(charset.slice(0, 40))}: parts must be UTF-8`);
    }
  }
}

/** A fresh multipart body for the (possibly edited) fields, and its Content-Type. */
export function serializeMultipart(fields: FormField[]): { body: Buffer; contentType: string } {
  const boundary = `postguard-${randomBytes(12).toString('hex')}`;
  const quote = (s: string) => s.replace(/["\\\r\n]/g, (c) => encodeURIComponent(c));
  const parts: Buffer[] = [];
  for (const f of fields) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${quote(f.name)}"`;
    if (typeof f.value !== 'string') head += `; filename="${quote(f.filename ?? '')}"\r\nContent-Type: ${(f.contentType ?? 'application/octet-stream').replace(/[\r\n]/g, '')}`;
    parts.push(Buffer.from(`${head}\r\n\r\n`), typeof f.value === 'string' ? Buffer.from(f.value) : f.value, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}
