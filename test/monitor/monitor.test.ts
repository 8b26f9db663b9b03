// The monitor end to end on recorded loader output: one report per bypass (merged, deduplicated,
// the relay's traffic and its pid left out), coverage, and `postguard monitor` itself with a
// stand-in loader (fixtures/fake-egressd.mjs): arguments, commands, exit statuses, SIGTERM.

import { mkdirSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/log.js';
import { RelaySet } from '../../src/monitor/classify.js';
import type { LoaderEvent } from '../../src/monitor/loader.js';
import { CgroupIndex, findCgroup2Mount, killMarkers, Monitor, monitorCommand, pinDirFor, resolveCgroup, resolvers, type MonitorOptions } from '../../src/monitor/monitor.js';
import { Reporter, type Report } from '../../src/monitor/report.js';
import { adminGet, ADMIN_TOKEN, alerts, companyPolicy, startTestRelay, waitFor, type TestRelay } from '../helpers/relay.js';
import { fixture, FIXTURES } from './replay.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function harness(opts: Partial<MonitorOptions> = {}) {
  const reports: Report[] = [];
  const lines: Record<string, unknown>[] = [];
  const relays = new RelaySet();
  relays.add('127.0.0.1', 2525);
  relays.add('127.0.0.1', 2465);
  const monitor = new Monitor({
    log: createLogger((l) => lines.push(JSON.parse(l) as Record<string, unknown>)),
    reporter: { send: (r) => reports.push(r) },
    relays, excludePids: new Set([1000]), coalesceMs: 5, exeOf: () => null, ...opts,
  });
  const feed = async (events: LoaderEvent[]) => {
    for (const e of events) monitor.handle(e);
    await monitor.flush();
  };
  const bypasses = () => reports.filter((r) => r.kind === 'bypass');
  return { monitor, reports, lines, feed, bypasses };
}

