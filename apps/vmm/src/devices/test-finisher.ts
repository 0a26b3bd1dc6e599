import type { AccessWidth, MmioDevice } from '../memory/mmio.js';

/** How the guest ended, as written to the SiFive test finisher. */
export type ExitStatus =
  | { readonly kind: 'pass'; readonly code: 0 }
  | { readonly kind: 'fail'; readonly code: number }
  | { readonly kind: 'reset'; readonly code: 0 };

/** Finisher command values (low 16 bits of the written word). */
export const FINISHER_PASS = 0x5555;
export const FINISHER_FAIL = 0x3333;
export const FINISHER_RESET = 0x7777;

/** Version of {@link FinisherState}. */
export const FINISHER_STATE_VERSION = 1;

/** The finisher's state: the exit status once the guest wrote one. */
export interface FinisherState {
  readonly version: number;
  readonly exit: ExitStatus | null;
}

/**
 * SiFive test finisher at 0x00100000: a 32-bit write of 0x5555 powers off with success,
 * `0x3333 | code << 16` with failure `code`, 0x7777 asks for a reset (the host decides;
 * the machine reports it and stops). Other values are ignored, reads return 0.
 */
export class TestFinisher implements MmioDevice {
  readonly name = 'test-finisher';
  readonly size = 0x1000;
  /** The status written, or null while the guest runs. */
  exit: ExitStatus | null = null;

  constructor(
    readonly base: number,
    private readonly onExit: (status: ExitStatus) => void,
  ) {}

  read(): number {
    return 0;
  }

  write(offset: number, width: AccessWidth, value: number): void {
    if (offset !== 0 || width !== 4) return;
    const cmd = value & 0xffff;
    let status: ExitStatus;
    if (cmd === FINISHER_PASS) status = { kind: 'pass', code: 0 };
    else if (cmd === FINISHER_FAIL) status = { kind: 'fail', code: value >>> 16 };
    else if (cmd === FINISHER_RESET) status = { kind: 'reset', code: 0 };
    else return;
    this.exit = status;
    this.onExit(status);
  }

  save(): FinisherState {
    return { version: FINISHER_STATE_VERSION, exit: this.exit };
  }

  restore(state: FinisherState): void {
    if (state.version !== FINISHER_STATE_VERSION) {
      throw new Error(
        `finisher state version ${state.version} is not supported (want ${FINISHER_STATE_VERSION})`,
      );
    }
    this.exit = state.exit;
  }
}
