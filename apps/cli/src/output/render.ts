/** Output format of every command. */
export type OutputFormat = 'table' | 'json';

/** Where commands write (injected so tests can capture it). */
export interface Io {
  out(text: string): void;
  err(text: string): void;
}

/** Process stdout/stderr. */
export const processIo: Io = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
};

const kebab = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/**
 * Serialises one JSON document in vmctl's convention: QAPI-style kebab-case
 * keys (`exit-code`, `total-time`), bigint as a number when exact, else a string.
 */
export function toJson(value: unknown): string {
  return (
    JSON.stringify(
      value,
      function (this: unknown, _k, v: unknown) {
        if (typeof v === 'bigint') {
          return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
        }
        if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
          return Object.fromEntries(Object.entries(v).map(([k, x]) => [kebab(k), x]));
        }
        return v;
      },
      2,
    ) + '\n'
  );
}

/** Renders rows as an aligned text table with a header line. */
export function renderTable(headers: string[], rows: string[][]): string {
  if (rows.length === 0) return headers.join('  ') + '\n(none)\n';
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** Renders key/value pairs, keys aligned. */
export function renderFields(fields: [string, string][]): string {
  const w = Math.max(...fields.map(([k]) => k.length));
  return fields.map(([k, v]) => `${(k + ':').padEnd(w + 1)} ${v}`).join('\n') + '\n';
}
