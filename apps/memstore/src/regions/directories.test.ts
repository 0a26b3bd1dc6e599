import { chmodSync, mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeTempDirs, type TempDirs } from '../testing/fixtures.js';
import { ensureDirectory } from './directories.js';

let dirs: TempDirs;

beforeEach(() => {
  dirs = makeTempDirs();
});

afterEach(() => {
  dirs.cleanup();
});

describe('ensureDirectory', () => {
  it('creates a missing directory, owner-only', () => {
    const path = join(dirs.volatileDir, 'a', 'b');
    ensureDirectory(path, 'volatile directory', { shared: true });
    expect(statSync(path).isDirectory()).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o700);
    expect(statSync(join(dirs.volatileDir, 'a')).mode & 0o777).toBe(0o700);
    // Again on the existing directory: accepted as it is, mode unchanged.
    expect(() => ensureDirectory(path, 'volatile directory', { shared: true })).not.toThrow();
    expect(statSync(path).mode & 0o777).toBe(0o700);
  });

  it('refuses a symlink in a shared place, and a group-writable directory', () => {
    mkdirSync(dirs.volatileDir, { mode: 0o700 });
    const target = join(dirs.volatileDir, 'target');
    mkdirSync(target, { mode: 0o700 });
    const link = join(dirs.volatileDir, 'link');
    symlinkSync(target, link);
    expect(() => ensureDirectory(link, 'volatile directory', { shared: true })).toThrow(
      expect.objectContaining({
        code: 'REGION_UNSAFE_DIRECTORY',
        message: expect.stringContaining('symlink'),
      }),
    );
    for (const mode of [0o777, 0o755, 0o701]) {
      // Writable lets others plant files; readable or searchable lets them open the arms file.
      chmodSync(target, mode);
      expect(() => ensureDirectory(target, 'volatile directory', { shared: true })).toThrow(
        expect.objectContaining({
          code: 'REGION_UNSAFE_DIRECTORY',
          message: expect.stringContaining('chmod 700'),
        }),
      );
    }
  });

  it('refuses a path that is a file', () => {
    const file = join(dirs.stateDir, 'file');
    writeFileSync(file, '');
    expect(() => ensureDirectory(file, 'state directory', { shared: false })).toThrow(
      expect.objectContaining({ code: 'REGION_UNSAFE_DIRECTORY' }),
    );
  });
});
