import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LoaderError, parseElf, type ElfImage } from '../loader/elf.js';
import { VmmError } from '../model/vmm-error.js';

/**
 * Guest lookup: a built-in name (`hello`, `ab`, `kvserver`, `bench`, or `conformance/<test>`)
 * resolves to a prebuilt ELF under the repository's `guests/` folder; anything else is a path
 * to a QEMU-virt-compatible RV32 ELF on the vmm's host.
 */

/** The guests built by `guests/Makefile` into `guests/<name>/<name>.elf`. */
export const BUILT_IN_GUESTS = ['hello', 'ab', 'kvserver', 'bench'] as const;

/** Prefix of the conformance test programs (`conformance/rv32i-alu` → guests/conformance/prebuilt/rv32i-alu.elf). */
export const CONFORMANCE_PREFIX = 'conformance/';

/** Largest guest image read (an ELF is loaded whole into the vmm's memory first). */
export const MAX_GUEST_FILE = 64 * 1024 * 1024;

/** `guests/` of this repository: apps/vmm/{src,dist}/guests/catalog.{ts,js} → ../../../../guests. */
export const DEFAULT_GUESTS_DIR = resolve(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
  '..',
  'guests',
);

/** A guest resolved to an image. */
export interface GuestImage {
  /** What the spec said. */
  readonly name: string;
  /** The file it came from. */
  readonly path: string;
  readonly builtIn: boolean;
  readonly bytes: Uint8Array;
  readonly image: ElfImage;
}

/** Where a guest name points, without reading the file. */
export function guestPath(
  guest: string,
  guestsDir = DEFAULT_GUESTS_DIR,
): { path: string; builtIn: boolean } {
  if ((BUILT_IN_GUESTS as readonly string[]).includes(guest)) {
    return { path: join(guestsDir, guest, `${guest}.elf`), builtIn: true };
  }
  if (guest.startsWith(CONFORMANCE_PREFIX)) {
    const test = guest.slice(CONFORMANCE_PREFIX.length);
    if (/^[a-z0-9][a-z0-9._-]*$/.test(test)) {
      return { path: join(guestsDir, 'conformance', 'prebuilt', `${test}.elf`), builtIn: true };
    }
  }
  return { path: isAbsolute(guest) ? guest : resolve(guest), builtIn: false };
}

/**
 * Resolves and reads a guest, and checks that it is an RV32 executable.
 *
 * @throws VmmError `VMM_GUEST_NOT_FOUND` (neither built in nor a readable file) or
 *   `VMM_INVALID_GUEST` (not an ELF, wrong architecture, too large).
 */
export function loadGuest(guest: string, guestsDir = DEFAULT_GUESTS_DIR): GuestImage {
  const { path, builtIn } = guestPath(guest, guestsDir);
  const bytes = readGuestFile(guest, path, builtIn);
  try {
    return { name: guest, path, builtIn, bytes, image: parseElf(bytes) };
  } catch (err) {
    if (err instanceof LoaderError) {
      throw new VmmError(
        'VMM_INVALID_GUEST',
        `guest ${guest} (${path}) is not a loadable RV32 executable: ${err.message}`,
        { cause: err },
      );
    }
    throw err;
  }
}

function readGuestFile(guest: string, path: string, builtIn: boolean): Uint8Array {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (builtIn) {
      throw new VmmError(
        'VMM_GUEST_NOT_FOUND',
        `built-in guest ${guest} is not built (${path} is missing); build it with ` +
          '`make -C guests` or pick another guest',
        { cause: err },
      );
    }
    const what = code === 'ENOENT' ? 'no such file' : `cannot open it (${code ?? 'error'})`;
    throw new VmmError(
      'VMM_GUEST_NOT_FOUND',
      `guest "${guest}" is not a built-in guest (${BUILT_IN_GUESTS.join(', ')}, ` +
        `${CONFORMANCE_PREFIX}<test>) and ${path}: ${what}; give a built-in name or the path of ` +
        'an RV32 ELF on the vmm host',
      { cause: err },
    );
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) {
      throw new VmmError('VMM_INVALID_GUEST', `guest ${path} is not a regular file`);
    }
    if (st.size > MAX_GUEST_FILE) {
      throw new VmmError(
        'VMM_INVALID_GUEST',
        `guest ${path} is ${st.size} bytes, over the ${MAX_GUEST_FILE}-byte limit of a guest image`,
      );
    }
    const bytes = new Uint8Array(st.size);
    let at = 0;
    while (at < bytes.length) {
      const n = readSync(fd, bytes, at, bytes.length - at, at);
      if (n === 0) break;
      at += n;
    }
    return bytes.subarray(0, at);
  } finally {
    closeSync(fd);
  }
}
