// Reading the DATA stream. smtp-server ends DATA only on CRLF.CRLF but passes bare CR and bare LF
// inside the body through untouched; an upstream that treats `\n.\n` or `\r.\r` as the end of data
// would then see a second, smuggled message (CVE-2023-51764/5/6). The relay never forwards them:
// any CR not followed by LF, or LF not preceded by CR, rejects the message (`\r\r\n` included).

import type { Readable } from 'node:stream';

export type DataResult =
  | { ok: true; raw: Buffer }
  | { ok: false; code: number; message: string };

export function readData(stream: Readable & { sizeExceeded?: boolean }, maxSize: number): Promise<DataResult> {
  const chunks: Buffer[] = [];
  let size = 0;
  let bareLineEnding: string | null = null;
  let lastWasCR = false; // carried across chunks so a CRLF split between two chunks is not a bare CR
  return new Promise((resolve, reject) => {
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxSize) return; // keep draining so the session stays in sync; reply 552 at the end
      if (bareLineEnding === null) {
        bareLineEnding = findBareLineEnding(chunk, lastWasCR);
        lastWasCR = chunk[chunk.length - 1] === 0x0d;
      }
      chunks.push(chunk);
    });
    stream.once('error', reject);
    stream.once('end', () => {
      if (size > maxSize || stream.sizeExceeded) return resolve({ ok: false, code: 552, message: `5.3.4 Message too big (limit ${maxSize} bytes)` });
      if (bareLineEnding === null && lastWasCR) bareLineEnding = 'bare CR';
      if (bareLineEnding) return resolve({ ok: false, code: 554, message: `5.6.0 Message refused: ${bareLineEnding} in DATA; lines must end with CRLF (SMTP smuggling protection)` });
      resolve({ ok: true, raw: Buffer.concat(chunks, size) });
    });
  });
}

/** Finds the first bare CR or bare LF. indexOf is memchr-fast, so this costs little even at 25 MB. */
export function findBareLineEnding(buf: Buffer, prevWasCR: boolean): string | null {
  for (let i = buf.indexOf(0x0a); i !== -1; i = buf.indexOf(0x0a, i + 1)) {
    const before = i === 0 ? prevWasCR : buf[i - 1] === 0x0d;
    if (!before) return 'bare LF';
  }
  if (prevWasCR && buf.length > 0 && buf[0] !== 0x0a) return 'bare CR';
  for (let i = buf.indexOf(0x0d); i !== -1; i = buf.indexOf(0x0d, i + 1)) {
    if (i + 1 < buf.length && buf[i + 1] !== 0x0a) return 'bare CR';
  }
  return null;
}
