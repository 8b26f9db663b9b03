// Secret and credential detectors over outgoing mail content. An agent that can send mail can leak
// whatever it has read, so before a message leaves we look for the shapes of common credentials.
//
// Texts can be up to 25 MB and are attacker-influenced, and V8's regex engine backtracks. Every
// pattern below is therefore written to stay linear: no nested quantifiers, unbounded runs only
// where the next token cannot match the run's characters (so a failed attempt gives back at most
// one run), and optional separators bounded ({0,8}) so their splits are a small constant.

export const DETECTOR_KINDS = ['aws', 'github', 'slack', 'stripe', 'google', 'private_key', 'jwt', 'password', 'card'] as const;
export type DetectorKind = (typeof DETECTOR_KINDS)[number];

export interface Finding {
  detector: DetectorKind;
  /** Passed through from the caller, e.g. "subject", "text", "html", "attachment notes.txt". */
  where: string;
  /** The secret masked; never more than 4 characters of the real secret in clear. */
  masked: string;
  /** UTF-16 offset of the secret in the text (for key = value detectors, of the value). */
  offset: number;
}

/** Enough for an alert to be actionable; a text with more is leaking wholesale anyway. */
const MAX_FINDINGS = 50;
/** A failed JSON.parse costs ~10 µs (the throw); past this many per text, stop paying (hasJwtHeader). */
const MAX_JSON_FAILURES = 1000;

/** State one scanText call shares across validations. */
interface Scan {
  /** Malformed JWT headers still allowed a JSON.parse (see hasJwtHeader). */
  jsonFailuresLeft: number;
}

interface Detector {
  readonly kind: DetectorKind;
  /** Global, with `d` for indices. The secret is the `secret` group if there is one, else the whole match. */
  readonly pattern: RegExp;
  /** Drops what the regex alone cannot tell apart: checksums, decodable headers, entropy. */
  readonly validate?: (secret: string, scan: Scan) => boolean;
  /** The secrets a match may hold, best first (cards: the digit run, cut at group boundaries). */
  readonly candidates?: (match: string) => string[];
  readonly mask?: (secret: string) => string;
}

