// libmime (mailparser's own RFC 2047 decoder) ships no types; only what the relay uses.
declare module 'libmime' {
  export function decodeWords(text: string): string;
  const libmime: { decodeWords: typeof decodeWords };
  export default libmime;
}
