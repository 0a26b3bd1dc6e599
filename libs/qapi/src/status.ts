/**
 * Migration status (QAPI `MigrationStatus`) and the state machine that
 * enforces its legal transitions. The table below follows the transitions
 * QEMU's `migration/migration.c` makes (`migrate_set_state`). As in QEMU's
 * `qmp_migrate_cancel`, a migration in `postcopy-active` cannot be
 * cancelled: the target already runs the guest.
 *
 * ```
 *   none ──► setup ──► active ─────────────────────────► device ──► completed
 *                        │  │                              ▲
 *                        │  └───► pre-switchover ──────────┘
 *                        │             │
 *                        └─────────────┴───► postcopy-active ──► completed
 *                                                   │   ▲
 *                                                   ▼   │
 *                                   postcopy-paused ──► postcopy-recover
 *
 *   none, setup, active, pre-switchover, device ──► cancelling ──► cancelled
 *                                                       │
 *   every status except completed, failed, cancelled ───┴────────► failed
 * ```
 *
 * @packageDocumentation
 */
import { QapiError } from './errors.js';
import { didYouMean } from './suggest.js';

/**
 * Every status name, in wire enum order. This array is the source of truth
 * for {@link MigrationStatus}.
 */
export const MIGRATION_STATUSES = [
  'none',
  'setup',
  'active',
  'postcopy-active',
  'pre-switchover',
  'device',
  'completed',
  'failed',
  'cancelling',
  'cancelled',
  'postcopy-paused',
  'postcopy-recover',
] as const;

/** A migration status name (QAPI `MigrationStatus`), e.g. `postcopy-active`. */
export type MigrationStatus = (typeof MIGRATION_STATUSES)[number];

/** One line per status: what the migration is doing in it. */
export const STATUS_DESCRIPTIONS: { readonly [S in MigrationStatus]: string } = Object.freeze({
  none: 'No migration has started yet.',
  setup: 'Connecting to the target and exchanging the header and RAM block table.',
  active: 'Pre-copy: the guest runs while RAM is sent and dirty pages are re-sent pass by pass.',
  'postcopy-active':
    'The target runs the guest; missing pages are requested on demand while the rest streams in.',
  'pre-switchover':
    'Pre-copy is done and the source vCPUs are stopped; waiting for an explicit continue (pause-before-switchover).',
  device: 'The source vCPUs are stopped; the final dirty pages and device state are moving.',
  completed: 'The target runs the guest; the source has let go of it. Final.',
  failed: 'The migration stopped on an error (see error-desc). Final.',
  cancelling: 'A cancel was requested; the source is winding the migration down.',
  cancelled: 'The migration was cancelled; the guest runs on the source. Final.',
  'postcopy-paused':
    'Post-copy lost its source (its memory service or the link): the target guest waits on missing pages until a recover.',
  'postcopy-recover': 'A recover is reconnecting a paused post-copy to its source.',
});

/** Statuses no migration ever leaves: `completed`, `failed`, `cancelled`. */
export const TERMINAL_STATUSES: readonly MigrationStatus[] = Object.freeze([
  'completed',
  'failed',
  'cancelled',
]);

/**
 * The legal transitions: for each status, the statuses it may move to next.
 * Self-transitions are never legal.
 */
export const LEGAL_TRANSITIONS: { readonly [S in MigrationStatus]: readonly MigrationStatus[] } =
  Object.freeze({
    none: Object.freeze(['setup', 'failed', 'cancelling'] as const),
    setup: Object.freeze(['active', 'failed', 'cancelling'] as const),
    active: Object.freeze([
      'postcopy-active',
      'pre-switchover',
      'device',
      'failed',
      'cancelling',
    ] as const),
    'postcopy-active': Object.freeze(['postcopy-paused', 'completed', 'failed'] as const),
    'postcopy-paused': Object.freeze(['postcopy-recover', 'postcopy-active', 'failed'] as const),
    'postcopy-recover': Object.freeze([
      'postcopy-active',
      'postcopy-paused',
      'completed',
      'failed',
    ] as const),
    'pre-switchover': Object.freeze(['postcopy-active', 'device', 'failed', 'cancelling'] as const),
    device: Object.freeze(['completed', 'failed', 'cancelling'] as const),
    completed: Object.freeze([] as const),
    failed: Object.freeze([] as const),
    cancelling: Object.freeze(['cancelled', 'failed'] as const),
    cancelled: Object.freeze([] as const),
  });

