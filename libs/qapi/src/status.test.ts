import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { QapiError } from './errors.js';
import {
  LEGAL_TRANSITIONS,
  MIGRATION_STATUSES,
  MigrationStateMachine,
  STATUS_DESCRIPTIONS,
  TERMINAL_STATUSES,
  assertTransition,
  canTransition,
  isActive,
  isMigrationStatus,
  isTerminal,
  nextStatuses,
  parseMigrationStatus,
  type MigrationStatus,
  type StatusChange,
} from './status.js';

function qapiErrorOf(fn: () => unknown): QapiError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(QapiError);
    return err as QapiError;
  }
  throw new Error('expected a QapiError, nothing was thrown');
}

/**
 * The expected transition matrix, written out independently of
 * LEGAL_TRANSITIONS: row = from, column = to, `x` = legal, `.` = illegal.
 * Columns in MIGRATION_STATUSES order.
 */
const EXPECTED = `
                  none setup active postcopy-active pre-switchover device completed failed cancelling cancelled postcopy-paused postcopy-recover
none              .    x     .      .               .              .      .         x      x          .         .               .
setup             .    .     x      .               .              .      .         x      x          .         .               .
active            .    .     .      x               x              x      .         x      x          .         .               .
postcopy-active   .    .     .      .               .              .      x         x      .          .         x               .
pre-switchover    .    .     .      x               .              x      .         x      x          .         .               .
device            .    .     .      .               .              .      x         x      x          .         .               .
completed         .    .     .      .               .              .      .         .      .          .         .               .
failed            .    .     .      .               .              .      .         .      .          .         .               .
cancelling        .    .     .      .               .              .      .         x      .          x         .               .
cancelled         .    .     .      .               .              .      .         .      .          .         .               .
postcopy-paused   .    .     .      x               .              .      .         x      .          .         .               x
postcopy-recover  .    .     .      x               .              .      x         x      .          .         x               .
`;

function parseMatrix(text: string): Map<string, boolean> {
  const [header, ...rows] = text.trim().split('\n');
  const columns = (header ?? '').trim().split(/\s+/);
  const legal = new Map<string, boolean>();
  for (const row of rows) {
    const [from, ...cells] = row.trim().split(/\s+/);
    cells.forEach((cell, i) => legal.set(`${from}->${columns[i]}`, cell === 'x'));
  }
  return legal;
}

const expected = parseMatrix(EXPECTED);
const pairs = MIGRATION_STATUSES.flatMap((from) =>
  MIGRATION_STATUSES.map((to) => [from, to] as [MigrationStatus, MigrationStatus]),
);
const legalPairs = pairs.filter(([from, to]) => expected.get(`${from}->${to}`) === true);
const illegalPairs = pairs.filter(([from, to]) => expected.get(`${from}->${to}`) === false);

describe('the expected matrix', () => {
  it('covers all 144 pairs: 30 legal, 114 illegal', () => {
    expect(expected.size).toBe(144);
    expect(legalPairs).toHaveLength(30);
    expect(illegalPairs).toHaveLength(114);
  });
});

describe('transitions', () => {
  it.each(legalPairs)('%s → %s is legal', (from, to) => {
    expect(canTransition(from, to)).toBe(true);
    expect(() => assertTransition(from, to)).not.toThrow();
    expect(nextStatuses(from)).toContain(to);
  });

  it.each(illegalPairs)('%s → %s is rejected', (from, to) => {
    expect(canTransition(from, to)).toBe(false);
    const err = qapiErrorOf(() => assertTransition(from, to));
    expect(err.code).toBe('QAPI_ILLEGAL_TRANSITION');
    expect(err.message).toContain(`cannot move a migration from '${from}' to '${to}'`);
    expect(nextStatuses(from)).not.toContain(to);
  });

  it('LEGAL_TRANSITIONS has exactly the expected entries', () => {
    const fromTable = pairs.filter(([from, to]) => LEGAL_TRANSITIONS[from].includes(to));
    expect(fromTable).toEqual(legalPairs);
  });

  it('explains why a transition is illegal and what to do', () => {
    expect(qapiErrorOf(() => assertTransition('completed', 'active')).message).toContain(
      "'completed' is final. Start a new migration instead.",
    );
    expect(qapiErrorOf(() => assertTransition('postcopy-active', 'cancelling')).message).toMatch(
      /target already runs the guest.*Let it complete/,
    );
    expect(qapiErrorOf(() => assertTransition('cancelling', 'active')).message).toContain(
      "can only end in 'cancelled' or 'failed'",
    );
    expect(qapiErrorOf(() => assertTransition('active', 'active')).message).toContain(
      "it is already 'active'",
    );
    expect(qapiErrorOf(() => assertTransition('setup', 'device')).message).toContain(
      "from 'setup' the next status is one of active, failed, cancelling",
    );
  });
});

