import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { CliError } from '../errors.js';

/**
 * What `--guest VALUE` means, decided on vmctl's side (the rule vmctl's README states):
 *
 * 1. A **built-in name** (`hello`, `ab`, `kvserver`, `bench`, `conformance/<test>`) is sent as a
 *    name; no local file is read, whatever exists in the current folder.
 * 2. A value that **looks like a file** — it contains a `/` or ends in `.elf` — and names a
 *    file that exists here is **read and sent** (CreateVm's or CreateTemplate's `guest_image`;
 *    the spec names it by its base name). At most {@link MAX_SENT_GUEST_IMAGE} bytes.
 * 3. Anything else is sent as a **name** the vmm resolves in its own guest folder
 *    (`--guest-dir`), as before: `x.elf` or `sub/x.elf` there, or an absolute path inside it.
 *    A value starting `./` or `../` always means a local file, so one that does not exist is
 *    refused here rather than asked of the vmm.
 */

/**
 * Largest guest image vmctl sends (16 MiB, the vmm's own limit of a sent image). Bigger guests go
 * into the vmm's guest folder and are named.
 */
export const MAX_SENT_GUEST_IMAGE = 16 * 1024 * 1024;

/** The built-in guests' names (the vmm's `guests/<name>/<name>.elf`). */
const BUILT_IN = new Set(['hello', 'ab', 'kvserver', 'bench']);
const CONFORMANCE = /^conformance\/[a-z0-9][a-z0-9._-]*$/;

/** A `--guest` value resolved: a name for the vmm, or a local ELF's bytes to send. */
export interface GuestChoice {
  /** What the spec's `guest` says: the value itself, or the sent file's base name. */
  readonly name: string;
  /** The ELF to send; undefined when the vmm resolves `name` itself. */
  readonly image?: Uint8Array;
  /** The local file read (for messages), when one was. */
  readonly path?: string;
}

/** Whether `value` names a built-in guest (never read locally). */
export function isBuiltInGuest(value: string): boolean {
  return BUILT_IN.has(value) || CONFORMANCE.test(value);
}

/**
 * Resolves a `--guest` value by the rule above; reads the local file when it is one.
 *
 * @throws CliError `CLI_USAGE` for an explicit local path that is missing or not a regular file,
 *   or a file over {@link MAX_SENT_GUEST_IMAGE} bytes
 */
export function resolveGuest(value: string): GuestChoice {
  if (isBuiltInGuest(value)) return { name: value };
  const explicit = value.startsWith('./') || value.startsWith('../');
  if (!explicit && !value.includes('/') && !value.endsWith('.elf')) return { name: value };
  let size: number;
  let isFile: boolean;
  try {
    const st = statSync(value);
    size = st.size;
    isFile = st.isFile();
  } catch {
    if (explicit) {
      throw new CliError(
        'CLI_USAGE',
        `--guest ${value}: no such file here; give the path of an RV32 ELF on this machine, or ` +
          "the name of one in the vmm's guest folder (without ./)",
      );
    }
    return { name: value }; // not here: a name in the vmm's guest folder
  }
  if (!isFile) {
    throw new CliError('CLI_USAGE', `--guest ${value} is not a regular file; give an RV32 ELF`);
  }
  checkSize(value, size);
  return { name: basename(value), image: readLimited(value), path: value };
}

function checkSize(path: string, size: number): void {
  if (size > MAX_SENT_GUEST_IMAGE) {
    throw new CliError(
      'CLI_USAGE',
      `--guest ${path} is ${size} bytes, over the 16 MiB (${MAX_SENT_GUEST_IMAGE} bytes) vmctl ` +
        "sends; put the ELF in the vmm's guest folder (the vmm's --guest-dir; for the local " +
        'cluster `npm start -- --guest-dir DIR`) and name it there (--guest NAME.elf)',
    );
  }
}

/** Reads a regular file of at most the limit (checked again on the open file: it may grow). */
function readLimited(path: string): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    checkSize(path, size);
    const bytes = new Uint8Array(size);
    let at = 0;
    while (at < size) {
      const n = readSync(fd, bytes, at, size - at, at);
      if (n === 0) break;
      at += n;
    }
    return bytes.subarray(0, at);
  } finally {
    closeSync(fd);
  }
}