/** True when `value` is a known status name (exact, kebab-case). */
export function isMigrationStatus(value: unknown): value is MigrationStatus {
  return typeof value === 'string' && Object.hasOwn(LEGAL_TRANSITIONS, value);
}

/**
 * Parses a status name typed by a user (e.g. a `--status` filter).
 *
 * @throws QapiError `QAPI_INVALID_STATUS` for an unknown name, with a hint
 */
export function parseMigrationStatus(input: string): MigrationStatus {
  const name = input.trim();
  if (isMigrationStatus(name)) return name;
  throw new QapiError(
    'QAPI_INVALID_STATUS',
    `unknown migration status '${input}'.${didYouMean(name, MIGRATION_STATUSES)} Known statuses: ${MIGRATION_STATUSES.join(', ')}.`,
  );
}

/** True for `completed`, `failed` and `cancelled`: the migration is over and never changes again. */
export function isTerminal(status: MigrationStatus): boolean {
  return TERMINAL_STATUSES.includes(status);
}

/**
 * True while a migration is in progress: it has started (not `none`) and is
 * not over (not terminal). Includes `cancelling` — the migration still holds
 * resources until it reaches `cancelled` or `failed`.
 */
export function isActive(status: MigrationStatus): boolean {
  return status !== 'none' && !isTerminal(status);
}

/** The statuses `from` may move to next (empty for terminal statuses). */
export function nextStatuses(from: MigrationStatus): readonly MigrationStatus[] {
  return LEGAL_TRANSITIONS[from];
}

/** True when the state machine allows moving from `from` to `to`. */
export function canTransition(from: MigrationStatus, to: MigrationStatus): boolean {
  return (LEGAL_TRANSITIONS[from] as readonly string[]).includes(to);
}

/** Why `from` → `to` is illegal, and what to do instead. Assumes it is illegal. */
function illegalMessage(from: MigrationStatus, to: MigrationStatus): string {
  const head = `cannot move a migration from '${from}' to '${to}'`;
  if (from === to) return `${head}: it is already '${from}'.`;
  if (isTerminal(from)) {
    return `${head}: '${from}' is final. Start a new migration instead.`;
  }
  if (from === 'postcopy-active' && to === 'cancelling') {
    return `${head}: in post-copy the target already runs the guest and holds pages the source does not, so there is nothing to return to. Let it complete; if it breaks it ends in 'failed'.`;
  }
  if (from === 'cancelling') {
    return `${head}: a cancel is in progress; it can only end in 'cancelled' or 'failed'.`;
  }
  return `${head}: from '${from}' the next status is one of ${LEGAL_TRANSITIONS[from].join(', ')}.`;
}

/**
 * Throws unless the state machine allows `from` → `to`.
 *
 * @throws QapiError `QAPI_ILLEGAL_TRANSITION` naming both statuses and the legal next ones
 */
export function assertTransition(from: MigrationStatus, to: MigrationStatus): void {
  if (!canTransition(from, to)) {
    throw new QapiError('QAPI_ILLEGAL_TRANSITION', illegalMessage(from, to));
  }
}

/** One recorded status change. */
export interface StatusChange {
  /** Status before the change. */
  readonly from: MigrationStatus;
  /** Status after the change. */
  readonly to: MigrationStatus;
  /** When it happened, in milliseconds from the machine's clock (`Date.now` by default). */
  readonly at: number;
}

/** Options of {@link MigrationStateMachine}. */
export interface MigrationStateMachineOptions {
  /** Starting status (default `none`). */
  readonly initial?: MigrationStatus;
  /** Clock in milliseconds (default `Date.now`); inject one in tests. */
  readonly now?: () => number;
}

/** Listener of {@link MigrationStateMachine.onChange}. */
export type StatusListener = (change: StatusChange) => void;

/**
 * The status of one migration, changed only along {@link LEGAL_TRANSITIONS},
 * with a timestamped history. Not thread-safe by itself; it lives on one
 * event loop (the vmm's or the migrator's).
 *
 * @example
 * ```ts
 * const m = new MigrationStateMachine();
 * m.transition('setup');
 * m.transition('active');
 * if (!m.transitionIf('active', 'device')) {
 *   // someone cancelled or failed it in the meantime
 * }
 * ```
 */
