// The active policy, hot-reloaded when its file changes. A file that fails to load keeps the
// previous policy in force and raises an alert: a typo must never open the relay.

import { readFileSync, renameSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { createTwoFilesPatch } from 'diff';
import type { Logger } from '../core/log.js';
import { loadPolicyFile, parsePolicy } from './load.js';
import { formatPolicyError, type Policy, type PolicyError } from './types.js';

export interface PolicyEvents {
  onReload?(policy: Policy, previous: Policy): void;
  onRejected?(errors: PolicyError[]): void;
}

export class PolicyHolder {
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(private policy: Policy, private readonly log: Logger, private readonly events: PolicyEvents = {}) {}

  get current(): Policy {
    return this.policy;
  }

  /** Watch the directory, not the file: editors and `kubectl cp` replace files by rename. */
  watch(): void {
    const file = this.policy.file;
    this.watcher = watch(dirname(file), (_type, name) => {
      if (name !== null && name !== basename(file)) return;
      // Coalesce the burst of events one save produces.
      if (this.timer) clearTimeout(this.timer);
      this.timer = setTimeout(() => this.reload(), 50);
    });
  }

  /** Reload from disk. Returns the errors if the new file was refused. */
  reload(): PolicyError[] {
    const result = loadPolicyFile(this.policy.file);
    if (!result.ok) {
      this.log('error', 'alert', { alert: 'policy_rejected', message: 'policy file has errors; previous policy stays active', errors: result.errors.map(formatPolicyError), policy_version: this.policy.version });
      this.events.onRejected?.(result.errors);
      return result.errors;
    }
    if (result.policy.version !== this.policy.version) this.replace(result.policy);
    return [];
  }

  replace(next: Policy): void {
    const previous = this.policy;
    this.policy = next;
    this.log('info', 'policy_reloaded', { policy_version: next.version, previous_version: previous.version, file: next.file });
    this.events.onReload?.(next, previous);
  }

  /** The text of the policy file as it is now. */
  text(): string {
    return readFileSync(this.policy.file, 'utf8');
  }

  /**
   * A new policy text from the admin API: validated like the file (every error with its position),
   * shown as a diff, and unless `dryRun` written to the policy file (atomically) and put in force.
   */
  apply(text: string, dryRun: boolean): { ok: true; version: string; previous_version: string; diff: string; applied: boolean } | { ok: false; errors: PolicyError[] } {
    const file = this.policy.file;
    const result = parsePolicy(file, text);
    if (!result.ok) return { ok: false, errors: result.errors };
    const previous = this.policy.version;
    let before = '';
    try {
      before = this.text();
    } catch {
      // a missing file is shown as all new
    }
    const diff = createTwoFilesPatch(`${basename(file)} (${previous})`, `${basename(file)} (${result.policy.version})`, before, text);
    if (dryRun || result.policy.version === previous) return { ok: true, version: result.policy.version, previous_version: previous, diff, applied: false };
    const tmp = `${file}.postguard-tmp`;
    writeFileSync(tmp, text, { mode: 0o644 });
    renameSync(tmp, file);
    this.replace(result.policy);
    return { ok: true, version: result.policy.version, previous_version: previous, diff, applied: true };
  }

  close(): void {
    this.watcher?.close();
    if (this.timer) clearTimeout(this.timer);
  }
}
