// Address parsing is where every recipient decision starts: an address accepted here is compared
// against the policy as-is, so each row below is either "means exactly this mailbox" or "refused".
// Tricks S5–S16 are from ../shared/notes/mail-apis.md §3.

import { domainToASCII } from 'node:url';
import { describe, expect, it } from 'vitest';
import { normalizeDomain, parseAddressList, parseMailbox } from '../../src/core/address.js';

/** `аllowed.com` with a Cyrillic `а` (U+0430) for the first letter: looks like allowed.com. */
const HOMOGRAPH = '\u0430llowed.com';
/** Its A-label, as an attacker would write it to get past a Unicode check. */
const HOMOGRAPH_PUNY = domainToASCII(HOMOGRAPH);

interface Accepted {
  name: string;
  input: string;
  address: string;
  local?: string;
  domain?: string;
  displayName?: string | null;
}

const acceptedMailboxes: Accepted[] = [
  { name: 'plain address', input: 'alice@example.com', address: 'alice@example.com', local: 'alice', domain: 'example.com', displayName: null },
  { name: 'domain is case-folded (S14)', input: 'a@EXAMPLE.COM', address: 'a@example.com', domain: 'example.com' },
  { name: 'local part case is preserved (S14)', input: 'John.Doe@Example.Com', address: 'John.Doe@example.com', local: 'John.Doe' },
  { name: 'one trailing dot is dropped (S14)', input: 'a@example.com.', address: 'a@example.com', domain: 'example.com' },
  { name: 'trailing dot inside angle brackets', input: '<a@Example.com.>', address: 'a@example.com' },
  { name: 'needless quotes are removed', input: '"john"@x.com', address: 'john@x.com', local: 'john' },
  { name: 'quoted dot-atom is the same dot-atom', input: '"a.b"@x.com', address: 'a.b@x.com', local: 'a.b' },
  { name: 'angle brackets', input: '<a@b.com>', address: 'a@b.com' },
  { name: 'source route is dropped, final mailbox kept (S12)', input: '<@a.com,@b.com:x@c.com>', address: 'x@c.com', domain: 'c.com' },
  { name: 'bare source route (RCPT argument form, S12)', input: '@a.com:x@b.com', address: 'x@b.com', domain: 'b.com' },
  { name: 'IDN domain goes to its A-label (S8)', input: 'user@bücher.de', address: 'user@xn--bcher-kva.de', domain: 'xn--bcher-kva.de' },
  { name: 'A-label stays as written', input: 'user@xn--bcher-kva.de', address: 'user@xn--bcher-kva.de' },
  { name: 'soft hyphen is ignored: compared on the A-label (S8)', input: 'user@ex\u00ADample.com', address: 'user@example.com', domain: 'example.com' },
  { name: 'fullwidth letters map to ASCII (UTS #46)', input: 'user@\uFF25\uFF38\uFF21\uFF2D\uFF30\uFF2C\uFF25.com', address: 'user@example.com' },
  { name: 'ideographic full stop is a dot (UTS #46)', input: 'x@example\u3002com', address: 'x@example.com' },
  { name: 'zero-width space is ignored: compared on the A-label (S8)', input: 'x@allowed\u200B.com', address: 'x@allowed.com' },
  { name: 'whole-script Cyrillic look-alike keeps its own A-label (S9)', input: 'x@\u0430\u0440\u0440\u04CF\u0435.com', address: 'x@xn--80ak6aa92e.com' },
  { name: 'display name is kept only as name', input: 'Alice Example <alice@example.com>', address: 'alice@example.com', displayName: 'Alice Example' },
  {
    name: 'address in the display name is not the address (S15)',
    input: '"ceo@allowed.com" <x@evil.com>',
    address: 'x@evil.com',
    local: 'x',
    domain: 'evil.com',
    displayName: 'ceo@allowed.com',
  },
];

describe('parseMailbox: accepted and normalized', () => {
  for (const c of acceptedMailboxes) {
    it(`${c.name}: ${JSON.stringify(c.input)} → ${c.address}`, () => {
      const r = parseMailbox(c.input);
      expect(r).toMatchObject({ ok: true });
      if (!r.ok) return;
      expect(r.value.address).toBe(c.address);
      expect(r.value.address).toBe(`${r.value.local}@${r.value.domain}`);
      if (c.local !== undefined) expect(r.value.local).toBe(c.local);
      if (c.domain !== undefined) expect(r.value.domain).toBe(c.domain);
      if (c.displayName !== undefined) expect(r.value.name).toBe(c.displayName);
    });
  }

  it('the display name never leaks into address, local or domain (S15)', () => {
    const r = parseMailbox('"ceo@allowed.com" <x@evil.com>');
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(`${r.value.address} ${r.value.local} ${r.value.domain}`).not.toContain('allowed.com');
  });
});

