/**
 * Byte sizes as people type them, shared by every flag and command that takes
 * a size: a number with an optional binary unit, as QEMU's `-m` reads it
 * (`4096`, `64K`, `256M`, `256MiB`, `1.5G`). Units are powers of 1024.
 */

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 2 ** 10,
  kb: 2 ** 10,
  kib: 2 ** 10,
  m: 2 ** 20,
  mb: 2 ** 20,
  mib: 2 ** 20,
  g: 2 ** 30,
  gb: 2 ** 30,
  gib: 2 ** 30,
  t: 2 ** 40,
  tb: 2 ** 40,
  tib: 2 ** 40,
};

/**
 * Parses a byte size; fractions round down to whole bytes. Returns undefined
 * when the text is not a size or exceeds Number.MAX_SAFE_INTEGER.
 */
export function parseByteSize(text: string): number | undefined {
  const m = /^\s*(\d+)(?:\.(\d+))?\s*([a-zA-Z]*)\s*$/.exec(text);
  if (m === null) return undefined;
  const unit = UNITS[m[3]!.toLowerCase()];
  if (unit === undefined) return undefined;
  const frac = m[2] === undefined ? 0 : Math.floor(Number(`0.${m[2]}`) * unit);
  const n = Number(m[1]) * unit + frac;
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Formats bytes with a binary unit: 268435456 -> "256 MiB", 1610612736 -> "1.50 GiB". */
export function formatBytes(bytes: bigint | number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(bytes);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const text = i === 0 || Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1);
  return `${text} ${units[i]}`;
}
