// Load a policy file: YAML with positions → native or seed converter → Policy, or every error found.

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fromNative } from './native.js';
import { readYaml } from './reader.js';
import { fromSeed } from './seed.js';
import type { Policy, PolicyError } from './types.js';

export type LoadResult = { ok: true; policy: Policy } | { ok: false; errors: PolicyError[] };

/** Bigger than any sane policy; a peer-supplied policy (PUT /api/policy) must not exhaust memory. */
const MAX_POLICY_BYTES = 1 << 20;

export function loadPolicyFile(file: string): LoadResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    return { ok: false, errors: [{ file, line: 1, col: 1, message: `cannot read policy: ${(e as Error).message}` }] };
  }
  return parsePolicy(file, text);
}

export function parsePolicy(file: string, text: string): LoadResult {
  if (Buffer.byteLength(text) > MAX_POLICY_BYTES) return { ok: false, errors: [{ file, line: 1, col: 1, message: 'policy file is larger than 1 MiB' }] };
  const { root, errors } = readYaml(file, text);
  if (errors.list.length > 0) return { ok: false, errors: errors.list };
  if (!root.isMap()) {
    root.error('a policy is a YAML mapping (start with `version: 1`)');
    return { ok: false, errors: errors.list };
  }
  const isSeed = (root.entries() ?? []).some(([k]) => k === 'email_security_policy');
  const body = isSeed ? fromSeed(root) : fromNative(root);
  if (errors.list.length > 0) return { ok: false, errors: errors.list };
  const version = createHash('sha256').update(text).digest('hex').slice(0, 16);
  return { ok: true, policy: { ...body, version, file, format: isSeed ? 'seed' : 'native' } };
}