describe('Monitor on recorded loader output', () => {
  it('node + Postmark: one bypass (the retries are one write), the relay pid and the read left out, coverage reported', async () => {
    const h = harness();
    await h.feed(fixture('node-postmark.ndjson'));
    expect(h.bypasses()).toHaveLength(1);
    expect(h.bypasses()[0]).toMatchObject({
      pid: 4242, comm: 'MainThread', exe: '/work/main/.tools/node24/node_modules/node/bin/node', destination: '127.0.0.1:44301',
      sni: 'api.postmarkapp.com', host: 'api.postmarkapp.com', protocol: 'mail-api', provider: 'postmark', action: 'alerted', cgroup_id: 10452,
    });
    expect(h.bypasses()[0]!.recipients).toEqual(['alice@company.com', 'phan@giftshop.club']);
    const coverage = h.reports.filter((r) => r.kind === 'coverage');
    expect(coverage[0]).toMatchObject({ probes: 19, hooked_count: 3, failed_count: 1, uncovered_count: 1, drops: 0 });
    expect(coverage[0]!.uncovered).toEqual([{ path: '/opt/agent/bin/mailer', pid: 4800, reason: 'no TLS symbols (stripped?)' }]);
    // Printed too: ready, then the bypass line.
    expect(h.lines.find((l) => l.event === 'ready')).toMatchObject({ probes: 19, version: 1 });
    expect(h.lines.find((l) => l.event === 'bypass')).toMatchObject({ level: 'warn', kind: 'bypass', pid: 4242, provider: 'postmark' });
    expect(h.monitor.counts.relay).toBe(0);
  });

  it('coverage is reported again when it changes, not when the loader repeats itself', async () => {
    const h = harness();
    await h.feed(fixture('node-postmark.ndjson').filter((e) => e.type === 'attach' || e.type === 'uncovered' || e.type === 'ready'));
    const again = fixture('node-postmark.ndjson').filter((e) => e.type === 'attach');
    for (const e of again) h.monitor.handle(e); // a rescan: nothing new
    h.monitor.handle({ type: 'attach', path: '/tmp/copied/node', dev: 2049, ino: 99, lib: 'openssl', symbols: ['SSL_write'], ok: true });
    h.monitor.handle({ type: 'uncovered', path: '/opt/agent/bin/mailer', pid: 4900, reason: 'no TLS symbols (stripped?)' }); // known
    await waitFor(() => h.reports.filter((r) => r.kind === 'coverage').length === 2, 5000, 'the second coverage report');
    await sleep(700);
    const coverage = h.reports.filter((r) => r.kind === 'coverage');
    expect(coverage).toHaveLength(2);
    expect(coverage[1]).toMatchObject({ hooked_count: 4, uncovered_count: 1 });
  });

  it('traffic to the relay address is not a bypass; the same process straight to a server is', async () => {
    const h = harness();
    await h.feed(fixture('python-ssl-reuse.ndjson'));
    expect(h.monitor.counts.relay).toBe(7);
    expect(h.bypasses()).toHaveLength(1);
    const [b] = h.bypasses();
    expect(b).toMatchObject({ pid: 5151, protocol: 'smtp-tls', destination: '127.0.0.1:4465', sni: 'mx.giftshop.club', sender: 'agent@company.com', recipients: ['phan@giftshop.club'], fn: 'SSL_write_ex' });
    expect(JSON.stringify(h.reports)).not.toContain('alice@company.com');
  });

  it('plain SMTP: the connect to 587 and its commands are one report; the session with the relay none', async () => {
    const h = harness();
    await h.feed(fixture('plain-smtp.ndjson'));
    expect(h.bypasses()).toHaveLength(1);
    expect(h.bypasses()[0]).toMatchObject({ protocol: 'smtp-plain', destination: '127.0.0.1:587', recipients: ['bob@company.com', 'phan@giftshop.club'] });
  });

  it('s_client, curl: reported with their recipients', async () => {
    const h = harness();
    await h.feed([...fixture('s-client.ndjson'), ...fixture('curl-late-bind.ndjson')]);
    const byPid = Object.fromEntries(h.bypasses().map((b) => [b.pid, b]));
    expect(byPid[7171]).toMatchObject({ protocol: 'smtp-tls', exe: '/usr/bin/openssl', recipients: ['phan@giftshop.club', 'bob.smith@company.com'] });
    expect(byPid[7171]!.secrets).toEqual([{ detector: 'aws', masked: 'AKIA…(20 chars)' }]);
    expect(byPid[7171]!.excerpt).not.toContain('AKIAIOSFODNN7EXAMPLE');
    expect(byPid[6161]).toMatchObject({ protocol: 'mail-api', provider: 'postmark', endpoint: 'email.batch', destination: '127.0.0.1:44303' });
  });

  it('--kill: the kill and the write it stopped are one report, action killed', async () => {
    const h = harness();
    await h.feed(fixture('kill.ndjson'));
    const byPid = Object.fromEntries(h.bypasses().map((b) => [b.pid, b]));
    expect(h.bypasses()).toHaveLength(2);
    expect(byPid[4501]).toMatchObject({ action: 'killed', protocol: 'smtp-tls', marker: 'RCPT TO:', recipients: ['phan@giftshop.club'], sender: 'agent@company.com' });
    expect(byPid[4502]).toMatchObject({ action: 'killed', protocol: 'connect', destination: '127.0.0.1:25' });
  });

  it('a flow already reported is reported again only for something new', async () => {
    const h = harness();
    await h.feed(fixture('python-ssl-reuse.ndjson'));
    await sleep(20);
    await h.feed(fixture('python-ssl-reuse.ndjson'));
    expect(h.bypasses()).toHaveLength(1);
    const more = fixture('s-client.ndjson').map((e) => ('pid' in e ? { ...e, pid: 5151 } : e)) as LoaderEvent[];
    await h.feed(more); // same process and destination, a new recipient
    expect(h.bypasses()).toHaveLength(2);
    expect(h.bypasses()[1]!.recipients).toEqual(['phan@giftshop.club', 'bob.smith@company.com']);
  });

  it('each mail-API send is its own report', async () => {
    const h = harness();
    const events = fixture('node-postmark.ndjson');
    await h.feed(events);
    await sleep(1100); // past the retry dedupe window: the same bytes again are a second send
    await h.feed(events.filter((e) => e.type === 'ssl_write'));
    expect(h.bypasses().filter((b) => b.pid === 4242)).toHaveLength(2);
  });

  it('a connect from an enforced cgroup to a non-allowed address says denied, with the cgroup path', async () => {
    const root = mkdtempSync(join(tmpdir(), 'pg-cg-'));
    const box = join(root, 'agents', 'box1');
    mkdirSync(box, { recursive: true });
    const allow = new RelaySet();
    allow.add('127.0.0.1', 2525);
    const h = harness({ cgroups: new CgroupIndex([join(root, 'agents')]), enforced: { root: join(root, 'agents'), allow } });
    const id = statSync(box).ino;
    await h.feed([{ type: 'connect', pid: 9001, tid: 9001, cgroup_id: id, comm: 'python3', ts_ns: 1, fd: 3, daddr: '198.51.100.7', dport: 25, family: 4, proto: 'tcp' }]);
    expect(h.bypasses()[0]).toMatchObject({ action: 'denied', protocol: 'connect', cgroup: box, destination: '198.51.100.7:25' });
  });

  it('names the recipients the relay policy does not allow', async () => {
    const h = harness({ unknownRecipient: (m) => m.domain !== 'company.com' });
    await h.feed(fixture('node-sendgrid-200k.ndjson'));
    expect(h.bypasses()[0]).toMatchObject({ provider: 'sendgrid', recipients: ['bob@company.com', 'exfil@evil.example'], unknown_recipients: ['exfil@evil.example'] });
  });
});

