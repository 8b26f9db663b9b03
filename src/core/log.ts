// Structured logs: one JSON object per line on stdout. Callers pass facts, never message content or
// secrets (detector findings are logged masked, credentials not at all).

export type Level = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  (level: Level, event: string, fields?: Record<string, unknown>): void;
}

export function createLogger(write: (line: string) => void = (l) => process.stdout.write(l), minLevel: Level = 'info'): Logger {
  const order: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };
  return (level, event, fields = {}) => {
    if (order[level] < order[minLevel]) return;
    write(`${JSON.stringify({ time: new Date().toISOString(), level, event, ...fields })}\n`);
  };
}

export const silentLogger: Logger = () => {};
