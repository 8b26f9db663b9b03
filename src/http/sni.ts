// The server name from a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3), for the transparent
// listener: it must route by SNI before deciding whether to terminate TLS or tunnel it untouched.

export type SniResult = { state: 'more' } | { state: 'done'; name: string | null } | { state: 'invalid' };

/** Reads as much as is buffered; `more` until the whole ClientHello handshake message is there. */
export function readSni(buf: Buffer): SniResult {
  if (buf.length < 5) return { state: 'more' };
  if (buf[0] !== 0x16) return { state: 'invalid' }; // not a handshake record
  // The ClientHello may span records: gather handshake bytes from consecutive records.
  const hs: Buffer[] = [];
  let off = 0;
  let have = 0;
  let need = -1;
  while (need === -1 || have < need) {
    if (off + 5 > buf.length) return { state: 'more' };
    if (buf[off] !== 0x16) return { state: 'invalid' };
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > 16384 + 2048) return { state: 'invalid' };
    if (off + 5 + len > buf.length) return { state: 'more' };
    hs.push(buf.subarray(off + 5, off + 5 + len));
    have += len;
    off += 5 + len;
    if (need === -1 && have >= 4) {
      const h = Buffer.concat(hs);
      if (h[0] !== 0x01) return { state: 'invalid' }; // not a ClientHello
      need = 4 + h.readUIntBE(1, 3);
      if (need > 65536) return { state: 'invalid' };
    }
  }
  return parseClientHello(Buffer.concat(hs).subarray(4, need));
}

function parseClientHello(b: Buffer): SniResult {
  try {
    let p = 2 + 32; // version, random
    p += 1 + b[p]!; // session id
    p += 2 + b.readUInt16BE(p); // cipher suites
    p += 1 + b[p]!; // compression methods
    if (p === b.length) return { state: 'done', name: null };
    const end = p + 2 + b.readUInt16BE(p);
    p += 2;
    while (p + 4 <= end) {
      const type = b.readUInt16BE(p);
      const len = b.readUInt16BE(p + 2);
      p += 4;
      if (type === 0) {
        // server_name_list: one host_name entry is all anyone sends
        let q = p + 2;
        const listEnd = p + 2 + b.readUInt16BE(p);
        while (q + 3 <= listEnd) {
          const nameType = b[q]!;
          const nameLen = b.readUInt16BE(q + 1);
          if (nameType === 0) {
            const name = b.subarray(q + 3, q + 3 + nameLen).toString('latin1');
            if (!/^[a-z0-9.-]{1,253}$/i.test(name)) return { state: 'invalid' };
            return { state: 'done', name: name.toLowerCase().replace(/\.$/, '') };
          }
          q += 3 + nameLen;
        }
        return { state: 'done', name: null };
      }
      p += len;
    }
    return { state: 'done', name: null };
  } catch {
    return { state: 'invalid' }; // a read past the end: truncated or lying lengths
  }
}
