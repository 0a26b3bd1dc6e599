import { resolveCapabilities } from '@handoff/qapi';
import { describe, expect, it } from 'vitest';
import { MigrationError } from '../model/migration-error.js';
import { refuseUnsupported } from './support.js';

/** The error `refuseUnsupported` throws, or null when it accepts. */
function refusal(...args: Parameters<typeof refuseUnsupported>): MigrationError | null {
  try {
    refuseUnsupported(...args);
    return null;
  } catch (err) {
    if (MigrationError.is(err)) return err;
    throw err;
  }
}

describe('refuseUnsupported', () => {
  it('accepts the defaults, bypass off, zero-blocks off and the parameters it honours', () => {
    expect(refusal(resolveCapabilities({}), [])).toBeNull();
    expect(
      refusal(resolveCapabilities({ 'bypass-shared-memory': false, 'zero-blocks': false }), [
        'downtime-limit',
        'max-bandwidth',
        'max-iterations',
      ]),
    ).toBeNull();
  });

  it('accepts auto-converge (on by default) and its throttle parameters', () => {
    expect(
      refusal(resolveCapabilities({}), ['cpu-throttle-initial', 'cpu-throttle-increment']),
    ).toBeNull();
    expect(refusal(resolveCapabilities({ 'auto-converge': false }), [])).toBeNull();
  });

  it.each(['events', 'pause-before-switchover', 'postcopy-ram'] as const)(
    'refuses %s on with MIGRATION_UNSUPPORTED, naming it',
    (cap) => {
      const e = refusal(resolveCapabilities({ [cap]: true }), []);
      expect(e?.code).toBe('MIGRATION_UNSUPPORTED');
      expect(e?.message).toContain(`${cap}:`);
    },
  );

  it('refuses return-path off: every stream carries the target’s answers', () => {
    const e = refusal(resolveCapabilities({ 'return-path': false }), []);
    expect(e?.code).toBe('MIGRATION_UNSUPPORTED');
    expect(e?.message).toMatch(/return-path: .*leave it on/);
  });

  it.each([['max-postcopy-bandwidth', 'postcopy-ram']] as const)(
    'refuses %s set by the user: only %s reads it',
    (param, cap) => {
      const e = refusal(resolveCapabilities({}), [param]);
      expect(e?.code).toBe('MIGRATION_UNSUPPORTED');
      expect(e?.message).toContain(`${param}: it only takes effect with ${cap}`);
    },
  );

  it('names every problem in one message', () => {
    const e = refusal(resolveCapabilities({ 'postcopy-ram': true, events: true }), [
      'max-postcopy-bandwidth',
    ]);
    expect(e?.message.match(/postcopy-ram:|events:|max-postcopy-bandwidth:/g)).toHaveLength(3);
  });
});
