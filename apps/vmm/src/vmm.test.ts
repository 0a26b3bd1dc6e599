import {
  chmodSync,
  mkdtempSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dataChannelOf, guestDirOf, maxVmMemoryOf, privateVmmDir, switchoverDirOf } from './vmm.js';

describe('vmm flags', () => {
  it("--data-channel: auto is a unix socket in this user's private temp folder, named by id and pid; off is none", () => {
    expect(dataChannelOf({ 'data-channel': 'auto', id: 'vmm-a' })).toBe(
      `unix:${tmpdir()}/handoff-vmm-${process.getuid!()}/handoff-vmm-a-${process.pid}.sock`,
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

  it('--switchover-dir auto is a folder only this user can enter; a folder given must be one', () => {
    const auto = switchoverDirOf({ 'switchover-dir': 'auto' })!;
    expect(auto).toBe(privateVmmDir('/dev/shm'));
    expect(statSync(auto).mode & 0o777).toBe(0o700);
    expect(switchoverDirOf({ 'switchover-dir': 'off' })).toBeNull();
    const given = mkdtempSync(join(tmpdir(), 'handoff-switchover-test-'));
    try {
      expect(switchoverDirOf({ 'switchover-dir': given })).toBe(given);
      chmodSync(given, 0o755);
      expect(() => switchoverDirOf({ 'switchover-dir': given })).toThrow(
        /open to group or others \(mode 755\); run chmod 700/,
      );
      expect(() => switchoverDirOf({ 'switchover-dir': '/dev/shm' })).toThrow(/switchover folder/);
    } finally {
      rmSync(given, { recursive: true, force: true });
    }
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