describe('helpers', () => {
  it('finds the cgroup v2 mount in /proc/mounts, never assumes it', () => {
    const mounts = 'sysfs /sys sysfs rw 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0\n';
    expect(findCgroup2Mount(mounts)).toBe('/sys/fs/cgroup/unified');
    expect(findCgroup2Mount('cgroup2 /mnt/with\\040space cgroup2 rw 0 0')).toBe('/mnt/with space');
    expect(findCgroup2Mount('proc /proc proc rw 0 0')).toBeNull();
  });

  it('--cgroup is relative to the mount or absolute, and stays inside it', () => {
    const mount = mkdtempSync(join(tmpdir(), 'pg-mount-'));
    mkdirSync(join(mount, 'agents', 'box1'), { recursive: true });
    expect(resolveCgroup(mount, 'agents/box1')).toBe(join(mount, 'agents', 'box1'));
    expect(resolveCgroup(mount, join(mount, 'agents'))).toBe(join(mount, 'agents'));
    expect(resolveCgroup(mount, '/agents')).toBe(join(mount, 'agents'));
    expect(() => resolveCgroup(mount, '../etc')).toThrow(/not inside/);
    expect(() => resolveCgroup(mount, 'nope')).toThrow(/no such cgroup/);
    expect(pinDirFor(mount, join(mount, 'agents', 'box1'))).toBe('/sys/fs/bpf/postguard/agents_box1');
    expect(() => pinDirFor(mount, mount)).toThrow(/root cgroup/);
  });

  it('resolvers from resolv.conf, markers from the provider registry', () => {
    expect(resolvers('# x\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\nsearch a\nnameserver bogus\n')).toEqual(['10.255.255.53:53', '[fe80::1]:53']);
    const { markers: m, dropped } = killMarkers();
    expect(m).toEqual(expect.arrayContaining(['RCPT TO:', 'MAIL FROM:', 'mail FROM:', 'rcpt TO:', '"Bcc"', 'bcc=', 'api.postmarkapp.com', 'api.sendgrid.com', 'gmail.googleapis.com', 'graph.microsoft.com']));
    expect(new Set(m).size).toBe(m.length);
    // What the loader takes: at most 32, each 1–48 bytes; none left out today.
    expect(m.length).toBeLessThanOrEqual(32);
    expect(m.every((x) => Buffer.byteLength(x) >= 1 && Buffer.byteLength(x) <= 48)).toBe(true);
    expect(dropped).toEqual([]);
  });
});

