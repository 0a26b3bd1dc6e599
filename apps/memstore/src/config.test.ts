import { parseConfig } from '@handoff/service';
import { describe, expect, it } from 'vitest';
import { memstoreConfig, memstoreOptions, resolveSettings } from './config.js';

describe('memstore config', () => {
  it('reads flags and HANDOFF_MEMSTORE_* variables, flags first', () => {
    const config = parseConfig(memstoreOptions, {
      prefix: 'MEMSTORE',
      argv: ['--port', '0', '--max-region-size', '1G'],
      env: { HANDOFF_MEMSTORE_PORT: '9999', HANDOFF_MEMSTORE_VOLATILE_DIR: '/dev/shm/x' },
    });
    expect(config.port).toBe(0);
    expect(config['volatile-dir']).toBe('/dev/shm/x');
    expect(resolveSettings(config).maxRegionSize).toBe(2 ** 30);
  });

  it('defaults: port 7100, /dev/shm/handoff-<uid>, state under XDG_DATA_HOME, regions under the state dir', () => {
    const s = resolveSettings(memstoreConfig(), { XDG_DATA_HOME: '/data' });
    expect(s.port).toBe(7100);
    expect(s.host).toBe('127.0.0.1');
    expect(s.volatileDir).toBe(`/dev/shm/handoff-${process.getuid?.() ?? 0}`);
    expect(s.stateDir).toBe('/data/handoff/memstore');
    expect(s.persistentDir).toBe('/data/handoff/memstore/regions');
    expect(s.maxRegionSize).toBe(64 * 2 ** 30);
    expect(s.maxTotalSize).toBe(0);
    expect(s.leaseSocket).toBe(`/dev/shm/handoff-${process.getuid?.() ?? 0}/memstore-lease.sock`);
  });

  it('--lease-socket: a path, off, or the default inside the volatile dir', () => {
    const at = (o: Partial<Parameters<typeof memstoreConfig>[0]>): string | null =>
      resolveSettings(memstoreConfig(o)).leaseSocket;
    expect(at({ 'volatile-dir': '/dev/shm/x' })).toBe('/dev/shm/x/memstore-lease.sock');
    expect(at({ 'lease-socket': '/run/handoff/lease.sock' })).toBe('/run/handoff/lease.sock');
    expect(at({ 'lease-socket': 'off' })).toBeNull();
    const env = parseConfig(memstoreOptions, {
      prefix: 'MEMSTORE',
      argv: [],
      env: { HANDOFF_MEMSTORE_LEASE_SOCKET: 'off' },
    });
    expect(resolveSettings(env).leaseSocket).toBeNull();
    expect(() => at({ 'lease-socket': `/tmp/${'x'.repeat(120)}` })).toThrow(
      expect.objectContaining({
        code: 'SERVICE_INVALID_CONFIG',
        message: expect.stringContaining('--lease-socket'),
      }),
    );
  });

  it('refuses sizes it cannot use, naming the flag', () => {
    for (const bad of ['lots', '0', '5000']) {
      expect(() => resolveSettings(memstoreConfig({ 'max-region-size': bad }))).toThrow(
        expect.objectContaining({
          code: 'SERVICE_INVALID_CONFIG',
          message: expect.stringContaining('--max-region-size'),
        }),
      );
    }
  });
});