interface Refused {
  name: string;
  input: string;
  error: string | RegExp;
}

const refusedMailboxes: Refused[] = [
  // S7: comments. email-addresses would read `good.com(x)evil.com` as domain good.comevil.com.
  { name: 'comment glued into the domain (S7)', input: 'user@good.com(x)evil.com', error: /comment|not a valid RFC 5322/ },
  { name: 'comment in the local part (S7)', input: 'user(x)@example.com', error: 'comments are not allowed' },
  { name: 'comment after the domain (S7)', input: 'user@example.com(x)', error: 'comments are not allowed' },
  { name: 'comment after the address, with a space', input: 'a@x.com (c)', error: /comment|space/ },
  // S10: encoded-words
  { name: 'encoded-word local part (S10)', input: '=?utf-8?q?a=40b?=c@host.com', error: 'encoded-words are not allowed' },
  { name: 'encoded-word decoding to an address and `>` (S10)', input: '=?x?q?attacker=40evil.com=3e=00?=@allowed.com', error: 'encoded-words are not allowed' },
  { name: 'encoded-word inside quotes (S10)', input: '"=?utf-8?b?YUBi?="@x.com', error: 'encoded-words are not allowed' },
  // S5/S6: parameter smuggling and quoted specials
  { name: 'RCPT parameter smuggling via a quoted local part (S5)', input: '"foo@psres.net> ORCPT=admin@admin.com"@test.com', error: 'angle bracket' },
  { name: 'quoted local part with `@` and space (S6)', input: '"attacker@gmail.com x"@allowed.example', error: 'space' },
  { name: 'quoted local part with `@` (S6)', input: '"attacker@gmail.com"@allowed.example', error: 'not a plain dot-atom' },
  { name: 'quoted local part with a space (S6)', input: '<"a b"@x.com>', error: /space|non-ASCII or control/ },
  { name: 'space in the local part', input: 'a b@x.com', error: 'space' },
  { name: '`>` inside', input: 'a>b@x.com', error: 'angle bracket' },
  { name: '`<` inside', input: 'a<b@x.com', error: 'angle bracket' },
  { name: 'unbalanced `<`', input: '<a@b.com', error: 'angle bracket' },
  { name: 'trailing `>`', input: 'a@b.com>', error: 'angle bracket' },
  { name: 'CR/LF injection of a second command', input: 'a@x.com\r\nRCPT TO:<b@y.com>', error: /CR\/LF|CR, LF/ },
  { name: 'bare LF', input: 'a@x.com\nb@y.com', error: /CR\/LF|CR, LF/ },
  { name: 'bare CR', input: 'a@x.com\rb', error: /CR\/LF|CR, LF/ },
  { name: 'NUL', input: 'a\0b@x.com', error: 'NUL' },
  { name: 'backslash escape', input: '"a\\"b"@x.com', error: 'backslash' },
  // S13: routing in the local part
  { name: 'percent hack (S13)', input: 'user%evil.com@allowed.com', error: '`%` and `!` routing' },
  { name: 'bang path (S13)', input: 'evil.com!user@allowed.com', error: '`%` and `!` routing' },
  // S14: address literals
  { name: 'IPv4 address literal (S14)', input: 'user@[1.2.3.4]', error: 'IP address literals are not allowed' },
  { name: 'IPv6 address literal (S14)', input: 'user@[IPv6:2001:db8::1]', error: /IP address literals|not a valid RFC 5322/ },
  // S9: homographs
  { name: 'mixed-script homograph (Cyrillic а, S9)', input: `x@${HOMOGRAPH}`, error: 'mixes scripts' },
  { name: 'punycode of a mixed-script homograph (S9)', input: `x@${HOMOGRAPH_PUNY}`, error: 'mixes scripts' },
  { name: 'punycode that does not decode', input: 'x@xn--zz.com', error: /IDNA|punycode/ },
  // S11: non-ASCII local parts
  { name: 'non-ASCII local part (S11)', input: 'josé@x.com', error: 'non-ASCII' },
  { name: 'fullwidth @-lookalike in the local part (S11)', input: 'a\uFF20b@x.com', error: /non-ASCII|not a valid RFC 5322/ },
  // shape
  { name: 'empty quoted local part', input: '""@x.com', error: 'empty local part' },
  { name: 'no local part at all', input: '@x.com', error: /empty local part|not a valid RFC 5322/ },
  { name: 'local part over 64 octets', input: `${'a'.repeat(65)}@x.com`, error: 'longer than 64' },
  { name: 'empty domain label', input: 'a@b..com', error: /empty domain label|not a valid RFC 5322/ },
  { name: 'leading dot in domain', input: 'a@.b.com', error: /empty domain label|not a valid RFC 5322/ },
  { name: 'two trailing dots', input: 'a@b.com..', error: /empty domain label|IDNA|not a valid RFC 5322/ },
  { name: 'leading hyphen in a label', input: 'a@-bad.com', error: 'not a valid IDNA hostname' },
  { name: 'underscore in the domain (STD3)', input: 'a@b_c.com', error: 'not a valid IDNA hostname' },
  { name: 'label over 63 octets', input: `a@${'x'.repeat(64)}.com`, error: 'not a valid IDNA hostname' },
  { name: 'double dot in the local part', input: 'a..b@x.com', error: /dot-atom|not a valid RFC 5322/ },
  { name: 'no @ at all', input: 'just-a-name', error: /not a valid RFC 5322|expected exactly one/ },
  { name: 'two addresses where one is expected', input: 'a@b.com, c@d.com', error: /space|exactly one|not a valid RFC 5322/ },
  { name: 'empty input', input: '', error: /not a valid RFC 5322|exactly one/ },
];

