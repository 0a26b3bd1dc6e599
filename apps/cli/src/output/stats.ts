/**
 * The `p`-th percentile (0 < p <= 100) of `values` by the nearest-rank method: the smallest
 * value with at least p % of the values at or below it; NaN for no values.
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

/** Microseconds as milliseconds with three decimals ("0.812 ms"), or "-" when not known. */
export function formatMicros(us: number): string {
  return Number.isFinite(us) && us > 0 ? `${(us / 1000).toFixed(3)} ms` : '-';
}
