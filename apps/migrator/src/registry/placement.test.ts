import { describe, expect, it } from 'vitest';
import { MigratorError } from '../errors.js';
import type { RamBackend, VmSpec } from './hosted-vm.js';
import { refuseCrossHostBypass, sameHost, type CrossHostMove } from './placement.js';

const a = { id: 'vmm-a', hostId: 'host-1' };
const b = { id: 'vmm-b', hostId: 'host-1' };
const c = { id: 'vmm-c', hostId: 'host-2' };
const spec = (...backends: RamBackend[]): VmSpec => ({
  name: 'vm1',
  guest: 'kvserver',
  args: {},
  ram: backends.map((backend, i) => ({
    id: `ram${i}`,
    guestBase: 0x8000_0000 + i * 0x100_0000,
    size: 0x100_0000,
    backend,
    region: backend === 'private' ? '' : `vm1-ram${i}`,
    regionOwned: backend === 'shared',
  })),
});
const move = (over: Partial<CrossHostMove> = {}): CrossHostMove => ({
  vm: 'vm1',
  spec: spec('shared'),
  source: a,
  target: c,
  capabilities: { 'bypass-shared-memory': true, 'postcopy-ram': false },
  ...over,
});

describe('hosts in placement', () => {
  it('sameHost: instances with one host id share a host', () => {
    expect(sameHost(a, b)).toBe(true);
    expect(sameHost(a, c)).toBe(false);
  });

  it('refuses a bypass migration across hosts of a VM with RAM in memstore, saying what to add', () => {
    for (const ram of [spec('shared'), spec('private', 'clone'), spec('lazy'), undefined]) {
      let err: unknown;
      try {
        refuseCrossHostBypass(move({ spec: ram }));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MigratorError);
      expect((err as MigratorError).code).toBe('MIGRATOR_CROSS_HOST');
      expect((err as Error).message).toMatch(
        /^vmm-c is on host-2 but vm1's memory.* is in host-1's memstore .*: add --postcopy to move it by post-copy, or --no-bypass to copy it$/,
      );
    }
    expect(() => refuseCrossHostBypass(move({ spec: spec('private', 'clone') }))).toThrow(
      "vm1's memory (ram1) is in host-1's memstore",
    );
  });

  it('lets through a move within one host, post-copy, no bypass, or private RAM only', () => {
    expect(() => refuseCrossHostBypass(move({ target: b }))).not.toThrow();
    const postcopy = { 'bypass-shared-memory': true, 'postcopy-ram': true };
    expect(() => refuseCrossHostBypass(move({ capabilities: postcopy }))).not.toThrow();
    const copy = { 'bypass-shared-memory': false, 'postcopy-ram': false };
    expect(() => refuseCrossHostBypass(move({ capabilities: copy }))).not.toThrow();
    expect(() => refuseCrossHostBypass(move({ spec: spec('private') }))).not.toThrow();
  });
});
