// The loader's NDJSON: every recorded line decodes to its typed event, lines that break the protocol
// become `error` events (never a crash), and the child process: events in order, commands on
// stdin, exit status and message passed on, SIGTERM on stop.

import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeEvent, egressdPath, Loader, LoaderError, runEgressd, type LoaderEvent } from '../../src/monitor/loader.js';
import { waitFor } from '../helpers/relay.js';
import { FIXTURES } from './replay.js';

const FAKE = join(FIXTURES, 'fake-egressd.mjs');

describe('decoding', () => {
  it('every line of every recorded fixture is a valid event', () => {
    const types = new Set<string>();
    for (const f of readdirSync(FIXTURES).filter((n) => n.endsWith('.ndjson'))) {
      for (const line of readFileSync(join(FIXTURES, f), 'utf8').split('\n').filter(Boolean)) {
        const e = decodeEvent(line);
        expect(e.type, `${f}: ${line.slice(0, 100)}`).not.toBe('error');
        types.add(e.type);
      }
    }
    expect([...types].sort()).toEqual(['attach', 'bind', 'connect', 'deny', 'exec', 'kill', 'ready', 'ssl_write', 'stats', 'uncovered', 'write']);
  });

  it('keeps the fields as the protocol gives them', () => {
    const e = decodeEvent('{"type":"ssl_write","pid":4242,"tid":4243,"cgroup_id":10452,"comm":"MainThread","ts_ns":8512334000000,"fn":"SSL_write_ex","ssl":"0x55d4c3a1f2e0","fd":-1,"daddr":null,"dport":null,"family":null,"sni":null,"len":5,"offset":0,"cap":5,"data_b64":"aGVsbG8="}');
    expect(e).toMatchObject({ type: 'ssl_write', pid: 4242, tid: 4243, fn: 'SSL_write_ex', ssl: '0x55d4c3a1f2e0', daddr: null, len: 5 });
  });

  it('a line that breaks the protocol is an error event naming why', () => {
    const cases: [string, RegExp][] = [
      ['not json', /not JSON/],
      ['[1,2]', /not an object/],
      ['{"type":"teleport"}', /unknown type "teleport"/],
      ['{"type":"ssl_write","pid":"1"}', /ssl_write: field pid must be a number/],
      ['{"type":"connect","pid":1,"tid":1,"cgroup_id":1,"comm":"x","ts_ns":1,"daddr":"127.0.0.1"}', /field dport/],
      ['{"type":"__proto__"}', /unknown type/],
    ];
    for (const [line, why] of cases) {
      const e = decodeEvent(line);
      expect(e.type).toBe('error');
      expect((e as Extract<LoaderEvent, { type: 'error' }>).message).toMatch(why);
    }
  });

  it('the loader is found in the package (bpf/egressd), or where POSTGUARD_EGRESSD says', () => {
    expect(egressdPath({})).toMatch(/\/bpf\/egressd$/);
    expect(egressdPath({ POSTGUARD_EGRESSD: '/opt/egressd' })).toBe('/opt/egressd');
  });
});

describe('the child process', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pg-loader-'));
  const calls = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

  it('passes the arguments, delivers every event in order, takes commands, stops on SIGTERM', async () => {
    const log = join(dir, 'run.ndjson');
    const events: LoaderEvent[] = [];
    const loader = new Loader(['monitor', '--relay', '127.0.0.1:2525'], {
      path: FAKE, env: { ...process.env, FAKE_EGRESSD_LOG: log, FAKE_EGRESSD_FIXTURE: join(FIXTURES, 'node-sendgrid-200k.ndjson') }, onEvent: (e) => events.push(e),
    });
    await waitFor(() => events.length === 14, 10_000, 'the 14 events');
    // The head write, then the 200 KB body as 13 records, in order.
    expect(events.map((e) => (e.type === 'ssl_write' ? e.offset : -1))).toEqual([0, ...Array.from({ length: 13 }, (_, i) => i * 16384)]);
    loader.send({ cmd: 'relay', addr: '127.0.0.1', port: 2465 });
    loader.send({ cmd: 'exclude_pid', pid: 1234 });
    await waitFor(() => calls(log).filter((c) => c.stdin).length === 2, 5000, 'the commands');
    const exit = await loader.stop();
    expect(exit.code).toBe(0);
    const seen = calls(log);
    expect(seen[0]).toEqual({ argv: ['monitor', '--relay', '127.0.0.1:2525'] });
    expect(seen.filter((c) => c.stdin).map((c) => c.stdin)).toEqual([{ cmd: 'relay', addr: '127.0.0.1', port: 2465 }, { cmd: 'exclude_pid', pid: 1234 }]);
    loader.send({ cmd: 'exclude_pid', pid: 1 }); // after exit: ignored, no EPIPE crash
  });

  it('an exit with status 2 comes with the loader\'s own message', async () => {
    const loader = new Loader(['monitor'], { path: FAKE, env: { ...process.env, FAKE_EGRESSD_EXIT: '2', FAKE_EGRESSD_STDERR: 'egressd: uprobes need CAP_SYS_ADMIN (perf_uprobe_event_init: EACCES)' }, onEvent: () => {} });
    expect(await loader.exited).toMatchObject({ code: 2, stderr: 'egressd: uprobes need CAP_SYS_ADMIN (perf_uprobe_event_init: EACCES)' });
  });

  it('a loader that cannot be started is an exit, not a crash', async () => {
    const loader = new Loader(['monitor'], { path: join(dir, 'missing'), onEvent: () => {} });
    const exit = await loader.exited;
    expect(exit.code).toBe(127);
    expect(exit.stderr).toMatch(/cannot run .*missing/);
  });

  it('one-shot subcommands: status 0 is success, 2 a LoaderError with code 2 and the message', async () => {
    await expect(runEgressd(['enforce', '--cgroup', '/x', '--pin', '/y'], FAKE, process.env)).resolves.toMatchObject({ stderr: '' });
    const err = await runEgressd(['enforce'], FAKE, { ...process.env, FAKE_EGRESSD_EXIT: '2', FAKE_EGRESSD_STDERR: 'needs CAP_SYS_ADMIN' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoaderError);
    expect(err).toMatchObject({ code: 2, message: 'needs CAP_SYS_ADMIN' });
    const other = await runEgressd(['enforce'], FAKE, { ...process.env, FAKE_EGRESSD_EXIT: '1', FAKE_EGRESSD_STDERR: 'bpffs mount failed' }).catch((e: unknown) => e);
    expect(other).toMatchObject({ code: 1, message: 'bpffs mount failed' });
  });
});