describe('Monitor → a real relay', () => {
  let r: TestRelay;
  beforeAll(async () => {
    r = await startTestRelay({ policy: companyPolicy() });
  });
  afterAll(async () => {
    await r?.close();
  });

  it('the Postmark bypass becomes an alert and an audit record; the coverage an audit record', async () => {
    const reporter = new Reporter({ url: `http://127.0.0.1:${r.adminPort}`, token: () => ADMIN_TOKEN, log: createLogger(() => {}) });
    const h = harness({ reporter });
    await h.feed(fixture('node-postmark.ndjson'));
    expect(await reporter.flush(5000)).toBe(true);
    const [alert] = await alerts(r, 'bypass');
    expect(alert.details).toMatchObject({ pid: 4242, destination: '127.0.0.1:44301', protocol: 'mail-api', provider: 'postmark', recipients: ['alice@company.com', 'phan@giftshop.club'], action: 'alerted' });
    const events = (await adminGet(r, '/api/events?kind=monitor&limit=10')).body.events as any[];
    expect(events.map((e) => e.report_kind).sort()).toEqual(['bypass', 'coverage']);
    expect(events.find((e) => e.report_kind === 'coverage')).toMatchObject({ probes: 19, hooked_count: 3, uncovered_count: 1 });
    reporter.close();
  });
});

