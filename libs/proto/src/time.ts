import type { Timestamp } from './gen/google/protobuf/timestamp.js';

/** Converts a JS Date (millisecond precision) to a protobuf Timestamp. */
export function dateToTimestamp(date: Date): Timestamp {
  const ms = date.getTime();
  const seconds = Math.floor(ms / 1000);
  return { seconds: BigInt(seconds), nanos: (ms - seconds * 1000) * 1_000_000 };
}

/** Converts a protobuf Timestamp to a JS Date; undefined stays undefined. */
export function timestampToDate(ts: Timestamp | undefined): Date | undefined {
  if (ts === undefined) return undefined;
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1_000_000));
}
