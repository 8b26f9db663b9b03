// Recipient, sender and host patterns. Matching is on normalized values only, never substrings:
// `example.com` matches the domain exactly, `*.example.com` matches its subdomains (not the apex),
// `user@example.com` matches that mailbox (local part case-sensitive, as RFC 5321 allows).

import { normalizeDomain, parseMailbox, type Mailbox } from '../core/address.js';
import type { Pattern } from './types.js';

/** Parse one pattern as written in a policy file. `@example.com` and `*@example.com` mean the domain. */
export function parsePattern(text: string): { ok: true; value: Pattern } | { ok: false; error: string } {
  const t = text.trim();
  if (t.startsWith('*.')) {
    const d = normalizeDomain(t.slice(2));
    return d.ok ? { ok: true, value: { kind: 'subdomains', domain: d.value, text } } : d;
  }
  const domainOnly = t.startsWith('*@') ? t.slice(2) : t.startsWith('@') ? t.slice(1) : !t.includes('@') ? t : null;
  if (domainOnly !== null) {
    if (domainOnly.includes('*')) return { ok: false, error: 'a wildcard is only allowed as a leading `*.`' };
    const d = normalizeDomain(domainOnly);
    return d.ok ? { ok: true, value: { kind: 'domain', domain: d.value, text } } : d;
  }
  if (t.includes('*')) return { ok: false, error: 'a wildcard is only allowed as a leading `*.` or `*@`' };
  const m = parseMailbox(t);
  return m.ok ? { ok: true, value: { kind: 'address', address: m.value.address, text } } : m;
}

export function matchesDomain(p: Pattern, domain: string): boolean {
  switch (p.kind) {
    case 'domain':
      return domain === p.domain;
    case 'subdomains':
      return domain.endsWith(`.${p.domain}`);
    case 'address':
      return false;
  }
}

export function matchesMailbox(p: Pattern, m: Mailbox): boolean {
  return p.kind === 'address' ? p.address === m.address : matchesDomain(p, m.domain);
}

/** The first pattern that allows the mailbox, for naming the rule in a decision. */
export function findMatch(patterns: readonly Pattern[], m: Mailbox): Pattern | undefined {
  return patterns.find((p) => matchesMailbox(p, m));
}
