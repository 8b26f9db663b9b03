// Strict address parsing and normalization. Every policy decision is made on the exact mailbox that
// will be handed to the upstream, so anything whose meaning differs between parsers is refused
// rather than guessed at (see ../shared/notes/mail-apis.md S5–S16).
//
// Grammar: `email-addresses` (an RFC 5322 parser that gives the AST, so comments and quoting are
// visible). Domains: `tr46` (UTS #46) to the A-label that goes on the wire.

import emailAddresses from 'email-addresses';
import tr46 from 'tr46';

export interface Mailbox {
  /** `local@domain` exactly as it will be sent: unquoted local part, A-label domain, no trailing dot. */
  address: string;
  local: string;
  domain: string;
  /** Display name, for humans only: never used for a decision (S15). */
  name: string | null;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

const fail = (error: string): { ok: false; error: string } => ({ ok: false, error });

// dot-atom per RFC 5322 §3.2.3, minus `%` and `!` (percent hack, bang paths: S13) and `?`/`=`
// sequences used by encoded-words (S10). ASCII only: non-ASCII local parts are refused (S11).
const ATEXT = "A-Za-z0-9#$&'*+/=?^_`{|}~\\-";
const DOT_ATOM_LOCAL = new RegExp(`^[${ATEXT}]+(\\.[${ATEXT}]+)*$`);
const FORBIDDEN_ANYWHERE = /[\r\n\0<>\s\\]/;

/** Parse one mailbox: an RCPT/MAIL argument, `a@b`, `<a@b>`, `Name <a@b>`, or a source route. */
export function parseMailbox(input: string): Parsed<Mailbox> {
  if (FORBIDDEN_ANYWHERE.test(stripAngleAndName(input))) return fail('address contains a space, CR/LF, NUL, backslash or angle bracket');
  const list = parseAddressList(input.includes('<') ? input : `<${input}>`);
  if (!list.ok) return list;
  if (list.value.length !== 1) return fail('expected exactly one address');
  return { ok: true, value: list.value[0]! };
}

/**
 * Parse a header value (To, Cc, Bcc, Resent-*, Reply-To): a list of mailboxes and groups, with
 * group members flattened (S16). Refuses the whole value if any member is refused: a header we
 * cannot fully read is not one we can vouch for.
 */
export function parseAddressList(input: string): Parsed<Mailbox[]> {
  // Agents send to the same few addresses over and over, and the RFC 5322 grammar is the relay's
  // most expensive per-message step after MIME parsing: remember recent answers (they are frozen).
  const cached = listCache.get(input);
  if (cached) return cached;
  if (input.length > MAX_LIST_CHARS) return fail(`address list longer than ${MAX_LIST_CHARS} characters`);
  const result = Object.freeze(parseAddressListUncached(input));
  if (input.length <= MAX_CACHED_CHARS) {
    if (listCache.size >= 10_000) listCache.delete(listCache.keys().next().value!);
    listCache.set(input, result);
  }
  return result;
}

const listCache = new Map<string, Parsed<Mailbox[]>>();
/** The grammar costs ~7 µs per character: a bound keeps one header from stalling the relay. */
const MAX_LIST_CHARS = 64 * 1024;
/** Only everyday-sized values are worth remembering (and bound the cache's memory). */
const MAX_CACHED_CHARS = 1024;

function parseAddressListUncached(input: string): Parsed<Mailbox[]> {
  const unfolded = input.replace(/\r\n(?=[ \t])/g, '');
  if (/[\r\n\0]/.test(unfolded)) return fail('bare CR, LF or NUL in an address');
  if (unfolded.trim() === '') return { ok: true, value: [] };
  // One trailing dot on a domain is legal DNS (absolute name) but the grammar refuses it; drop it
  // before `>`, `,`, `;` or the end so `a@b.com.` means `a@b.com` (S14).
  const input2 = unfolded.replace(/\.(?=\s*(?:>|,|;|$))/g, '');
  const result = emailAddresses({ input: input2, rfc6532: true, startAt: 'address-list', rejectTLD: false });
  // No excerpt of the value: it is the agent's content and ends up in the audit log.
  if (!result) return fail(`not a valid RFC 5322 address list (${unfolded.length} characters)`);
  const out: Mailbox[] = [];
  for (const entry of result.addresses) {
    const members = entry.type === 'group' ? entry.addresses : [entry];
    for (const m of members) {
      const mailbox = normalizeParsed(m);
      if (!mailbox.ok) return mailbox;
      out.push(Object.freeze(mailbox.value));
    }
  }
  return { ok: true, value: Object.freeze(out) as Mailbox[] };
}

function normalizeParsed(m: emailAddresses.ParsedMailbox): Parsed<Mailbox> {
  const shown = truncate(m.address);
  // email-addresses reports whitespace as CFWS too; only a parenthesised comment is a comment (S7).
  if (m.parts.comments.some((c) => c.tokens.includes('('))) return fail(`comments are not allowed in addresses: ${shown}`);
  const local = unquoteLocal(m.local);
  if (!local.ok) return fail(`${local.error}: ${shown}`);
  const domain = normalizeDomain(m.domain);
  if (!domain.ok) return fail(`${domain.error}: ${shown}`);
  const address = `${local.value}@${domain.value}`;
  return { ok: true, value: { address, local: local.value, domain: domain.value, name: m.name } };
}

function unquoteLocal(raw: string): Parsed<string> {
  // The grammar leaves folding white space that follows an obsolete route inside the next member.
  let local = raw.trim();
  // A quoted local part is accepted only when it means the same unquoted (`"john"` = `john`);
  // anything that needs the quotes (`@`, spaces, `>`) is what parameter smuggling uses (S5, S6).
  if (local.startsWith('"')) {
    if (!local.endsWith('"') || local.length < 2) return fail('unterminated quoted local part');
    local = local.slice(1, -1);
    if (local.includes('\\')) return fail('escapes in a quoted local part are not allowed');
  }
  if (local.length === 0) return fail('empty local part');
  if (local.length > 64) return fail('local part longer than 64 octets');
  if (/[^\x21-\x7e]/.test(local)) return fail('non-ASCII or control characters in the local part');
  if (/[%!]/.test(local)) return fail('`%` and `!` routing in the local part are not allowed');
  if (local.includes('=?')) return fail('encoded-words are not allowed in addresses');
  if (!DOT_ATOM_LOCAL.test(local)) return fail('local part is not a plain dot-atom');
  return { ok: true, value: local };
}

/** Normalize a domain to the A-label that goes on the wire (UTS #46, non-transitional). */
export function normalizeDomain(raw: string): Parsed<string> {
  let domain = raw.trim();
  if (domain.startsWith('[')) return fail('IP address literals are not allowed');
  if (domain.endsWith('.')) domain = domain.slice(0, -1);
  if (domain === '' || domain.includes('..')) return fail('empty domain label');
  const ascii = tr46.toASCII(domain, {
    checkBidi: true,
    checkHyphens: true,
    checkJoiners: true,
    useSTD3ASCIIRules: true,
    verifyDNSLength: true,
    transitionalProcessing: false,
  });
  if (ascii === null) return fail('domain is not a valid IDNA hostname');
  for (const label of ascii.split('.')) {
    if (!label.startsWith('xn--')) continue;
    const { domain: unicode, error } = tr46.toUnicode(label, { checkBidi: true, checkHyphens: true, checkJoiners: true, useSTD3ASCIIRules: true });
    if (error) return fail('domain has an invalid punycode label');
    if (isMixedScript(unicode)) return fail('domain label mixes scripts (possible homograph)');
  }
  return { ok: true, value: ascii };
}

// Scripts that legitimately mix within one label (UTS #39 "highly restrictive" profile).
const SCRIPTS = ['Latin', 'Greek', 'Cyrillic', 'Armenian', 'Hebrew', 'Arabic', 'Georgian', 'Han', 'Hiragana', 'Katakana', 'Hangul', 'Bopomofo', 'Thai', 'Devanagari'] as const;
const SCRIPT_RES = SCRIPTS.map((s) => [s, new RegExp(`\\p{Script=${s}}`, 'u')] as const);
const ALLOWED_MIXES = [
  new Set(['Latin', 'Han', 'Hiragana', 'Katakana']),
  new Set(['Latin', 'Han', 'Bopomofo']),
  new Set(['Latin', 'Han', 'Hangul']),
];

function isMixedScript(label: string): boolean {
  const found = new Set<string>();
  for (const ch of label) {
    if (!/\p{L}/u.test(ch)) continue;
    const script = SCRIPT_RES.find(([, re]) => re.test(ch));
    found.add(script ? script[0] : 'Other');
  }
  if (found.size <= 1) return false;
  return !ALLOWED_MIXES.some((mix) => [...found].every((s) => mix.has(s)));
}

/** Remove `Display Name <...>` wrapping so the bare address can be checked for forbidden characters. */
function stripAngleAndName(input: string): string {
  const m = /<([^<>]*)>\s*$/.exec(input);
  return m ? m[1]! : input;
}

function truncate(s: string): string {
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

/**
 * A mailbox as header or API text, for rewritten lists: `"Name" <local@domain>`. `encode` makes a
 * non-ASCII name an RFC 2047 encoded-word (MIME headers); JSON and form fields carry UTF-8 as is.
 */
export function formatMailbox(m: Mailbox, encode: (name: string) => string = (n) => n): string {
  if (!m.name) return m.address;
  const name = /^[\x20-\x7e]*$/.test(m.name) ? `"${m.name.replace(/["\\]/g, '\\$&')}"` : encode(m.name);
  return `${name} <${m.address}>`;
}
