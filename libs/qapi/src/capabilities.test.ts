import { describe, expect, it } from 'vitest';

import {
  CAPABILITY_REGISTRY,
  MIGRATION_CAPABILITIES,
  capabilitiesToQapi,
  defaultCapabilities,
  enabledCapabilities,
  isMigrationCapability,
  parseCapability,
  parseCapabilitySettings,
  resolveCapabilities,
  type MigrationCapability,
} from './capabilities.js';
import { QapiError } from './errors.js';

/** Runs `fn`, expecting a QapiError; returns it for further checks. */
function qapiErrorOf(fn: () => unknown): QapiError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(QapiError);
    return err as QapiError;
  }
  throw new Error('expected a QapiError, nothing was thrown');
}

describe('capability registry', () => {
  it('has the capabilities the wire enum carries', () => {
    const required: MigrationCapability[] = [
      'bypass-shared-memory',
      'postcopy-ram',
      'zero-blocks',
      'events',
      'return-path',
      'pause-before-switchover',
      'auto-converge',
    ];
    expect([...MIGRATION_CAPABILITIES].sort()).toEqual([...required].sort());
  });

  it('lists the names in the same order as the registry keys', () => {
    expect(Object.keys(CAPABILITY_REGISTRY)).toEqual([...MIGRATION_CAPABILITIES]);
  });

  it.each(MIGRATION_CAPABILITIES)(
    '%s has a name, one-line description, since and default',
    (name) => {
      const info = CAPABILITY_REGISTRY[name];
      expect(info.name).toBe(name);
      expect(name).toMatch(/^[a-z]+(-[a-z]+)*$/);
      expect(info.description).toMatch(/^[A-Z].*\.$/);
      expect(info.description).not.toContain('\n');
      expect(info.since).toBe('0.1');
      expect(typeof info.default).toBe('boolean');
    },
  );

  it('turns on by default exactly bypass-shared-memory, zero-blocks, return-path and auto-converge', () => {
    expect(enabledCapabilities(defaultCapabilities())).toEqual([
      'bypass-shared-memory',
      'zero-blocks',
      'return-path',
      'auto-converge',
    ]);
  });

  it('is frozen', () => {
    expect(Object.isFrozen(CAPABILITY_REGISTRY)).toBe(true);
    expect(Object.isFrozen(CAPABILITY_REGISTRY['postcopy-ram'])).toBe(true);
  });
});

describe('parseCapability', () => {
  it.each(MIGRATION_CAPABILITIES)('accepts %s', (name) => {
    expect(parseCapability(name)).toBe(name);
    expect(parseCapability(`  ${name} `)).toBe(name);
    expect(isMigrationCapability(name)).toBe(true);
  });

  it.each([
    ['postcopy', 'postcopy-ram'],
    ['x-ignore-shared', 'bypass-shared-memory'],
    ['evnets', 'events'],
    ['auto_converge', 'auto-converge'],
    ['return-paht', 'return-path'],
  ])('rejects %s and suggests %s', (input, hint) => {
    const err = qapiErrorOf(() => parseCapability(input));
    expect(err.code).toBe('QAPI_INVALID_CAPABILITY');
    expect(err.message).toContain(`unknown migration capability '${input}'`);
    expect(err.message).toContain(`Did you mean '${hint}'?`);
    expect(err.message).toContain('Known capabilities: bypass-shared-memory');
  });

  it('gives no hint when nothing is close', () => {
    const err = qapiErrorOf(() => parseCapability('xyzzy'));
    expect(err.message).not.toContain('Did you mean');
    expect(isMigrationCapability('xyzzy')).toBe(false);
    expect(isMigrationCapability('toString')).toBe(false);
  });
});

describe('parseCapabilitySettings', () => {
  it('reads bare names, name=state and no-name', () => {
    expect(
      parseCapabilitySettings(
        'postcopy-ram, events=off, no-bypass-shared-memory,auto-converge=true, return-path = on',
      ),
    ).toEqual({
      'postcopy-ram': true,
      events: false,
      'bypass-shared-memory': false,
      'auto-converge': true,
      'return-path': true,
    });
  });

  it('accepts every spelling of on and off', () => {
    for (const on of ['on', 'true', 'yes', '1', 'ON']) {
      expect(parseCapabilitySettings(`events=${on}`)).toEqual({ events: true });
    }
    for (const off of ['off', 'false', 'no', '0', 'Off']) {
      expect(parseCapabilitySettings(`events=${off}`)).toEqual({ events: false });
    }
  });

  it('reads an empty string as no overrides and allows a repeat with the same state', () => {
    expect(parseCapabilitySettings('')).toEqual({});
    expect(parseCapabilitySettings(' , ')).toEqual({});
    expect(parseCapabilitySettings('events,events=on')).toEqual({ events: true });
  });

  it('rejects a bad state, an unknown name and a contradiction', () => {
    const bad = qapiErrorOf(() => parseCapabilitySettings('events=maybe'));
    expect(bad.code).toBe('QAPI_INVALID_CAPABILITY');
    expect(bad.message).toContain("write on or off (e.g. 'events=on')");

    expect(qapiErrorOf(() => parseCapabilitySettings('no-such-thing')).code).toBe(
      'QAPI_INVALID_CAPABILITY',
    );
    const both = qapiErrorOf(() => parseCapabilitySettings('events,no-events'));
    expect(both.message).toContain("'events' is turned both on and off");
  });
});

describe('resolveCapabilities', () => {
  it('fills defaults and applies overrides', () => {
    expect(resolveCapabilities()).toEqual(defaultCapabilities());
    const caps = resolveCapabilities({ 'postcopy-ram': true, 'bypass-shared-memory': false });
    expect(caps['postcopy-ram']).toBe(true);
    expect(caps['bypass-shared-memory']).toBe(false);
    expect(caps['return-path']).toBe(true);
  });

  it('ignores undefined entries', () => {
    expect(resolveCapabilities({ events: undefined })).toEqual(defaultCapabilities());
  });

  it('rejects unknown keys and non-boolean states', () => {
    const unknown = qapiErrorOf(() => resolveCapabilities({ postcopy: true } as never));
    expect(unknown.code).toBe('QAPI_INVALID_CAPABILITY');
    const state = qapiErrorOf(() => resolveCapabilities({ events: 'on' } as never));
    expect(state.code).toBe('QAPI_INVALID_CAPABILITY');
    expect(state.message).toContain('a capability is true (on) or false (off)');
  });

  it('returns fresh objects', () => {
    const a = defaultCapabilities() as Record<string, boolean>;
    a['events'] = true;
    expect(defaultCapabilities().events).toBe(false);
  });
});

describe('capabilitiesToQapi', () => {
  it('lists every capability with its state, in registry order', () => {
    const out = capabilitiesToQapi(resolveCapabilities({ events: true }));
    expect(out.map((c) => c.capability)).toEqual([...MIGRATION_CAPABILITIES]);
    expect(out.find((c) => c.capability === 'events')).toEqual({
      capability: 'events',
      state: true,
    });
  });
});
