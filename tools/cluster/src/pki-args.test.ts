import { describe, expect, it } from 'vitest';
import { CLUSTER_IDENTITIES, SECOND_HOST_IDENTITIES } from '@handoff/service/pki';
import { parsePkiArgs, type PkiRequest } from './pki-args.js';

describe('npm run pki', () => {
  it('makes the local cluster identities by default, or the ones named', () => {
    expect(parsePkiArgs(['--dir', '/x'])).toEqual({
      dir: '/x',
      identities: CLUSTER_IDENTITIES,
      names: [],
    });
    expect(
      parsePkiArgs(['--dir', '/x', '--id', 'vmm-c:vmm', '--id', 'ops:operator', '--name', 'h1']),
    ).toEqual({
      dir: '/x',
      identities: [
        { id: 'vmm-c', role: 'vmm' },
        { id: 'ops', role: 'operator' },
      ],
      names: ['h1'],
    });
    expect(parsePkiArgs(['--help'])).toBe('help');
  });

  it('adds memstore-2 (memstore) and vmm-c (vmm) for the second host with --hosts 2', () => {
    expect((parsePkiArgs(['--dir', '/x', '--hosts', '2']) as PkiRequest).identities).toEqual([
      ...CLUSTER_IDENTITIES,
      { id: 'memstore-2', role: 'memstore' },
      { id: 'vmm-c', role: 'vmm' },
    ]);
    expect(SECOND_HOST_IDENTITIES.map((i) => i.id)).toEqual(['memstore-2', 'vmm-c']);
    expect((parsePkiArgs(['--dir', '/x', '--hosts', '1']) as PkiRequest).identities).toEqual(
      CLUSTER_IDENTITIES,
    );
    expect(() => parsePkiArgs(['--dir', '/x', '--hosts', '3'])).toThrow(/1 or 2 hosts/);
    expect(() => parsePkiArgs(['--dir', '/x', '--hosts', '2', '--id', 'a:vmm'])).toThrow(
      /leave out --id/,
    );
  });

  it('says what is wrong with a command line it cannot use', () => {
    expect(() => parsePkiArgs([])).toThrow(/--dir is missing/);
    expect(() => parsePkiArgs(['--dir', '/x', '--id', 'vmm-c'])).toThrow(
      /--id vmm-c is not <id>:<role>/,
    );
    expect(() => parsePkiArgs(['--dir', '/x', '--id', 'x:admin'])).toThrow(/not <id>:<role>/);
    expect(() => parsePkiArgs(['--bogus'])).toThrow(/bogus/);
  });
});
