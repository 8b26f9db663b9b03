// A small pool of upstream SMTP sessions on nodemailer's SMTPConnection (the protocol client only:
// the relay hands over finished bytes, so nodemailer's mailer, composer and DKIM layers would be
// pure per-message cost). A session is reused only after a transaction that ended cleanly; any
// error closes it, so a half-sent DATA can never be followed by another message on that socket.

import SMTPConnection, { type SMTPConnectionOptions } from 'nodemailer/lib/smtp-connection';

export interface PoolOptions {
  connection: SMTPConnectionOptions;
  auth: { user: string; pass: string } | null;
  max: number;
  /** Close sessions idle this long, before the upstream's own idle timeout does it mid-send. */
  idleMs: number;
  /** How long a send may wait for a free session. */
  waitMs: number;
}

interface Session {
  conn: SMTPConnection;
  idleTimer: NodeJS.Timeout | null;
  dead: boolean;
}

export class SmtpPool {
  private readonly idle: Session[] = [];
  private readonly waiting: ((s: Session | Error) => void)[] = [];
  private open = 0;
  private closed = false;

  constructor(private readonly opts: PoolOptions) {}

  /** True when a session can be had without waiting. */
  hasFree(): boolean {
    return !this.closed && (this.idle.length > 0 || this.open < this.opts.max);
  }

  async acquire(): Promise<Session> {
    if (this.closed) throw Object.assign(new Error('upstream pool closed'), { code: 'ECONNECTION' });
    const s = this.idle.pop();
    if (s) {
      if (s.idleTimer) clearTimeout(s.idleTimer);
      s.idleTimer = null;
      return s;
    }
    if (this.open < this.opts.max) return this.connect();
    return new Promise((resolve, reject) => {
      // Bounded wait: an agent is better told 451 than left hanging behind a stuck upstream.
      const timer = setTimeout(() => {
        timedOut = true;
        const i = this.waiting.indexOf(take);
        if (i !== -1) this.waiting.splice(i, 1);
        reject(Object.assign(new Error('no upstream session became free in time'), { code: 'ETIMEDOUT' }));
      }, this.opts.waitMs);
      let timedOut = false;
      const take = (x: Session | Error) => {
        // A session handed to a waiter that gave up goes back to the pool instead of leaking.
        if (timedOut) return x instanceof Error ? undefined : this.release(x, true);
        clearTimeout(timer);
        if (x instanceof Error) reject(x);
        else resolve(x);
      };
      this.waiting.push(take);
    });
  }

  /** Return a session after a clean transaction, or drop it after anything else. */
  release(s: Session, reusable: boolean): void {
    if (!reusable || s.dead || this.closed) {
      this.drop(s);
      return;
    }
    const next = this.waiting.shift();
    if (next) return next(s);
    s.idleTimer = setTimeout(() => {
      this.idle.splice(this.idle.indexOf(s), 1);
      this.drop(s);
    }, this.opts.idleMs).unref();
    this.idle.push(s);
  }

  close(): void {
    this.closed = true;
    for (const s of this.idle.splice(0)) this.drop(s);
    for (const w of this.waiting.splice(0)) w(Object.assign(new Error('upstream pool closed'), { code: 'ECONNECTION' }));
  }

  private drop(s: Session): void {
    if (s.idleTimer) clearTimeout(s.idleTimer);
    if (!s.dead) {
      s.dead = true;
      this.open--;
      s.conn.close();
    }
    // A slot freed up: start a session for the next waiter.
    const next = this.waiting.shift();
    if (next) this.connect().then(next, next);
  }

  private connect(): Promise<Session> {
    this.open++;
    const conn = new SMTPConnection(this.opts.connection);
    const s: Session = { conn, idleTimer: null, dead: false };
    const lost = () => {
      if (s.dead) return;
      s.dead = true;
      this.open--;
      const i = this.idle.indexOf(s);
      if (i !== -1) this.idle.splice(i, 1);
      if (s.idleTimer) clearTimeout(s.idleTimer);
    };
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err: Error) => {
        lost();
        conn.close();
        if (!settled) {
          settled = true;
          reject(err);
        }
      };
      // After setup, errors reach the send callback; these listeners only keep the pool's count right.
      conn.on('error', (err: Error) => (settled ? lost() : fail(err)));
      conn.once('end', lost);
      conn.connect((err) => {
        if (err) return fail(err);
        if (!this.opts.auth) {
          settled = true;
          return resolve(s);
        }
        conn.login({ user: this.opts.auth.user, credentials: { ...this.opts.auth } }, (loginErr) => {
          if (loginErr) return fail(loginErr);
          settled = true;
          resolve(s);
        });
      });
    });
  }
}

export type { Session };
