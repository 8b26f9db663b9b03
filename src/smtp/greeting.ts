// smtp-server holds every greeting for a fixed 100 ms to catch "early talkers" (spam bots that
// speak before the banner). That is an MX defence; an agent submitting mail opens one connection
// per message more often than not and would pay 100 ms each time (measured: bench/smtp.ts). There is
// no option for it, so the relay replaces SMTPConnection.init with the same steps minus the timer.
// The replacement is checked against the library's source so an upgrade that changes init fails
// loudly (test/smtp/greeting.test.ts) instead of silently diverging.

import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

interface ConnectionInternals {
  _setListeners(cb: () => void): void;
  _server: { options: { maxClients?: number; name?: string }; connections: Set<unknown> };
  send(code: number, message: string, command?: unknown): void;
  connectionReady(): void;
  name: string;
}

/** The library's own init, for the upgrade check. */
export const originalInit: () => void = SMTPConnection.prototype.init;

let installed = false;

export function removeGreetingDelay(): void {
  if (installed) return;
  installed = true;
  SMTPConnection.prototype.init = function init(this: SMTPConnection) {
    const self = this as unknown as ConnectionInternals;
    self._setListeners(() => {
      const { maxClients } = self._server.options;
      if (maxClients && self._server.connections.size > maxClients) {
        return self.send(421, `${self.name} Too many connected clients, try again in a moment`, false);
      }
      self.connectionReady();
    });
  };
}
