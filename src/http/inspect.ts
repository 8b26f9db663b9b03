// The HTTP channel's lifecycle for one request to a mail-API host, top to bottom:
//   read      GET/HEAD/OPTIONS pass; a write must match a known endpoint of the provider (else 403)
//   body      bounded, Content-Encoding undone, strict parse (400 malformed, 403 differential)
//   extract   the provider adapter names every recipient, sender and content part, per message
//   decide    the same pure decision as SMTP, once per message in the request
//   apply     block → 403 in the provider's error shape; tempfail → 429; quarantine → held, 202;
//             deliver → stripped recipients removed from the body, forwarded, reply streamed back
//   audit     one record per request, channel `http`, with the provider's status

import type { IncomingMessage, ServerResponse } from 'node:http';
import { decisionAlert } from '../alerts/decision.js';
import type { AlertHub } from '../alerts/hub.js';
import { watchForSilentBcc } from '../alerts/silent-bcc.js';
import { parseMailbox } from '../core/address.js';
import type { MailIntent } from '../core/intent.js';
import type { Logger } from '../core/log.js';
import { decide, REASONS, SEVERITY, unknownDomainsOf, type Decision, type Reason } from '../policy/decide.js';
import type { AgentHistory } from '../policy/history.js';
import { decisionFields } from '../policy/record.js';
import type { Policy } from '../policy/types.js';
import { newEventId, type AuditInput } from '../store/audit.js';
import type { DraftRecipient, Store } from '../store/store.js';
import { extract, outgoingBody, RequestShapeError, splitUrl, type ReplyContext, type Endpoint, type Extracted, type MessageFacts, type Provider, type RequestInfo } from './adapter.js';
import { BodyBudget, decodeBody, readBody } from './body.js';
import { BodyError, type Json } from '../core/json.js';
import { endpointFor, providerFor } from './providers/index.js';
import type { HeldRequest } from './release.js';
import type { HttpUpstream, Target } from './upstream.js';

export interface HttpContext {
  policy: () => Policy;
  store: Store;
  alerts: AlertHub;
  history: AgentHistory;
  upstream: HttpUpstream;
  log: Logger;
}

/** Who sent the request and how it reached the relay. */
export interface Origin {
  agent: string | null;
  client: string;
  via: 'proxy' | 'transparent';
}

const READS = new Set(['GET', 'HEAD', 'OPTIONS']);
const METHOD_OVERRIDES = ['x-http-method-override', 'x-http-method', 'x-method-override'];

const STATUS: Record<BodyError['kind'], number> = { malformed: 400, differential: 403, unsupported: 415, too_large: 413, busy: 503 };
/** Request bodies held in memory at once, raw and decoded, across all requests. */
const BODY_BUDGET = 512 * 1024 * 1024;

export class HttpInspector {
  private readonly budget = new BodyBudget(BODY_BUDGET);

  constructor(private readonly ctx: HttpContext) {}

  /** True when `host` is a mail-API host this relay inspects. */
  static inspects(host: string): boolean {
    return providerFor(host) !== undefined;
  }

  async handle(req: IncomingMessage, res: ServerResponse, target: Target, origin: Origin): Promise<void> {
    const taken = { bytes: 0 };
    try {
      await this.inspect(req, res, target, origin, taken);
    } finally {
      this.budget.give(taken.bytes);
    }
  }

