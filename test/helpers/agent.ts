// Run agent code the way an agent runs: its own Node process, the provider's official SDK, the
// relay as HTTPS_PROXY (Node's built-in proxy support, NODE_USE_ENV_PROXY=1) and the relay's CA
// trusted through NODE_EXTRA_CA_CERTS. The script prints one JSON line: what the SDK returned or threw.

import { execFile } from 'node:child_process';
import type { TestRelay } from './relay.js';

export interface AgentResult {
  ok: boolean;
  /** What the SDK returned (ok) or the error's message/status/body (not ok). */
  value: any;
  stderr: string;
}

/**
 * `body` is an async function body (ESM, top-level imports not allowed: use `await import(...)`)
 * that returns the SDK's result; a throw is reported as { ok: false }.
 */
export function runAgent(r: TestRelay, body: string, env: Record<string, string> = {}): Promise<AgentResult> {
  const script = `
const run = async () => { ${body} };
run().then(
  (v) => console.log('\\n@@' + JSON.stringify({ ok: true, value: v ?? null })),
  (e) => console.log('\\n@@' + JSON.stringify({ ok: false, value: { message: String(e && e.message), status: e?.statusCode ?? e?.status ?? e?.code ?? e?.$metadata?.httpStatusCode ?? e?.response?.status ?? null, name: e?.name ?? null, body: e?.response?.body ?? e?.response?.data ?? e?.details ?? null } })),
);`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], {
      cwd: process.cwd(),
      timeout: 30_000,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '/tmp',
        HTTPS_PROXY: `http://127.0.0.1:${r.proxyPort}`,
        HTTP_PROXY: `http://127.0.0.1:${r.proxyPort}`,
        NO_PROXY: '',
        NODE_USE_ENV_PROXY: '1',
        NODE_EXTRA_CA_CERTS: r.caFile,
        AWS_EC2_METADATA_DISABLED: 'true',
        ...env,
      },
    }, (err, stdout, stderr) => {
      const line = stdout.split('\n').find((l) => l.startsWith('@@'));
      if (!line) return reject(new Error(`agent script printed no result (${err?.message ?? 'exit 0'}):\n${stdout}\n${stderr}`));
      const parsed = JSON.parse(line.slice(2)) as { ok: boolean; value: unknown };
      resolve({ ...parsed, stderr });
    });
  });
}
