/**
 * Time sources for the CLINT's mtime (10 MHz, as on QEMU virt).
 *
 * - `realtime`: mtime follows the host's monotonic clock. Guests see wall-clock time; runs are
 *   not reproducible.
 * - `deterministic`: mtime = f(instructions retired): it advances one tick every
 *   `instructionsPerTick` retired instructions, and jumps forward to the timer deadline when
 *   the hart idles in WFI. Output then depends only on the program and its input, so
 *   "pause → save → restore → resume" equals an uninterrupted run.
 */

/** Which time source drives mtime. */
export type TimeMode = 'deterministic' | 'realtime';

/** mtime frequency of QEMU virt (ticks per second). */
export const MTIME_HZ = 10_000_000;

/** What the deterministic clock reads from the hart. */
export interface InstructionCounter {
  readonly retired: number;
}

/** Version of {@link ClockState}. */
export const CLOCK_STATE_VERSION = 1;

/** Saved clock: the mtime value, plus for the deterministic clock the instructions into the current tick. */
export interface ClockState {
  readonly version: number;
  readonly mode: TimeMode;
  readonly mtime: number;
  /** Deterministic only: instructions per tick and retired instructions since the last tick. */
  readonly instructionsPerTick?: number;
  readonly subTick?: number;
}

/** A source of mtime. */
export interface Clock {
  readonly mode: TimeMode;
  /** Current mtime. */
  now(): number;
  /** Sets mtime (a guest write to the CLINT, or a restore). */
  set(mtime: number): void;
  /** Retired-instruction count at which mtime reaches `mtime`, or Infinity when not predictable. */
  instretWhen(mtime: number): number;
  /** Host milliseconds until mtime reaches `mtime` (0 if passed; Infinity when time does not flow by itself). */
  msUntil(mtime: number): number;
  /** Deterministic idle skip: moves mtime forward to `mtime` if it is ahead. */
  warpTo(mtime: number): void;
  /** Stops time while the VM is paused (real time; a no-op for deterministic time, which only moves with instructions). */
  hold(): void;
  /** Lets time flow again from where {@link Clock.hold} stopped it. */
  release(): void;
  save(): ClockState;
  restore(state: ClockState): void;
}

/** mtime as a function of retired instructions (see the module doc). */
export class DeterministicClock implements Clock {
  readonly mode = 'deterministic' as const;
  private base = 0;
  private anchor = 0;

  constructor(
    private readonly counter: InstructionCounter,
    private instructionsPerTick = 10,
  ) {
    if (!Number.isInteger(instructionsPerTick) || instructionsPerTick < 1) {
      throw new Error(`instructionsPerTick must be a positive integer, got ${instructionsPerTick}`);
    }
  }

  now(): number {
    return this.base + Math.floor((this.counter.retired - this.anchor) / this.instructionsPerTick);
  }

  set(mtime: number): void {
    this.base = mtime;
    this.anchor = this.counter.retired;
  }

  instretWhen(mtime: number): number {
    return this.anchor + (mtime - this.base) * this.instructionsPerTick;
  }

  msUntil(): number {
    return Infinity;
  }

  warpTo(mtime: number): void {
    if (mtime > this.now()) this.set(mtime);
  }

  hold(): void {}

  release(): void {}

  save(): ClockState {
    const mtime = this.now();
    const subTick =
      this.counter.retired - this.anchor - (mtime - this.base) * this.instructionsPerTick;
    return {
      version: CLOCK_STATE_VERSION,
      mode: this.mode,
      mtime,
      instructionsPerTick: this.instructionsPerTick,
      subTick,
    };
  }

  restore(state: ClockState): void {
    checkClockState(state, this.mode);
    this.instructionsPerTick = state.instructionsPerTick ?? this.instructionsPerTick;
    this.base = state.mtime;
    this.anchor = this.counter.retired - (state.subTick ?? 0);
  }
}

/**
 * mtime from the host's monotonic clock (`performance.now()`), continuous across save/restore;
 * stopped while held (a paused VM does not see time pass, as QEMU's virtual clock).
 */
export class RealtimeClock implements Clock {
  readonly mode = 'realtime' as const;
  private offset: number;
  private held = -1;

  constructor(start = 0) {
    this.offset = start - hostTicks();
  }

  now(): number {
    return this.held >= 0 ? this.held : hostTicks() + this.offset;
  }

  set(mtime: number): void {
    if (this.held >= 0) this.held = mtime;
    else this.offset = mtime - hostTicks();
  }

  hold(): void {
    if (this.held < 0) this.held = this.now();
  }

  release(): void {
    if (this.held < 0) return;
    const mtime = this.held;
    this.held = -1;
    this.set(mtime);
  }

  instretWhen(): number {
    return Infinity;
  }

  msUntil(mtime: number): number {
    const ticks = mtime - this.now();
    return ticks <= 0 ? 0 : ticks / (MTIME_HZ / 1000);
  }

  warpTo(): void {}

  save(): ClockState {
    return { version: CLOCK_STATE_VERSION, mode: this.mode, mtime: this.now() };
  }

  restore(state: ClockState): void {
    checkClockState(state, this.mode);
    this.set(state.mtime);
  }
}

/** Creates the clock for a time mode. */
export function createClock(
  mode: TimeMode,
  counter: InstructionCounter,
  instructionsPerTick?: number,
): Clock {
  return mode === 'deterministic'
    ? new DeterministicClock(counter, instructionsPerTick)
    : new RealtimeClock();
}

function hostTicks(): number {
  return Math.floor(performance.now() * (MTIME_HZ / 1000));
}

function checkClockState(state: ClockState, mode: TimeMode): void {
  if (state.version !== CLOCK_STATE_VERSION) {
    throw new Error(
      `clock state version ${state.version} is not supported (want ${CLOCK_STATE_VERSION})`,
    );
  }
  if (state.mode !== mode) {
    throw new Error(`clock state is for ${state.mode} time, this machine runs ${mode} time`);
  }
  if (!Number.isFinite(state.mtime) || state.mtime < 0)
    throw new Error(`clock state has a bad mtime ${state.mtime}`);
}
