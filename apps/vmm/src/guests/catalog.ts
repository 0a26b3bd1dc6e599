import {
  closeSync,
  constants,
  fstatSync,
  openSync,
  readlinkSync,
  readSync,
  realpathSync,
} from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LoaderError, parseElf, type ElfImage } from '../loader/elf.js';
import { VmmError } from '../model/vmm-error.js';

/**
 * Where a VM's guest image comes from. A guest is named in the spec:
 *
 * - a **built-in** name (`hello`, `ab`, `kvserver`, `bench`, `conformance/<test>`) is a prebuilt
 *   ELF under the built-in folder (the repository's `guests/`);
 * - **any other name** is a file in the instance's guest folder (`--guest-dir`): a path relative
 *   to it, or an absolute path inside it. The file's real path (symlinks resolved) must stay
 *   inside the folder. Without a guest folder only built-ins load.
 *
 * A name that does not lead to a file inside the folder — missing, outside, a symlink that
 * escapes, unreadable — gets one answer, the same whether or not some file exists at that path:
 * the vmm reveals nothing of its host's files beyond the guest folder.
 *
 * Guest bytes **sent by a client** (CreateVm's `guest_image`, for a client whose file this vmm
 * cannot read: another host, a container) go through {@link GuestCatalog.fromClient}: at most
 * {@link MAX_SENT_GUEST_IMAGE} bytes, then the same checks a file's bytes pass. The spec's name
 * then only labels the image (lists, logs); it is not looked up.
 */

/** The guests built by `guests/Makefile` into `guests/<name>/<name>.elf`. */
export const BUILT_IN_GUESTS = ['hello', 'ab', 'kvserver', 'bench'] as const;

/** Prefix of the conformance test programs (`conformance/rv32i-alu` → guests/conformance/prebuilt/rv32i-alu.elf). */
export const CONFORMANCE_PREFIX = 'conformance/';

/** Largest guest image read (an ELF is loaded whole into the vmm's memory first). */
export const MAX_GUEST_FILE = 64 * 1024 * 1024;

/**
 * Largest guest image a client may send in CreateVm (16 MiB). vmctl refuses bigger files before
 * sending; the vmm's and the migrator's gRPC servers accept messages just above it
 * ({@link MAX_CREATE_VM_MESSAGE}). Bigger guests go into the vmm's guest folder.
 */
export const MAX_SENT_GUEST_IMAGE = 16 * 1024 * 1024;

/** Largest CreateVm message the vmm accepts: a sent image plus room for the spec. */
export const MAX_CREATE_VM_MESSAGE = MAX_SENT_GUEST_IMAGE + 1024 * 1024;

/** `guests/` of this repository: apps/vmm/{src,dist}/guests/catalog.{ts,js} → ../../../../guests. */
export const BUILT_IN_GUESTS_DIR = resolve(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
  '..',
  'guests',
);

/** The built-in names, as refusals list them. */
const BUILT_IN_LIST = `${BUILT_IN_GUESTS.join(', ')}, ${CONFORMANCE_PREFIX}<test>`;

/** A guest resolved to an image. */
export interface GuestImage {
  /** What the spec said. */
  readonly name: string;
  /** Where it came from: the file (its real path), or what sent the bytes. */
  readonly path: string;
  readonly builtIn: boolean;
  readonly bytes: Uint8Array;
  readonly image: ElfImage;
}

/** Where a {@link GuestCatalog} reads guests from. */
export interface GuestCatalogOptions {
  /** This instance's id, named in refusals. */
  readonly vmmId: string;
  /** The built-in guests' folder (default {@link BUILT_IN_GUESTS_DIR}). */
  readonly builtInDir?: string;
  /** The one folder other guest images are read from (`--guest-dir`); null or absent: none. */
  readonly guestDir?: string | null;
}

/** The file of built-in guest `name` under `builtInDir`, or null when `name` is not built in. */
export function builtInGuestPath(name: string, builtInDir = BUILT_IN_GUESTS_DIR): string | null {
  if ((BUILT_IN_GUESTS as readonly string[]).includes(name)) {
    return join(builtInDir, name, `${name}.elf`);
  }
  if (name.startsWith(CONFORMANCE_PREFIX)) {
    const test = name.slice(CONFORMANCE_PREFIX.length);
    if (/^[a-z0-9][a-z0-9._-]*$/.test(test)) {
      return join(builtInDir, 'conformance', 'prebuilt', `${test}.elf`);
    }
  }
  return null;
}

/**
 * Checks guest bytes and parses them: at most {@link MAX_GUEST_FILE}, an ELF32 RISC-V
 * executable. `origin` says where they came from in messages (a file, a client).
 *
 * @throws VmmError `VMM_INVALID_GUEST`
 */
export function guestFromBytes(
  name: string,
  bytes: Uint8Array,
  origin: string,
  builtIn = false,
): GuestImage {
  if (bytes.length > MAX_GUEST_FILE) {
    throw new VmmError(
      'VMM_INVALID_GUEST',
      `guest ${name} (${origin}) is ${bytes.length} bytes, over the ${MAX_GUEST_FILE}-byte ` +
        'limit of a guest image',
    );
  }
  try {
    return { name, path: origin, builtIn, bytes, image: parseElf(bytes) };
  } catch (err) {
    if (err instanceof LoaderError) {
      throw new VmmError(
        'VMM_INVALID_GUEST',
        `guest ${name} (${origin}) is not a loadable RV32 executable: ${err.message}`,
        { cause: err },
      );
    }
    throw err;
  }
}

