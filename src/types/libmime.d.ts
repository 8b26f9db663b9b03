// libmime (mailparser's own RFC 2047 codec) ships no types; only what the relay uses.
declare module 'libmime' {
  export function decodeWords(text: string): string;
  export function encodeWord(text: string, mimeWordEncoding?: 'Q' | 'B', maxLength?: number): string;
  const libmime: { decodeWords: typeof decodeWords; encodeWord: typeof encodeWord };
  export default libmime;
}