describe('parseMailbox: refused', () => {
  for (const c of refusedMailboxes) {
    it(`${c.name}: ${JSON.stringify(c.input)}`, () => {
      const r = parseMailbox(c.input);
      expect(r.ok, `accepted as ${JSON.stringify(r.ok ? r.value : null)}`).toBe(false);
      if (r.ok) return;
      if (typeof c.error === 'string') expect(r.error).toContain(c.error);
      else expect(r.error).toMatch(c.error);
    });
  }
});

describe('parseAddressList', () => {
  const accepted: { name: string; input: string; addresses: string[]; names?: (string | null)[] }[] = [
    { name: 'empty header', input: '', addresses: [] },
    { name: 'whitespace only', input: '   ', addresses: [] },
    { name: 'two mailboxes, domains case-folded', input: 'a@x.com, B@Y.COM', addresses: ['a@x.com', 'B@y.com'] },
    { name: 'group members are flattened (S16)', input: 'Team: a@allowed.com, b@evil.com;', addresses: ['a@allowed.com', 'b@evil.com'] },
    { name: 'group followed by a mailbox (S16)', input: 'Team: a@x.com;, b@y.com', addresses: ['a@x.com', 'b@y.com'] },
    { name: 'undisclosed-recipients:; is an empty list (S16)', input: 'undisclosed-recipients:;', addresses: [] },
    { name: 'folded header is unfolded (S18)', input: 'a@x.com,\r\n\tb@evil.com', addresses: ['a@x.com', 'b@evil.com'] },
    {
      name: 'display name with an address keeps the real address (S15)',
      input: '"ceo@allowed.com" <x@evil.com>',
      addresses: ['x@evil.com'],
      names: ['ceo@allowed.com'],
    },
    {
      name: 'encoded-word display name is only a name (S15)',
      input: '=?utf-8?q?ceo=40allowed.com?= <x@evil.com>',
      addresses: ['x@evil.com'],
    },
    { name: 'named and bare mixed', input: 'A <a@b.com>, c@d.com', addresses: ['a@b.com', 'c@d.com'], names: ['A', null] },
    { name: 'IDN and trailing dot in a list', input: 'u@bücher.de., v@Example.COM.', addresses: ['u@xn--bcher-kva.de', 'v@example.com'] },
    { name: 'source route then another mailbox (S12)', input: '<@a.com:x@c.com>, y@d.com', addresses: ['x@c.com', 'y@d.com'] },
  ];
  for (const c of accepted) {
    it(`accepts ${c.name}: ${JSON.stringify(c.input)}`, () => {
      const r = parseAddressList(c.input);
      expect(r, JSON.stringify(r)).toMatchObject({ ok: true });
      if (!r.ok) return;
      expect(r.value.map((m) => m.address)).toEqual(c.addresses);
      if (c.names) expect(r.value.map((m) => m.name)).toEqual(c.names);
    });
  }

  const refused: Refused[] = [
    { name: 'one bad member refuses the whole list (IP literal)', input: 'a@x.com, user@[1.2.3.4]', error: 'IP address literals' },
    { name: 'one bad member refuses the whole list (percent hack)', input: 'ok@x.com, user%evil.com@x.com', error: '`%` and `!` routing' },
    { name: 'bad group member refuses the whole list', input: 'Team: a@x.com, user%y@x.com;', error: '`%` and `!` routing' },
    { name: 'homograph member refuses the list', input: `a@x.com, b@${HOMOGRAPH}`, error: 'mixes scripts' },
    { name: 'comment on one member (S7)', input: 'a@x.com (c), b@y.com', error: 'comments are not allowed' },
    { name: 'comment glued into a domain (S7)', input: 'user@good.com(x)evil.com', error: /comment|not a valid RFC 5322/ },
    { name: 'encoded-word member (S10)', input: 'a@x.com, =?utf-8?q?a=40b?=c@host.com', error: 'encoded-words' },
    { name: 'quoted local part with `@` (S6)', input: '"a@b"@x.com', error: 'not a plain dot-atom' },
    { name: 'quoted local part with a space (S6)', input: '"a b"@x.com', error: /non-ASCII or control|space|dot-atom/ },
    { name: 'bare LF between members (S18)', input: 'a@x.com,\nb@y.com', error: 'bare CR, LF or NUL' },
    { name: 'folded line with a bare CR', input: 'a@x.com,\r\n\tb@y.com\rc@z.com', error: 'bare CR, LF or NUL' },
    { name: 'empty member', input: 'a@x.com,,b@y.com', error: 'not a valid RFC 5322' },
  ];
  for (const c of refused) {
    it(`refuses ${c.name}: ${JSON.stringify(c.input)}`, () => {
      const r = parseAddressList(c.input);
      expect(r.ok, `accepted as ${JSON.stringify(r.ok ? r.value : null)}`).toBe(false);
      if (r.ok) return;
      if (typeof c.error === 'string') expect(r.error).toContain(c.error);
      else expect(r.error).toMatch(c.error);
    });
  }
});