describe('status predicates', () => {
  it.each<[MigrationStatus, boolean, boolean]>([
    ['none', false, false],
    ['setup', false, true],
    ['active', false, true],
    ['postcopy-active', false, true],
    ['pre-switchover', false, true],
    ['device', false, true],
    ['completed', true, false],
    ['failed', true, false],
    ['cancelling', false, true],
    ['cancelled', true, false],
  ])('%s: terminal=%s active=%s', (status, terminal, active) => {
    expect(isTerminal(status)).toBe(terminal);
    expect(isActive(status)).toBe(active);
    expect(TERMINAL_STATUSES.includes(status)).toBe(terminal);
  });

  it('terminal statuses have no way out, all others do', () => {
    for (const s of MIGRATION_STATUSES) expect(nextStatuses(s).length === 0).toBe(isTerminal(s));
  });

  it('every status is reachable from none, and every status can reach a terminal one', () => {
    const reach = (start: MigrationStatus): Set<MigrationStatus> => {
      const seen = new Set<MigrationStatus>([start]);
      const queue = [start];
      for (let s = queue.shift(); s !== undefined; s = queue.shift()) {
        for (const n of nextStatuses(s)) {
          if (seen.has(n)) continue;
          seen.add(n);
          queue.push(n);
        }
      }
      return seen;
    };
    expect([...reach('none')].sort()).toEqual([...MIGRATION_STATUSES].sort());
    for (const s of MIGRATION_STATUSES) {
      expect([...reach(s)].some(isTerminal)).toBe(true);
    }
  });

  it('every status has a one-line description', () => {
    expect(Object.keys(STATUS_DESCRIPTIONS)).toEqual([...MIGRATION_STATUSES]);
    for (const s of MIGRATION_STATUSES) expect(STATUS_DESCRIPTIONS[s]).toMatch(/^[A-Z].*\.$/);
  });
});

describe('parseMigrationStatus', () => {
  it('accepts every status name', () => {
    for (const s of MIGRATION_STATUSES) {
      expect(parseMigrationStatus(s)).toBe(s);
      expect(isMigrationStatus(s)).toBe(true);
    }
  });

  it('rejects unknown names with a hint', () => {
    const err = qapiErrorOf(() => parseMigrationStatus('canceled'));
    expect(err.code).toBe('QAPI_INVALID_STATUS');
    expect(err.message).toContain("Did you mean 'cancelled'?");
    expect(isMigrationStatus('constructor')).toBe(false);
    expect(isMigrationStatus(3)).toBe(false);
  });
});

/** A clock that advances 1 ms per reading. */
function tickingClock(start = 1000): () => number {
  let t = start;
  return () => t++;
}

