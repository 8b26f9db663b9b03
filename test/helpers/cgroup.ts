// Root end-to-end helpers for the eBPF monitor: whether this machine can run them, a cgroup v2
// directory the test creates (and removes), and processes started inside it from their first
// instruction. Every kill here goes only to processes in that cgroup (cgroup.kill, or a pid read
// from its cgroup.procs); nothing else on the box is touched.

import { spawn, type SpawnOptions } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findCgroup2Mount } from '../../src/monitor/monitor.js';
import { egressdPath } from '../../src/monitor/loader.js';

/** Why the root e2e cannot run here (null: it can): not root, loader not built, no cgroup2, no BTF. */
export function e2eBlocker(env: NodeJS.ProcessEnv = process.env): string | null {
  if (process.getuid?.() !== 0) return `not root (uid ${process.getuid?.()}): uprobes and cgroup programs need CAP_SYS_ADMIN`;
  const egressd = egressdPath(env);
  if (!existsSync(egressd)) return `${egressd} is missing: run npm run build:bpf`;
  if (!cgroup2Mount()) return 'no cgroup2 mount in /proc/mounts';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'no kernel BTF (/sys/kernel/btf/vmlinux)';
  return null;
}

/** The cgroup v2 mount point from /proc/mounts (never assumed). */
export function cgroup2Mount(): string | null {
  try {
    return findCgroup2Mount(readFileSync('/proc/mounts', 'utf8'));
  } catch {
    return null;
  }
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The client ran out of its time and was killed by the test. */
  timedOut: boolean;
}

export interface CgProcess {
  pid: number;
  exited: Promise<Exit>;
  /** Bytes for its stdin (then closed). */
  stdin(data: string | Buffer): void;
}

export interface TestCgroup {
  path: string;
  /** Pids currently in it. */
  procs(): number[];
  /**
   * Start `cmd args` inside the cgroup: a shell moves itself into it and `exec`s the command, so the
   * command's very first instruction runs there (and its pid is the shell's). Killed (it is in the
   * cgroup) after `timeoutMs`.
   */
  run(cmd: string, args: string[], opts?: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string }): CgProcess;
  /** Kill everything in the cgroup (SIGKILL) and wait until it is empty. */
  killAll(): Promise<void>;
  /** killAll, then remove the directory. */
  remove(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Create `<cgroup2 mount>/<name>` (removing a stale one of that name first). */
export async function createTestCgroup(name: string): Promise<TestCgroup> {
  const mount = cgroup2Mount();
  if (!mount) throw new Error('no cgroup2 mount in /proc/mounts');
  const path = join(mount, name);
  const procs = (): number[] => {
    try {
      return readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  const killAll = async (): Promise<void> => {
    if (!existsSync(path)) return;
    const end = Date.now() + 5000;
    while (procs().length > 0) {
      if (existsSync(join(path, 'cgroup.kill'))) writeFileSync(join(path, 'cgroup.kill'), '1');
      else for (const pid of procs()) process.kill(pid, 'SIGKILL');
      // A process stopped by the monitor (SIGSTOP) still dies of SIGKILL.
      if (Date.now() > end) throw new Error(`processes left in ${path}: ${procs().join(' ')}`);
      await sleep(20);
    }
  };
  const remove = async (): Promise<void> => {
    if (!existsSync(path)) return;
    await killAll();
    for (const d of readdirSync(path, { withFileTypes: true })) if (d.isDirectory()) rmdirSync(join(path, d.name));
    for (let i = 0; ; i++) {
      try {
        rmdirSync(path);
        return;
      } catch (e) {
        if (i >= 50) throw e;
        await sleep(20); // the last process is still being reaped
      }
    }
  };
  const cg: TestCgroup = {
    path,
    procs,
    killAll,
    remove,
    run(cmd, args, opts = {}) {
      const so: SpawnOptions = { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd };
      const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', path, cmd, ...args], so);
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      child.stdin!.on('error', () => {});
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        // Only if it is (still) in the test cgroup.
        if (child.pid && procs().includes(child.pid)) process.kill(child.pid, 'SIGKILL');
      }, opts.timeoutMs ?? 10_000);
      const exited = new Promise<Exit>((resolve) => {
        child.once('close', (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal, stdout, stderr, timedOut });
        });
        child.once('error', (e) => {
          clearTimeout(timer);
          resolve({ code: null, signal: null, stdout, stderr: `${stderr}${e.message}`, timedOut });
        });
      });
      return {
        pid: child.pid!,
        exited,
        stdin: (data) => child.stdin!.end(data),
      };
    },
  };
  await remove();
  mkdirSync(path);
  return cg;
}
