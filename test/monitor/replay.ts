// Recorded loader output (test/monitor/fixtures/*.ndjson, see generate.mjs there) and the small
// plumbing the monitor tests share.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeEvent, type LoaderEvent } from '../../src/monitor/loader.js';
import { StreamAssembler, type StreamOptions, type Write } from '../../src/monitor/stream.js';

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

/** The events of one fixture, decoded as the loader's lines are. */
export function fixture(name: string): LoaderEvent[] {
  return readFileSync(join(FIXTURES, name), 'utf8').split('\n').filter((l) => l.trim() !== '').map(decodeEvent);
}

/** Feed events through a StreamAssembler; the writes it passes on, in order. */
export function assemble(events: LoaderEvent[], opts: Partial<StreamOptions> = {}): { writes: Write[]; assembler: StreamAssembler } {
  const writes: Write[] = [];
  const assembler = new StreamAssembler({ chunk: 16384, maxChunks: 64, ...opts }, (w) => writes.push(w));
  for (const e of events) {
    if (e.type === 'ssl_write') assembler.sslWrite(e);
    else if (e.type === 'bind') assembler.bind(e);
    else if (e.type === 'write') assembler.plainWrite(e);
  }
  return { writes, assembler };
}
