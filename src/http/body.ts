// Reading a request body: bounded, fully decoded (Content-Encoding gzip/deflate/br), as the bytes the
// provider will interpret. The whole body is needed before anything is forwarded: recipients may be
// in the last byte of a JSON document. Node's HTTP parser already refuses the framing attacks
// (Content-Length with Transfer-Encoding, bad chunk sizes, a short body); what it lets through is
// handled here.

import type { IncomingMessage } from 'node:http';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { BodyError } from '../core/json.js';

const DECODERS: Record<string, (b: Buffer, o: zlib.ZlibOptions) => Promise<Buffer>> = {
  gzip: promisify(zlib.gunzip),
  'x-gzip': promisify(zlib.gunzip),
  deflate: promisify(zlib.inflate),
  br: promisify(zlib.brotliDecompress) as (b: Buffer, o: zlib.ZlibOptions) => Promise<Buffer>,
};

/**
 * Bytes of request bodies held at once, across all requests: one 50 MB body is fine, a few hundred
 * at once would not be. Each request takes from it while it is read and gives back when done.
 */
export class BodyBudget {
  private used = 0;
  constructor(readonly max: number) {}

  take(n: number): void {
    if (this.used + n > this.max) throw new BodyError('busy', `the relay is holding ${Math.round(this.used / 1048576)} MB of request bodies; try again shortly`);
    this.used += n;
  }

  give(n: number): void {
    this.used = Math.max(0, this.used - n);
  }
}

/** The raw body, refused once it passes `limit` bytes (the peer is told 413 and nothing is kept). */
export async function readBody(req: IncomingMessage, limit: number, budget?: BodyBudget, taken = { bytes: 0 }): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    req.resume();
    throw new BodyError('too_large', `body of ${declared} bytes is larger than the ${limit} bytes this endpoint takes`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (budget) {
      try {
        budget.take(chunk.length);
      } catch (e) {
        req.resume();
        throw e;
      }
      taken.bytes += chunk.length;
    }
    if (size > limit) {
      req.resume();
      throw new BodyError('too_large', `body is larger than the ${limit} bytes this endpoint takes`);
    }
    chunks.push(chunk);
  }
  // `aborted`: the client closed before the declared length arrived.
  if (!req.complete) throw new BodyError('malformed', 'body ended before its declared length');
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
}

/** Undo `Content-Encoding` (a list, applied in order); an encoding we cannot read is refused, not passed on. */
export async function decodeBody(body: Buffer, contentEncoding: string | undefined, limit: number): Promise<Buffer> {
  if (!contentEncoding) return body;
  const codings = contentEncoding.toLowerCase().split(',').map((s) => s.trim()).filter((s) => s && s !== 'identity');
  if (codings.length > 2) throw new BodyError('unsupported', `Content-Encoding with ${codings.length} layers is not accepted`);
  let out = body;
  for (const c of codings.reverse()) {
    const decode = DECODERS[c];
    if (!decode) throw new BodyError('unsupported', `Content-Encoding ${JSON.stringify(c.slice(0, 40))} is not supported (gzip, deflate, br)`);
    try {
      // maxOutputLength: a small compressed body must not expand past the limit (a zip bomb).
      out = await decode(out, { maxOutputLength: limit });
    } catch (e) {
      const tooLarge = (e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' || /Cannot create a Buffer larger|output length/i.test((e as Error).message);
      throw tooLarge ? new BodyError('too_large', `decoded body is larger than the ${limit} bytes this endpoint takes`) : new BodyError('malformed', `body is not valid ${c}: ${(e as Error).message}`);
    }
  }
  return out;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Text bodies must be valid UTF-8: a replacement character is where two readers start to disagree. */
export function utf8Text(body: Buffer, what = 'body'): string {
  try {
    return utf8.decode(body);
  } catch {
    throw new BodyError('malformed', `${what} is not valid UTF-8`);
  }
}
