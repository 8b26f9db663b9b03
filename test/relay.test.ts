// The composition root's safety checks: what `postguard relay` refuses to start with.

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { silentLogger } from '../src/core/log.js';
import { hashPassword } from '../src/policy/password.js';
import { startRelay, StartupError } from '../src/relay.js';

function env(policy: string, extra: Record<string, string> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'pg-start-'));
  writeFileSync(join(dir, 'policy.yaml'), policy);
  return {
    POSTGUARD_POLICY: join(dir, 'policy.yaml'), POSTGUARD_DATA_DIR: join(dir, 'data'), POSTGUARD_CERTS_DIR: join(dir, 'certs'),
    POSTGUARD_SMTP_LISTEN: '127.0.0.1:0', POSTGUARD_SMTPS_LISTEN: 'off', POSTGUARD_ADMIN_LISTEN: 'off', ...extra,
  };
}

const OPEN_POLICY = 'version: 1\nrecipients: [company.com]\n';
const AGENT_POLICY = `version: 1\nrecipients: [company.com]\nagents:\n  bot:\n    password_hash: "${hashPassword('pw')}"\n`;

describe('startup refusals (nothing is bound when they fire)', () => {
  it('a non-loopback listener without an admin token', async () => {
    await expect(startRelay(loadConfig(env(AGENT_POLICY, { POSTGUARD_SMTP_LISTEN: '0.0.0.0:2525' })), silentLogger)).rejects.toThrow(/non-loopback address without POSTGUARD_ADMIN_TOKEN/);
  });

  it('a non-loopback listener with a policy that defines no agent credentials', async () => {
    await expect(startRelay(loadConfig(env(OPEN_POLICY, { POSTGUARD_SMTP_LISTEN: '0.0.0.0:2525', POSTGUARD_ADMIN_TOKEN: 'x'.repeat(24) })), silentLogger)).rejects.toThrow(StartupError);
    await expect(startRelay(loadConfig(env(OPEN_POLICY, { POSTGUARD_ADMIN_LISTEN: '[::]:8025', POSTGUARD_ADMIN_TOKEN: 'x'.repeat(24) })), silentLogger)).rejects.toThrow(/defines no agent credentials/);
  });

  it('a policy with errors, listing them as file:line:col', async () => {
    const e = env('version: 1\nunknown_recipients: maybe\n');
    await expect(startRelay(loadConfig(e), silentLogger)).rejects.toThrow(/policy\.yaml:2:21: unknown_recipients: expected one of strip \| block \| quarantine/);
  });

  it('bad configuration values, naming the variable', () => {
    expect(() => loadConfig({ POSTGUARD_SMTP_LISTEN: 'localhost' })).toThrow(ConfigError);
    expect(() => loadConfig({ POSTGUARD_SMTP_LISTEN: 'localhost' })).toThrow(/POSTGUARD_SMTP_LISTEN: expected host:port/);
    expect(() => loadConfig({ POSTGUARD_UPSTREAM_SMTP: 'http://mail.example' })).toThrow(/POSTGUARD_UPSTREAM_SMTP: scheme must be smtp:/);
    expect(() => loadConfig({ POSTGUARD_UPSTREAM_CA: '/nonexistent/ca.pem' })).toThrow(/POSTGUARD_UPSTREAM_CA: cannot read/);
    expect(() => loadConfig({ POSTGUARD_RESOLVE: 'smtp.example:587=mail.internal:25' })).toThrow(/target must be an IP address/);
    expect(loadConfig({ POSTGUARD_RESOLVE: 'smtp.example:587=127.0.0.1:2526' }).resolve.get('smtp.example:587')).toEqual({ host: '127.0.0.1', port: 2526 });
  });

  it('loopback with the defaults starts (capture mode), and creates the CA and the admin token', async () => {
    const printed: string[] = [];
    const r = await startRelay(loadConfig(env(OPEN_POLICY)), silentLogger, { printToken: (l) => printed.push(l) });
    try {
      expect(r.addresses.smtp?.address).toBe('127.0.0.1');
      expect(printed.join('')).toMatch(/admin token created \(shown once/);
      expect(r.adminToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    } finally {
      await r.close();
    }
  });
});
