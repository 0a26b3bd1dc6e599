import { describe, expect, it } from 'vitest';
import { envName, helpText, parseConfig, type ConfigSpec } from './config.js';
import { ServiceError } from './errors.js';

const spec = {
  host: { type: 'string', default: '127.0.0.1', description: 'listen address' },
  port: { type: 'number', default: 7000, min: 0, max: 65535, description: 'port' },
  verbose: { type: 'boolean', default: false, description: 'more logs' },
  'state-dir': { type: 'string', description: 'where state lives' },
  migrator: { type: 'string', env: 'HANDOFF_MIGRATOR_ADDR', default: 'x', description: 'addr' },
} as const satisfies ConfigSpec;

describe('parseConfig', () => {
  it('uses defaults when neither flag nor variable is given', () => {
    expect(parseConfig(spec, { prefix: 'VMM', argv: [], env: {} })).toEqual({
      host: '127.0.0.1',
      port: 7000,
      verbose: false,
      'state-dir': undefined,
      migrator: 'x',
    });
  });

  it('prefers a flag over the environment over the default', () => {
    const env = {
      HANDOFF_VMM_PORT: '7300',
      HANDOFF_VMM_STATE_DIR: '/s',
      HANDOFF_MIGRATOR_ADDR: 'm:1',
    };
    const c = parseConfig(spec, { prefix: 'VMM', argv: ['--port', '7400'], env });
    expect(c.port).toBe(7400);
    expect(c['state-dir']).toBe('/s');
    expect(c.migrator).toBe('m:1');
    expect(parseConfig(spec, { prefix: 'VMM', argv: [], env }).port).toBe(7300);
  });

  it('parses booleans from flags and from variables', () => {
    expect(parseConfig(spec, { prefix: 'VMM', argv: ['--verbose'], env: {} }).verbose).toBe(true);
    expect(
      parseConfig(spec, { prefix: 'VMM', argv: [], env: { HANDOFF_VMM_VERBOSE: 'yes' } }).verbose,
    ).toBe(true);
  });

  it.each([
    [['--port', 'abc'], {}, /--port=abc is not a number/],
    [['--port', '70000'], {}, /out of range/],
    [[], { HANDOFF_VMM_PORT: '-1' }, /HANDOFF_VMM_PORT=-1 is out of range/],
    [[], { HANDOFF_VMM_VERBOSE: 'maybe' }, /is not a boolean/],
    [['--nope'], {}, /--help/],
  ])('rejects %j %j with a message naming the source', (argv, env, message) => {
    let err: unknown;
    try {
      parseConfig(spec, { prefix: 'VMM', argv, env });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ServiceError);
    expect((err as ServiceError).code).toBe('SERVICE_INVALID_CONFIG');
    expect((err as Error).message).toMatch(message);
  });

  it('names variables after the prefix and option, unless overridden', () => {
    expect(envName('MEMSTORE', 'state-dir', spec['state-dir'])).toBe('HANDOFF_MEMSTORE_STATE_DIR');
    expect(envName('VMM', 'migrator', spec.migrator)).toBe('HANDOFF_MIGRATOR_ADDR');
  });

  it('lists every option with its variable and default in --help', () => {
    const text = helpText('t', 'vmm [options]', spec, 'VMM');
    for (const name of Object.keys(spec)) expect(text).toContain(`--${name}`);
    expect(text).toContain('HANDOFF_VMM_PORT');
    expect(text).toContain('(default: 7000)');
  });
});
