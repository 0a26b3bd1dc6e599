const COLOURS = [36, 35, 33, 32, 34, 31];
const assigned = new Map<string, number>();

/** A stable ANSI colour per service name. */
export function colourFor(service: string): number {
  let c = assigned.get(service);
  if (c === undefined) {
    c = COLOURS[assigned.size % COLOURS.length]!;
    assigned.set(service, c);
  }
  return c;
}

/** Prefixes one service output line with its padded (optionally coloured) name. */
export function formatLogLine(service: string, line: string, colour?: number): string {
  const label = service.padEnd(9);
  return colour === undefined ? `${label}| ${line}` : `\u001b[${colour}m${label}|\u001b[0m ${line}`;
}
