import type { memstore as pb } from '@handoff/proto';
import type { Logger } from '@handoff/service';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Catalog, CATALOG_FILE_NAME } from '../catalog/catalog.js';
import { MemstoreError } from '../errors.js';
import { memstoreConfig, resolveSettings, type MemstoreSettings } from '../config.js';
import { openMemstore, type Memstore } from '../memstore.js';

/**
 * Shared fixtures of the memstore's unit tests (not part of the build):
 * throw-away directories, a recording logger, a memstore on them.
 */

/** A state directory under os.tmpdir() and a volatile directory under /dev/shm. */
export interface TempDirs {
  readonly stateDir: string;
  readonly volatileDir: string;
  readonly persistentDir: string;
  /** Removes every directory (and the files in them). */
  cleanup(): void;
}

/** Fresh, empty directories for one test (or one benchmark run: `kind` names it). */
export function makeTempDirs(kind = 'unit'): TempDirs {
  const tag = `memstore-${kind}-${process.pid}-${randomBytes(4).toString('hex')}`;
  const stateDir = join(tmpdir(), tag);
  const volatileDir = join('/dev/shm', tag);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  return {
    stateDir,
    volatileDir,
    persistentDir: join(stateDir, 'regions'),
    cleanup() {
      rmSync(stateDir, { recursive: true, force: true });
      rmSync(volatileDir, { recursive: true, force: true });
    },
  };
}

/** A RegionSelector by name. */
export const byName = (name: string): pb.RegionSelector => ({
  selector: { $case: 'name', value: name },
});

/** The error `p` rejects with. @throws when it resolves */
export async function failure<E extends Error = Error>(p: Promise<unknown>): Promise<E> {
  try {
    await p;
  } catch (err) {
    return err as E;
  }
  throw new Error('expected the call to fail');
}

/** The memstore error code `fn` throws (undefined when it returns; a note for other errors). */
export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return MemstoreError.is(err) ? err.code : `not a MemstoreError: ${String(err)}`;
  }
}

/** One recorded log call. */
export interface LogEntry {
  readonly level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  readonly fields: Record<string, unknown>;
  readonly msg: string;
}

/** A logger that records instead of printing. */
export function recordingLogger(): { logger: Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const at =
    (level: LogEntry['level']) =>
    (fields: unknown, msg?: string): void => {
      if (typeof fields === 'string') entries.push({ level, fields: {}, msg: fields });
      else
        entries.push({ level, fields: (fields ?? {}) as Record<string, unknown>, msg: msg ?? '' });
    };
  const logger = {
    trace: at('trace'),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    fatal: at('fatal'),
    child: () => logger,
  };
  return { logger: logger as unknown as Logger, entries };
}

/** Settings pointing at `dirs` (port 0, loopback). */
export function testSettings(
  dirs: TempDirs,
  overrides: Partial<MemstoreSettings> = {},
): MemstoreSettings {
  return {
    ...resolveSettings(
      memstoreConfig({
        port: 0,
        'state-dir': dirs.stateDir,
        'volatile-dir': dirs.volatileDir,
        'persistent-dir': dirs.persistentDir,
      }),
    ),
    ...overrides,
  };
}

/** Opens a memstore on `dirs` with a recording logger. */
export function openTestMemstore(
  dirs: TempDirs,
  overrides: Partial<MemstoreSettings> = {},
): { memstore: Memstore; log: LogEntry[] } {
  const { logger, entries } = recordingLogger();
  return { memstore: openMemstore(testSettings(dirs, overrides), logger), log: entries };
}

/**
 * What kill -9 of the memstore leaves: the catalog files exactly as the OS
 * has them, without a close or a checkpoint. Copying them while the
 * connection is still open (nothing runs in between: it is all synchronous)
 * and opening the copy replays the WAL the way a restart after kill -9 does.
 */
export function catalogAfterKill9(stateDir: string, into: string): Catalog {
  mkdirSync(into, { recursive: true });
  for (const suffix of ['', '-wal']) {
    const from = join(stateDir, CATALOG_FILE_NAME + suffix);
    if (existsSync(from)) copyFileSync(from, join(into, CATALOG_FILE_NAME + suffix));
  }
  return Catalog.open(join(into, CATALOG_FILE_NAME));
}
export { LeaseChannelClient } from './lease-channel-client.js';