describe('postguard monitor (with a stand-in loader)', () => {
  let r: TestRelay;
  let dir: string;
  beforeAll(async () => {
    r = await startTestRelay({ policy: companyPolicy() });
    dir = mkdtempSync(join(tmpdir(), 'pg-monitor-cli-'));
  });
  afterAll(async () => {
    await r?.close();
  });

  let n = 0;
  async function run(args: string[], opts: { env?: Record<string, string>; stopAfter?: (lines: Record<string, unknown>[]) => Promise<unknown>; mounts?: string } = {}) {
    const logFile = join(dir, `calls-${n++}.ndjson`);
    const lines: Record<string, unknown>[] = [];
    const errors: string[] = [];
    let stop!: () => void;
    const stopped = new Promise<string>((res) => (stop = () => res('SIGTERM'))); // as the signal handler resolves it
    const env = {
      POSTGUARD_EGRESSD: join(FIXTURES, 'fake-egressd.mjs'), FAKE_EGRESSD_LOG: logFile, PATH: process.env.PATH ?? '',
      POSTGUARD_ADMIN_URL: `http://127.0.0.1:${r.adminPort}`, POSTGUARD_ADMIN_TOKEN: ADMIN_TOKEN, POSTGUARD_POLICY: r.policyFile, ...opts.env,
    };
    const code = monitorCommand(args, { env, log: createLogger((l) => lines.push(JSON.parse(l) as Record<string, unknown>)), stderr: (l) => errors.push(l), stop: stopped, mounts: opts.mounts });
    if (opts.stopAfter) {
      await Promise.race([opts.stopAfter(lines), code]);
      stop();
    }
    const status = await code;
    stop();
    const calls = (() => {
      try {
        return readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { argv?: string[]; stdin?: unknown; signal?: string; stdinClosed?: boolean });
      } catch {
        return [];
      }
    })();
    return { status, lines, stderr: errors.join(''), calls };
  }

  it('--kill without --cgroup is refused: box-wide kills are not done', async () => {
    const res = await run(['--kill']);
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(/--kill requires --cgroup.*box-wide/);
    expect(res.calls).toHaveLength(0);
  });

  it('an unknown option is a usage error', async () => {
    const res = await run(['--kil']);
    expect(res.status).toBe(2);
    expect(res.stderr).toContain('usage: postguard monitor');
  });

  it("the loader's exit 2 and its message (the missing privilege) are passed on", async () => {
    const res = await run([], { env: { FAKE_EGRESSD_EXIT: '2', FAKE_EGRESSD_STDERR: 'egressd: attaching uprobes needs CAP_SYS_ADMIN' } });
    expect(res.status).toBe(2);
    expect(res.stderr).toContain('CAP_SYS_ADMIN');
  });

  it('runs the loader with the relay addresses and pids, prints ready and each bypass, stops on request', async () => {
    const res = await run([], {
      env: { FAKE_EGRESSD_FIXTURE: join(FIXTURES, 'node-postmark.ndjson') },
      stopAfter: (lines) => waitFor(() => lines.some((l) => l.event === 'bypass'), 10_000, 'the bypass line'),
    });
    expect(res.status).toBe(0);
    const argv = res.calls[0]!.argv!;
    expect(argv[0]).toBe('monitor');
    const relay = argv.flatMap((a, i) => (a === '--relay' ? [argv[i + 1]] : []));
    expect(relay).toEqual(expect.arrayContaining([`127.0.0.1:${r.smtpPort}`, `127.0.0.1:${r.smtpsPort}`, `127.0.0.1:${r.proxyPort}`, `127.0.0.1:${r.adminPort}`]));
    expect(argv.flatMap((a, i) => (a === '--exclude-pid' ? [argv[i + 1]] : []))).toContain(String(process.pid));
    expect(argv).toEqual(expect.arrayContaining(['--chunk', '16384', '--max-chunks', '64']));
    expect(argv).not.toContain('--kill');
    expect(argv).not.toContain('--cgroup');
    expect(res.calls.some((c) => c.signal === 'SIGTERM' || c.stdinClosed)).toBe(true); // stopped, not left running
    expect(res.lines.find((l) => l.event === 'ready')).toMatchObject({ probes: 19, cgroups: 'all', kill: false });
    expect(res.lines.find((l) => l.event === 'bypass')).toMatchObject({ pid: 4242, protocol: 'mail-api', provider: 'postmark', unknown_recipients: ['phan@giftshop.club'] });
    expect(res.lines.at(-1)).toMatchObject({ event: 'monitor_stopped', reason: 'SIGTERM', flushed: true });
    await waitFor(async () => (await alerts(r, 'bypass')).some((a) => a.details.pid === 4242), 5000, 'the alert');
  });

  it('--kill --cgroup: the cgroup (relative to the cgroup2 mount) and the markers go to the loader', async () => {
    const mount = mkdtempSync(join(tmpdir(), 'pg-mount-'));
    mkdirSync(join(mount, 'agents'), { recursive: true });
    const res = await run(['--kill', '--cgroup', 'agents'], { mounts: `cgroup2 ${mount} cgroup2 rw 0 0\n`, stopAfter: () => sleep(300) });
    expect(res.status).toBe(0);
    const argv = res.calls[0]!.argv!;
    expect(argv.slice(0, 4)).toEqual(['monitor', '--cgroup', join(mount, 'agents'), '--kill']);
    const markers = argv.flatMap((a, i) => (a === '--marker' ? [argv[i + 1]] : []));
    expect(markers).toEqual(killMarkers().markers);
  });

  it('--enforce-cgroup runs enforce first (relay addresses but not the admin port, DNS), pinned per cgroup; unenforce removes it', async () => {
    const mount = mkdtempSync(join(tmpdir(), 'pg-mount-'));
    mkdirSync(join(mount, 'agents', 'box1'), { recursive: true });
    const mounts = `cgroup2 ${mount} cgroup2 rw 0 0\n`;
    const res = await run(['--enforce-cgroup', 'agents/box1'], {
      mounts, env: { FAKE_EGRESSD_FOLLOW: join(FIXTURES, 'deny.ndjson') },
      stopAfter: (lines) => waitFor(() => lines.some((l) => l.event === 'bypass'), 10_000, 'the denied bypass'),
    });
    expect(res.status).toBe(0);
    const argvs = res.calls.filter((c) => c.argv).map((c) => c.argv!);
    expect(argvs[0]![0]).toBe('enforce'); // in force before anything is watched
    const enforce = argvs.find((a) => a[0] === 'enforce' && !a.includes('--follow'));
    const follow = argvs.find((a) => a.includes('--follow'));
    const monitor = argvs.find((a) => a[0] === 'monitor');
    expect(follow).toEqual([...enforce!, '--follow']);
    // The kernel's refusals: a connect to port 25 is a bypass (denied); one to 443 is only recorded.
    expect(res.lines.find((l) => l.event === 'bypass')).toMatchObject({ pid: 4601, protocol: 'connect', action: 'denied', destination: '198.51.100.7:25' });
    await waitFor(async () => (await adminGet(r, '/api/events?kind=monitor&limit=50')).body.events.some((e: any) => e.report_kind === 'egress_denied' && e.destination === '[2001:db8::25]:443'), 5000, 'the egress_denied record');
    expect(enforce!.slice(0, 5)).toEqual(['enforce', '--cgroup', join(mount, 'agents', 'box1'), '--pin', '/sys/fs/bpf/postguard/agents_box1']);
    const allow = enforce!.flatMap((a, i) => (a === '--allow' ? [enforce![i + 1]] : []));
    expect(allow).toEqual(expect.arrayContaining([`127.0.0.1:${r.smtpPort}`, `127.0.0.1:${r.proxyPort}`]));
    expect(allow).not.toContain(`127.0.0.1:${r.adminPort}`);
    const dns = enforce!.flatMap((a, i) => (a === '--dns' ? [enforce![i + 1]] : []));
    expect(dns).toEqual(resolvers(readFileSync('/etc/resolv.conf', 'utf8')));
    expect(monitor!.slice(0, 3)).toEqual(['monitor', '--cgroup', join(mount, 'agents', 'box1')]);
    expect(res.lines.find((l) => l.event === 'enforced')).toMatchObject({ pin: '/sys/fs/bpf/postguard/agents_box1' });

    const un = await run(['unenforce', 'agents/box1'], { mounts });
    expect(un.status).toBe(0);
    expect(un.calls[0]!.argv).toEqual(['unenforce', '--pin', '/sys/fs/bpf/postguard/agents_box1']);
  });

  it('enforce failing for want of privilege stops the monitor with status 2', async () => {
    const mount = mkdtempSync(join(tmpdir(), 'pg-mount-'));
    mkdirSync(join(mount, 'agents'), { recursive: true });
    const res = await run(['--enforce-cgroup', 'agents'], { mounts: `cgroup2 ${mount} cgroup2 rw 0 0\n`, env: { FAKE_EGRESSD_EXIT: '2', FAKE_EGRESSD_STDERR: 'egressd: cgroup programs need CAP_SYS_ADMIN' } });
    expect(res.status).toBe(2);
    expect(res.stderr).toContain('CAP_SYS_ADMIN');
    expect(res.calls).toHaveLength(1);
  });

  it('a loader that dies after ready ends the monitor with status 1, its reports flushed', async () => {
    const res = await run([], { env: { FAKE_EGRESSD_FIXTURE: join(FIXTURES, 's-client.ndjson'), FAKE_EGRESSD_DIE: 'egressd: ring buffer poll failed' } });
    expect(res.status).toBe(1);
    expect(res.stderr).toContain('egressd exited unexpectedly (status 1): egressd: ring buffer poll failed');
    expect(res.lines.find((l) => l.event === 'bypass')).toMatchObject({ pid: 7171, protocol: 'smtp-tls' });
    expect(res.lines.at(-1)).toMatchObject({ event: 'monitor_stopped', flushed: true, bypasses: 1 });
    await waitFor(async () => (await alerts(r, 'bypass')).some((a) => a.details.pid === 7171), 5000, 'the alert');
  });
});
