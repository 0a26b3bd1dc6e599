import { memstore as pb } from '@handoff/proto';
import { createClient } from '@handoff/service';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startService, type TestService } from './services.js';

/**
 * Helpers of the memstore cross-process tests: throw-away directories
 * (state under os.tmpdir(), volatile regions under /dev/shm) and a
 * memstore process started on them.
 */

/** The directories one memstore test owns. */
export interface MemstoreDirs {
  readonly stateDir: string;
  readonly volatileDir: string;
  readonly persistentDir: string;
  /** The memstore flags that point at these directories. */
  readonly args: readonly string[];
  /** Removes every directory and the files in them. */
  cleanup(): void;
}

/** Fresh directories for one test. */
export function memstoreDirs(): MemstoreDirs {
  const tag = `handoff-memstore-xp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const stateDir = join(tmpdir(), tag);
  const volatileDir = join('/dev/shm', tag);
  const persistentDir = join(stateDir, 'regions');
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  return {
    stateDir,
    volatileDir,
    persistentDir,
    args: [
      '--state-dir',
      stateDir,
      '--volatile-dir',
      volatileDir,
      '--persistent-dir',
      persistentDir,
    ],
    cleanup() {
      rmSync(stateDir, { recursive: true, force: true });
      rmSync(volatileDir, { recursive: true, force: true });
    },
  };
}

/** A memstore process and a client of it. */
export interface MemstoreUnderTest {
  readonly process: TestService;
  readonly client: pb.MemstoreServiceClient;
  /** Closes the client and stops the process gracefully; returns the exit code. */
  stop(): Promise<number | null>;
  /** Closes the client and kills the process with SIGKILL. */
  kill9(): Promise<void>;
}

/** Starts the built memstore on `dirs` (port 0, ready file) with a client. */
export async function startMemstoreProcess(
  dirs: MemstoreDirs,
  extraArgs: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<MemstoreUnderTest> {
  const proc = await startService('memstore', [...dirs.args, ...extraArgs], { env });
  const client = createClient(pb.MemstoreServiceClient, proc.address, proc.credentials);
  return {
    process: proc,
    client,
    stop: async () => {
      client.close();
      return proc.stop();
    },
    kill9: async () => {
      client.close();
      await proc.kill9();
    },
  };
}

/** Absolute paths of the region files (`region-*.mem`) in the given directories. */
export function regionFiles(...dirs: string[]): string[] {
  const out: string[] = [];
  for (const dir of dirs) {
    let names: string[] = [];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) if (/^region-.*\.mem$/.test(n)) out.push(join(dir, n));
  }
  return out.sort();
}

/** What start-up reconciliation reported (parsed from the process's JSON log). */
export interface ReconcileCounts {
  rolledBack: number;
  orphansRemoved: number;
  lost: number;
  recovered: number;
  modesFixed: number;
  sizeMismatches: number;
  regions: number;
}

/**
 * The reconciliation report a memstore logged at start-up. Its output
 * reaches us through a pipe, possibly after the ready file, so this waits
 * (up to `timeoutMs`) for the line.
 */
export async function reconcileReport(
  proc: TestService,
  timeoutMs = 5000,
): Promise<ReconcileCounts> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const line of proc.output().split('\n')) {
      if (!line.includes('"reconciliation done"')) continue;
      const { rolledBack, orphansRemoved, lost, recovered, modesFixed, sizeMismatches, regions } =
        JSON.parse(line) as ReconcileCounts;
      return { rolledBack, orphansRemoved, lost, recovered, modesFixed, sizeMismatches, regions };
    }
    if (Date.now() > deadline) {
      throw new Error(`no reconciliation report in the memstore output:\n${proc.output()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The selector of a region by name. */
export function regionNamed(name: string): pb.RegionSelector {
  return { selector: { $case: 'name', value: name } };
}
