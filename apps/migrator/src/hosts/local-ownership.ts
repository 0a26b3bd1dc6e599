/**
 * The local backend of {@link HostOwnership}: the table in memory, written through to one JSON
 * file beside the job journal (`host-owners.json` in `--state-dir`) by a temporary file, fsync
 * and rename, so a migrator killed at any moment finds either the table before a change or the
 * one after it. Right for one migrator; several migrators need the etcd backend.
 *
 * @packageDocumentation
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { MigratorError } from '../errors.js';
import { HOST_ID_PATTERN as HOST_ID } from '../registry/vmm-registry.js';
import type { HostOwnership, VmOwnership } from './host-ownership.js';

/** File name of the table inside the migrator's `--state-dir`. */
export const OWNERSHIP_FILE = 'host-owners.json';

/** Version of the file's format (`{"v":1,"vms":{"vm1":{"host":"host-1","epoch":3}}}`). */
export const OWNERSHIP_VERSION = 1;

/** What a VM name may be (the vmm's rule: 1-48 lower-case letters, digits, ".", "_", "-"). */
const VM_NAME = /^[a-z0-9][a-z0-9._-]{0,47}$/;

interface Entry {
  host: string | null;
  epoch: number;
}

/**
 * Host ownership kept by this migrator. Each call is checked against the table, in call order,
 * when it is made; its change resolves once a write of the table that holds it is on disk.
 * Changes made in one turn of the event loop share one write (a burst of claims costs a few
 * writes, not one each); when a write fails, every change it carried is refused and the table
 * goes back to what is on disk. `owner` answers once no change is in flight, so it never sees
 * one that might still be refused.
 */
export class LocalHostOwnership implements HostOwnership {
  /** The table as it is on disk (as the last write left it). */
  private durable: Map<string, Entry>;
  /** Changes not on disk yet, waiting for the next write, with their callers. */
  private waiting: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  /** The write in flight (scheduled or running), or null. */
  private flushing: Promise<void> | null = null;

  private constructor(
    /** The table with every change made so far (on disk, or waiting for the next write). */
    private table: Map<string, Entry>,
    private readonly path: string | null,
  ) {
    this.durable = new Map(table);
  }

  /**
   * Opens the table in `dir` (created when missing): what a previous run left survives.
   *
   * @throws MigratorError `MIGRATOR_JOURNAL_FAILED` when the file cannot be read or is not a
   *   table of this format (the message names the file)
   */
  static open(dir: string): LocalHostOwnership {
    const path = join(dir, OWNERSHIP_FILE);
    try {
      mkdirSync(dir, { recursive: true });
      return new LocalHostOwnership(
        existsSync(path) ? parse(readFileSync(path, 'utf8')) : new Map(),
        path,
      );
    } catch (err) {
      throw new MigratorError(
        'MIGRATOR_JOURNAL_FAILED',
        `cannot read the host ownership table ${path}: ${(err as Error).message}; restore it ` +
          'from a backup (moving it aside starts every epoch at 0 again, which un-fences hosts ' +
          'that hold old epochs: do that only with every vmm stopped)',
        { cause: err },
      );
    }
  }

  /** A table in memory only (a migrator without `--state-dir`, tests): a restart forgets it. */
  static inMemory(): LocalHostOwnership {
    return new LocalHostOwnership(new Map(), null);
  }

  async owner(vm: string): Promise<VmOwnership> {
    checkVm(vm);
    while (this.flushing !== null) await this.flushing;
    return this.ownershipOf(vm);
  }