describe('normalizeDomain', () => {
  const ok: [string, string][] = [
    ['EXAMPLE.COM', 'example.com'],
    ['example.com.', 'example.com'],
    ['  example.com  ', 'example.com'],
    ['bücher.de', 'xn--bcher-kva.de'],
    ['BÜCHER.de', 'xn--bcher-kva.de'],
    ['xn--bcher-kva.de', 'xn--bcher-kva.de'],
    ['ex\u00ADample.com', 'example.com'],
    ['sub.example.com', 'sub.example.com'],
  ];
  for (const [input, out] of ok) {
    it(`${JSON.stringify(input)} → ${out}`, () => {
      expect(normalizeDomain(input)).toEqual({ ok: true, value: out });
    });
  }

  const bad: [string, string][] = [
    ['[1.2.3.4]', 'IP address literals'],
    ['a..b', 'empty domain label'],
    ['', 'empty domain label'],
    ['.', 'empty domain label'],
    ['-bad.com', 'not a valid IDNA hostname'],
    ['a_b.com', 'not a valid IDNA hostname'],
    [`${'x'.repeat(64)}.com`, 'not a valid IDNA hostname'],
    [HOMOGRAPH, 'mixes scripts'],
    [HOMOGRAPH_PUNY, 'mixes scripts'],
    ['exa mple.com', 'not a valid IDNA hostname'],
  ];
  for (const [input, error] of bad) {
    it(`refuses ${JSON.stringify(input)} (${error})`, () => {
      const r = normalizeDomain(input);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).toContain(error);
    });
  }

  it('the homograph and the real domain never normalize to the same A-label', () => {
    expect(HOMOGRAPH_PUNY).toMatch(/^xn--/);
    expect(HOMOGRAPH_PUNY).not.toBe('allowed.com');
  });
});
