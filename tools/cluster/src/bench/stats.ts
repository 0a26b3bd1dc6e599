/** Small statistics for bench tables. */

/** The `p`-th percentile (0–100, nearest rank) of `xs`; 0 for none. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** The largest of `xs`; 0 for none. */
export function max(xs: readonly number[]): number {
  return xs.reduce((m, x) => Math.max(m, x), 0);
}

/** `x` with `digits` decimals. */
export function fixed(x: number, digits = 1): string {
  return x.toFixed(digits);
}