  private async inspect(req: IncomingMessage, res: ServerResponse, target: Target, origin: Origin, taken: { bytes: number }): Promise<void> {
    const provider = providerFor(target.host)!;
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const { path, query } = splitUrl(url);
    const id = newEventId();
    const policy = this.ctx.policy();
    const base = {
      id, kind: 'message' as const, channel: 'http', provider: provider.id, method, host: target.host, path: path.slice(0, 512),
      agent: origin.agent, client: origin.client, via: origin.via, policy_version: policy.version,
    };
    const refuse = (status: number, action: string, rule: string, reason: Reason | string, message: string, extra: Record<string, unknown> = {}) => {
      this.note({ ...base, action, rule, reason, status, ...extra });
      this.reply(res, provider, status, `postguard: ${message} [${id}]`);
    };

    // A method-override header makes the provider run another method than the one inspected.
    const override = METHOD_OVERRIDES.find((h) => req.headers[h] !== undefined);
    if (override) {
      req.resume();
      return refuse(403, 'blocked', 'input', REASONS.differential, `the ${override} header is not accepted on mail-API hosts: the provider would run another method than the one inspected`);
    }
    const match = endpointFor(provider, method, path);
    if (!match && READS.has(method)) {
      const suspicious = provider.suspiciousRead?.(path, query);
      if (suspicious) {
        req.resume();
        return refuse(403, 'blocked', 'http.endpoints', REASONS.endpoint, suspicious);
      }
      // Reads carry no mail: passed on as they are, streamed. A body on one is where two servers disagree.
      if (req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0) {
        req.resume();
        return refuse(400, 'rejected', 'input', REASONS.input, `a ${method} request with a body is not accepted on mail-API hosts`);
      }
      try {
        const r = await this.ctx.upstream.stream(req, res, target);
        this.note({ ...base, kind: 'http', action: 'passed', status: r.status });
      } catch (e) {
        this.upstreamFailed(res, provider, target, e as Error, { ...base, kind: 'http', action: 'failed' });
      }
      return;
    }
    if (!match) {
      req.resume();
      refuse(403, 'blocked', 'http.endpoints', REASONS.endpoint, `${method} ${path.slice(0, 200)} is not a send endpoint postguard knows for ${provider.name}; writes to unknown endpoints of mail-API hosts are refused`);
      this.ctx.alerts.raise({ kind: 'blocked', severity: 'normal', agent: origin.agent, channel: 'http', event_id: id, summary: `blocked ${method} ${path.slice(0, 200)} on ${target.host}: ${REASONS.endpoint}` });
      return;
    }

    let info: RequestInfo;
    let extracted: Extracted;
    try {
      const raw = await readBody(req, provider.maxBody, this.budget, taken);
      const body = await decodeBody(raw, header(req, 'content-encoding'), provider.maxBody);
      if (body !== raw) {
        this.budget.take(body.length);
        taken.bytes += body.length;
      }
      ({ info, extracted } = await extract(provider, match.endpoint, { method, host: target.host, url, headers: req.headers, body, params: match.params }));
    } catch (e) {
      if (e instanceof BodyError) {
        const status = STATUS[e.kind];
        const differential = e.kind === 'differential';
        refuse(status, differential ? 'blocked' : 'rejected', 'input', differential ? REASONS.differential : REASONS.input, e.message, { endpoint: match.endpoint.name });
        if (differential) this.ctx.alerts.raise({ kind: 'blocked', severity: 'high', agent: origin.agent, channel: 'http', event_id: id, summary: `blocked a ${provider.name} request from ${origin.agent ? `agent ${origin.agent}` : 'an unauthenticated client'}: ${e.message}` });
        return;
      }
      if (e instanceof RequestShapeError) return refuse(400, 'rejected', 'input', REASONS.input, e.message, { endpoint: match.endpoint.name });
      throw e;
    }
    if (extracted.messages.length === 0) {
      if (extracted.sends !== false) return refuse(400, 'rejected', 'input', REASONS.input, 'request names no message to send', { endpoint: match.endpoint.name });
      // A write the adapter knows sends no mail (a read-only action over POST): passed on as it came.
      return this.pass(req, res, provider, target, info.body, { ...base, kind: 'http', action: 'passed', endpoint: match.endpoint.name });
    }

    const draftBefore = extracted.draft ? this.ctx.store.draftRecipients(provider.id, extracted.draft.id) : undefined;
    if (extracted.draft) this.addDraftRecipients(extracted, draftBefore);

    // Decide each message; the request goes on only if every one of them may.
    const historyKey = origin.agent ?? `client:${origin.client}`;
    const now = Date.now();
    const judged = extracted.messages.map((m) => {
      const intent = intentOf(id, origin.agent, m, extracted, info.body.length);
      if (extracted.sends === false) intent.sends = false;
      const decision = decide(intent, policy, this.ctx.history.snapshot(historyKey, policy.limits, now));
      this.ctx.history.record(historyKey, policy.limits, now, { accepted: decision.action === 'deliver' || decision.action === 'quarantine', unknownDomains: unknownDomainsOf(decision.recipients) });
      watchForSilentBcc(this.ctx.history, this.ctx.alerts, historyKey, policy, intent, id);
      return { facts: m, intent, decision };
    });
    const worst = judged.reduce((a, b) => (SEVERITY[b.decision.action] > SEVERITY[a.decision.action] ? b : a));
    const d = worst.decision;
    const record = {
      ...base,
      endpoint: match.endpoint.name,
      size: info.body.length,
      ...decisionFields(d, worst.intent),
      recipients: {
        kept: judged.flatMap((j) => j.decision.keep),
        stripped: judged.flatMap((j) => j.decision.stripped),
        would_strip: judged.flatMap((j) => j.decision.wouldStrip),
        verdicts: judged.flatMap((j) => j.decision.recipients),
      },
      ...(judged.length > 1 ? { messages: judged.map((j) => ({ message: j.facts.label, decision: j.decision.action, rule: j.decision.rule, reason: j.decision.reason, kept: j.decision.keep, stripped: j.decision.stripped })) } : {}),
    };
    const alert = decisionAlert(d.action === 'deliver' ? (judged.find((j) => j.decision.alert)?.decision ?? d) : d, policy, { agent: origin.agent, channel: 'http', eventId: id });
    const raise = () => alert && this.ctx.alerts.raise(alert);
    const where = judged.length > 1 ? ` in ${worst.facts.label}` : '';

    switch (d.action) {
      case 'block':
        refuse(403, 'blocked', d.rule, d.reason, `blocked by policy: ${d.reason}${where} (rule ${d.rule})`, omitBase(record));
        raise();
        return;
      case 'tempfail':
        this.note({ ...record, action: 'limited', status: 429 });
        res.setHeader('retry-after', '60');
        this.reply(res, provider, 429, `postguard: try again later: ${d.reason}${where} (rule ${d.rule}) [${id}]`);
        raise();
        return;
      case 'quarantine': {
        const held: HeldRequest = { target, method, url, headers: forwardable(req.headers), body: info.body.toString('base64') };
        const to = judged.flatMap((j) => j.intent.recipients.filter((r) => r.delivers).map((r) => r.mailbox.address));
        await this.ctx.store.quarantine(
          { ...record, action: 'quarantined', status: 202 },
          { channel: 'http', agent: origin.agent, reason: d.reason, rule: d.rule, envelope: { from: worst.intent.senders[0]?.mailbox?.address ?? '', to: [...new Set(to)] }, holdMs: policy.quarantineMs },
          Buffer.from(JSON.stringify(held)),
        );
        raise();
        const message = `Held for review by postguard: ${d.reason} (rule ${d.rule}) [${id}]`;
        const answer = provider.held?.(id, message, info) ?? { status: 202, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ postguard: { status: 'quarantined', id, message } }) };
        res.writeHead(answer.status, { ...answer.headers, 'x-postguard': 'quarantined' });
        res.end(answer.body);
        return;
      }
      case 'deliver':
        break;
    }

    // Every message may go: remove what the decisions strip, then forward.
    let stripped = 0;
    for (const j of judged) {
      if (j.decision.mode !== 'enforce') continue;
      j.decision.recipients.forEach((v, i) => {
        if (v.outcome === 'strip' && j.facts.recipients[i]!.strip) {
          j.facts.recipients[i]!.strip!();
          stripped++;
        }
      });
    }
    const out = outgoingBody(extracted, stripped > 0, info.body);
    const body = out.body;
    if (out.contentType) req.headers['content-type'] = out.contentType;
    try {
      const r = await this.ctx.upstream.forward(req, res, target, body, match.endpoint.createsDraft !== undefined);
      if (r.body !== undefined) this.finishCaptured(res, r);
      if (r.status < 300) this.rememberDraft(provider, match.endpoint, extracted, r.body, judged, draftBefore, id);
      this.note({ ...record, action: r.status < 300 ? (stripped > 0 ? 'stripped' : 'forwarded') : 'upstream_rejected', status: r.status });
      raise();
    } catch (e) {
      this.upstreamFailed(res, provider, target, e as Error, { ...record, action: 'failed' });
    }
  }

  /** Forward a request unchanged (a write the adapter says sends nothing) and audit it as passed. */
  private async pass(req: IncomingMessage, res: ServerResponse, provider: Provider, target: Target, body: Buffer, record: AuditInput & { id: string }): Promise<void> {
    try {
      const r = await this.ctx.upstream.forward(req, res, target, body);
      this.note({ ...record, action: 'passed', status: r.status });
    } catch (e) {
      this.upstreamFailed(res, provider, target, e as Error, { ...record, action: 'failed' });
    }
  }

  /**
   * Sending or editing a stored draft: it must have been made through the relay, and the recipients
   * it was stored with are part of this request's decision (judged under today's policy).
   */
  private addDraftRecipients(extracted: Extracted, stored: DraftRecipient[] | undefined): void {
    const d = extracted.draft!;
    if (!stored) {
      extracted.problems.push({ code: 'request.unseen_draft', detail: `draft ${d.id.slice(0, 80)} was not created through postguard, so its recipients were never inspected` });
      return;
    }
    for (const m of extracted.messages) {
      for (const r of stored) {
        const parsed = parseMailbox(r.address);
        if (parsed.ok) m.recipients.push({ mailbox: parsed.value, field: r.field, source: `draft ${d.id.slice(0, 80)}`, delivers: d.op === 'send', strippable: false });
      }
    }
  }

  /** After a draft is created or edited: remember it, with every recipient it now holds. */
  private rememberDraft(provider: Provider, endpoint: Endpoint, extracted: Extracted, reply: Buffer | undefined, judged: { intent: MailIntent; decision: Decision }[], before: DraftRecipient[] | undefined, eventId: string): void {
    let draftId: string | null = null;
    try {
      if (endpoint.createsDraft && reply) draftId = endpoint.createsDraft(JSON.parse(reply.toString('utf8')) as Json);
      else if (extracted.draft?.op === 'update') draftId = extracted.draft.id;
    } catch (e) {
      this.ctx.log('warn', 'http_draft_unreadable', { id: eventId, provider: provider.id, error: (e as Error).message });
    }
    if (!draftId) return;
    const seen = new Map<string, DraftRecipient>((before ?? []).map((r) => [r.address, r]));
    // What the draft holds now: everything named, minus what this request stripped from it.
    for (const j of judged) {
      j.intent.recipients.forEach((r, i) => {
        const stripped = j.decision.mode === 'enforce' && j.decision.recipients[i]!.outcome === 'strip';
        if (!stripped && r.field !== 'reply-to' && r.field !== 'notify') seen.set(r.mailbox.address, { address: r.mailbox.address, field: r.field });
      });
    }
    this.ctx.store.rememberDraft(provider.id, draftId, eventId, [...seen.values()]);
  }

  /** A response we read ourselves (to learn a draft's id) is sent on unchanged. */
  private finishCaptured(res: ServerResponse, r: { status: number; body?: Buffer; headers?: IncomingMessage['headers'] }): void {
    const headers = { ...r.headers };
    delete headers['transfer-encoding'];
    delete headers.connection;
    headers['content-length'] = String(r.body!.length);
    res.writeHead(r.status, headers);
    res.end(r.body);
  }

  private upstreamFailed(res: ServerResponse, provider: Provider, target: Target, err: Error, record: AuditInput & { id: string }): void {
    const code = (err as { code?: string }).code ?? '';
    const tls = /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/.test(code) || /certificate/i.test(err.message);
    const why = tls ? `TLS verification of ${target.host} failed (${code || err.message})` : `${target.host}:${target.port} unreachable (${code || err.message})`;
    this.note({ ...record, status: 502, upstream: { error: why } });
    this.ctx.log('warn', 'http_upstream_failed', { id: record.id, host: target.host, error: why });
    if (!res.headersSent) this.reply(res, provider, 502, `postguard: upstream ${why} [${record.id}]`);
    else res.destroy();
  }

  private reply(res: ServerResponse, provider: Provider, status: number, message: string): void {
    if (res.headersSent) return void res.destroy();
    const e = provider.error(status, message, replyContext(res.req));
    res.writeHead(status, { ...e.headers, 'x-postguard': 'refused' });
    res.end(e.body);
  }

  /** Audit from a request handler, batched with the turn's other records; a storage fault is logged, never thrown. */
  private note(input: AuditInput): void {
    this.ctx.store.recordSoon(input);
  }

}

function intentOf(id: string, agent: string | null, m: MessageFacts, req: Extracted, size: number): MailIntent {
  return {
    id,
    channel: 'http',
    agent,
    senders: m.senders,
    recipients: m.recipients,
    subject: m.subject,
    texts: m.texts,
    attachments: m.attachments,
    problems: [...req.problems, ...m.problems],
    size,
  };
}

function replyContext(req: IncomingMessage): ReplyContext {
  return { path: splitUrl(req.url ?? '/').path, headers: req.headers };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** Headers worth replaying: the provider's credentials included, the hop-by-hop ones not. */
function forwardable(h: IncomingMessage['headers']): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || /^(connection|keep-alive|proxy-.*|te|trailer|transfer-encoding|upgrade|expect|content-length|content-encoding)$/.test(k)) continue;
    out[k] = v;
  }
  return out;
}

function omitBase<T extends Record<string, unknown>>(r: T): Omit<T, 'id' | 'kind' | 'channel'> {
  const { id: _i, kind: _k, channel: _c, ...rest } = r;
  return rest;
}

export type { Decision };
