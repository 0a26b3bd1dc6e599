import { describe, expect, it } from 'vitest';
import { MigratorError } from '../errors.js';
import { VmmRegistry } from './vmm-registry.js';

describe('VmmRegistry', () => {
  it('lists registered instances sorted, alive until the expiry passes', () => {
    let now = 1000;
    const r = new VmmRegistry(500, () => now);
    expect(r.register({ id: 'vmm-b', address: 'b:1', version: '1', vmCount: 0 })).toBe(true);
    expect(r.register({ id: 'vmm-a', address: 'a:1', version: '1', vmCount: 2 })).toBe(true);
    expect(r.list().map((v) => [v.id, v.alive])).toEqual([
      ['vmm-a', true],
      ['vmm-b', true],
    ]);
    now = 1400;
    expect(r.register({ id: 'vmm-a', address: 'a:2', version: '1', vmCount: 3 })).toBe(false);
    now = 1600;
    expect(r.list().map((v) => [v.id, v.alive, v.address])).toEqual([
      ['vmm-a', true, 'a:2'],
      ['vmm-b', false, 'b:1'],
    ]);
  });

  it('rejects bad ids and unknown lookups with what to do', () => {
    const r = new VmmRegistry(500);
    expect(() => r.register({ id: '../x', address: 'a', version: '1', vmCount: 0 })).toThrow(
      MigratorError,
    );
    expect(() => r.register({ id: 'ok', address: '', version: '1', vmCount: 0 })).toThrow(
      /without an address/,
    );
    expect(() => r.get('vmm-z')).toThrow(/no vmm instance "vmm-z" is registered \(known: none\)/);
  });
});
