import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VmmError } from '../model/vmm-error.js';
import { DEFAULT_GUESTS_DIR, guestPath, loadGuest } from './catalog.js';

const scratch = mkdtempSync(join(tmpdir(), 'handoff-catalog-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function refusal(guest: string, dir?: string): VmmError {
  try {
    loadGuest(guest, dir);
  } catch (err) {
    if (VmmError.is(err)) return err;
    throw err;
  }
  throw new Error(`${guest} loaded`);
}

describe('the guest catalog', () => {
  it('maps built-in names into guests/<name>/<name>.elf of the repository', () => {
    expect(guestPath('hello')).toEqual({
      path: join(DEFAULT_GUESTS_DIR, 'hello', 'hello.elf'),
      builtIn: true,
    });
    expect(guestPath('kvserver', '/g')).toEqual({
      path: '/g/kvserver/kvserver.elf',
      builtIn: true,
    });
    expect(guestPath('conformance/rv32m', '/g')).toEqual({
      path: '/g/conformance/prebuilt/rv32m.elf',
      builtIn: true,
    });
    expect(guestPath('/abs/x.elf')).toEqual({ path: '/abs/x.elf', builtIn: false });
    expect(guestPath('conformance/../../etc/passwd').builtIn).toBe(false);
  });

  it('loads hello and a conformance program and parses them', () => {
    const hello = loadGuest('hello');
    expect(hello.builtIn).toBe(true);
    expect(hello.image.entry).toBe(0x8000_0000);
    expect(loadGuest('conformance/rv32m').image.segments.length).toBeGreaterThan(0);
  });

  it('takes any other value as a path to an RV32 ELF', () => {
    const path = join(DEFAULT_GUESTS_DIR, 'hello', 'hello.elf');
    expect(loadGuest(path)).toMatchObject({ path, builtIn: false });
  });

  it('says when a built-in guest is not built', () => {
    const err = refusal('bench', scratch);
    expect(err.code).toBe('VMM_GUEST_NOT_FOUND');
    expect(err.message).toContain('is not built');
  });

  it('says when a path does not exist', () => {
    const err = refusal(join(scratch, 'missing.elf'));
    expect(err.code).toBe('VMM_GUEST_NOT_FOUND');
    expect(err.message).toMatch(/not a built-in guest .* no such file/);
  });

  it('refuses files that are not RV32 executables', () => {
    const text = join(scratch, 'text');
    writeFileSync(text, 'not an elf at all, just some text bytes for the header check\n');
    expect(refusal(text)).toMatchObject({
      code: 'VMM_INVALID_GUEST',
      message: expect.stringContaining('not an ELF file'),
    });
    const elf64 = new Uint8Array(64);
    elf64.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
    const path64 = join(scratch, 'elf64');
    writeFileSync(path64, elf64);
    expect(refusal(path64).message).toContain('not a 32-bit ELF');
    expect(refusal(scratch).code).toBe('VMM_INVALID_GUEST'); // a directory
  });
});
