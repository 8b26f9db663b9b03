// A thin positioned view over a parsed YAML document, so converters can say exactly where a value
// is wrong (`file:line:col: message`) while reading it like plain data.

import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { parseDuration, parseSize } from '../core/units.js';
import type { PolicyError } from './types.js';

export class Errors {
  readonly list: PolicyError[] = [];
  constructor(readonly file: string, private readonly lines: LineCounter) {}

  at(offset: number, message: string): void {
    const { line, col } = this.lines.linePos(offset);
    this.list.push({ file: this.file, line, col, message });
  }
}

/** One YAML value with its position. `path` is for messages ("agents.bot.senders[1]"). */
export class Value {
  constructor(
    private readonly node: YamlNode | null,
    readonly path: string,
    private readonly errors: Errors,
    private readonly fallbackOffset = 0,
  ) {}

  get offset(): number {
    return this.node?.range?.[0] ?? this.fallbackOffset;
  }

  error(message: string): undefined {
    this.errors.at(this.offset, this.path ? `${this.path}: ${message}` : message);
    return undefined;
  }

  isMap(): boolean {
    return isMap(this.node);
  }

  isSeq(): boolean {
    return isSeq(this.node);
  }

  /** Map entries, or an error if this is not a map. Keys must be strings. */
  entries(): [string, Value][] | undefined {
    if (!isMap(this.node)) return this.error('expected a mapping');
    const out: [string, Value][] = [];
    for (const pair of this.node.items) {
      const key = isScalar(pair.key) ? pair.key.value : undefined;
      const keyOffset = (pair.key as YamlNode | null)?.range?.[0] ?? this.offset;
      if (typeof key !== 'string') {
        this.errors.at(keyOffset, `${this.path}: keys must be strings`);
        continue;
      }
      const child = this.path ? `${this.path}.${key}` : key;
      out.push([key, new Value((pair.value as YamlNode | null) ?? null, child, this.errors, keyOffset)]);
    }
    return out;
  }

  /** Map entries checked against the keys a section knows; unknown keys are errors, with a hint. */
  fields(known: readonly string[]): Map<string, Value> | undefined {
    const entries = this.entries();
    if (!entries) return undefined;
    const out = new Map<string, Value>();
    for (const [key, value] of entries) {
      if (!known.includes(key)) {
        const hint = closest(key, known);
        this.errors.at(value.keyOffset(this.node, key), `${value.path}: unknown key${hint ? ` (did you mean '${hint}'?)` : ''}; known keys: ${known.join(', ')}`);
        continue;
      }
      out.set(key, value);
    }
    return out;
  }

  private keyOffset(parent: YamlNode | null, key: string): number {
    if (!isMap(parent)) return this.offset;
    const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === key);
    return (pair?.key as YamlNode | undefined)?.range?.[0] ?? this.offset;
  }

  items(): Value[] | undefined {
    if (!isSeq(this.node)) return this.error('expected a list');
    return this.node.items.map((n, i) => new Value(n as YamlNode, `${this.path}[${i}]`, this.errors, this.offset));
  }

  /** A list, or a single scalar treated as a one-item list (`detectors: all`). */
  list(): Value[] | undefined {
    return isSeq(this.node) ? this.items() : [this];
  }

  scalar(): unknown {
    return isScalar(this.node) ? this.node.value : undefined;
  }

  string(): string | undefined {
    const v = this.scalar();
    if (typeof v !== 'string' || v === '') return this.error('expected a non-empty string');
    return v;
  }

  bool(): boolean | undefined {
    const v = this.scalar();
    if (typeof v !== 'boolean') return this.error('expected true or false');
    return v;
  }

  oneOf<T extends string>(choices: readonly T[]): T | undefined {
    const v = this.scalar();
    if (typeof v === 'string' && (choices as readonly string[]).includes(v)) return v as T;
    return this.error(`expected one of ${choices.join(' | ')}, got ${JSON.stringify(v ?? null)}`);
  }

  /** `24h`, `30m`, `90s`, `7d`, or a bare number of seconds. */
  duration(): number | undefined {
    return parseDuration(this.scalar()) ?? this.error('expected a duration such as 30s, 15m, 24h or 7d');
  }

  /** `10MB`, `512 KiB`, `1024` (bytes). */
  size(): number | undefined {
    return parseSize(this.scalar()) ?? this.error('expected a size such as 512KB, 10MB or a number of bytes');
  }

  positiveInt(): number | undefined {
    const v = this.scalar();
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) return this.error('expected a positive whole number');
    return v;
  }
}

/** Parse YAML text into a root Value; syntax errors (including duplicate keys) are reported with positions. */
export function readYaml(file: string, text: string): { root: Value; errors: Errors } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  const errors = new Errors(file, lines);
  for (const e of [...doc.errors, ...doc.warnings]) errors.at(e.pos[0], e.message.split('\n')[0]!);
  return { root: new Value((doc.contents as YamlNode | null) ?? null, '', errors), errors };
}

function closest(word: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = levenshtein(word.toLowerCase(), k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best;
}

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
