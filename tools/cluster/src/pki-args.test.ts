import { describe, expect, it } from 'vitest';
import { CLUSTER_IDENTITIES } from '@handoff/service/pki';
import { parsePkiArgs } from './pki-args.js';

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

  it('says what is wrong with a command line it cannot use', () => {
    expect(() => parsePkiArgs([])).toThrow(/--dir is missing/);
    expect(() => parsePkiArgs(['--dir', '/x', '--id', 'vmm-c'])).toThrow(
      /--id vmm-c is not <id>:<role>/,
    );
    expect(() => parsePkiArgs(['--dir', '/x', '--id', 'x:admin'])).toThrow(/not <id>:<role>/);
    expect(() => parsePkiArgs(['--bogus'])).toThrow(/bogus/);
  });
});
