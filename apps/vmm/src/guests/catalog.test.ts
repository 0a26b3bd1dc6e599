import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VmmError } from '../model/vmm-error.js';
import {
  BUILT_IN_GUESTS_DIR,
  GuestCatalog,
  builtInGuestPath,
  guestFromBytes,
  MAX_SENT_GUEST_IMAGE,
  type GuestCatalogOptions,
} from './catalog.js';

const scratch = mkdtempSync(join(tmpdir(), 'handoff-catalog-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const helloElf = join(BUILT_IN_GUESTS_DIR, 'hello', 'hello.elf');
/** The guest folder of these tests, and files beside and outside it. */
const guestDir = join(scratch, 'guests');
const outside = join(scratch, 'outside');
mkdirSync(join(guestDir, 'sub'), { recursive: true });
mkdirSync(outside);
copyFileSync(helloElf, join(guestDir, 'mine.elf'));
copyFileSync(helloElf, join(guestDir, 'sub', 'deep.elf'));
copyFileSync(helloElf, join(outside, 'secret.elf'));
writeFileSync(join(outside, 'notes.txt'), 'not for guests\n');
symlinkSync(join(outside, 'secret.elf'), join(guestDir, 'escape.elf'));
symlinkSync(outside, join(guestDir, 'escape-dir'));
symlinkSync(join(guestDir, 'mine.elf'), join(guestDir, 'alias.elf'));

const catalog = (opts: Partial<GuestCatalogOptions> = {}) =>
  new GuestCatalog({ vmmId: 'vmm-a', guestDir, ...opts });

function refusal(load: () => unknown): VmmError {
  try {
    load();
  } catch (err) {
    if (VmmError.is(err)) return err;
    throw err;
  }
  throw new Error('the guest loaded');
}

describe('the guest catalog', () => {
  it('maps built-in names into guests/<name>/<name>.elf of the built-in folder', () => {
    expect(builtInGuestPath('hello')).toBe(helloElf);
    expect(builtInGuestPath('kvserver', '/g')).toBe('/g/kvserver/kvserver.elf');
    expect(builtInGuestPath('conformance/rv32m', '/g')).toBe('/g/conformance/prebuilt/rv32m.elf');
    expect(builtInGuestPath('/abs/x.elf')).toBeNull();
    expect(builtInGuestPath('conformance/../../etc/passwd')).toBeNull();
  });

  it('loads hello and a conformance program, with or without a guest folder', () => {
    for (const c of [catalog(), catalog({ guestDir: null })]) {
      const hello = c.load('hello');
      expect(hello.builtIn).toBe(true);
      expect(hello.image.entry).toBe(0x8000_0000);
      expect(c.load('conformance/rv32m').image.segments.length).toBeGreaterThan(0);
    }
  });

  it('loads files of the guest folder by relative name, absolute path inside, or symlink inside', () => {
    const c = catalog();
    expect(c.load('mine.elf')).toMatchObject({
      path: join(guestDir, 'mine.elf'),
      builtIn: false,
    });
    expect(c.load('sub/deep.elf').path).toBe(join(guestDir, 'sub', 'deep.elf'));
    expect(c.load('./sub/../mine.elf').path).toBe(join(guestDir, 'mine.elf'));
    expect(c.load(join(guestDir, 'sub', 'deep.elf')).builtIn).toBe(false);
    expect(c.load('alias.elf').path).toBe(join(guestDir, 'mine.elf')); // its real path
  });

  it('says when a built-in guest is not built', () => {
    const err = refusal(() => catalog({ builtInDir: scratch }).load('bench'));
    expect(err.code).toBe('VMM_GUEST_NOT_FOUND');
    expect(err.message).toContain('is not built');
  });

  it('gives one answer for every name that leads to no file inside the folder', () => {
    const c = catalog();
    const names = [
      'missing.elf', // inside, no such file
      join(outside, 'secret.elf'), // absolute, exists, outside
      join(outside, 'missing.elf'), // absolute, missing, outside
      '../outside/secret.elf', // .. out of the folder, exists
      '../outside/missing.elf', // .. out of the folder, missing
      'sub/../../outside/notes.txt',
      'escape.elf', // a symlink inside whose target is outside
      'escape-dir/secret.elf', // through a symlinked folder
      'escape-dir/missing.elf',
      '/etc/passwd',
      '/no/such/file',
      'conformance/../../etc/passwd', // not a built-in name: a path like any other
      'nul\0byte',
    ];
    for (const name of names) {
      const err = refusal(() => c.load(name));
      expect({ name, code: err.code, message: err.message }).toEqual({
        name,
        code: 'VMM_GUEST_NOT_FOUND',
        message:
          `guest ${name} is not available on vmm-a: name a built-in guest (hello, ab, ` +
          `kvserver, bench, conformance/<test>) or put the ELF in ${guestDir}`,
      });
    }
  });

  it('without a guest folder, refuses every other name alike and says how to add one', () => {
    const c = catalog({ guestDir: null });
    const messages = new Set(
      [helloElf, join(outside, 'missing.elf'), 'mine.elf'].map((name) =>
        refusal(() => c.load(name)).message.replace(name, 'NAME'),
      ),
    );
    expect([...messages]).toEqual([
      'guest NAME is not available on vmm-a: name a built-in guest (hello, ab, kvserver, bench, ' +
        'conformance/<test>); this vmm reads no other guest images (start it with --guest-dir ' +
        '<folder> and put the ELF there)',
    ]);
  });

  it('refuses files inside the folder that are not RV32 executables', () => {
    writeFileSync(join(guestDir, 'text'), 'not an elf at all, just some text bytes\n');
    const elf64 = new Uint8Array(64);
    elf64.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
    writeFileSync(join(guestDir, 'elf64'), elf64);
    const c = catalog();
    expect(refusal(() => c.load('text'))).toMatchObject({
      code: 'VMM_INVALID_GUEST',
      message: expect.stringContaining('not an ELF file'),
    });
    expect(refusal(() => c.load('elf64')).message).toContain('not a 32-bit ELF');
    expect(refusal(() => c.load('sub'))).toMatchObject({
      code: 'VMM_INVALID_GUEST',
      message: expect.stringContaining('not a regular file'),
    });
  });

  it('does not hang on a FIFO in the folder', () => {
    const fifo = join(guestDir, 'pipe');
    try {
      execFileSync('mkfifo', [fifo]);
    } catch {
      console.log('mkfifo is not available here: the FIFO case is not checked');
      return;
    }
    expect(refusal(() => catalog().load('pipe')).message).toContain('not a regular file');
  });

  it('checks bytes from elsewhere (a client) like a file', () => {
    const bytes = new Uint8Array(readFileSync(helloElf));
    expect(guestFromBytes('sent', bytes, 'sent by vmctl').image.entry).toBe(0x8000_0000);
    expect(
      refusal(() => guestFromBytes('sent', new Uint8Array(10), 'sent by vmctl')),
    ).toMatchObject({
      code: 'VMM_INVALID_GUEST',
      message: expect.stringContaining('guest sent (sent by vmctl)'),
    });
  });

  it('takes a sent image under its label, up to 16 MiB, without looking the label up', () => {
    const bytes = new Uint8Array(readFileSync(helloElf));
    const sent = catalog({ guestDir: null }).fromClient('kvserver', bytes);
    expect(sent).toMatchObject({ name: 'kvserver', path: 'sent by the client', builtIn: false });
    expect(sent.bytes).toBe(bytes);
    expect(refusal(() => catalog().fromClient('e.elf', new Uint8Array(0)))).toMatchObject({
      code: 'VMM_INVALID_GUEST',
      message: expect.stringContaining('is empty'),
    });
    const over = new Uint8Array(MAX_SENT_GUEST_IMAGE + 1);
    over.set(bytes);
    expect(refusal(() => catalog().fromClient('o.elf', over))).toMatchObject({
      code: 'VMM_INVALID_GUEST',
      message: expect.stringMatching(/over the 16777216-byte \(16 MiB\) limit .*--guest-dir/),
    });
  });
});