  claim(vm: string, host: string, expectedEpoch: number): Promise<VmOwnership> {
    try {
      checkVm(vm);
      checkHost(host);
      checkEpoch(expectedEpoch);
      const now = this.ownershipOf(vm);
      if (now.epoch !== expectedEpoch) {
        throw new MigratorError(
          'MIGRATOR_OWNERSHIP_CONFLICT',
          `${host} cannot claim ${vm} at epoch ${expectedEpoch}: it is at epoch ${now.epoch}, ` +
            `owned by ${now.host ?? 'no host'}; read its owner again and decide anew`,
        );
      }
      return this.change(vm, { host, epoch: expectedEpoch + 1 });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  release(vm: string, host: string, epoch: number): Promise<VmOwnership> {
    try {
      checkVm(vm);
      checkHost(host);
      checkEpoch(epoch);
      const now = this.ownershipOf(vm);
      if (now.host !== host || now.epoch !== epoch) {
        throw new MigratorError(
          'MIGRATOR_OWNERSHIP_CONFLICT',
          `${host} cannot release ${vm} at epoch ${epoch}: it is at epoch ${now.epoch}, owned ` +
            `by ${now.host ?? 'no host'}`,
        );
      }
      return this.change(vm, { host: null, epoch: epoch + 1 });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private ownershipOf(vm: string): VmOwnership {
    const e = this.table.get(vm);
    return { vm, host: e?.host ?? null, epoch: e?.epoch ?? 0 };
  }

  /** Sets one entry now; resolves once a write holding it is on disk. */
  private change(vm: string, entry: Entry): Promise<VmOwnership> {
    this.table.set(vm, entry);
    const result: VmOwnership = { vm, ...entry };
    if (this.path === null) {
      this.durable.set(vm, entry);
      return Promise.resolve(result);
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve: () => resolve(result), reject });
      // the calls of this turn join the write, made once they are all in
      this.flushing ??= new Promise<void>((done) => setImmediate(done)).then(() => this.flush());
    });
  }

  /** Writes the table with every waiting change, and settles their callers. */
  private flush(): void {
    const batch = this.waiting.splice(0);
    try {
      writeAtomically(this.path!, serialize(this.table));
      this.durable = new Map(this.table);
      for (const w of batch) w.resolve();
    } catch (err) {
      this.table = new Map(this.durable);
      const refused = new MigratorError(
        'MIGRATOR_JOURNAL_FAILED',
        `cannot write the host ownership table ${this.path}: ${(err as Error).message}; ` +
          'check the free space and permissions of --state-dir, then read the owner again',
        { cause: err },
      );
      for (const w of batch) w.reject(refused);
    } finally {
      this.flushing = null;
    }
  }
}

function serialize(table: Map<string, Entry>): string {
  const vms = Object.fromEntries([...table].sort(([a], [b]) => a.localeCompare(b)));
  return JSON.stringify({ v: OWNERSHIP_VERSION, vms }) + '\n';
}

/** Reads a table file; every entry is checked (the file is input like any other). */
function parse(text: string): Map<string, Entry> {
  const doc = JSON.parse(text) as { v?: unknown; vms?: unknown };
  if (doc.v !== OWNERSHIP_VERSION) {
    throw new Error(`format version ${String(doc.v)} is not ${OWNERSHIP_VERSION}`);
  }
  if (typeof doc.vms !== 'object' || doc.vms === null || Array.isArray(doc.vms)) {
    throw new Error('"vms" is not an object');
  }
  const table = new Map<string, Entry>();
  for (const [vm, raw] of Object.entries(doc.vms as Record<string, unknown>)) {
    const e = raw as { host?: unknown; epoch?: unknown } | null;
    const hostOk =
      e !== null && (e.host === null || (typeof e.host === 'string' && HOST_ID.test(e.host)));
    const epochOk =
      e !== null && typeof e.epoch === 'number' && Number.isSafeInteger(e.epoch) && e.epoch >= 0;
    if (!VM_NAME.test(vm) || !hostOk || !epochOk) {
      throw new Error(`the entry of "${vm}" is not a VM name with a host (or null) and an epoch`);
    }
    table.set(vm, { host: e.host as string | null, epoch: e.epoch as number });
  }
  return table;
}

/** Writes `text` to `path` through `path.tmp`, fsynced, renamed over, and the folder fsynced. */
function writeAtomically(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  const data = Buffer.from(text);
  const fd = openSync(tmp, 'w', 0o600);
  try {
    for (let off = 0; off < data.length;) off += writeSync(fd, data, off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

function checkVm(vm: string): void {
  if (!VM_NAME.test(vm)) {
    throw new MigratorError(
      'MIGRATOR_INVALID_ARGUMENT',
      `"${vm}" is not a VM name: use 1-48 lower-case letters, digits, ".", "_" or "-"`,
    );
  }
}

function checkHost(host: string): void {
  if (!HOST_ID.test(host)) {
    throw new MigratorError(
      'MIGRATOR_INVALID_ARGUMENT',
      `"${host}" is not a host id: use lower-case letters, digits and dashes (e.g. host-1)`,
    );
  }
}

function checkEpoch(epoch: number): void {
  if (!Number.isSafeInteger(epoch) || epoch < 0) {
    throw new MigratorError(
      'MIGRATOR_INVALID_ARGUMENT',
      `epoch ${epoch} is not a whole number >= 0: pass the epoch owner() or the last claim returned`,
    );
  }
}
