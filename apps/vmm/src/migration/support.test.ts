import { resolveCapabilities } from '@handoff/qapi';
import { describe, expect, it } from 'vitest';
import { MigrationError } from '../model/migration-error.js';
import { refusePostcopyOfCopiedRam, refuseUnsupported } from './support.js';

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
    expect(refusal(resolveCapabilities({}))).toBeNull();
    expect(
      refusal(resolveCapabilities({ 'bypass-shared-memory': false, 'zero-blocks': false })),
    ).toBeNull();
  });

  it('accepts auto-converge (on by default) and its throttle parameters', () => {
    expect(refusal(resolveCapabilities({}))).toBeNull();
    expect(refusal(resolveCapabilities({ 'auto-converge': false }))).toBeNull();
  });

  it.each(['events', 'pause-before-switchover'] as const)(
    'refuses %s on with MIGRATION_UNSUPPORTED, naming it',
    (cap) => {
      const e = refusal(resolveCapabilities({ [cap]: true }));
      expect(e?.code).toBe('MIGRATION_UNSUPPORTED');
      expect(e?.message).toContain(`${cap}:`);
    },
  );

  it('refuses return-path off: every stream carries the target’s answers', () => {
    const e = refusal(resolveCapabilities({ 'return-path': false }));
    expect(e?.code).toBe('MIGRATION_UNSUPPORTED');
    expect(e?.message).toMatch(/return-path: .*leave it on/);
  });

  it('accepts postcopy-ram', () => {
    expect(refusal(resolveCapabilities({ 'postcopy-ram': true }))).toBeNull();
  });

  it('names every problem in one message', () => {
    const e = refusal(
      resolveCapabilities({ 'pause-before-switchover': true, events: true, 'return-path': false }),
    );
    expect(e?.message.match(/pause-before-switchover:|events:|return-path:/g)).toHaveLength(3);
  });
});

describe('refusePostcopyOfCopiedRam', () => {
  const caps = resolveCapabilities({ 'postcopy-ram': true });
  it('lets blocks that travel by reference through, and everything without post-copy', () => {
    expect(() => refusePostcopyOfCopiedRam(caps, [{ id: 'ram0', mode: 'ref' }])).not.toThrow();
    expect(() =>
      refusePostcopyOfCopiedRam(resolveCapabilities({}), [{ id: 'ram0', mode: 'copy' }]),
    ).not.toThrow();
  });
  it('refuses post-copy of a block that would be copied, naming it and what to do', () => {
    expect(() =>
      refusePostcopyOfCopiedRam(caps, [
        { id: 'ram0', mode: 'ref' },
        { id: 'ram1', mode: 'copy' },
      ]),
    ).toThrow(/block\(s\) ram1 would be copied.*--shared/);
  });
});