describe('MigrationStateMachine', () => {
  it('starts in none with an empty history', () => {
    const m = new MigrationStateMachine({ now: () => 42 });
    expect(m.status).toBe('none');
    expect(m.history).toEqual([]);
    expect(m.createdAt).toBe(42);
    expect(m.enteredAt('none')).toBe(42);
    expect(m.isActive()).toBe(false);
    expect(m.isTerminal()).toBe(false);
    expect(m.errorDesc).toBeUndefined();
  });

  it('records a full pre-copy migration with timestamps', () => {
    const m = new MigrationStateMachine({ now: tickingClock(1000) });
    for (const s of ['setup', 'active', 'device', 'completed'] as const) m.transition(s);
    expect(m.status).toBe('completed');
    expect(m.history).toEqual([
      { from: 'none', to: 'setup', at: 1001 },
      { from: 'setup', to: 'active', at: 1002 },
      { from: 'active', to: 'device', at: 1003 },
      { from: 'device', to: 'completed', at: 1004 },
    ]);
    expect(m.enteredAt('active')).toBe(1002);
    expect(m.enteredAt('failed')).toBeUndefined();
    expect(m.isTerminal()).toBe(true);
  });

  it('walks pre-switchover into post-copy, as QEMU does with both capabilities', () => {
    const m = new MigrationStateMachine();
    for (const s of [
      'setup',
      'active',
      'pre-switchover',
      'postcopy-active',
      'completed',
    ] as const) {
      m.transition(s);
    }
    expect(m.status).toBe('completed');
  });

  it('leaves the status unchanged when a transition is refused', () => {
    const m = new MigrationStateMachine({ initial: 'active' });
    const err = qapiErrorOf(() => m.transition('completed'));
    expect(err.code).toBe('QAPI_ILLEGAL_TRANSITION');
    expect(m.status).toBe('active');
    expect(m.history).toEqual([]);
    expect(m.tryTransition('completed')).toBe(false);
    expect(m.can('device')).toBe(true);
  });

  it('fail() records the error description and is a no-op once terminal', () => {
    const m = new MigrationStateMachine({ initial: 'active' });
    expect(m.fail('target closed the stream: check vmm-b logs')).toBe(true);
    expect(m.status).toBe('failed');
    expect(m.errorDesc).toBe('target closed the stream: check vmm-b logs');
    expect(m.fail('second error')).toBe(false);
    expect(m.errorDesc).toBe('target closed the stream: check vmm-b logs');
  });

  it('transitionIf is compare-and-set: a cancel that raced ahead wins', () => {
    const m = new MigrationStateMachine({ initial: 'active' });
    m.transition('cancelling');
    expect(m.transitionIf('active', 'device')).toBe(false);
    expect(m.status).toBe('cancelling');
    expect(m.transitionIf('cancelling', 'cancelled')).toBe(true);
    expect(m.status).toBe('cancelled');
    expect(qapiErrorOf(() => m.transitionIf('setup', 'completed')).code).toBe(
      'QAPI_ILLEGAL_TRANSITION',
    );
  });

  it('tells listeners after each change, until they unsubscribe', () => {
    const m = new MigrationStateMachine({ now: () => 7 });
    const seen: StatusChange[] = [];
    const off = m.onChange((c) => {
      expect(m.status).toBe(c.to);
      seen.push(c);
    });
    m.transition('setup');
    off();
    m.transition('active');
    expect(seen).toEqual([{ from: 'none', to: 'setup', at: 7 }]);
  });

  it('hands out copies of its history', () => {
    const m = new MigrationStateMachine();
    m.transition('setup');
    (m.history as StatusChange[]).pop();
    expect(m.history).toHaveLength(1);
  });

  it('rejects an unknown initial status', () => {
    expect(
      qapiErrorOf(() => new MigrationStateMachine({ initial: 'running' as MigrationStatus })).code,
    ).toBe('QAPI_INVALID_STATUS');
  });
});

describe('state machine properties', () => {
  const status = fc.constantFrom(...MIGRATION_STATUSES);

  it('assertTransition throws exactly when canTransition is false', () => {
    fc.assert(
      fc.property(status, status, (from, to) => {
        let threw = false;
        try {
          assertTransition(from, to);
        } catch {
          threw = true;
        }
        expect(threw).toBe(!canTransition(from, to));
      }),
    );
  });

  it('random walks only take legal transitions, and terminal statuses stay terminal', () => {
    fc.assert(
      fc.property(
        status,
        fc.array(fc.tuple(status, fc.boolean()), { maxLength: 40 }),
        (initial, steps) => {
          const m = new MigrationStateMachine({ initial, now: tickingClock() });
          let terminalAt: MigrationStatus | undefined = isTerminal(initial) ? initial : undefined;
          for (const [to, useTry] of steps) {
            const before = m.status;
            let moved: boolean;
            if (useTry) {
              moved = m.tryTransition(to);
            } else {
              try {
                m.transition(to);
                moved = true;
              } catch (err) {
                expect((err as QapiError).code).toBe('QAPI_ILLEGAL_TRANSITION');
                moved = false;
              }
            }
            expect(moved).toBe(expected.get(`${before}->${to}`));
            expect(m.status).toBe(moved ? to : before);
            if (terminalAt !== undefined) {
              expect(moved).toBe(false);
              expect(m.status).toBe(terminalAt);
            }
            if (m.isTerminal()) terminalAt = m.status;
          }
          // The history is a contiguous chain of legal steps with rising timestamps.
          let cursor = initial;
          let lastAt = -Infinity;
          for (const change of m.history) {
            expect(change.from).toBe(cursor);
            expect(expected.get(`${change.from}->${change.to}`)).toBe(true);
            expect(change.at).toBeGreaterThan(lastAt);
            cursor = change.to;
            lastAt = change.at;
          }
          expect(cursor).toBe(m.status);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('walks that pick only legal steps always end in a terminal status within 6 steps (post-copy recovery aside)', () => {
    // A paused post-copy may pause and recover any number of times; every other path is short.
    const cycle = new Set<MigrationStatus>(['postcopy-paused', 'postcopy-recover']);
    fc.assert(
      fc.property(fc.array(fc.nat(), { minLength: 10, maxLength: 10 }), (choices) => {
        const m = new MigrationStateMachine();
        for (const c of choices) {
          const next = nextStatuses(m.status).filter((n) => !cycle.has(n));
          if (next.length === 0) break;
          m.transition(next[c % next.length] as MigrationStatus);
        }
        expect(m.isTerminal()).toBe(true);
        expect(m.history.length).toBeLessThanOrEqual(6);
      }),
    );
  });
});