export class MigrationStateMachine {
  readonly #now: () => number;
  readonly #history: StatusChange[] = [];
  readonly #entered = new Map<MigrationStatus, number>();
  readonly #listeners = new Set<StatusListener>();
  #status: MigrationStatus;
  #errorDesc: string | undefined;

  /** Time the machine was created, from its clock. */
  readonly createdAt: number;

  /** @param options - initial status and clock */
  constructor(options: MigrationStateMachineOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#status = options.initial ?? 'none';
    if (!isMigrationStatus(this.#status)) {
      throw new QapiError(
        'QAPI_INVALID_STATUS',
        `unknown initial migration status '${String(this.#status)}'. Known statuses: ${MIGRATION_STATUSES.join(', ')}.`,
      );
    }
    this.createdAt = this.#now();
    this.#entered.set(this.#status, this.createdAt);
  }

  /** The current status. */
  get status(): MigrationStatus {
    return this.#status;
  }

  /** Every change so far, oldest first (a copy). */
  get history(): readonly StatusChange[] {
    return [...this.#history];
  }

  /** The error description recorded with `failed` (or given on another transition), if any. */
  get errorDesc(): string | undefined {
    return this.#errorDesc;
  }

  /** True when the current status is terminal. See {@link isTerminal}. */
  isTerminal(): boolean {
    return isTerminal(this.#status);
  }

  /** True while the migration is in progress. See {@link isActive}. */
  isActive(): boolean {
    return isActive(this.#status);
  }

  /** True when moving to `to` is allowed now. */
  can(to: MigrationStatus): boolean {
    return canTransition(this.#status, to);
  }

  /**
   * Moves to `to`, recording the change and telling listeners.
   *
   * @param to - the next status
   * @param options - `errorDesc` to record (typically with `failed`)
   * @returns the recorded change
   * @throws QapiError `QAPI_ILLEGAL_TRANSITION` (the status is unchanged)
   */
  transition(to: MigrationStatus, options?: { readonly errorDesc?: string }): StatusChange {
    assertTransition(this.#status, to);
    const change: StatusChange = Object.freeze({ from: this.#status, to, at: this.#now() });
    this.#status = to;
    this.#history.push(change);
    if (!this.#entered.has(to)) this.#entered.set(to, change.at);
    if (options?.errorDesc !== undefined) this.#errorDesc = options.errorDesc;
    for (const listener of [...this.#listeners]) listener(change);
    return change;
  }

  /** Moves to `to` if that is legal now; returns whether it moved (never throws for legality). */
  tryTransition(to: MigrationStatus, options?: { readonly errorDesc?: string }): boolean {
    if (!this.can(to)) return false;
    this.transition(to, options);
    return true;
  }

  /**
   * Compare-and-set, like QEMU's `migrate_set_state(&state, old, new)`: moves
   * to `to` only if the status is still `expected`. Use it where a cancel or
   * failure may have raced ahead (e.g. `transitionIf('active', 'device')`).
   *
   * @returns false (and changes nothing) when the status is no longer `expected`
   * @throws QapiError `QAPI_ILLEGAL_TRANSITION` when `expected` → `to` is never legal (a bug)
   */
  transitionIf(
    expected: MigrationStatus,
    to: MigrationStatus,
    options?: { readonly errorDesc?: string },
  ): boolean {
    assertTransition(expected, to);
    if (this.#status !== expected) return false;
    this.transition(to, options);
    return true;
  }

  /**
   * Moves to `failed` with a description, unless the migration is already
   * over. Safe to call from any error path.
   *
   * @param errorDesc - what failed and what to do (becomes `error-desc`)
   * @returns false when the status was already terminal (nothing changed)
   */
  fail(errorDesc: string): boolean {
    return this.tryTransition('failed', { errorDesc });
  }

  /** When `status` was first entered (the initial status counts), or undefined if never. */
  enteredAt(status: MigrationStatus): number | undefined {
    return this.#entered.get(status);
  }

  /**
   * Registers a listener called after every change (synchronously, in
   * registration order). A listener that throws propagates to the caller of
   * the transition; the change has already happened.
   *
   * @returns a function that removes the listener
   */
  onChange(listener: StatusListener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }
}
