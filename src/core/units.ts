// Durations and sizes as people write them in policies and environment variables.

/** `24h`, `30m`, `90s`, `250ms`, `7d`; a bare number is seconds. Returns milliseconds, or null. */
export function parseDuration(v: unknown): number | null {
  if (typeof v === 'number') return v > 0 ? v * 1000 : null;
  const m = typeof v === 'string' ? /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(v.trim()) : null;
  if (!m) return null;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h' | 'd'];
  const ms = Number(m[1]) * unit;
  return ms > 0 ? ms : null;
}

/** `10MB`, `512 KiB`, `1024` (bytes). Returns bytes, or null. */
export function parseSize(v: unknown): number | null {
  if (typeof v === 'number') return v >= 0 ? v : null;
  const m = typeof v === 'string' ? /^(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?$/i.exec(v.trim()) : null;
  if (!m) return null;
  const units: Record<string, number> = { b: 1, kb: 1000, kib: 1024, mb: 1e6, mib: 1 << 20, gb: 1e9, gib: 1 << 30 };
  return Math.round(Number(m[1]) * units[(m[2] ?? 'b').toLowerCase()]!);
}
