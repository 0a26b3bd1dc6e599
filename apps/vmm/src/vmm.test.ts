import { mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dataChannelOf, guestDirOf, maxVmMemoryOf } from './vmm.js';

describe('vmm flags', () => {
  it('--data-channel: auto is a unix socket in the temp folder named by id and pid; off is none', () => {
    expect(dataChannelOf({ 'data-channel': 'auto', id: 'vmm-a' })).toBe(
      `unix:${tmpdir()}/handoff-vmm-a-${process.pid}.sock`,
    );
    expect(dataChannelOf({ 'data-channel': 'off', id: 'vmm-a' })).toBe('');
    expect(dataChannelOf({ 'data-channel': 'unix:/run/x.sock', id: 'vmm-a' })).toBe(
      'unix:/run/x.sock',
    );
    expect(dataChannelOf({ 'data-channel': '127.0.0.1:7301', id: 'vmm-a' })).toBe('127.0.0.1:7301');
  });

  it('--data-channel refuses anything else, saying what it takes', () => {
    for (const bad of ['unix:relative.sock', 'somewhere', '/abs/path', 'host:port']) {
      expect(() => dataChannelOf({ 'data-channel': bad, id: 'vmm-a' })).toThrow(
        /is not auto, off, unix:\/absolute\/path or host:port/,
      );
    }
  });

  it('--max-vm-memory takes binary sizes up to one 2 GiB block', () => {
    expect(maxVmMemoryOf({ 'max-vm-memory': '512M' })).toBe(512 * 1024 * 1024);
    expect(() => maxVmMemoryOf({ 'max-vm-memory': '3G' })).toThrow(/between 4K and 2G/);
  });

  it('--guest-dir: none by default, else the real path of an existing folder', () => {
    const dir = mkdtempSync(join(tmpdir(), 'handoff-guest-dir-'));
    try {
      symlinkSync(dir, `${dir}.link`);
      writeFileSync(join(dir, 'file'), '');
      expect(guestDirOf({ 'guest-dir': undefined })).toBeNull();
      expect(guestDirOf({ 'guest-dir': '' })).toBeNull();
      expect(guestDirOf({ 'guest-dir': `${dir}.link` })).toBe(realpathSync(dir));
      for (const bad of ['relative/dir', join(dir, 'missing'), join(dir, 'file')]) {
        expect(() => guestDirOf({ 'guest-dir': bad })).toThrow(
          `--guest-dir ${bad} is not the absolute path of an existing folder`,
        );
      }
    } finally {
      rmSync(`${dir}.link`, { force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
