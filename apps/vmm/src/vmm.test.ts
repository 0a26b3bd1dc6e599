import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { dataChannelOf, maxVmMemoryOf } from './vmm.js';

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
});
