import { pino, type Logger, type LoggerOptions } from 'pino';
import pretty from 'pino-pretty';

export type { Logger } from 'pino';

/** Log output format: JSON lines, or human-readable lines for a terminal. */
export type LogFormat = 'json' | 'pretty' | 'auto';

/**
 * Creates the service's root logger. JSON lines by default; pretty when the
 * format is `pretty`, or `auto` and stdout is a terminal. Output is written
 * synchronously (no buffer, no transport worker), so nothing is lost on exit
 * and exit never waits on a reader that is gone.
 * Never log payloads (page data, console bytes): log sizes and ids.
 */
export function createLogger(opts: {
  name: string;
  level?: string;
  format?: LogFormat;
  base?: Record<string, unknown>;
}): Logger {
  const options: LoggerOptions = {
    level: opts.level ?? 'info',
    base: { service: opts.name, pid: process.pid, ...opts.base },
  };
  const format = opts.format ?? 'auto';
  const usePretty = format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true);
  if (usePretty) {
    return pino(
      options,
      pretty({
        sync: true,
        colorize: process.stdout.isTTY === true,
        ignore: 'pid,hostname,service',
      }),
    );
  }
  // Synchronous too: an asynchronous destination keeps lines in a buffer that pino flushes at
  // exit, and that flush retries a write to a closed pipe forever (a service whose launcher was
  // killed would never exit). Written at once, a line to a closed pipe fails once and logging
  // stops (pino's destination turns itself off on EPIPE). Node writes to pipes synchronously
  // anyway.
  return pino(options, pino.destination({ dest: 1, sync: true }));
}
