// Start a real relay in-process on 127.0.0.1 ephemeral ports, with its own data/certs dirs.

import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config.js';
import { createLogger, type Logger } from '../../src/core/log.js';
import { startRelay, type Relay } from '../../src/relay.js';

export interface TestRelay {
  relay: Relay;
  dir: string;
  policyFile: string;
  smtpPort: number;
  smtpsPort: number;
  adminPort: number;
  caPem: string;
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

export async function startTestRelay(opts: { policy: string; env?: Record<string, string>; log?: Logger }): Promise<TestRelay> {
  const dir = mkdtempSync(join(tmpdir(), 'pg-relay-'));
  const policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, opts.policy);
  const logs: Record<string, unknown>[] = [];
  const log = opts.log ?? createLogger((line) => logs.push(JSON.parse(line) as Record<string, unknown>), 'debug');
  const cfg = loadConfig({
    POSTGUARD_POLICY: policyFile,
    POSTGUARD_DATA_DIR: join(dir, 'data'),
    POSTGUARD_CERTS_DIR: join(dir, 'certs'),
    POSTGUARD_SMTP_LISTEN: '127.0.0.1:0',
    POSTGUARD_SMTPS_LISTEN: '127.0.0.1:0',
    POSTGUARD_ADMIN_LISTEN: '127.0.0.1:0',
    POSTGUARD_ADMIN_TOKEN: 'test-admin-token-0123456789',
    ...opts.env,
  });
  const relay = await startRelay(cfg, log, { printToken: () => {} });
  return {
    relay,
    dir,
    policyFile,
    smtpPort: relay.addresses.smtp!.port,
    smtpsPort: relay.addresses.smtps!.port,
    adminPort: relay.addresses.admin!.port,
    caPem: readFileSync(join(dir, 'certs', 'ca.pem'), 'utf8'),
    logs,
    close: () => relay.close(),
  };
}

/** GET an admin API path with the test token. */
export async function adminGet(r: TestRelay, path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`http://127.0.0.1:${r.adminPort}${path}`, { headers: { authorization: 'Bearer test-admin-token-0123456789' } });
  return { status: res.status, body: await res.json() };
}
