import { describe, expect, it } from 'vitest';
import { parseConfig } from '@handoff/service';
import { vmmOptions } from '../config.js';
import { DEFAULT_HOST_ID, hostIdOf } from './host-id.js';

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
  parseConfig(vmmOptions, { prefix: 'VMM', argv, env });

describe('--host-id', () => {
  it('is host-1 when not given', () => {
    expect(hostIdOf(parse([]))).toBe(DEFAULT_HOST_ID);
    expect(DEFAULT_HOST_ID).toBe('host-1');
  });

  it('comes from the flag, else HANDOFF_VMM_HOST_ID', () => {
    expect(hostIdOf(parse(['--host-id', 'host-2']))).toBe('host-2');
    expect(hostIdOf(parse([], { HANDOFF_VMM_HOST_ID: 'rack7-b' }))).toBe('rack7-b');
    expect(hostIdOf(parse(['--host-id', 'host-3'], { HANDOFF_VMM_HOST_ID: 'x' }))).toBe('host-3');
  });

  it('refuses ids that are not lower-case letters, digits and dashes, saying what to use', () => {
    for (const bad of ['', 'Host-2', '-host', 'host_2', 'host 2', 'a'.repeat(64), 'h/../x']) {
      expect(() => hostIdOf({ 'host-id': bad }), bad).toThrow(/is not a host id: use 1-63/);
    }
  });
});
