// What no single message shows: per-agent counters for the rate and bulk limits, and the
// constant-extra-recipient detector. Kept in memory (a restart starts the windows afresh). The
// channel takes a snapshot before deciding — decide() stays pure — and records the outcome after.

import { matchesMailbox } from './patterns.js';
import type { Mailbox } from '../core/address.js';
import type { Limits } from './types.js';

/** What decide() needs to know about an agent's recent past. */
export interface HistorySnapshot {
  /** Messages accepted in the messages-limit window. */
  messages: number;
  /** Unknown recipient domains tried in the bulk-limit window. */
  unknownDomains: ReadonlySet<string>;
}

export const EMPTY_HISTORY: HistorySnapshot = { messages: 0, unknownDomains: new Set() };

export interface ConstantRecipientAnomaly {
  address: string;
  /** Messages in the window naming it as an extra recipient, and the window's size. */
  count: number;
  window: number;
  /** Distinct To-recipient sets among those messages: high = it rides along with varying mail. */
  distinctPrimaries: number;
}

interface AgentState {
  accepted: number[]; // timestamps
  unknown: { time: number; domain: string }[];
  recent: { primaries: string; extras: Set<string> }[];
  flagged: Set<string>;
}

const MAX_EVENTS = 100_000; // per agent and list: a bound, not a limit anyone should reach

export class AgentHistory {
  private readonly agents = new Map<string, AgentState>();

  snapshot(key: string, limits: Limits, now: number): HistorySnapshot {
    const s = this.agents.get(key);
    if (!s) return EMPTY_HISTORY;
    const msgWindow = limits.messages?.windowMs ?? 0;
    const bulkWindow = limits.bulkUnknownDomains?.windowMs ?? 0;
    return {
      messages: msgWindow ? s.accepted.filter((t) => t > now - msgWindow).length : 0,
      unknownDomains: new Set(bulkWindow ? s.unknown.filter((u) => u.time > now - bulkWindow).map((u) => u.domain) : []),
    };
  }

  /** Remember a message: accepted or not, and the unknown domains it tried. */
  record(key: string, limits: Limits, now: number, facts: { accepted: boolean; unknownDomains: Iterable<string> }): void {
    const s = this.state(key);
    const horizon = now - Math.max(limits.messages?.windowMs ?? 0, limits.bulkUnknownDomains?.windowMs ?? 0);
    if (facts.accepted) s.accepted.push(now);
    for (const domain of facts.unknownDomains) s.unknown.push({ time: now, domain });
    while (s.accepted.length > 0 && (s.accepted[0]! <= horizon || s.accepted.length > MAX_EVENTS)) s.accepted.shift();
    while (s.unknown.length > 0 && (s.unknown[0]!.time <= horizon || s.unknown.length > MAX_EVENTS)) s.unknown.shift();
  }

  /**
   * Add one message's recipients to the agent's window and report addresses that now look like a
   * silent BCC: extra on at least `share` of the last `messages` messages (and at least
   * `minMessages` of them), while the To recipients they ride along with vary (at least half
   * distinct). A team thread — the same people on every message — does not trip it.
   */
  observe(key: string, limits: Limits, primaries: readonly Mailbox[], extras: readonly Mailbox[]): ConstantRecipientAnomaly[] {
    const rule = limits.constantRecipient;
    if (!rule) return [];
    const s = this.state(key);
    const ignored = (m: Mailbox) => rule.ignore.some((p) => matchesMailbox(p, m));
    const primaryKey = [...new Set(primaries.map((m) => m.address))].sort().join(',');
    s.recent.push({ primaries: primaryKey, extras: new Set(extras.filter((m) => !ignored(m)).map((m) => m.address)) });
    while (s.recent.length > rule.messages) s.recent.shift();
    const out: ConstantRecipientAnomaly[] = [];
    for (const address of s.recent.at(-1)!.extras) {
      const carrying = s.recent.filter((r) => r.extras.has(address));
      const distinctPrimaries = new Set(carrying.map((r) => r.primaries)).size;
      const hit = carrying.length >= rule.minMessages && carrying.length / s.recent.length >= rule.share && distinctPrimaries >= carrying.length / 2;
      if (hit && !s.flagged.has(address)) {
        s.flagged.add(address); // once per address until it falls below the threshold again
        out.push({ address, count: carrying.length, window: s.recent.length, distinctPrimaries });
      } else if (!hit) {
        s.flagged.delete(address);
      }
    }
    return out;
  }

  private state(key: string): AgentState {
    let s = this.agents.get(key);
    if (!s) {
      s = { accepted: [], unknown: [], recent: [], flagged: new Set() };
      this.agents.set(key, s);
    }
    return s;
  }
}
