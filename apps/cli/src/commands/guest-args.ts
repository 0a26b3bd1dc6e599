import { CliError } from '../errors.js';

/** What commands that boot a guest share: `--arg` values and the `--guest` rule's help. */

/** `--arg key=value` flags as a map; a usage error for one without `=`. */
export function parseArgs(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list) {
    const eq = item.indexOf('=');
    if (eq <= 0) {
      throw new CliError('CLI_USAGE', `--arg ${item} is not key=value (e.g. --arg ab.pages=256)`);
    }
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/** How `--guest` is read (`vm create`, `vm run`; the rule of api/guest-image.ts). */
export const GUEST_HELP =
  '\nGuests (--guest VALUE), in this order:\n' +
  '  - a built-in name (hello, ab, kvserver, bench, conformance/<test>): the vmm has it;\n' +
  '    no local file is read;\n' +
  '  - a value with a "/" or ending in .elf that names a file here (./my.elf, /tmp/t.elf,\n' +
  '    my.elf): vmctl reads it and sends its bytes (at most 16 MiB); the VM lists it by its\n' +
  '    base name. A value starting ./ or ../ must exist here;\n' +
  "  - anything else: the name of an ELF in the vmm's guest folder (the vmm flag --guest-dir;\n" +
  '    for the local cluster `npm start -- --guest-dir DIR`), read by the vmm (up to 64 MiB).\n' +
  'The vmm reads no other file of its host.';