/** The guests one vmm instance may load: the built-ins and the files of its guest folder. */
export class GuestCatalog {
  private readonly builtInDir: string;
  private readonly guestDir: string | null;

  constructor(private readonly opts: GuestCatalogOptions) {
    this.builtInDir = opts.builtInDir ?? BUILT_IN_GUESTS_DIR;
    this.guestDir = opts.guestDir ?? null;
  }

  /**
   * Resolves guest `name` (see the module's rules), reads it and checks that it is an RV32
   * executable. Blocking file I/O of at most {@link MAX_GUEST_FILE} bytes.
   *
   * @throws VmmError `VMM_GUEST_NOT_FOUND` (a built-in that is not built, or a name that leads
   *   to no file inside the guest folder — one message for every such name) or
   *   `VMM_INVALID_GUEST` (inside the folder but not a regular file, too big, not an RV32 ELF)
   */
  load(name: string): GuestImage {
    const builtIn = builtInGuestPath(name, this.builtInDir);
    if (builtIn !== null) {
      let fd: number;
      try {
        fd = openSync(builtIn, constants.O_RDONLY | constants.O_NONBLOCK);
      } catch (err) {
        throw new VmmError(
          'VMM_GUEST_NOT_FOUND',
          `built-in guest ${name} is not built (${builtIn} is missing); build it with ` +
            '`make -C guests` or pick another guest',
          { cause: err },
        );
      }
      return guestFromBytes(name, readWhole(fd, name, builtIn), builtIn, true);
    }
    const { fd, path } = this.openInGuestDir(name);
    return guestFromBytes(name, readWhole(fd, name, path), path);
  }

  /**
   * Checks an image a client sent (CreateVm's `guest_image`) under the label `name`: at most
   * {@link MAX_SENT_GUEST_IMAGE} bytes, an ELF32 RISC-V executable. Every byte is hostile: the
   * ELF parser checks each offset and size against the image before use.
   *
   * @throws VmmError `VMM_INVALID_GUEST`
   */
  fromClient(name: string, bytes: Uint8Array): GuestImage {
    if (bytes.length > MAX_SENT_GUEST_IMAGE) {
      throw new VmmError(
        'VMM_INVALID_GUEST',
        `guest ${name} (sent by the client) is ${bytes.length} bytes, over the ` +
          `${MAX_SENT_GUEST_IMAGE}-byte (16 MiB) limit of a sent guest image; put the ELF in ` +
          `the guest folder of ${this.opts.vmmId} (--guest-dir) and name it instead`,
      );
    }
    if (bytes.length === 0) {
      throw new VmmError(
        'VMM_INVALID_GUEST',
        `guest ${name} (sent by the client) is empty; send an RV32 ELF executable`,
      );
    }
    return guestFromBytes(name, bytes, 'sent by the client');
  }

  /**
   * Opens `name` inside the guest folder, or throws the one refusal. The real path is checked
   * twice: before opening (realpath) and of the open file itself (/proc/self/fd), so a symlink
   * swapped in between cannot lead outside.
   */
  private openInGuestDir(name: string): { fd: number; path: string } {
    const dir = this.guestDir;
    if (dir === null || name.includes('\0')) throw this.notAvailable(name);
    let realDir: string;
    let real: string;
    try {
      realDir = realpathSync(dir);
      real = realpathSync(resolve(realDir, name));
    } catch (err) {
      throw this.notAvailable(name, err);
    }
    if (!inside(realDir, real)) throw this.notAvailable(name);
    let fd: number;
    try {
      // No symlink as the last component (it was resolved above), and no blocking on a FIFO.
      fd = openSync(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      throw this.notAvailable(name, err);
    }
    let opened: string | null = null;
    try {
      opened = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      // No /proc: the realpath check above stands alone.
    }
    if (opened !== null && !inside(realDir, opened)) {
      closeSync(fd);
      throw this.notAvailable(name);
    }
    return { fd, path: real };
  }

  /** The one refusal of a name that leads to no file inside the guest folder. */
  private notAvailable(name: string, cause?: unknown): VmmError {
    const where =
      this.guestDir === null
        ? `name a built-in guest (${BUILT_IN_LIST}); this vmm reads no other guest images ` +
          '(start it with --guest-dir <folder> and put the ELF there)'
        : `name a built-in guest (${BUILT_IN_LIST}) or put the ELF in ${this.guestDir}`;
    return new VmmError(
      'VMM_GUEST_NOT_FOUND',
      `guest ${name} is not available on ${this.opts.vmmId}: ${where}`,
      cause === undefined ? undefined : { cause },
    );
  }
}

/** Whether real path `path` lies strictly inside real folder `dir`. */
function inside(dir: string, path: string): boolean {
  const prefix = dir.endsWith(sep) ? dir : dir + sep;
  return path.startsWith(prefix) && path.length > prefix.length;
}

/**
 * Reads the whole regular file open on `fd` (at most {@link MAX_GUEST_FILE} bytes) and closes it.
 *
 * @throws VmmError `VMM_INVALID_GUEST` when it is not a regular file or too big
 */
function readWhole(fd: number, name: string, path: string): Uint8Array {
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) {
      throw new VmmError('VMM_INVALID_GUEST', `guest ${name} (${path}) is not a regular file`);
    }
    if (st.size > MAX_GUEST_FILE) {
      throw new VmmError(
        'VMM_INVALID_GUEST',
        `guest ${name} (${path}) is ${st.size} bytes, over the ${MAX_GUEST_FILE}-byte limit of ` +
          'a guest image',
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
