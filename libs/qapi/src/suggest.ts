/**
 * "Did you mean" hints for misspelt names (internal helper, not exported from
 * the package index).
 *
 * @packageDocumentation
 */

/** Levenshtein edit distance between two strings. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

/**
 * The closest known name to `input`, or undefined when nothing is close.
 * A candidate counts as close if it is within a third of its length in edits,
 * or starts with / contains the input (e.g. `postcopy` → `postcopy-ram`).
 */
export function closestName(input: string, known: readonly string[]): string | undefined {
  const needle = input.trim().toLowerCase().replace(/_/g, '-');
  if (needle.length === 0) return undefined;
  let best: string | undefined;
  let bestScore = Infinity;
  for (const name of known) {
    const d = editDistance(needle, name);
    const close =
      d <= Math.max(2, Math.floor(name.length / 3)) ||
      (needle.length >= 3 && name.includes(needle));
    if (close && d < bestScore) {
      best = name;
      bestScore = d;
    }
  }
  return best;
}

/** ` Did you mean 'x'?` or the empty string. */
export function didYouMean(input: string, known: readonly string[]): string {
  const hint = closestName(input, known);
  return hint === undefined ? '' : ` Did you mean '${hint}'?`;
}