// Table order is priority: a stretch of text already reported by an earlier entry is not reported
// again by a later one (so `token: ghp_…` is a GitHub token, not also a generic password), and
// the specific, near-certain detectors fill the cap first.
const DETECTORS: readonly Detector[] = [
  {
    kind: 'private_key',
    // The header, plus the base64 body when it follows, so two different keys are two findings.
    pattern: /-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----(?:\r?\n[A-Za-z0-9+/=]{1,128}){0,4096}/dg,
  },
  { kind: 'aws', pattern: /\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b/dg },
  {
    kind: 'aws',
    // Secret keys have no prefix of their own, so only a value named as one counts.
    pattern: /(?<![A-Za-z0-9])aws[_ .-]?secret(?:[_ .-]?access)?(?:[_ .-]?key)?["']?[ \t]{0,8}(?:[:=]>?)?[ \t]{0,8}["']?(?<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])/dgi,
    validate: (s) => shannonEntropy(s) >= 3.5,
  },
  { kind: 'github', pattern: /(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])/dg },
  { kind: 'github', pattern: /(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,255}(?![A-Za-z0-9_])/dg },
  { kind: 'slack', pattern: /(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,255}/dg },
  { kind: 'slack', pattern: /https:\/\/hooks\.slack\.com\/services\/T[A-Za-z0-9_]{1,64}\/B[A-Za-z0-9_]{1,64}\/[A-Za-z0-9_]{1,128}/dg },
  // Publishable keys (pk_) are meant to ship in web pages; only secret and restricted keys count.
  { kind: 'stripe', pattern: /(?<![A-Za-z0-9_])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,255}/dg },
  { kind: 'google', pattern: /(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])/dg },
  { kind: 'google', pattern: /(?<![A-Za-z0-9_-])GOCSPX-[A-Za-z0-9_-]{28}(?![A-Za-z0-9_-])/dg },
  {
    kind: 'jwt',
    // Each segment's class excludes the dot that ends it, so a run without one fails in one pass.
    pattern: /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/dg,
    validate: hasJwtHeader,
  },
  {
    kind: 'card',
    // The whole digit run; where it ends is decided in code (cardCandidates), not by backtracking.
    pattern: /(?<![A-Za-z0-9_.+])[0-9](?:[ -]?[0-9]){12,}/dg,
    candidates: cardCandidates,
    validate: (digits) => luhn(digits) && plausibleIssuer(digits),
    mask: (digits) => `card …${digits.slice(-4)}`,
  },
  {
    kind: 'password',
    // The value stops at whitespace, quotes and `<`, since HTML parts arrive with their tags.
    pattern: /(?<![A-Za-z0-9])(?:password|passwd|pwd|pass|client_secret|secret|api[_-]?key|token)["']?[ \t]{0,8}(?::=|=>|[:=])[ \t]{0,8}["'`]?(?<secret>[^\s"'`<]{8,256})/dgi,
    validate: (v) => shannonEntropy(v) >= 3.0 && !isPlaceholder(v),
    // Even the first characters of a password help guess it, so show only its length.
    mask: (v) => `…(${v.length} chars)`,
  },
];

/** Scan one text for the given detector kinds. Pure, synchronous, no I/O. */
export function scanText(where: string, text: string, kinds: ReadonlySet<DetectorKind>): Finding[] {
  const findings: Finding[] = [];
  const seen = new Set<string>();
  let claimed: Span[] = [];
  const scan: Scan = { jsonFailuresLeft: MAX_JSON_FAILURES };
  detectors: for (const d of DETECTORS) {
    if (!kinds.has(d.kind)) continue;
    const mine: Span[] = [];
    // matchAll works on a copy of the regex, so the shared table keeps no lastIndex state.
    for (const m of text.matchAll(d.pattern)) {
      const raw = m.groups?.['secret'] ?? m[0];
      const start = m.indices?.groups?.['secret']?.[0] ?? m.index;
      const end = start + raw.length;
      if (overlaps(claimed, start, end)) continue;
      const secret = (d.candidates ? d.candidates(raw) : [raw]).find((s) => !d.validate || d.validate(s, scan));
      if (secret === undefined) continue;
      // Repeats still claim their span, or the second `token: ghp_…` would come back as a password.
      mine.push([start, end]);
      const key = `${d.kind}\0${secret}`;
      if (seen.has(key)) continue;
      seen.add(key);
      findings.push({ detector: d.kind, where, masked: (d.mask ?? maskSecret)(secret), offset: start });
      if (findings.length >= MAX_FINDINGS) break detectors;
    }
    claimed = union(claimed, mine);
  }
  return findings.sort((a, b) => a.offset - b.offset);
}

/**
 * Mask a secret for logs/alerts: e.g. "AKIAIOSFODNN7EXAMPLE" -> "AKIA…(20 chars)". Keeps at most the
 * first 4 characters, and fewer for short secrets (never more than a quarter of it).
 */
export function maskSecret(secret: string): string {
  let head = secret.slice(0, Math.min(4, Math.floor(secret.length / 4)));
  // Half a surrogate pair would print as garbage.
  if (/[\uD800-\uDBFF]$/.test(head)) head = head.slice(0, -1);
  return `${head}…(${secret.length} chars)`;
}

// --- validators -------------------------------------------------------------------------------

/** Bits per character; random keys sit well above 3, words and repeated fillers below. */
function shannonEntropy(s: string): number {
  const counts = new Map<string, number>();
  for (const ch of s) counts.set(ch, (counts.get(ch) ?? 0) + 1);
  let total = 0;
  for (const c of counts.values()) total += c;
  let bits = 0;
  for (const c of counts.values()) bits -= (c / total) * Math.log2(c / total);
  return bits;
}

// Values that stand for a secret rather than being one: templates, environment references, code,
// and the stock phrases of docs and examples. Fillers like `********` or `xxxxxxxx` need no entry:
// their entropy is near zero.
const PLACEHOLDERS: readonly RegExp[] = [
  /^(?:<|&lt;|\[|\().*(?:>|&gt;|\]|\))$/i, // <password>, &lt;token&gt;, [redacted], (hidden)
  /\$\{|\{\{|\}\}|\{%|^\$[A-Za-z_]\w*$|^%[A-Za-z_]\w*%$/, // ${VAR}, {{ x }}, {% x %}, $VAR, %VAR%
  /^[A-Za-z_$][\w$.]*\(/, // getPassword(), os.environ.get(, getenv(
  /change_?me|replace_?me|your[_-]?(?:own[_-]?)?(?:password|passwd|pass|pwd|secret|token|api[_-]?key|key)|_here$|placeholder|redacted|example|dummy/i,
];

function isPlaceholder(value: string): boolean {
  return PLACEHOLDERS.some((p) => p.test(value));
}

/** A JWT's first segment is a JSON header naming its algorithm; random `eyJ…` strings are not. */
function hasJwtHeader(token: string, scan: Scan): boolean {
  const header = Buffer.from(token.slice(0, token.indexOf('.')), 'base64url').toString('utf8');
  // Cheap checks first, so noise that merely starts with `eyJ` never reaches a throwing parse.
  if (!header.includes('"alg"') || !header.trimEnd().endsWith('}')) return false;
  // A text crafted with a million near-JSON headers would cost seconds to parse one by one. Past the
  // budget, fail closed: calling such decoys JWTs can only over-report, never hide a real one.
  if (scan.jsonFailuresLeft <= 0) return true;
  try {
    const parsed: unknown = JSON.parse(header);
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) && typeof (parsed as { alg?: unknown }).alg === 'string';
  } catch {
    scan.jsonFailuresLeft--;
    return false;
  }
}

/**
 * The card numbers a digit run may hold, longest first, as digits only. A number is often followed
 * on the same line by an expiry, CVV or extension ("4111 1111 1111 1111 123"), so the run is also
 * tried cut at each group boundary. Grouped numbers are printed in groups of 3 to 6 digits; runs
 * grouped otherwise (dates, digit-by-digit lists) are not cards.
 */
function cardCandidates(run: string): string[] {
  const groups = run.split(/[ -]/, 20);
  const found: string[] = [];
  const printable = (g: string): boolean => g.length >= 3 && g.length <= 6;
  let digits = '';
  for (let n = 0; n < groups.length; n++) {
    const group = groups[n]!;
    if (n > 0 && !(printable(group) && printable(groups[0]!))) break;
    digits += group;
    if (digits.length > 19) break;
    if (digits.length >= 13) found.push(digits);
  }
  return found.reverse();
}

function luhn(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
    sum += d;
  }
  return sum % 10 === 0;
}

// One in ten random digit strings passes Luhn; requiring a real issuer prefix and that issuer's
// lengths is what keeps order, tracking and phone numbers out.
const ISSUERS: readonly { prefix: RegExp; lengths: readonly number[] }[] = [
  { prefix: /^4/, lengths: [13, 16, 19] }, // Visa
  { prefix: /^(?:5[1-5]|222[1-9]|22[3-9]\d|2[3-6]\d\d|27[01]\d|2720)/, lengths: [16] }, // Mastercard
  { prefix: /^3[47]/, lengths: [15] }, // Amex
  { prefix: /^(?:6011|65)/, lengths: [16, 17, 18, 19] }, // Discover
  { prefix: /^35/, lengths: [16, 17, 18, 19] }, // JCB
  { prefix: /^3[068]/, lengths: [14, 15, 16, 17, 18, 19] }, // Diners Club
];

function plausibleIssuer(digits: string): boolean {
  return ISSUERS.some((i) => i.prefix.test(digits) && i.lengths.includes(digits.length));
}

// --- claimed spans ----------------------------------------------------------------------------

type Span = readonly [start: number, end: number];

/** Whether [start, end) touches any of `spans` (sorted, disjoint). */
function overlaps(spans: readonly Span[], start: number, end: number): boolean {
  let lo = 0;
  let hi = spans.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (spans[mid]![0] < end) lo = mid + 1;
    else hi = mid;
  }
  // spans[lo - 1] is the last span starting before `end`; being disjoint, it also ends last.
  return lo > 0 && spans[lo - 1]![1] > start;
}

/** Merge two sorted lists of spans into one sorted, disjoint list. */
function union(a: readonly Span[], b: readonly Span[]): Span[] {
  if (b.length === 0) return a as Span[];
  const out: [number, number][] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const next = j >= b.length || (i < a.length && a[i]![0] <= b[j]![0]) ? a[i++]! : b[j++]!;
    const last = out[out.length - 1];
    if (last && next[0] <= last[1]) last[1] = Math.max(last[1], next[1]);
    else out.push([next[0], next[1]]);
  }
  return out;
}
