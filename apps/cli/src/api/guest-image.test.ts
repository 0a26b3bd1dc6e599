import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CliError } from '../errors.js';
import { MAX_SENT_GUEST_IMAGE, isBuiltInGuest, resolveGuest } from './guest-image.js';

const scratch = mkdtempSync(join(tmpdir(), 'handoff-guest-image-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function usage(value: string): string {
  try {
    resolveGuest(value);
  } catch (err) {
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).code).toBe('CLI_USAGE');
    return (err as CliError).message;
  }
  throw new Error(`--guest ${value} was accepted`);
}

describe('--guest: a name for the vmm or a local file to send', () => {
  it('never reads built-in names locally', () => {
    for (const name of ['hello', 'ab', 'kvserver', 'bench', 'conformance/rv32m']) {
      expect(isBuiltInGuest(name)).toBe(true);
      expect(resolveGuest(name)).toEqual({ name });
    }
    expect(isBuiltInGuest('conformance/../x')).toBe(false);
  });

  it('sends a file that exists here, named by its base name', () => {
    const path = join(scratch, 'mine.elf');
    writeFileSync(path, Uint8Array.from([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]));
    const g = resolveGuest(path);
    expect(g.name).toBe('mine.elf');
    expect(g.path).toBe(path);
    expect([...g.image!]).toEqual([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]);
    const noSuffix = join(scratch, 'kernel');
    writeFileSync(noSuffix, 'x');
    expect(resolveGuest(noSuffix).name).toBe('kernel'); // has a "/": a path
  });

  it("leaves names that are no file here to the vmm's guest folder", () => {
    expect(resolveGuest('x.elf')).toEqual({ name: 'x.elf' });
    expect(resolveGuest('sub/x.elf')).toEqual({ name: 'sub/x.elf' });
    expect(resolveGuest('/srv/guests/x.elf')).toEqual({ name: '/srv/guests/x.elf' });
    expect(resolveGuest('plain')).toEqual({ name: 'plain' });
  });

  it('refuses an explicit ./ path that is missing, and a folder', () => {
    expect(usage('./no-such.elf')).toContain('no such file here');
    expect(usage('../no-such.elf')).toContain('no such file here');
    mkdirSync(join(scratch, 'dir.elf'));
    expect(usage(join(scratch, 'dir.elf'))).toContain('is not a regular file');
  });

  it('sends at most 16 MiB and says what to do with a bigger file', () => {
    const limit = join(scratch, 'limit.elf');
    writeFileSync(limit, new Uint8Array(MAX_SENT_GUEST_IMAGE));
    expect(resolveGuest(limit).image!.length).toBe(16 * 1024 * 1024);
    const over = join(scratch, 'over.elf');
    writeFileSync(over, new Uint8Array(MAX_SENT_GUEST_IMAGE + 1));
    expect(usage(over)).toMatch(/is 16777217 bytes, over the 16 MiB .*--guest-dir/);
  });
});
