// The SMTP channel. smtp-server's hooks, top to bottom, are thin adapters onto the core:
//   onAuth      agent = SMTP AUTH user, checked against the policy's scrypt hash
//   onMailFrom  strict parse + sender allowed for the agent?         → 550 5.7.1
//   onRcptTo    strict parse + recipient allowed? (strip mode only)  → 550 5.7.1 for that one
//   onData      read (no bare CR/LF) → intent → decide → apply → reply only after delivery/fsync
//   onClose     audit a transaction that ended without DATA

import type { AddressInfo, Socket } from 'node:net';
import { SMTPServer, type SMTPServerAddress, type SMTPServerAuthentication, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';
import { decisionAlert } from '../alerts/decision.js';
import type { AlertHub } from '../alerts/hub.js';
import { watchForSilentBcc } from '../alerts/silent-bcc.js';
import type { Listen } from '../config.js';
import { parseMailbox, type Mailbox } from '../core/address.js';
import type { MailIntent, Recipient } from '../core/intent.js';
import type { Logger } from '../core/log.js';
import { contentFacts, headerFacts, splitHeader } from '../core/message.js';
import type { Outbound } from '../delivery/outbound.js';
import { agentOf, decide, judgeRecipient, senderAllowed, unknownActionFor, unknownDomainsOf, type Decision } from '../policy/decide.js';
import type { AgentHistory } from '../policy/history.js';
import { decisionFields } from '../policy/record.js';
import { verifyPassword } from '../policy/password.js';
import type { Policy } from '../policy/types.js';
import { newEventId, type AuditInput } from '../store/audit.js';
import type { Store } from '../store/store.js';
import { readData } from './data.js';
import { removeGreetingDelay } from './greeting.js';
import { rewriteMessage } from './rewrite.js';
import type { Transmission } from './upstream.js';

export interface SmtpContext {
  policy: () => Policy;
  store: Store;
  /** Where allowed mail goes: the upstream now (sync), the queue, or the outbox (capture). */
  outbound: Outbound;
  alerts: AlertHub;
  history: AgentHistory;
  tls: { key: string; cert: string };
  log: Logger;
  hostname: string;
  maxSize: number;
  /** AUTH before STARTTLS; only sensible on loopback. */
  allowInsecureAuth: boolean;
}

/** One MAIL FROM … DATA transaction. */
interface Transaction {
  from: Mailbox | null;
  fromText: string;
  rcpts: Mailbox[];
  /** Refused at RCPT by policy: still part of what the agent asked for, so the decision sees them. */
  stripped: Mailbox[];
  /** Refused at RCPT because they do not parse. */
  invalid: { address: string; reason: string }[];
  /** Every accepted recipient is allowed: only then may the upstream see the envelope early. */
  allKnown: boolean;
  done: boolean;
}

function later<A extends unknown[]>(cb: (...args: A) => void): (...args: A) => void {
  return (...args) => queueMicrotask(() => cb(...args));
}

/** smtp-server sets `user` to false until AUTH succeeds. */
function agentOfSession(session: SMTPServerSession): string | null {
  return typeof session.user === 'string' ? session.user : null;
}

const MAX_RECIPIENTS = 1000;
const MAX_CLIENTS = 256;
const AUTH_MAX_FAILURES = 20;
const AUTH_WINDOW_MS = 60_000;

function smtpError(code: number, message: string): Error {
  // A reply, not a fault: no stack trace to capture (a refused BCC is the common case).
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  const err = Object.assign(new Error(message), { responseCode: code });
  Error.stackTraceLimit = limit;
  return err;
}

export class SmtpChannel {
  private readonly transactions = new Map<string, Transaction>();
  /** Recent failed AUTH attempts per client address. */
  private readonly authFailures = new Map<string, number[]>();
  private readonly servers: SMTPServer[] = [];
  private inFlight = 0;

  constructor(private readonly ctx: SmtpContext) {
    removeGreetingDelay();
  }

  async listen(plain: Listen | null, implicitTls: Listen | null): Promise<{ smtp: AddressInfo | null; smtps: AddressInfo | null }> {
    const start = async (l: Listen | null, secure: boolean): Promise<AddressInfo | null> => {
      if (!l) return null;
      const server = this.createServer(secure);
      this.servers.push(server);
      // SMTP is a chatty request/reply protocol: Nagle's algorithm would hold small replies back
      // behind the peer's delayed ACK (tens of ms per round trip).
      server.server.on('connection', (socket: Socket) => socket.setNoDelay(true));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(l.port, l.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      // After listen, a server error (e.g. a socket fault) is logged, never thrown.
      server.on('error', (err: Error) => this.ctx.log('warn', 'smtp_error', { error: err.message }));
      return server.server.address() as AddressInfo;
    };
    return { smtp: await start(plain, false), smtps: await start(implicitTls, true) };
  }

  /** Stop accepting, let messages in DATA finish (up to the timeout), then 421 the idle sessions. */
  async close(timeoutMs = 30_000): Promise<void> {
    const closed = this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    await this.drain(Date.now() + timeoutMs);
    for (const s of this.servers) {
      for (const c of (s as unknown as { connections: Set<{ send(code: number, msg: string): void; close(): void }> }).connections) {
        c.send(421, '4.3.2 postguard shutting down, try again later');
        c.close();
      }
    }
    await Promise.all(closed);
  }

  private async drain(deadline: number): Promise<void> {
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  }

  private createServer(secure: boolean): SMTPServer {
    return new SMTPServer({
      secure,
      key: this.ctx.tls.key,
      cert: this.ctx.tls.cert,
      name: this.ctx.hostname,
      banner: 'postguard ESMTP',
      size: this.ctx.maxSize,
      // Each session may buffer a whole message (up to SIZE): bound how many there can be.
      maxClients: MAX_CLIENTS,
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: true, // enforced per policy in onMailFrom, so a hot reload that adds agents applies at once
      allowInsecureAuth: this.ctx.allowInsecureAuth,
      disableReverseLookup: true, // a PTR lookup per connection costs latency and tells us nothing we trust
      hideENHANCEDSTATUSCODES: true, // replies carry their own enhanced codes
      closeTimeout: 30_000,
      logger: false,
      // Answer once the current call stack has unwound: smtp-server 3.21's SMTPStream.continue()
      // loses its parser callback when a hook answers synchronously while the next pipelined
      // transaction is already buffered (test/smtp/hostile.test.ts, "two complete transactions").
      // A microtask is enough, and unlike setImmediate it does not wait behind other sockets' I/O.
      onAuth: (auth, session, cb) => this.onAuth(auth, session, later(cb)),
      onMailFrom: (address, session, cb) => this.onMailFrom(address, session, later(cb)),
      onRcptTo: (address, session, cb) => this.onRcptTo(address, session, later(cb)),
      onData: (stream, session, cb) => {
        this.inFlight++;
        this.onData(stream, session)
          .then((message) => cb(null, message), (err: Error) => cb(err))
          .finally(() => this.inFlight--);
      },
      onClose: (session) => this.endTransaction(session),
    });
  }

  private onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, cb: (err: Error | null | undefined, response?: { user: string }) => void): void {
    // Password guessing: a client with too many recent failures is told to wait, without a check.
    const now = Date.now();
    const failures = (this.authFailures.get(session.remoteAddress) ?? []).filter((t) => t > now - AUTH_WINDOW_MS);
    if (failures.length >= AUTH_MAX_FAILURES) return cb(smtpError(454, '4.7.0 Too many failed authentications, try again later'));
    const agent = auth.username ? this.ctx.policy().agents.get(auth.username) : undefined;
    const fail = () => {
      this.ctx.log('warn', 'smtp_auth_failed', { session: session.id, client: session.remoteAddress, user: auth.username?.slice(0, 64) });
      if (this.authFailures.size > 10_000) this.authFailures.clear(); // bounded, whatever the number of clients
      this.authFailures.set(session.remoteAddress, [...failures, now]);
      cb(smtpError(535, '5.7.8 Authentication credentials invalid'));
    };
    if (!agent?.passwordHash) return fail();
    verifyPassword(auth.password ?? '', agent.passwordHash).then((ok) => (ok ? cb(null, { user: agent.id }) : fail()), fail);
  }

  private onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    this.endTransaction(session);
    const policy = this.ctx.policy();
    const agent = agentOfSession(session);
    if (policy.agents.size > 0 && !agent) return cb(smtpError(530, '5.7.0 Authentication required: this relay identifies agents by SMTP AUTH'));
    let from: Mailbox | null = null;
    if (address.address !== '') {
      const parsed = parseMailbox(address.address);
      if (!parsed.ok) return this.refuseMail(session, agent, address.address, cb, smtpError(553, `5.1.7 Sender address refused: ${parsed.error}`));
      from = parsed.value;
    }
    if (!senderAllowed(policy, agent, from)) {
      return this.refuseMail(session, agent, address.address, cb, smtpError(550, `5.7.1 Sender <${from?.address ?? ''}> is not allowed for ${agent ? `agent ${agent}` : 'this relay'}`));
    }
    this.transactions.set(session.id, { from, fromText: from?.address ?? '', rcpts: [], stripped: [], invalid: [], allKnown: true, done: false });
    cb();
  }

  /** Audit from inside a hook: a storage fault there must not take the process down. */
  private note(input: AuditInput): void {
    try {
      this.ctx.store.record(input);
    } catch (e) {
      this.ctx.log('error', 'audit_write_failed', { action: input.action, error: (e as Error).message });
    }
  }

  private refuseMail(session: SMTPServerSession, agent: string | null, from: string, cb: (err?: Error | null) => void, err: Error): void {
    this.note({ kind: 'message', channel: 'smtp', action: 'rejected', agent, session: session.id, client: session.remoteAddress, envelope: { from: sanitize(from), to: [] }, rule: 'senders', reason: err.message, policy_version: this.ctx.policy().version });
    cb(err);
  }

  private onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const tx = this.transactions.get(session.id);
    if (!tx) return cb(smtpError(503, '5.5.1 MAIL FROM first'));
    // Refused ones count too: a client must not make a transaction (and its audit record) unbounded.
    if (tx.rcpts.length + tx.stripped.length + tx.invalid.length >= MAX_RECIPIENTS) return cb(smtpError(452, `4.5.3 Too many recipients (at most ${MAX_RECIPIENTS} per message)`));
    const parsed = parseMailbox(address.address);
    if (!parsed.ok) {
      tx.invalid.push({ address: sanitize(address.address), reason: parsed.error });
      return cb(smtpError(553, `5.1.3 Recipient address refused: ${parsed.error}`));
    }
    const policy = this.ctx.policy();
    const agentId = agentOfSession(session);
    const agent = agentOf(policy, agentId);
    const known = judgeRecipient(policy, agentId, parsed.value);
    // Refuse at RCPT only when every unknown recipient would be stripped anyway; block and
    // quarantine must see the whole message, and monitor mode changes nothing.
    const stripNow = unknownActionFor(policy, agent, false) === 'strip' && unknownActionFor(policy, agent, true) === 'strip';
    if (!known && stripNow && policy.mode === 'enforce') {
      if (!tx.stripped.some((r) => r.address === parsed.value.address)) tx.stripped.push(parsed.value);
      return cb(smtpError(550, `5.7.1 Recipient <${parsed.value.address}> is not allowed by policy`));
    }
    if (!known) tx.allKnown = false;
    if (!tx.rcpts.some((r) => r.address === parsed.value.address)) tx.rcpts.push(parsed.value);
    cb();
  }

  /** Audit a transaction that ended (new MAIL, RSET-then-close, QUIT) with refusals but no DATA. */
  private endTransaction(session: SMTPServerSession): void {
    const tx = this.transactions.get(session.id);
    this.transactions.delete(session.id);
    if (!tx || tx.done || tx.stripped.length + tx.invalid.length === 0) return;
    this.note({
      kind: 'message', channel: 'smtp', action: 'rejected', agent: agentOfSession(session), session: session.id, client: session.remoteAddress,
      envelope: { from: tx.fromText, to: tx.rcpts.map((r) => r.address) }, recipients: { kept: [], stripped: tx.stripped.map((r) => r.address), invalid: tx.invalid },
      rule: 'unknown_recipients', reason: 'transaction ended without DATA', policy_version: this.ctx.policy().version,
    });
  }

  private async onData(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
    const tx = this.transactions.get(session.id);
    // The upstream's envelope round trip overlaps the agent's DATA; withdrawn unless the decision
    // delivers to exactly these recipients.
    const early = tx && tx.rcpts.length > 0 && tx.allKnown && this.ctx.policy().mode === 'enforce' ? this.ctx.outbound.begin(tx.fromText, tx.rcpts.map((r) => r.address)) : null;
    try {
      return await this.handleData(stream, session, tx, early);
    } catch (e) {
      if (typeof (e as { responseCode?: unknown }).responseCode === 'number') throw e;
      // A fault of ours (storage full, a bug): the agent keeps the message and retries; the
      // details go to the log, not to the peer.
      this.ctx.log('error', 'smtp_internal_error', { session: session.id, error: (e as Error).message });
      stream.resume();
      throw smtpError(451, '4.3.0 Temporary internal error, try again later');
    } finally {
      early?.withdraw(); // no-op once committed
    }
  }

  private async handleData(stream: SMTPServerDataStream, session: SMTPServerSession, tx: Transaction | undefined, early: Transmission | null): Promise<string> {
    const data = await readData(stream, this.ctx.maxSize);
    if (!tx) throw smtpError(503, '5.5.1 MAIL FROM first');
    tx.done = true;
    const agent = agentOfSession(session);
    const policy = this.ctx.policy();
    const id = newEventId();
    const base = {
      id, kind: 'message' as const, channel: 'smtp', agent, session: session.id, client: session.remoteAddress, tls: session.secure,
      envelope: { from: tx.fromText, to: tx.rcpts.map((r) => r.address) }, policy_version: policy.version,
    };
    if (!data.ok) {
      this.ctx.store.record({ ...base, action: 'rejected', rule: 'input', reason: data.message, recipients: { kept: [], stripped: tx.stripped.map((r) => r.address), invalid: tx.invalid } });
      throw smtpError(data.code, data.message);
    }
    const raw = data.raw;
    const split = splitHeader(raw);
    const intent = await buildIntent(id, agent, tx, raw, split);
    // Limits are per agent; without AUTH the client address stands in for the agent.
    const historyKey = agent ?? `client:${session.remoteAddress}`;
    const now = Date.now();
    const decision = decide(intent, policy, this.ctx.history.snapshot(historyKey, policy.limits, now));
    const record = { ...base, size: raw.length, ...decisionFields(decision, intent, tx.invalid) };
    const accepted = decision.action === 'deliver' || decision.action === 'quarantine';
    this.ctx.history.record(historyKey, policy.limits, now, { accepted, unknownDomains: unknownDomainsOf(decision.recipients) });
    watchForSilentBcc(this.ctx.history, this.ctx.alerts, historyKey, policy, intent, id);
    const alert = decisionAlert(decision, policy, { agent, channel: 'smtp', eventId: id });
    const raise = () => alert && this.ctx.alerts.raise(alert);

    if (decision.action === 'tempfail' || decision.action === 'block') {
      this.ctx.store.record({ ...record, action: decision.action === 'block' ? 'blocked' : 'limited' });
      raise();
      this.ctx.log('warn', `smtp_${decision.action === 'block' ? 'blocked' : 'limited'}`, { id, agent, rule: decision.rule, reason: decision.reason });
      if (decision.action === 'tempfail') throw smtpError(451, `4.7.1 Try again later: ${decision.reason} (rule ${decision.rule}) [${id}]`);
      throw smtpError(554, `5.7.1 Message refused by postguard policy (${decision.reason}; rule ${decision.rule}) [${id}]`);
    }

    const out = rewriteMessage(raw, split, {
      eventId: id,
      heloName: session.hostNameAppearsAs || '',
      clientHostname: session.clientHostname || '',
      clientAddress: session.remoteAddress,
      relayName: this.ctx.hostname,
      protocol: `ESMTP${session.secure ? 'S' : ''}${agent ? 'A' : ''}` as 'ESMTP',
      sessionId: session.id,
      singleRecipient: decision.keep.length === 1 ? decision.keep[0]! : null,
      date: new Date(),
    });
    if (decision.action === 'quarantine') {
      // Held as it would be relayed, with every recipient the agent asked for: release filters
      // them through the policy in force then.
      const envelope = { from: tx.fromText, to: [...new Set([...decision.keep, ...tx.rcpts.map((r) => r.address)])] };
      await this.ctx.store.quarantine({ ...record, action: 'quarantined' }, { channel: 'smtp', agent, reason: decision.reason, rule: decision.rule, envelope, holdMs: policy.quarantineMs }, out);
      raise();
      this.ctx.log('warn', 'smtp_quarantined', { id, agent, rule: decision.rule, reason: decision.reason });
      return `2.0.0 Held for review by postguard [${id}]`;
    }

    const result = await this.ctx.outbound.submit({ id, agent, from: tx.fromText, to: decision.keep, raw: out }, record, early);
    raise();
    const refused = (result.record.upstream as { rejected?: { address: string; response: string }[] } | undefined)?.rejected ?? [];
    if (refused.length > 0) {
      this.ctx.alerts.raise({
        kind: 'upstream_rejected', severity: 'high', agent, channel: 'smtp', event_id: id,
        summary: `upstream refused ${refused.map((r) => r.address).join(', ')} while taking the message for the others: ${refused[0]!.response}`,
        details: { refused },
      });
    }
    this.ctx.log(result.status === 'failed' ? 'warn' : 'info', `smtp_${result.record.action}`, { id, agent, recipients: decision.keep.length, stripped: decision.stripped.length });
    switch (result.status) {
      case 'delivered':
        return refused.length ? `2.0.0 Delivered by postguard to ${decision.keep.length - refused.length} of ${decision.keep.length} recipients [${id}]` : `2.0.0 Delivered by postguard [${id}]`;
      case 'queued':
        return `2.0.0 Queued by postguard [${id}]`;
      case 'captured':
        return `2.0.0 Captured by postguard (no upstream configured) [${id}]`;
      case 'failed':
        if (result.temporary) throw smtpError(451, `4.4.1 Upstream unavailable, try again later [${id}]`);
        throw smtpError(554, `5.0.0 Upstream refused the message: ${result.code} [${id}]`);
    }
  }
}

async function buildIntent(id: string, agent: string | null, tx: Transaction, raw: Buffer, split: ReturnType<typeof splitHeader>): Promise<MailIntent> {
  const headers = headerFacts(split.fields, 'display');
  const content = await contentFacts(raw, split);
  const envelope: Recipient[] = [
    ...tx.rcpts.map((mailbox): Recipient => ({ mailbox, field: 'envelope', source: 'RCPT TO', delivers: true, strippable: true })),
    // Already refused with 550: named so the decision and audit see them, but they deliver nothing.
    ...tx.stripped.map((mailbox): Recipient => ({ mailbox, field: 'envelope', source: 'RCPT TO (refused)', delivers: false, strippable: true })),
  ];
  return {
    id,
    channel: 'smtp',
    agent,
    senders: [{ mailbox: tx.from, field: 'mail-from' }, ...headers.senders],
    recipients: [...envelope, ...headers.recipients],
    subject: content.subject,
    // Every header too (a token in `X-Debug:` or a display name leaves as surely as one in the body).
    texts: [...content.texts, { where: 'headers', text: split.fields.filter((f) => f.name !== 'subject').map((f) => f.raw).join('\n') }],
    attachments: content.attachments,
    problems: [...split.problems, ...headers.problems, ...content.problems],
    size: raw.length,
  };
}

/** Peer-supplied text bound for the audit log: bounded, one line. */
function sanitize(s: string): string {
  return s.replace(/[\r\n\0]/g, ' ').slice(0, 320);
}
